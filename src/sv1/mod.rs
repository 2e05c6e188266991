//! Stratum V1, one face of the mining core: the server (listeners, one session task per miner,
//! the line reader and the request parser) and the client (the proxy's upstream link, the test
//! miner and the bench) with its reading of server lines.

pub mod client;
pub mod lines;
pub mod proto;
pub mod server;
pub mod server_msg;
pub mod session;
