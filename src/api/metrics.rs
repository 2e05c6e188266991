//! `GET /metrics`: the pool's figures in the OpenMetrics text format (prometheus-client's
//! encoder), read at each scrape from what the pool keeps anyway: the sessions' lock-free
//! counters, the statistics view, blocks.log's counts, the RPC client's per-node counts, the
//! Job Declaration server's counts and the proxy's upstream counters. Label sets are bounded: reject reasons are a fixed list, nodes and
//! upstreams come from the config, and per-user series stop at [`USER_SERIES_CAP`] users.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::exemplar::Exemplar;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::{Registry, Unit};

use super::Api;

/// Users with their own hashrate series (the first this many, in name order).
pub const USER_SERIES_CAP: usize = 100;

/// Latency bucket bounds, seconds.
const BOUNDS: [f64; 14] = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];

/// A latency histogram with fixed buckets, updated lock-free.
#[derive(Debug, Default)]
pub struct Histogram {
    buckets: [AtomicU64; BOUNDS.len()],
    count: AtomicU64,
    sum_ns: AtomicU64,
}

impl Histogram {
    pub fn observe(&self, d: Duration) {
        let s = d.as_secs_f64();
        if let Some(i) = BOUNDS.iter().position(|b| s <= *b) {
            self.buckets[i].fetch_add(1, Ordering::Relaxed);
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        self.sum_ns.fetch_add(d.as_nanos().min(u64::MAX as u128) as u64, Ordering::Relaxed);
    }

    pub fn count(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }

    fn encode(&self, mut m: MetricEncoder) -> std::fmt::Result {
        // Per-bucket counts: the encoder writes them cumulated.
        let mut buckets: Vec<(f64, u64)> =
            BOUNDS.iter().zip(&self.buckets).map(|(b, n)| (*b, n.load(Ordering::Relaxed))).collect();
        let count = self.count();
        let finite: u64 = buckets.iter().map(|b| b.1).sum();
        buckets.push((f64::INFINITY, count.saturating_sub(finite)));
        let sum = self.sum_ns.load(Ordering::Relaxed) as f64 / 1e9;
        m.encode_histogram::<NoLabelSet>(sum, count, &buckets, None)
    }
}

/// The scrape-time collector over the API's sources.
#[derive(Debug)]
struct Scrape(std::sync::Arc<Api>);

fn counter(m: &mut MetricEncoder, v: u64) -> std::fmt::Result {
    m.encode_counter::<NoLabelSet, u64, u64>(&v, None::<&Exemplar<NoLabelSet, u64>>)
}

fn counter_f(m: &mut MetricEncoder, v: f64) -> std::fmt::Result {
    m.encode_counter::<NoLabelSet, f64, f64>(&v, None::<&Exemplar<NoLabelSet, f64>>)
}

impl Collector for Scrape {
    fn encode(&self, mut enc: DescriptorEncoder) -> std::fmt::Result {
        let api = &*self.0;
        let c = &api.src.ctx.counters;
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let view = api.src.view.borrow().clone();

        let mut m =
            enc.encode_descriptor("ckpool_shares", "Shares judged since start, by result", None, MetricType::Counter)?;
        counter(&mut m.encode_family(&[("result", "accepted")])?, load(&c.accepted))?;
        counter(&mut m.encode_family(&[("result", "rejected")])?, load(&c.rejected))?;
        let mut m = enc.encode_descriptor(
            "ckpool_shares_rejected",
            "Rejected shares since start, by reason",
            None,
            MetricType::Counter,
        )?;
        for (kind, n) in c.rejected_by() {
            counter(&mut m.encode_family(&[("reason", kind.label())])?, n)?;
        }
        let mut m = enc.encode_descriptor(
            "ckpool_accepted_difficulty",
            "Sum of the difficulties accepted shares were judged at, since start (wraps at 2^64 units of 1e-12)",
            None,
            MetricType::Counter,
        )?;
        counter_f(&mut m, load(&c.accepted_diff_units) as f64 / 1e12)?;
        let mut m =
            enc.encode_descriptor("ckpool_connections", "Miner connections open now", None, MetricType::Gauge)?;
        m.encode_gauge(&load(&c.connections))?;
        let mut m = enc.encode_descriptor(
            "ckpool_connections_opened",
            "Miner connections accepted since start",
            None,
            MetricType::Counter,
        )?;
        counter(&mut m, load(&c.sessions_total))?;
        // What the guard refused and dropped (serve::guard, docs/security.md).
        let g = &api.src.ctx.guard;
        let mut m = enc.encode_descriptor(
            "ckpool_connections_refused",
            "Connections refused before their session, by reason (a banned address, maxclients_per_address)",
            None,
            MetricType::Counter,
        )?;
        counter(&mut m.encode_family(&[("reason", "banned")])?, load(&g.counts.refused_banned))?;
        counter(&mut m.encode_family(&[("reason", "per_address")])?, load(&g.counts.refused_per_address))?;
        let mut m = enc.encode_descriptor(
            "ckpool_connections_dropped",
            "Connections the pool closed, by reason (dropidle, not reading, banned for invalid shares)",
            None,
            MetricType::Counter,
        )?;
        counter(&mut m.encode_family(&[("reason", "idle")])?, load(&g.counts.dropped_idle))?;
        counter(&mut m.encode_family(&[("reason", "slow_reader")])?, load(&g.counts.dropped_slow))?;
        counter(&mut m.encode_family(&[("reason", "banned")])?, load(&g.counts.bans))?;
        let mut m = enc.encode_descriptor(
            "ckpool_names_refused",
            "Authorizations (SV1) and channels (SV2) refused past the names one connection may use",
            None,
            MetricType::Counter,
        )?;
        counter(&mut m, load(&g.counts.names_refused))?;
        let mut m =
            enc.encode_descriptor("ckpool_banned_addresses", "Addresses banned now", None, MetricType::Gauge)?;
        m.encode_gauge(&(g.banned_now() as u64))?;
        // The statistics (ckpool's decaying averages), as of the last statistics write.
        for (name, help, v) in [
            ("ckpool_users", "Users with a live connection", view.users as u64),
            ("ckpool_workers", "Live worker connections", view.workers as u64),
            ("ckpool_workers_idle", "Live workers without a share for a minute", view.idle as u64),
        ] {
            let mut m = enc.encode_descriptor(name, help, None, MetricType::Gauge)?;
            m.encode_gauge(&v)?;
        }
        let unit = Unit::Other("hashes_per_second".into());
        let mut m = enc.encode_descriptor(
            "ckpool_hashrate",
            "Pool hashrate, ckpool's decaying average over the window",
            Some(&unit),
            MetricType::Gauge,
        )?;
        for (i, w) in ["1m", "5m", "15m", "1h", "6h", "1d", "7d"].iter().enumerate() {
            m.encode_family(&[("window", *w)])?.encode_gauge(&view.hashrate[i])?;
        }
        let mut m = enc.encode_descriptor(
            "ckpool_best_share_difficulty",
            "Highest difficulty an accepted share reached (statistics total)",
            None,
            MetricType::Gauge,
        )?;
        m.encode_gauge(&view.best.as_f64())?;
        let mut m = enc.encode_descriptor(
            "ckpool_blocks",
            "Found blocks by the stages they reached (blocks.log, kept across restarts)",
            None,
            MetricType::Counter,
        )?;
        let b = view.blocks;
        for (stage, n) in [
            ("found", b.found),
            ("accepted", b.accepted),
            ("rejected", b.rejected),
            ("stale", b.stale),
            ("confirmed", b.confirmed),
            ("orphaned", b.orphaned),
            ("matured", b.matured),
        ] {
            counter(&mut m.encode_family(&[("stage", stage)])?, n)?;
        }
        if !view.user_list.is_empty() {
            let mut m = enc.encode_descriptor(
                "ckpool_user_hashrate",
                "A user's 1-minute hashrate (the first 100 users by name)",
                Some(&unit),
                MetricType::Gauge,
            )?;
            for u in view.user_list.iter().take(USER_SERIES_CAP) {
                m.encode_family(&[("user", u.name.as_str())])?.encode_gauge(&u.hashrate[0])?;
            }
        }

        // The work being served.
        let work = api.src.ctx.work.borrow().clone();
        if let Some(w) = work {
            let mut m = enc.encode_descriptor(
                "ckpool_network_difficulty",
                "Network difficulty of the current job",
                None,
                MetricType::Gauge,
            )?;
            m.encode_gauge(&w.network_diff.as_f64())?;
            let mut m =
                enc.encode_descriptor("ckpool_height", "Height of the block being mined", None, MetricType::Gauge)?;
            m.encode_gauge(&(w.job.height as u64))?;
        }
        let secs = Unit::Seconds;
        let m = enc.encode_descriptor(
            "ckpool_template_latency",
            "New block announced (ZMQ message or poll) to its work published to sessions",
            Some(&secs),
            MetricType::Histogram,
        )?;
        api.latency.template.encode(m)?;
        let mut m = enc.encode_descriptor(
            "ckpool_notify_latency",
            "New block announced to the first and the last miner's notify queued (per block)",
            Some(&secs),
            MetricType::Histogram,
        )?;
        api.latency.first.encode(m.encode_family(&[("miner", "first")])?)?;
        api.latency.last.encode(m.encode_family(&[("miner", "last")])?)?;
        let bytes = Unit::Bytes;
        let mut m = enc.encode_descriptor(
            "ckpool_sharelog_backlog",
            "Share log bytes queued and not yet written",
            Some(&bytes),
            MetricType::Gauge,
        )?;
        m.encode_gauge(&(api.src.ctx.shares.backlog_bytes() as u64))?;

        if let Some(rpc) = &api.src.rpc {
            let nodes = rpc.node_counts();
            let mut m =
                enc.encode_descriptor("ckpool_rpc_calls", "bitcoind RPC calls, by node", None, MetricType::Counter)?;
            for (i, (label, calls, _)) in nodes.iter().enumerate() {
                let idx = i.to_string();
                counter(&mut m.encode_family(&[("node", idx.as_str()), ("url", label.as_str())])?, *calls)?;
            }
            let mut m = enc.encode_descriptor(
                "ckpool_rpc_errors",
                "bitcoind RPC calls that failed (unreachable, timeout, HTTP or node error), by node",
                None,
                MetricType::Counter,
            )?;
            for (i, (label, _, errors)) in nodes.iter().enumerate() {
                let idx = i.to_string();
                counter(&mut m.encode_family(&[("node", idx.as_str()), ("url", label.as_str())])?, *errors)?;
            }
        }
        if let Some(j) = &api.src.jds {
            let mut m = enc.encode_descriptor(
                "ckpool_jds_declarations",
                "Job declarations (sv2jdurl) since start, by result",
                None,
                MetricType::Counter,
            )?;
            counter(&mut m.encode_family(&[("result", "accepted")])?, load(&j.accepted))?;
            counter(&mut m.encode_family(&[("result", "refused")])?, load(&j.refused))?;
            let mut m = enc.encode_descriptor(
                "ckpool_jds_refused",
                "Job declarations refused since start, by the SV2 error code the client got",
                None,
                MetricType::Counter,
            )?;
            for (code, n) in j.refused_by() {
                counter(&mut m.encode_family(&[("code", code)])?, n)?;
            }
            let mut m = enc.encode_descriptor(
                "ckpool_jds_connections",
                "Job Declaration connections open now",
                None,
                MetricType::Gauge,
            )?;
            m.encode_gauge(&load(&j.connections))?;
        }
        if let Some(up) = &api.src.upstream {
            let u = &up.counters;
            let connected = load(&u.connected);
            let mut m = enc.encode_descriptor(
                "ckpool_upstream_up",
                "1 when the proxy is connected and authorized to an upstream pool",
                None,
                MetricType::Gauge,
            )?;
            m.encode_gauge(&((connected > 0) as u64))?;
            let mut m = enc.encode_descriptor(
                "ckpool_upstream_connected",
                "1 for the proxy entry in use, by entry",
                None,
                MetricType::Gauge,
            )?;
            for (i, url) in up.urls.iter().enumerate() {
                let idx = i.to_string();
                m.encode_family(&[("upstream", idx.as_str()), ("url", url.as_str())])?
                    .encode_gauge(&((connected == i as u64 + 1) as u64))?;
            }
            let mut m = enc.encode_descriptor(
                "ckpool_upstream_failovers",
                "Switches from one upstream entry to another",
                None,
                MetricType::Counter,
            )?;
            counter(&mut m, load(&u.failovers))?;
            let mut m = enc.encode_descriptor(
                "ckpool_upstream_shares",
                "Shares forwarded upstream and the upstream's verdicts",
                None,
                MetricType::Counter,
            )?;
            for (what, a) in [("forwarded", &u.forwarded), ("accepted", &u.accepted), ("rejected", &u.rejected)] {
                counter(&mut m.encode_family(&[("result", what)])?, load(a))?;
            }
            // Not forwarded: the upstream task's queue was full, or the upstream did not read.
            let dropped = load(&u.dropped) + load(&c.upstream_dropped);
            counter(&mut m.encode_family(&[("result", "dropped")])?, dropped)?;
        }
        let mut m = enc.encode_descriptor(
            "ckpool_api_requests",
            "Requests to this API, by outcome",
            None,
            MetricType::Counter,
        )?;
        for (what, a) in [("served", &api.served), ("limited", &api.limited)] {
            counter(&mut m.encode_family(&[("outcome", what)])?, load(a))?;
        }
        Ok(())
    }
}

/// The latency histograms the API's watcher fills.
#[derive(Debug, Default)]
pub struct Latency {
    pub template: Histogram,
    pub first: Histogram,
    pub last: Histogram,
}

/// The exposition text.
pub fn render(api: &std::sync::Arc<Api>) -> String {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(Scrape(api.clone())));
    let mut out = String::new();
    prometheus_client::encoding::text::encode(&mut out, &registry).expect("writing to a String");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets_are_cumulative() {
        let h = Histogram::default();
        for ms in [0, 1, 3, 3, 70, 20_000] {
            h.observe(Duration::from_millis(ms));
        }
        let mut reg = Registry::default();
        #[derive(Debug)]
        struct One(Histogram);
        impl Collector for One {
            fn encode(&self, mut enc: DescriptorEncoder) -> std::fmt::Result {
                let m = enc.encode_descriptor("x", "x", Some(&Unit::Seconds), MetricType::Histogram)?;
                self.0.encode(m)
            }
        }
        reg.register_collector(Box::new(One(h)));
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &reg).unwrap();
        assert!(out.contains("x_seconds_bucket{le=\"0.001\"} 2\n"), "{out}");
        assert!(out.contains("x_seconds_bucket{le=\"0.005\"} 4\n"), "{out}");
        assert!(out.contains("x_seconds_bucket{le=\"10.0\"} 5\n"), "{out}");
        assert!(out.contains("x_seconds_bucket{le=\"+Inf\"} 6\n"), "{out}");
        assert!(out.contains("x_seconds_count 6\n"), "{out}");
        assert!(out.ends_with("# EOF\n"), "{out}");
    }
}
