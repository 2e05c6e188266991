//! Subcommands beside the server: they share its config reader, node client and stratum client
//! but are not on its path. `ckpool check` (a config file and its nodes), `ckpool rpcauth`
//! (bitcoin.conf's rpcauth line), `ckpool payout` / `ckpool difficulty` (mining-contract
//! payouts; their exact arithmetic is [`crate::payout`]), `ckpool pplns` (what the next block
//! pays under PPLNS, derived from the share log), `ckpool mine` (a CPU miner) and
//! `ckpool bench` (a load generator), both on [`crate::sv1::client`].

pub mod bench;
pub mod bench_sv2;
pub mod check;
pub mod miner;
pub mod payout;
pub mod pplns;
pub mod pplns_block;
pub mod rpcauth;
