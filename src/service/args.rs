//! The server's command line: ckpool's own flags (`-c -k -H -L -l -n -s -q -p -B`), kept as
//! the guide's unit files use them.

use std::path::PathBuf;

use clap::Args;

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
