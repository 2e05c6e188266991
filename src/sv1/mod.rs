//! Stratum v1 as one face of the pool. Today: the one stratum client type and its reading of
//! server lines.

pub mod client;
pub mod server_msg;
