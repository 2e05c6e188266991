//! ckpool-rs: a stratum v1 mining pool and proxy for Bitcoin-family nodes.
//!
//! Data flows one way: template source → jobs → stratum sessions → share validation →
//! share log / block submission. The pure parts ([`difficulty`], [`work`], [`share`]) take
//! plain data and return plain data, so they are tested with vectors.

pub mod api;
pub mod bitcoind;
pub mod blocks;
pub mod cli;
pub mod config;
pub mod difficulty;
pub mod fdlimit;
pub mod hex;
pub mod history;
pub mod jsonw;
pub mod log;
pub mod mining;
pub mod payout;
pub mod pool;
pub mod proxy;
pub mod proxy_protocol;
pub mod reload;
pub mod serve;
pub mod service;
pub mod share;
pub mod sockets;
pub mod sv1;
pub mod sv2;
pub mod tls;
pub mod tools;
pub mod work;
