//! Everything that talks to bitcoind: JSON-RPC, ZMQ block announcements and Bitcoin Core's IPC
//! mining interface (`ipc/`).

pub mod body;
pub mod ipc;
pub mod rpc;
pub mod zmq;

pub use body::SubmitBody;
pub use rpc::{Rpc, RpcError};
