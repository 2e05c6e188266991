//! The share log read back into a window: at start (after the snapshot, or all of a window when
//! there is none) and for an audit of a past block (up to the moment its coinbase's window was
//! taken). Shares and carries are replayed in the order they happened.

use std::path::{Path, PathBuf};

use bitcoin::ScriptBuf;

use super::journal::Carry;
use crate::log::sharelog::{parse_accepted, Accepted};
use crate::payout::pplns::Window;

/// Lines read back at most (a bound on the start's time and memory; the window is then
/// shorter than configured until new shares fill it, and the start says so).
pub const REPLAY_MAX_LINES: u64 = 20_000_000;

/// Share-log files and lines read back.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Read {
    pub files: u64,
    pub lines: u64,
}

/// Which shares to read back.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Bounds {
    /// Only shares made after this moment (a snapshot's cut): every one of them, however much
    /// weight they hold.
    pub after: Option<(u64, u32)>,
    /// Only shares made at or before this moment (an audited block's cut).
    pub until: Option<(u64, u32)>,
    /// Only height directories up to this one (an audited block's height).
    pub max_height: Option<u32>,
}

/// The accepted shares of the newest height directories (`logdir/<height as 8 hex>/`) within
/// `bounds`, oldest first: until their weight reaches `units`, or, with `bounds.after`, until a
/// directory holds nothing after it.
pub fn read_back(logdir: &Path, units: u128, bounds: &Bounds) -> (Vec<Accepted>, Read) {
    let mut read = Read::default();
    let mut dirs: Vec<(u32, PathBuf)> = match std::fs::read_dir(logdir) {
        Ok(d) => d
            .flatten()
            .filter_map(|e| {
                let name = e.file_name().to_string_lossy().to_string();
                (name.len() == 8).then(|| u32::from_str_radix(&name, 16).ok()).flatten().map(|h| (h, e.path()))
            })
            .filter(|(h, _)| bounds.max_height.is_none_or(|m| *h <= m))
            .collect(),
        Err(_) => return (Vec::new(), read),
    };
    dirs.sort_by_key(|d| std::cmp::Reverse(d.0));
    let mut out = Vec::new();
    let mut weight = 0u128;
    'dirs: for (_, dir) in dirs {
        let Ok(files) = std::fs::read_dir(&dir) else { continue };
        let mut newer = false;
        for f in files.flatten() {
            if f.path().extension().is_none_or(|e| e != "sharelog") {
                continue;
            }
            let Ok(text) = std::fs::read_to_string(f.path()) else {
                tracing::warn!("pplns: cannot read {} back; its shares are not in the window", f.path().display());
                continue;
            };
            read.files += 1;
            for line in text.lines() {
                read.lines += 1;
                if let Some(a) = parse_accepted(line) {
                    let late = bounds.until.is_some_and(|u| a.at > u);
                    let early = bounds.after.is_some_and(|c| a.at <= c);
                    newer |= !early;
                    if !late && !early {
                        weight = weight.saturating_add(a.diff.units());
                        out.push(a);
                    }
                }
                if read.lines >= REPLAY_MAX_LINES {
                    tracing::warn!(
                        "pplns: read {REPLAY_MAX_LINES} share-log lines back and stopped; the window holds what they hold"
                    );
                    break 'dirs;
                }
            }
        }
        let done = match bounds.after {
            Some(_) => !newer,
            None => weight >= units,
        };
        if done {
            break;
        }
    }
    out.sort_by_key(|a| a.at);
    (out, read)
}

/// What a replay put in the window.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Counted {
    pub shares: u64,
    pub carries: u64,
}

/// Replays `shares` (oldest first) into `window` with `carries` (each payee's newest, oldest
/// first) at their moments: a carry puts the weight the payee had then at that point (what came
/// before it of that payee is replaced). `script_of` gives a username's payout script (None:
/// not paid, skipped).
pub fn rebuild(
    window: &mut Window<ScriptBuf>,
    shares: Vec<Accepted>,
    carries: Vec<Carry>,
    mut script_of: impl FnMut(&str) -> Option<ScriptBuf>,
) -> Counted {
    let mut out = Counted::default();
    let mut carries = carries.into_iter().peekable();
    for a in shares {
        while let Some(c) = carries.next_if(|c| c.at <= a.at) {
            window.carry_as(&c.script, c.weight);
            out.carries += 1;
        }
        if let Some(script) = script_of(&a.username) {
            window.push(&script, a.diff.units());
            out.shares += 1;
        }
    }
    for c in carries {
        window.carry_as(&c.script, c.weight);
        out.carries += 1;
    }
    out
}
