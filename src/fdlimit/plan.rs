//! The descriptor arithmetic, free of I/O: how many descriptors the pool keeps for itself (nodes,
//! block files, share logs, the API, the history store, ...) and so how many miners a limit
//! serves; and the throttle that keeps the refusal line to one per interval.

use std::time::{Duration, Instant};

/// What the process needs descriptors for besides miners, as the config says.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Needs {
    /// Listening sockets (serverurl, sv2url, apiurl): each is held twice while a handover (-H)
    /// socket can pass a duplicate to a new instance.
    pub listeners: u64,
    /// `btcd` entries (RPC connections: template polls, `submitblock` to every node at once,
    /// block checks).
    pub nodes: u64,
    /// Nodes whose blocks come by ZMQ (libzmq's context, I/O thread, reaper and socket).
    pub zmq_nodes: u64,
    /// Upstream pools (proxy mode): the live session and one failover attempt.
    pub upstreams: u64,
    /// The API's connection cap (0 without `apiurl`); one more is accepted only to be closed.
    pub api_connections: u64,
    /// The statistics history store is on (SQLite files with WAL, or PostgreSQL connections).
    pub history: bool,
}

/// Descriptors per item, each with the reason.
pub mod per {
    /// stdio, the operator log (and its reopened successor during a SIGHUP), the runtime's epoll,
    /// eventfd and signal pipe, the pid file, the handover socket and a connecting new instance,
    /// sd_notify, TLS certificate and config reloads.
    pub const BASE: u64 = 24;
    /// A listening socket and its duplicate kept for a handover (-H).
    pub const LISTENER: u64 = 2;
    /// RPC connections to one node that can be open at once: the template poll, `submitblock`,
    /// a block check and a reconnect overlapping a closing one.
    pub const NODE: u64 = 4;
    /// libzmq: context mailbox, one I/O thread (epoll + mailbox), the reaper (epoll + mailbox),
    /// the SUB socket's mailbox and TCP connection, the monitor's PAIR socket and its inproc
    /// pipe, one reconnect overlapping.
    pub const ZMQ: u64 = 12;
    /// An upstream session and a failover attempt overlapping it.
    pub const UPSTREAM: u64 = 2;
    /// A found block: its hex file, the journal, their directory (fsync) and one more block
    /// written while the first is still open.
    pub const BLOCKS: u64 = 6;
    /// The share log thread's file and directory, with a day change or a reopen overlapping.
    pub const SHARE_LOG: u64 = 4;
    /// The statistics writer (pool.status, users/ and workers/ files, one at a time, written by
    /// a temporary file then renamed) and its directory.
    pub const STATS: u64 = 4;
    /// The history store: SQLite's database, WAL and shared-memory files for the writer and for
    /// the API's readers, or PostgreSQL connections.
    pub const HISTORY: u64 = 12;
    /// Refused SV1 miners being answered "server full" at once (each holds its connection
    /// until its first request is answered, at most 10 s); beyond them a refused miner is closed.
    pub const ANSWERING: u64 = 16;
    /// What nothing above counts (a name lookup, a library opening a file).
    pub const MARGIN: u64 = 32;
}

/// Descriptors kept out of the miners' reach, for everything but miners.
pub fn reserve(n: &Needs) -> u64 {
    let api = if n.api_connections > 0 { n.api_connections + 1 } else { 0 };
    per::BASE
        + per::LISTENER * n.listeners
        + per::NODE * n.nodes
        + per::ZMQ * n.zmq_nodes
        + per::UPSTREAM * n.upstreams
        + per::BLOCKS
        + per::SHARE_LOG
        + per::STATS
        + api
        + if n.history { per::HISTORY } else { 0 }
        + per::ANSWERING
        + per::MARGIN
}

/// What a limit gives: the soft limit to run with, what is kept, and the miners served.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Plan {
    /// The soft limit the process had at start.
    pub soft_before: u64,
    /// The soft limit it runs with (the hard limit when it could be raised).
    pub soft: u64,
    pub hard: u64,
    /// Descriptors kept for the pool's own files and connections.
    pub reserve: u64,
    /// Miners (SV1 and SV2 together) the process can hold at once: `soft - reserve`, 0 when the
    /// limit does not even cover the reserve.
    pub miners: u64,
}

/// The soft limit to ask for given the limits at start: the hard limit. `RLIM_INFINITY` hard
/// limits (`u64::MAX`) are capped at `nr_open`, the most the kernel lets a process open.
pub fn target_soft(soft: u64, hard: u64, nr_open: u64) -> u64 {
    hard.min(nr_open).max(soft.min(nr_open))
}

/// The plan for a process now running with `soft` (after the raise), from `soft_before`.
pub fn plan(soft_before: u64, soft: u64, hard: u64, reserve: u64) -> Plan {
    Plan { soft_before, soft, hard, reserve, miners: soft.saturating_sub(reserve) }
}

impl Plan {
    /// The start line: the limit in force and the miners it serves.
    pub fn describe(&self, unit: &str) -> String {
        let raised = if self.soft > self.soft_before {
            format!("soft limit raised from {} to {} (the hard limit)", self.soft_before, self.soft)
        } else {
            format!("soft limit {} (hard {})", self.soft, fmt_limit(self.hard))
        };
        let mut s = format!(
            "descriptors: {raised}; {} kept for nodes, block files, share logs, the API and history: \
             serves up to {} miners (SV1 and SV2 together)",
            self.reserve, self.miners
        );
        if self.miners < 1000 {
            s.push_str(&format!(
                "; for a farm raise the limit (LimitNOFILE= in `systemctl edit {unit}`, or `ulimit -n` before starting)"
            ));
        }
        s
    }

    /// The operator's line when miners are refused at the ceiling.
    pub fn refusal_line(&self, unit: &str, peer: &str, local: &str, refused: u64) -> String {
        format!(
            "miner {peer} on {local} refused: {} miners connected, the most the descriptor limit allows \
             (RLIMIT_NOFILE {}, {} kept for nodes, block files, share logs, the API and history; {refused} \
             refused since the last such line); raise LimitNOFILE= (`systemctl edit {unit}`) or `ulimit -n` \
             and restart",
            self.miners, self.soft, self.reserve
        )
    }

    /// What a refused SV1 miner is told.
    pub fn refusal_reply(&self) -> String {
        format!("server full: this pool serves at most {} miners; try again later", self.miners)
    }
}

fn fmt_limit(v: u64) -> String {
    if v == u64::MAX {
        "unlimited".into()
    } else {
        v.to_string()
    }
}

/// One line per `every` for a repeated event, with how many happened since the last line.
#[derive(Debug)]
pub struct Throttle {
    every: Duration,
    last: Option<Instant>,
    unlogged: u64,
}

impl Throttle {
    pub fn new(every: Duration) -> Throttle {
        Throttle { every, last: None, unlogged: 0 }
    }

    /// Notes one event at `now`: `Some(count since the last line, this one included)` when a
    /// line is due.
    pub fn note(&mut self, now: Instant) -> Option<u64> {
        self.unlogged += 1;
        if self.last.is_some_and(|t| now.saturating_duration_since(t) < self.every) {
            return None;
        }
        self.last = Some(now);
        Some(std::mem::take(&mut self.unlogged))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reserve_counts_each_need() {
        let bare = Needs::default();
        let base = per::BASE + per::BLOCKS + per::SHARE_LOG + per::STATS + per::ANSWERING + per::MARGIN;
        assert_eq!(reserve(&bare), base);
        let pool = Needs { listeners: 3, nodes: 2, zmq_nodes: 1, upstreams: 0, api_connections: 64, history: true };
        assert_eq!(reserve(&pool), base + 3 * 2 + 2 * 4 + 12 + 65 + per::HISTORY);
        let proxy = Needs { listeners: 1, upstreams: 3, ..Needs::default() };
        assert_eq!(reserve(&proxy), base + 2 + 3 * 2);
    }

    #[test]
    fn systemd_default_serves_under_a_thousand_and_says_what_to_change() {
        // systemd's default for services: soft 1024, hard 524288; raised at start.
        let p = plan(1024, 524_288, 524_288, 200);
        assert_eq!(p.miners, 524_088);
        assert!(p.describe("ckpool").contains("raised from 1024 to 524288"), "{}", p.describe("ckpool"));
        // A hard limit of 1024 cannot be raised: under a thousand miners, and the line says why.
        let p = plan(1024, 1024, 1024, 200);
        assert_eq!(p.miners, 824);
        let d = p.describe("ckproxy");
        assert!(d.contains("serves up to 824 miners") && d.contains("systemctl edit ckproxy"), "{d}");
        // Less than the reserve: no miner, never an underflow.
        assert_eq!(plan(64, 64, 64, 200).miners, 0);
    }

    #[test]
    fn the_soft_limit_goes_to_the_hard_limit_within_nr_open() {
        assert_eq!(target_soft(1024, 65_536, 1_048_576), 65_536);
        assert_eq!(target_soft(1024, u64::MAX, 1_048_576), 1_048_576);
        // Never lowered.
        assert_eq!(target_soft(4096, 4096, 1_048_576), 4096);
    }

    #[test]
    fn the_refusal_line_names_the_limit_and_the_fix() {
        let p = plan(1024, 1024, 1024, 200);
        let l = p.refusal_line("ckpool", "10.0.0.9:4000", "0.0.0.0:3333", 7);
        for part in
            ["824 miners", "RLIMIT_NOFILE 1024", "200 kept", "7 refused", "LimitNOFILE=", "systemctl edit ckpool"]
        {
            assert!(l.contains(part), "{part} in {l}");
        }
        assert!(p.refusal_reply().contains("at most 824 miners"));
    }

    /// The shipped units' LimitNOFILE= serves the 10,000-miner farm the docs measure, with every
    /// reserve on (two nodes, ZMQ, SV1 + SV2 + API listeners, the API, history).
    #[test]
    fn the_units_limit_serves_a_farm() {
        let full = Needs { listeners: 3, nodes: 2, zmq_nodes: 1, upstreams: 4, api_connections: 64, history: true };
        for unit in [include_str!("../../systemd/ckpool.service"), include_str!("../../systemd/ckproxy.service")] {
            let n: u64 = unit
                .lines()
                .find_map(|l| l.strip_prefix("LimitNOFILE="))
                .expect("LimitNOFILE= in the unit")
                .trim()
                .parse()
                .expect("one number (soft = hard)");
            assert!(plan(1024, n, n, reserve(&full)).miners >= 10_000, "LimitNOFILE={n}");
            assert!(reserve(&full) <= 250, "the unit's comment says ~200 kept: {}", reserve(&full));
        }
    }

    #[test]
    fn the_throttle_gives_one_line_per_interval_with_the_count() {
        let t0 = Instant::now();
        let mut t = Throttle::new(Duration::from_secs(60));
        assert_eq!(t.note(t0), Some(1));
        for i in 1..=100 {
            assert_eq!(t.note(t0 + Duration::from_millis(i * 100)), None);
        }
        assert_eq!(t.note(t0 + Duration::from_secs(60)), Some(101));
        assert_eq!(t.note(t0 + Duration::from_secs(61)), None);
    }
}
