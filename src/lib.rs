//! ckpool-rs: a Stratum V1 and V2 mining pool and proxy for Bitcoin-family nodes.
//!
//! Data flows one way: work source ([`pool`], [`proxy`]) → jobs ([`work`]) → mining core
//! ([`mining`]) → serving layer ([`serve`]) and its faces ([`sv1`], [`sv2`]) → outputs
//! ([`blocks`], [`log`], [`history`], [`api`]); [`service`] runs the process. ARCHITECTURE.md
//! at the repository's root is the map.

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
