//! `ckpool payout` and `ckpool difficulty`: mining-contract payouts, difficulty epochs and
//! network hashrate, exact (rational arithmetic, satoshis floored once) and node-aware.
//!
//! * [`exact`]: rationals and the parsers for hashrates, amounts and decimals.
//! * [`formula`]: the payout, retarget and hashrate formulas of the operator's guide.
//! * [`node`]: a small JSON-RPC client and the chain queries (difficulty, subsidy, fees).
//! * [`contracts`]: contract files, pro-rating, skipped payouts and carried balances.
//! * [`cli`]: the two subcommands.

pub mod cli;
pub mod contracts;
pub mod exact;
pub mod formula;
pub mod node;

pub use cli::{DifficultyArgs, PayoutArgs};
