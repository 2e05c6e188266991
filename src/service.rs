//! Process lifecycle for pool and proxy mode.

use anyhow::bail;

use crate::cli::ServerArgs;

/// Runs pool or proxy mode until shutdown.
pub fn run_server(args: ServerArgs) -> anyhow::Result<()> {
    bail!("pool/proxy service is not wired in this commit yet (config {:?})", args.config)
}
