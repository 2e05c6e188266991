//! From a block template to stratum work and back to a block: pure data, no I/O.

pub mod coinbase;
pub mod declared;
pub mod empty;
pub mod from_block;
pub mod job;
pub mod merkle;
pub mod template;
pub mod tx_walk;

pub use coinbase::{Coinbase, CoinbaseConfig};
pub use job::Job;
pub use template::{Template, TemplateTx};
