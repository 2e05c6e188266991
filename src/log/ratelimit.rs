//! Operator lines about connections, rate-limited per kind so that no miner can flood the log
//! (and the disk it shares with `blocks/` and `blocks.log`). [`RateLimit`] is the pure core: the
//! time is passed in; each kind lets [`PER_WINDOW`] lines through per [`WINDOW_US`] and counts
//! the rest, which [`RateLimit::take_summary`] turns into one line. [`LogGate`] is the shell the
//! sessions share (a short mutex, the process's monotonic clock); `serve::guard` logs its summary
//! once a minute.

use std::fmt::Write as _;
use std::sync::Mutex;
use std::time::Instant;

/// The kinds of repeated per-connection lines.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogKind {
    /// A miner authorized, an SV2 connection set up or a channel opened.
    Connect,
    /// A miner disconnected or was dropped.
    Close,
    /// A connection refused before its session (handshake, PROXY header, ban, per-address limit).
    Refusal,
    /// A line or message the pool could not read.
    BadLine,
    /// A miner reached a limit (names per connection, dropidle, a ban).
    Limit,
}

impl LogKind {
    pub const ALL: [LogKind; 5] =
        [LogKind::Connect, LogKind::Close, LogKind::Refusal, LogKind::BadLine, LogKind::Limit];

    pub fn label(self) -> &'static str {
        match self {
            LogKind::Connect => "connect",
            LogKind::Close => "close",
            LogKind::Refusal => "refusal",
            LogKind::BadLine => "bad line",
            LogKind::Limit => "limit",
        }
    }
}

/// Lines of one kind let through per window.
pub const PER_WINDOW: u32 = 100;
/// The window, in microseconds (one minute).
pub const WINDOW_US: u64 = 60_000_000;

#[derive(Debug, Clone, Copy, Default)]
struct Slot {
    start: u64,
    passed: u32,
    suppressed: u64,
}

/// Per-kind fixed windows: at most `per_window` lines of a kind per `window_us`.
#[derive(Debug, Clone)]
pub struct RateLimit {
    per_window: u32,
    window_us: u64,
    slots: [Slot; LogKind::ALL.len()],
    /// When the suppressed counts began (for the summary's wording).
    since: u64,
}

impl RateLimit {
    pub fn new(per_window: u32, window_us: u64, now_us: u64) -> RateLimit {
        RateLimit { per_window, window_us, slots: [Slot { start: now_us, ..Slot::default() }; 5], since: now_us }
    }

    /// Whether a line of `kind` at `now_us` may be written; if not, it is counted.
    pub fn allow(&mut self, kind: LogKind, now_us: u64) -> bool {
        let s = &mut self.slots[kind as usize];
        if now_us.saturating_sub(s.start) >= self.window_us {
            s.start = now_us;
            s.passed = 0;
        }
        if s.passed < self.per_window {
            s.passed += 1;
            true
        } else {
            s.suppressed += 1;
            false
        }
    }

    /// One line saying what was suppressed since the last summary (none: nothing was), and the
    /// counts start again.
    pub fn take_summary(&mut self, now_us: u64) -> Option<String> {
        let since = std::mem::replace(&mut self.since, now_us);
        let counts: Vec<(LogKind, u64)> = LogKind::ALL
            .iter()
            .map(|k| (*k, std::mem::take(&mut self.slots[*k as usize].suppressed)))
            .filter(|(_, n)| *n > 0)
            .collect();
        if counts.is_empty() {
            return None;
        }
        let mut line = String::from("operator log: suppressed ");
        for (i, (k, n)) in counts.iter().enumerate() {
            let _ = write!(
                line,
                "{}{n} {} line{}",
                if i == 0 { "" } else { ", " },
                k.label(),
                if *n == 1 { "" } else { "s" }
            );
        }
        let _ = write!(
            line,
            " in the last {} s (at most {} lines of a kind per {} s)",
            now_us.saturating_sub(since) / 1_000_000,
            self.per_window,
            self.window_us / 1_000_000
        );
        Some(line)
    }
}

/// The rate limit the sessions share, on the process's monotonic clock.
#[derive(Debug)]
pub struct LogGate {
    origin: Instant,
    limit: Mutex<RateLimit>,
}

impl Default for LogGate {
    fn default() -> LogGate {
        LogGate::new(PER_WINDOW, WINDOW_US)
    }
}

impl LogGate {
    pub fn new(per_window: u32, window_us: u64) -> LogGate {
        LogGate { origin: Instant::now(), limit: Mutex::new(RateLimit::new(per_window, window_us, 0)) }
    }

    fn now_us(&self) -> u64 {
        self.origin.elapsed().as_micros() as u64
    }

    /// Whether a line of `kind` may be written now.
    pub fn allow(&self, kind: LogKind) -> bool {
        let now = self.now_us();
        self.limit.lock().unwrap_or_else(|p| p.into_inner()).allow(kind, now)
    }

    /// The summary of what was suppressed since the last one.
    pub fn take_summary(&self) -> Option<String> {
        let now = self.now_us();
        self.limit.lock().unwrap_or_else(|p| p.into_inner()).take_summary(now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: u64 = 1_000_000;

    #[test]
    fn each_kind_has_its_own_budget_per_window() {
        let mut r = RateLimit::new(3, 10 * S, 0);
        let passed = (0..10).filter(|i| r.allow(LogKind::Connect, *i * 1000)).count();
        assert_eq!(passed, 3);
        // Another kind is not affected.
        assert!(r.allow(LogKind::Close, 5 * S));
        // The next window lets lines through again.
        assert!(r.allow(LogKind::Connect, 10 * S));
        assert!(r.allow(LogKind::Connect, 10 * S + 1));
        assert!(r.allow(LogKind::Connect, 10 * S + 2));
        assert!(!r.allow(LogKind::Connect, 10 * S + 3));
        // A clock that goes backwards (it does not; saturating) never panics.
        assert!(!r.allow(LogKind::Connect, 0));
    }

    #[test]
    fn summary_says_what_was_suppressed_and_starts_again() {
        let mut r = RateLimit::new(1, 60 * S, 0);
        assert_eq!(r.take_summary(S), None);
        for i in 0..5 {
            r.allow(LogKind::Connect, S + i);
        }
        for i in 0..2 {
            r.allow(LogKind::Refusal, S + i);
        }
        r.allow(LogKind::BadLine, S);
        assert_eq!(
            r.take_summary(61 * S).as_deref(),
            Some("operator log: suppressed 4 connect lines, 1 refusal line in the last 60 s (at most 1 lines of a kind per 60 s)")
        );
        assert_eq!(r.take_summary(62 * S), None);
    }

    #[test]
    fn a_flood_costs_counts_not_lines() {
        let mut r = RateLimit::new(PER_WINDOW, WINDOW_US, 0);
        let mut written = 0u64;
        // A million connects within ten minutes: ten windows' worth of lines, the rest counted.
        for i in 0..1_000_000u64 {
            if r.allow(LogKind::Connect, i * 600) {
                written += 1;
            }
        }
        assert_eq!(written, 10 * PER_WINDOW as u64);
        let line = r.take_summary(600 * S).unwrap();
        assert!(line.contains(&format!("{} connect lines", 1_000_000 - written)), "{line}");
    }
}
