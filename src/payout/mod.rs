//! The exact arithmetic of `ckpool payout` and `ckpool difficulty`: pure, no I/O (the commands
//! themselves are in `tools/payout/`).
//!
//! * [`exact`]: rationals and the parsers for hashrates, amounts and decimals.
//! * [`formula`]: the payout, retarget and hashrate formulas of the operator's guide.
//! * [`contracts`]: contract files, pro-rating, skipped payouts and carried balances.
//! * [`pplns`]: the PPLNS window and a block's split among its payees (pool mode's coinbase).

pub mod contracts;
pub mod exact;
pub mod formula;
pub mod pplns;
