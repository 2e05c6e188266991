//! Where the listening sockets come from: inherited from systemd (socket activation,
//! `LISTEN_FDS`), handed over by the running instance (`-H`/`--handover`), or bound here.
//!
//! Every listener the config asks for (`serverurl`, `apiurl`, ...) is looked up by its exact
//! local address among the inherited sockets first (systemd's, then the old instance's); what
//! none of them has is bound. Inherited sockets no config entry names are logged and closed.
//! The rest of the program gets plain std listeners by config key and never knows where they
//! came from.

pub mod dir;
pub mod handover;
pub mod systemd;

use std::net::{SocketAddr, TcpListener};

use anyhow::Context;

/// Where a listener came from (for the operator log).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    Bound,
    Systemd,
    Handover,
}

/// A socket inherited from outside (systemd or the old instance), with its local address.
pub struct Inherited {
    pub addr: SocketAddr,
    pub listener: TcpListener,
}

/// One listener the config asks for: the config key that names it and its address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Wanted {
    pub key: &'static str,
    pub addr: SocketAddr,
}

/// The listeners for this run, by config key.
pub struct Listeners {
    entries: Vec<(Wanted, TcpListener, Origin)>,
}

impl Listeners {
    /// Takes (removes) the listeners of `key`, in config order.
    pub fn take(&mut self, key: &str) -> Vec<TcpListener> {
        let (mine, rest): (Vec<_>, Vec<_>) =
            std::mem::take(&mut self.entries).into_iter().partition(|e| e.0.key == key);
        self.entries = rest;
        mine.into_iter().map(|e| e.1).collect()
    }

    /// Duplicates (dup(2)) of every listener with its key, for the handover server: the old
    /// instance hands these to the new one.
    pub fn duplicates(&self) -> anyhow::Result<Vec<(&'static str, TcpListener)>> {
        self.entries
            .iter()
            .map(|(w, l, _)| Ok((w.key, l.try_clone().with_context(|| format!("{} {}: dup", w.key, w.addr))?)))
            .collect()
    }

    /// How many listeners came from `origin`.
    pub fn count(&self, origin: Origin) -> usize {
        self.entries.iter().filter(|e| e.2 == origin).count()
    }
}

/// Does an inherited socket bound to `have` serve the config's `want`? The same address and
/// port; a configured port 0 ("any port") never matches, so each run binds its own.
pub fn matches(want: SocketAddr, have: SocketAddr) -> bool {
    want.port() != 0 && want == have
}

/// Pairs each wanted address with an inherited socket (systemd's first, then the old
/// instance's) or binds it; logs one line per inherited socket taken, per one left unused, and
/// per address bound instead of taken during a handover. Must run inside the runtime (binding
/// goes through tokio's socket).
pub fn assemble(
    wanted: &[Wanted],
    mut systemd: Vec<Inherited>,
    mut handed: Vec<Inherited>,
    handing_pid: Option<i32>,
) -> anyhow::Result<Listeners> {
    let mut entries = Vec::with_capacity(wanted.len());
    for w in wanted {
        if let Some(i) = systemd.iter().position(|s| matches(w.addr, s.addr)) {
            let s = systemd.swap_remove(i);
            tracing::info!("{} {}: socket inherited from systemd (socket activation)", w.key, w.addr);
            entries.push((*w, s.listener, Origin::Systemd));
        } else if let Some(i) = handed.iter().position(|s| matches(w.addr, s.addr)) {
            let s = handed.swap_remove(i);
            tracing::info!("{} {}: socket handed over by pid {}", w.key, w.addr, handing_pid.unwrap_or(0));
            entries.push((*w, s.listener, Origin::Handover));
        } else {
            if let Some(pid) = handing_pid {
                tracing::info!("{} {}: the old instance (pid {pid}) does not listen there; binding it", w.key, w.addr);
            }
            entries.push((*w, bind(w)?, Origin::Bound));
        }
    }
    for s in systemd {
        tracing::warn!(
            "systemd passed a listening socket on {} that no serverurl/apiurl entry names: closed (align the socket \
             unit's ListenStream= with the config)",
            s.addr
        );
    }
    for s in handed {
        tracing::info!(
            "handover: the old instance's listener on {} is not in this config: not taken (it closes when the old \
             instance exits)",
            s.addr
        );
    }
    Ok(Listeners { entries })
}

/// Binds one address (SO_REUSEADDR, backlog 1024) as the stratum server always has.
fn bind(w: &Wanted) -> anyhow::Result<TcpListener> {
    let l = crate::serve::accept::bind_all(&[w.addr])
        .map_err(|e| anyhow::anyhow!("{}", e.to_string().replacen("serverurl", w.key, 1)))?
        .pop()
        .expect("one address bound");
    l.into_std().with_context(|| format!("{} {}", w.key, w.addr))
}

/// A std listener (inherited or bound) for tokio: non-blocking, registered with the runtime.
pub fn to_tokio(l: TcpListener) -> anyhow::Result<tokio::net::TcpListener> {
    let addr = l.local_addr().ok();
    l.set_nonblocking(true).with_context(|| format!("listener {addr:?}: set non-blocking"))?;
    tokio::net::TcpListener::from_std(l).with_context(|| format!("listener {addr:?}: register with the runtime"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exact_address_matches_and_port_zero_never() {
        let a: SocketAddr = "127.0.0.1:3333".parse().unwrap();
        assert!(matches(a, a));
        assert!(!matches(a, "127.0.0.1:3334".parse().unwrap()));
        assert!(!matches(a, "0.0.0.0:3333".parse().unwrap()));
        let any: SocketAddr = "127.0.0.1:0".parse().unwrap();
        assert!(!matches(any, any));
    }

    /// Inherited sockets are taken by exact address, the rest bound; the unused inherited one is
    /// not handed out under any key.
    #[tokio::test]
    async fn assemble_takes_matching_binds_the_rest() {
        let inherited = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = inherited.local_addr().unwrap();
        let stray = TcpListener::bind("127.0.0.1:0").unwrap();
        let stray_addr = stray.local_addr().unwrap();
        let wanted =
            [Wanted { key: "serverurl", addr }, Wanted { key: "apiurl", addr: "127.0.0.1:0".parse().unwrap() }];
        let mut ls = assemble(
            &wanted,
            vec![],
            vec![Inherited { addr, listener: inherited }, Inherited { addr: stray_addr, listener: stray }],
            Some(1),
        )
        .unwrap();
        assert_eq!(ls.count(Origin::Handover), 1);
        assert_eq!(ls.count(Origin::Bound), 1);
        assert_eq!(ls.duplicates().unwrap().len(), 2);
        let s = ls.take("serverurl");
        assert_eq!(s.len(), 1);
        assert_eq!(s[0].local_addr().unwrap(), addr);
        let a = ls.take("apiurl");
        assert_eq!(a.len(), 1);
        assert_ne!(a[0].local_addr().unwrap().port(), 0);
        assert!(ls.take("serverurl").is_empty());
        // The stray listener was closed: its port refuses now.
        assert!(std::net::TcpStream::connect(stray_addr).is_err());
    }
}
