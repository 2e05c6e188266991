//! Command line: picks the face (pool, proxy, payout, tools) from argv[0] and arguments.
//!
//! ckpool's own getopt flags keep working (`-c/--config`, `-k/--killold`, `-L/--log-shares`,
//! `-l/--loglevel`, `-n/--name`, `-s/--sockdir`, `-q/--quiet`, `-p/--proxy`, `-B/--btcsolo`,
//! `-H/--handover`), so the unit files
//! of the operator's guide run unchanged; the tools are subcommands.

pub use crate::service::args::ServerArgs;
use std::path::PathBuf;

use clap::{Args, FromArgMatches, Parser, Subcommand};

mod generate;

#[derive(Debug, Parser)]
#[command(name = "ckpool", version, about = "Stratum mining pool and proxy (ckpool/ckproxy compatible)")]
#[command(args_conflicts_with_subcommands = true)]
pub struct Cli {
    #[command(flatten)]
    pub server: ServerArgs,
    #[command(subcommand)]
    pub command: Option<Command>,
}

/// Parsed once at start; variant sizes do not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run as a stratum proxy (same as starting the binary as `ckproxy`)
    Proxy(ServerArgs),
    /// CPU miner (SHA256d) for testing a pool: ckpool mine -o stratum+tcp://HOST:PORT -u USER -p PASS
    Mine(Box<crate::tools::miner::MineArgs>),
    /// Stratum load generator for a pool on loopback: ckpool bench --url stratum+tcp://127.0.0.1:PORT
    Bench(Box<crate::tools::bench::BenchArgs>),
    /// Check a config file and reach each btcd without starting the pool
    Check(CheckArgs),
    /// Mining-contract payout for a difficulty epoch (exact; offline or from the node)
    Payout(crate::tools::payout::PayoutArgs),
    /// PPLNS: what the next block's coinbase pays each miner, derived from the share log
    Pplns(crate::tools::pplns::PplnsArgs),
    /// Difficulty epoch, projected next difficulty and network hashrate
    Difficulty(crate::tools::payout::DifficultyArgs),
    /// The rpcauth= line for bitcoin.conf and its password (as bitcoind's rpcauth.py)
    Rpcauth(crate::tools::rpcauth::RpcauthArgs),
    /// The pool's summary in the terminal (from its API when apiurl is set, else logdir's files)
    Status(crate::api::status::StatusArgs),
    /// The pool's Stratum V2 authority public key and stratum2+tcp:// URLs (the key file is
    /// created when missing): ckpool sv2-key --config F
    #[command(name = "sv2-key")]
    Sv2Key(crate::sv2::Sv2KeyArgs),
    /// Submit a saved block by hand to every btcd: ckpool submitblock FILE|HASH [--config F]
    Submitblock(crate::blocks::manual::SubmitblockArgs),
    /// Print a shell completion script: ckpool completions bash > /etc/bash_completion.d/ckpool
    Completions(generate::CompletionsArgs),
    /// Fill a history database with simulated minute rows and report its size (docs/performance.md)
    #[command(hide = true)]
    HistorySim(crate::history::sim::SimArgs),
    /// Write the manual pages (ckpool.1, ckproxy.1, ckpool-SUBCOMMAND.1) into a directory
    #[command(hide = true)]
    Manpages(generate::ManpagesArgs),
}

#[derive(Debug, Clone, Args)]
pub struct CheckArgs {
    /// Configuration file to check
    #[arg(short = 'c', long = "config", value_name = "FILE")]
    pub config: PathBuf,
    /// Check as a proxy configuration
    #[arg(short = 'p', long = "proxy")]
    pub proxy: bool,
}

/// Parses arguments and runs; returns the process exit code.
pub fn main() -> i32 {
    let argv0 = std::env::args_os().next().map(PathBuf::from);
    let as_proxy =
        argv0.as_ref().and_then(|p| p.file_name()).is_some_and(|n| n.to_string_lossy().starts_with("ckproxy"));
    // Started as ckproxy: --version, --help and errors say ckproxy.
    let name = if as_proxy { "ckproxy" } else { "ckpool" };
    let cli = match generate::command(name).try_get_matches().and_then(|m| Cli::from_arg_matches(&m)) {
        Ok(cli) => cli,
        Err(e) => e.exit(),
    };
    let result = match cli.command {
        None => {
            let mut args = cli.server;
            args.proxy |= as_proxy;
            crate::service::run_server(args)
        }
        Some(Command::Proxy(mut args)) => {
            args.proxy = true;
            crate::service::run_server(args)
        }
        Some(Command::Mine(args)) => crate::tools::miner::run(*args),
        Some(Command::Bench(args)) => crate::tools::bench::run(*args),
        Some(Command::Check(args)) => crate::tools::check::run(&args.config, args.proxy || as_proxy),
        Some(Command::Payout(args)) => crate::tools::payout::run_payout(args),
        Some(Command::Difficulty(args)) => crate::tools::payout::run_difficulty(args),
        Some(Command::Pplns(args)) => crate::tools::pplns::run(args),
        Some(Command::Rpcauth(args)) => crate::tools::rpcauth::run(args),
        Some(Command::Submitblock(args)) => crate::blocks::manual::run(args),
        Some(Command::Status(args)) => crate::api::status::run(args),
        Some(Command::Sv2Key(args)) => crate::sv2::run_sv2_key(args),
        Some(Command::Completions(args)) => generate::completions(&args),
        Some(Command::HistorySim(args)) => crate::history::sim::run(args),
        Some(Command::Manpages(args)) => generate::manpages(&args.dir),
    };
    match result {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("{name}: {e:#}");
            1
        }
    }
}
