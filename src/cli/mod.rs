//! Command line: picks the face (pool, proxy, payout, tools) from argv[0] and arguments.
//!
//! ckpool's own getopt flags keep working (`-c/--config`, `-k/--killold`, `-L/--log-shares`,
//! `-l/--loglevel`, `-n/--name`, `-s/--sockdir`, `-q/--quiet`, `-p/--proxy`, `-B/--btcsolo`,
//! `-H/--handover`), so the unit files
//! of the operator's guide run unchanged; the tools are subcommands.

use std::path::PathBuf;

use clap::{Args, FromArgMatches, Parser, Subcommand};

mod generate;

/// Flags shared by pool and proxy mode (ckpool's getopt flags).
#[derive(Debug, Clone, Args, Default)]
pub struct ServerArgs {
    /// Configuration file (ckpool JSON; text after the closing brace is ignored)
    #[arg(short = 'c', long = "config", value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Stop a running instance (found through the pid file in the socket dir) before starting
    #[arg(short = 'k', long = "killold")]
    pub killold: bool,
    /// Take over the listening sockets of the instance running with the same name and socket
    /// dir (no connection is refused): it stops accepting, closes its miners' connections once
    /// this one serves work (they reconnect here) and exits. Without a running instance, start
    /// normally; with one that does not answer, fail (or, with --killold, stop it first)
    #[arg(short = 'H', long = "handover")]
    pub handover: bool,
    /// Write every share to the share logs under logdir
    #[arg(short = 'L', long = "log-shares")]
    pub log_shares: bool,
    /// Log level: 0-7 as ckpool (7 = debug, 6 = info, 4 = warning, 3 = error) or a name
    #[arg(short = 'l', long = "loglevel", value_name = "LEVEL")]
    pub loglevel: Option<String>,
    /// Instance name: default "ckpool" or "ckproxy"; names the socket dir, pid file and log file
    #[arg(short = 'n', long = "name", value_name = "NAME")]
    pub name: Option<String>,
    /// Directory for the pid file and the handover socket (default /tmp/<name>)
    #[arg(short = 's', long = "sockdir", value_name = "DIR")]
    pub sockdir: Option<PathBuf>,
    /// Quiet: do not echo the log to the terminal
    #[arg(short = 'q', long = "quiet")]
    pub quiet: bool,
    /// Proxy mode (as `ckproxy`)
    #[arg(short = 'p', long = "proxy")]
    pub proxy: bool,
    /// Solo mining (ckpool's BTCSOLO): each username is the miner's payout address and a block
    /// pays its finder (less `donation` percent to btcaddress)
    #[arg(short = 'B', long = "btcsolo")]
    pub btcsolo: bool,
}

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
    Submitblock(crate::pool::blocks::manual::SubmitblockArgs),
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
        Some(Command::Rpcauth(args)) => crate::tools::rpcauth::run(args),
        Some(Command::Submitblock(args)) => crate::pool::blocks::manual::run(args),
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
