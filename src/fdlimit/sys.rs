//! The thin system part: read the descriptor limits and raise the soft one to the hard one.

use anyhow::Context;
use nix::sys::resource::{getrlimit, setrlimit, Resource};

/// The kernel's cap on any process's descriptors (`fs.nr_open`), for an unlimited hard limit.
fn nr_open() -> u64 {
    std::fs::read_to_string("/proc/sys/fs/nr_open").ok().and_then(|t| t.trim().parse().ok()).unwrap_or(1 << 20)
}

/// Raises RLIMIT_NOFILE's soft limit to its hard limit. Returns (soft before, soft now, hard);
/// a refused raise keeps the soft limit (and says why in the error, which the caller logs).
pub fn raise_soft_limit() -> (u64, u64, u64, Option<anyhow::Error>) {
    let (soft, hard) = match getrlimit(Resource::RLIMIT_NOFILE) {
        Ok(l) => l,
        // Not expected on Linux; a plan on a conservative figure keeps serving.
        Err(e) => return (1024, 1024, 1024, Some(anyhow::anyhow!("cannot read RLIMIT_NOFILE: {e}"))),
    };
    // /proc/sys is read only for an unlimited hard limit (the units' ProcSubset=pid hides it;
    // their LimitNOFILE= is a number).
    let cap = if hard == nix::sys::resource::RLIM_INFINITY { nr_open() } else { hard };
    let want = super::plan::target_soft(soft, hard, cap);
    if want <= soft {
        return (soft, soft, hard, None);
    }
    match setrlimit(Resource::RLIMIT_NOFILE, want, hard)
        .with_context(|| format!("cannot raise the descriptor soft limit from {soft} to {want}"))
    {
        Ok(()) => (soft, want, hard, None),
        Err(e) => (soft, soft, hard, Some(e)),
    }
}
