//! Everything that talks to bitcoind: JSON-RPC and ZMQ block announcements.

pub mod rpc;
pub mod zmq;

pub use rpc::{hex_in_body, submitblock_body, submitblock_body_of, Rpc, RpcError};
