//! Everything that talks to bitcoind: JSON-RPC and ZMQ block announcements.

pub mod rpc;
pub mod zmq;

pub use rpc::{submitblock_body, Rpc, RpcError};
