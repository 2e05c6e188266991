//! What keeps anonymous miners from exhausting the pool, for both faces (docs/security.md):
//! banning as NOMP does it (a connection whose shares are mostly invalid is closed and its
//! address refused for a while), a per-address connection limit, ckpool's `dropidle`, the names
//! one connection may use, and the operator log's rate limit (crate::log::ratelimit).
//!
//! The core is pure (time passed in): [`BanScore`] per connection (two integers, counted on the
//! share path without allocating) and [`Addresses`] (connections per address, bans). [`Guard`] is
//! the shell the sessions share through their context: one short mutex taken when a connection
//! opens or closes or an address is banned, never per share. An "address" is an IPv4 address or
//! an IPv6 /64 (one machine's or one subscriber's range).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use crate::config::Limits;
use crate::log::ratelimit::{LogGate, LogKind};

/// Names (distinct authorizations) one SV1 connection may use; a miner authorizes once, a proxy
/// in front of several workers a few times.
pub const NAMES_PER_SV1_CONNECTION: u32 = 16;
/// Addresses kept banned at most (the oldest bans are dropped first past it).
pub const MAX_BANS: usize = 65_536;

/// The limits in the core's units (microseconds); zero turns each off.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    pub dropidle_us: u64,
    pub per_address: u32,
    pub ban_check: u32,
    pub ban_percent: u32,
    pub ban_us: u64,
}

impl Policy {
    pub fn of(l: &Limits) -> Policy {
        Policy {
            dropidle_us: l.dropidle.as_micros() as u64,
            per_address: l.maxclients_per_address,
            ban_check: l.ban_check_shares,
            ban_percent: l.ban_invalid_percent,
            ban_us: l.ban_time.as_micros() as u64,
        }
    }

    fn banning(&self) -> bool {
        self.ban_check > 0 && self.ban_us > 0
    }
}

impl Default for Policy {
    fn default() -> Policy {
        Policy::of(&Limits::default())
    }
}

/// A judged share as banning counts it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Valid,
    Invalid,
    /// Stale after a new block: the miner's work was fine when it began; not counted.
    Stale,
}

impl Outcome {
    /// A verdict's outcome: a stale share is the only reject that is not held against a miner.
    pub fn of(result: &Result<(), crate::share::Reject>) -> Outcome {
        match result {
            Ok(()) => Outcome::Valid,
            Err(crate::share::Reject::Stale) => Outcome::Stale,
            Err(_) => Outcome::Invalid,
        }
    }
}

/// One connection's share counts since its last check (NOMP's `checkThreshold`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BanScore {
    valid: u32,
    invalid: u32,
}

impl BanScore {
    /// Counts a share; true when the connection must be closed and its address banned: once
    /// `ban_check` shares were counted, more than `ban_percent` % of them invalid. Otherwise the
    /// counts start again at each check, so an old bad spell is not held against a miner.
    pub fn count(&mut self, o: Outcome, p: &Policy) -> bool {
        if !p.banning() {
            return false;
        }
        match o {
            Outcome::Valid => self.valid += 1,
            Outcome::Invalid => self.invalid += 1,
            Outcome::Stale => return false,
        }
        let total = self.valid as u64 + self.invalid as u64;
        if total < p.ban_check as u64 {
            return false;
        }
        let bad = self.invalid as u64 * 100 > p.ban_percent as u64 * total;
        *self = BanScore::default();
        bad
    }
}

/// Why a connection was refused before its session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// The address is banned for this many more seconds (rounded up).
    Banned { secs_left: u64 },
    /// The address holds `limit` connections already.
    PerAddress { limit: u32 },
}

impl Refused {
    /// What the miner is told (SV1: the answer to its first request).
    pub fn message(&self) -> String {
        match self {
            Refused::Banned { secs_left } => {
                format!("banned: too many invalid shares from this address; try again in {secs_left} s")
            }
            Refused::PerAddress { limit } => format!("too many connections from this address (limit {limit})"),
        }
    }
}

/// The address as limits see it: IPv4 (a mapped one too) as is, IPv6 cut to its /64.
pub fn address_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let s = v6.segments();
                IpAddr::V6(std::net::Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
            }
        },
    }
}

/// Connections held per address and addresses banned until a time (µs). Pure; bounded by the
/// connections open and [`MAX_BANS`].
#[derive(Debug, Default)]
pub struct Addresses {
    held: HashMap<IpAddr, u32>,
    banned: HashMap<IpAddr, u64>,
}

impl Addresses {
    /// A new connection from `ip` at `now_us`: admitted (and counted) or refused.
    pub fn admit(&mut self, ip: IpAddr, now_us: u64, p: &Policy) -> Result<(), Refused> {
        let ip = address_key(ip);
        if let Some(&until) = self.banned.get(&ip) {
            if now_us < until {
                return Err(Refused::Banned { secs_left: (until - now_us).div_ceil(1_000_000) });
            }
            self.banned.remove(&ip);
        }
        let n = self.held.entry(ip).or_insert(0);
        if p.per_address > 0 && *n >= p.per_address {
            return Err(Refused::PerAddress { limit: p.per_address });
        }
        *n += 1;
        Ok(())
    }

    /// A connection admitted from `ip` closed.
    pub fn release(&mut self, ip: IpAddr) {
        let ip = address_key(ip);
        if let Some(n) = self.held.get_mut(&ip) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                self.held.remove(&ip);
            }
        }
    }

    /// Bans `ip` until `now_us` + the ban time. Past [`MAX_BANS`], expired bans are purged and
    /// then the ones ending soonest make room.
    pub fn ban(&mut self, ip: IpAddr, now_us: u64, p: &Policy) {
        if !p.banning() {
            return;
        }
        if self.banned.len() >= MAX_BANS {
            self.banned.retain(|_, until| *until > now_us);
        }
        if self.banned.len() >= MAX_BANS {
            let mut ends: Vec<u64> = self.banned.values().copied().collect();
            let cut = MAX_BANS / 8;
            ends.select_nth_unstable(cut);
            let limit = ends[cut];
            self.banned.retain(|_, until| *until > limit);
        }
        self.banned.insert(address_key(ip), now_us.saturating_add(p.ban_us));
    }

    /// Addresses banned at `now_us`.
    pub fn banned_at(&self, now_us: u64) -> usize {
        self.banned.values().filter(|u| **u > now_us).count()
    }

    /// Addresses holding a connection.
    pub fn addresses(&self) -> usize {
        self.held.len()
    }
}

/// What the guard counts, for `/metrics`.
#[derive(Debug, Default)]
pub struct GuardCounts {
    /// Connections closed and addresses banned for invalid shares.
    pub bans: AtomicU64,
    /// Connections refused because their address was banned.
    pub refused_banned: AtomicU64,
    /// Connections refused by `maxclients_per_address`.
    pub refused_per_address: AtomicU64,
    /// Connections dropped by `dropidle`.
    pub dropped_idle: AtomicU64,
    /// Connections dropped for not reading what the pool sent.
    pub dropped_slow: AtomicU64,
    /// Authorizations (SV1) and channels (SV2) refused past the names a connection may use.
    pub names_refused: AtomicU64,
}

/// The policy both faces consult (one per front end).
#[derive(Debug)]
pub struct Guard {
    pub policy: Policy,
    /// Repeated per-connection operator lines, rate-limited per kind.
    pub log: LogGate,
    pub counts: GuardCounts,
    origin: Instant,
    addresses: Mutex<Addresses>,
}

impl Default for Guard {
    fn default() -> Guard {
        Guard::new(&Limits::default())
    }
}

impl Guard {
    pub fn new(limits: &Limits) -> Guard {
        Guard {
            policy: Policy::of(limits),
            log: LogGate::default(),
            counts: GuardCounts::default(),
            origin: Instant::now(),
            addresses: Mutex::new(Addresses::default()),
        }
    }

    fn now_us(&self) -> u64 {
        self.origin.elapsed().as_micros() as u64
    }

    fn addresses(&self) -> std::sync::MutexGuard<'_, Addresses> {
        self.addresses.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether a line of `kind` may be written now (else it is counted for the summary).
    pub fn log(&self, kind: LogKind) -> bool {
        self.log.allow(kind)
    }

    /// A new connection from `ip`: its place (given back when dropped), or why it is refused
    /// (counted, and one rate-limited operator line).
    pub fn admit(self: &Arc<Self>, ip: IpAddr, local: &str) -> Result<Admitted, Refused> {
        let now = self.now_us();
        let r = self.addresses().admit(ip, now, &self.policy);
        match r {
            Ok(()) => Ok(Admitted { guard: self.clone(), ip }),
            Err(why) => {
                let counter = match why {
                    Refused::Banned { .. } => &self.counts.refused_banned,
                    Refused::PerAddress { .. } => &self.counts.refused_per_address,
                };
                counter.fetch_add(1, Ordering::Relaxed);
                if self.log(LogKind::Refusal) {
                    tracing::warn!("connection from {ip} on {local} refused: {}", why.message());
                }
                Err(why)
            }
        }
    }

    /// Bans `ip` (its connection is being closed for invalid shares).
    pub fn ban(&self, ip: IpAddr) {
        let now = self.now_us();
        self.addresses().ban(ip, now, &self.policy);
        self.counts.bans.fetch_add(1, Ordering::Relaxed);
    }

    /// Addresses banned now.
    pub fn banned_now(&self) -> usize {
        let now = self.now_us();
        self.addresses().banned_at(now)
    }

    /// The message a banned connection is closed with, for the log.
    pub fn ban_reason(&self) -> String {
        let p = &self.policy;
        format!(
            "banned for {} s: more than {} % of its last {} shares were invalid",
            p.ban_us / 1_000_000,
            p.ban_percent,
            p.ban_check
        )
    }
}

/// A connection's place in the per-address count, given back when dropped.
#[derive(Debug)]
pub struct Admitted {
    guard: Arc<Guard>,
    ip: IpAddr,
}

impl Drop for Admitted {
    fn drop(&mut self) {
        self.guard.addresses().release(self.ip);
    }
}

/// Once a minute until shutdown: one line with what the rate limit suppressed, if anything.
pub async fn summarize(guard: Arc<Guard>, mut shutdown: tokio::sync::watch::Receiver<bool>) {
    let mut tick = tokio::time::interval(std::time::Duration::from_micros(crate::log::ratelimit::WINDOW_US));
    tick.tick().await;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.changed() => break,
        }
        if let Some(line) = guard.log.take_summary() {
            tracing::warn!("{line}");
        }
    }
    if let Some(line) = guard.log.take_summary() {
        tracing::warn!("{line}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: u64 = 1_000_000;

    fn nomp() -> Policy {
        Policy::default()
    }

    #[test]
    fn defaults_are_nomps() {
        let p = nomp();
        assert_eq!((p.ban_check, p.ban_percent, p.ban_us, p.per_address, p.dropidle_us), (500, 50, 600 * S, 0, 0));
    }

    #[test]
    fn banned_after_the_check_when_more_than_half_invalid() {
        let p = nomp();
        let mut s = BanScore::default();
        // 249 valid, 251 invalid: the 500th share decides.
        for i in 0..499 {
            let o = if i % 2 == 0 && i < 498 { Outcome::Valid } else { Outcome::Invalid };
            assert!(!s.count(o, &p), "share {i}");
        }
        assert!(s.count(Outcome::Invalid, &p));
        // Exactly half is not more than half: counts start again, no ban.
        let mut s = BanScore::default();
        for i in 0..499 {
            assert!(!s.count(if i % 2 == 0 { Outcome::Valid } else { Outcome::Invalid }, &p));
        }
        assert!(!s.count(Outcome::Invalid, &p));
        assert_eq!(s, BanScore::default());
    }

    #[test]
    fn stale_shares_do_not_count_and_zero_turns_banning_off() {
        let p = nomp();
        let mut s = BanScore::default();
        for _ in 0..10_000 {
            assert!(!s.count(Outcome::Stale, &p));
        }
        for _ in 0..499 {
            assert!(!s.count(Outcome::Invalid, &p));
        }
        assert!(s.count(Outcome::Invalid, &p));
        for off in [Policy { ban_check: 0, ..p }, Policy { ban_us: 0, ..p }] {
            let mut s = BanScore::default();
            assert!((0..2000).all(|_| !s.count(Outcome::Invalid, &off)));
            let mut a = Addresses::default();
            a.ban("192.0.2.1".parse().unwrap(), 0, &off);
            assert_eq!(a.banned_at(0), 0);
        }
    }

    #[test]
    fn a_banned_address_is_refused_for_the_ban_time() {
        let p = Policy { ban_us: 600 * S, ..nomp() };
        let mut a = Addresses::default();
        let ip: IpAddr = "192.0.2.7".parse().unwrap();
        a.admit(ip, 0, &p).unwrap();
        a.ban(ip, 10 * S, &p);
        a.release(ip);
        assert_eq!(a.admit(ip, 11 * S, &p), Err(Refused::Banned { secs_left: 599 }));
        // Another address is not affected; the mapped IPv6 form of the same one is.
        assert!(a.admit("192.0.2.8".parse().unwrap(), 11 * S, &p).is_ok());
        assert!(a.admit("::ffff:192.0.2.7".parse().unwrap(), 11 * S, &p).is_err());
        assert!(a.admit(ip, 610 * S, &p).is_ok());
        assert_eq!(a.banned_at(610 * S), 0);
    }

    #[test]
    fn per_address_limit_counts_open_connections() {
        let p = Policy { per_address: 2, ..nomp() };
        let mut a = Addresses::default();
        let ip: IpAddr = "2001:db8:1:2:3:4:5:6".parse().unwrap();
        let same64: IpAddr = "2001:db8:1:2:ffff::1".parse().unwrap();
        a.admit(ip, 0, &p).unwrap();
        a.admit(same64, 0, &p).unwrap();
        assert_eq!(a.admit(ip, 0, &p), Err(Refused::PerAddress { limit: 2 }));
        assert!(a.admit("2001:db8:1:3::1".parse().unwrap(), 0, &p).is_ok());
        a.release(ip);
        assert!(a.admit(same64, 0, &p).is_ok());
        // Off (0): any number.
        let off = Policy { per_address: 0, ..p };
        assert!((0..1000).all(|_| a.admit(ip, 0, &off).is_ok()));
        for _ in 0..1002 {
            a.release(ip);
        }
        a.release("2001:db8:1:3::1".parse().unwrap());
        assert_eq!(a.addresses(), 0, "nothing is kept for an address with no connection");
    }

    #[test]
    fn bans_are_bounded() {
        let p = nomp();
        let mut a = Addresses::default();
        for i in 0..(MAX_BANS as u32 + 1000) {
            a.ban(IpAddr::V4(i.into()), i as u64, &p);
        }
        assert!(a.banned.len() <= MAX_BANS);
        // The newest ban is kept.
        let last = IpAddr::V4((MAX_BANS as u32 + 999).into());
        assert!(a.admit(last, 1_000_000, &p).is_err());
    }
}
