//! Subcommands beside the server: they share its config reader and node client but are not on
//! its path. `ckpool check` (a config file and its nodes), `ckpool rpcauth` (bitcoin.conf's
//! rpcauth line), `ckpool payout` / `ckpool difficulty` (mining-contract payouts; their exact
//! arithmetic is [`crate::payout`]).

pub mod check;
pub mod payout;
pub mod rpcauth;
