//! Test harness, by what it starts: `node.rs` (a real regtest bitcoind pair), `core_node.rs`
//! (Bitcoin Core), `pool.rs` (the pool binary), `client.rs` (a stratum client and share
//! solving), `sri.rs` (SRI's pool_sv2 on Core's IPC), `sshd.rs` (a real OpenSSH server for the
//! tunnel tests), `wait.rs` (the one
//! wait-until helper). Everything listens on 127.0.0.1 only; every wait has a deadline; Drop
//! kills and reaps.
#![allow(dead_code)]

pub mod client;
pub mod core_node;
pub mod declare;
pub mod node;
pub mod package;
pub mod pool;
pub mod sri;
pub mod sshd;
pub mod wait;

#[allow(unused_imports)]
pub use client::*;
#[allow(unused_imports)]
pub use node::*;
#[allow(unused_imports)]
pub use pool::*;

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use ckpool::bitcoind::Rpc;
use ckpool::config::{RpcAuth, Secret};
use ckpool::sv1::client::{Client as Sv1Client, ClientError};
use serde_json::{json, Value};

pub const RPC_USER: &str = "satoshi";
pub const RPC_PASS: &str = "regtest-pass-for-tests";
