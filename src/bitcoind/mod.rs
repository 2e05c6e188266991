//! Everything that talks to bitcoind: JSON-RPC and ZMQ block announcements.

pub mod body;
pub mod rpc;
pub mod zmq;

pub use body::SubmitBody;
pub use rpc::{Rpc, RpcError};
