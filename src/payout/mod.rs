//! The exact arithmetic of `ckpool payout` and `ckpool difficulty`: pure, no I/O (the commands
//! themselves are in `tools/payout/`).
//!
//! * [`exact`]: rationals and the parsers for hashrates, amounts and decimals.
//! * [`formula`]: the payout, retarget and hashrate formulas of the operator's guide.
//! * [`contracts`]: contract files, pro-rating, skipped payouts and carried balances.

pub mod contracts;
pub mod exact;
pub mod formula;
