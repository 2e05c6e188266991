//! Reading the history: series of difficulty sums per time step (pool-wide, or one user's or
//! worker's, over every instance or one), the instances that wrote, the network difficulty over
//! time, found blocks, and the exact hashrate of a difficulty sum.

use anyhow::Result;

use super::retention::Sums;
use super::store::{sums_of, BlockRow, Store, Val};
use crate::difficulty::SCALE;

/// What to read: `[from, to)` unix seconds in buckets of `step` seconds, optionally one user,
/// one worker, one instance.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Query {
    pub from: i64,
    pub to: i64,
    pub step: i64,
    pub user: Option<String>,
    pub worker: Option<String>,
    pub instance: Option<String>,
}

/// Named ranges of the API and dashboard: (name, span, step) in seconds.
pub const RANGES: &[(&str, i64, i64)] = &[
    ("hour", 3600, 60),
    ("day", 86_400, 300),
    ("week", 604_800, 3600),
    ("month", 2_592_000, 21_600),
    ("year", 31_536_000, 86_400),
];

/// Most points one query returns.
pub const MAX_POINTS: i64 = 5000;

impl Query {
    /// The named range ending at `now`: buckets aligned on `step`, the last one holding `now`.
    pub fn range(name: &str, now: i64) -> Option<Query> {
        let &(_, span, step) = RANGES.iter().find(|r| r.0 == name)?;
        let to = (now.div_euclid(step) + 1) * step;
        Some(Query { from: to - span, to, step, ..Default::default() })
    }

    fn filters(&self, sql: &mut String, params: &mut Vec<Val>, per_worker: bool) {
        if per_worker {
            if let Some(u) = &self.user {
                sql.push_str(" AND username = ?");
                params.push(Val::T(u.clone()));
            }
            if let Some(w) = &self.worker {
                sql.push_str(" AND workername = ?");
                params.push(Val::T(w.clone()));
            }
        }
        if let Some(i) = &self.instance {
            sql.push_str(" AND instance = ?");
            params.push(Val::T(i.clone()));
        }
    }
}

const SUMS: &str = "CAST(SUM(acc_hi) AS BIGINT), CAST(SUM(acc_lo) AS BIGINT), CAST(SUM(acc_n) AS BIGINT), \
                    CAST(SUM(rej_hi) AS BIGINT), CAST(SUM(rej_lo) AS BIGINT), CAST(SUM(rej_n) AS BIGINT)";

/// Sums per bucket (bucket start, sums), oldest first; buckets without rows are left out.
/// Pool-wide (no user or worker) reads the pool rows, else the worker rows.
pub fn series(store: &mut Store, q: &Query) -> Result<Vec<(i64, Sums)>> {
    let step = q.step.max(60);
    let per_worker = q.user.is_some() || q.worker.is_some();
    let table = if per_worker { "hist_worker" } else { "hist_pool" };
    let mut sql = format!("SELECT (ts / ?) * ? AS b, {SUMS} FROM {table} WHERE ts >= ? AND ts < ?");
    let mut params = vec![Val::I(step), Val::I(step), Val::I(q.from), Val::I(q.to)];
    q.filters(&mut sql, &mut params, per_worker);
    sql.push_str(" GROUP BY b ORDER BY b");
    Ok(store.query(&sql, &params)?.iter().map(|r| (r[0].int(), sums_of(&r[1..7]))).collect())
}

/// Sums over `[from, to)` of one user (every worker, every instance unless one is named).
pub fn total(store: &mut Store, q: &Query) -> Result<Sums> {
    let per_worker = q.user.is_some() || q.worker.is_some();
    let table = if per_worker { "hist_worker" } else { "hist_pool" };
    let mut sql = format!("SELECT {SUMS} FROM {table} WHERE ts >= ? AND ts < ?");
    let mut params = vec![Val::I(q.from), Val::I(q.to)];
    q.filters(&mut sql, &mut params, per_worker);
    let rows = store.query(&sql, &params)?;
    Ok(rows.first().map(|r| sums_of(&r[0..6])).unwrap_or_default())
}

/// Instances with pool rows in `[from, to)`, by name.
pub fn instances(store: &mut Store, from: i64, to: i64) -> Result<Vec<String>> {
    let rows = store.query(
        "SELECT DISTINCT instance FROM hist_pool WHERE ts >= ? AND ts < ? ORDER BY instance",
        &[Val::I(from), Val::I(to)],
    )?;
    Ok(rows.iter().filter_map(|r| r[0].text().map(str::to_string)).collect())
}

/// The network difficulty per bucket (the last one recorded in it), exact decimal text.
pub fn network(store: &mut Store, q: &Query) -> Result<Vec<(i64, String)>> {
    let step = q.step.max(60);
    let mut sql = "SELECT ts, netdiff FROM hist_pool WHERE ts >= ? AND ts < ? AND netdiff IS NOT NULL".to_string();
    let mut params = vec![Val::I(q.from), Val::I(q.to)];
    q.filters(&mut sql, &mut params, false);
    sql.push_str(" ORDER BY ts");
    let mut out: Vec<(i64, String)> = Vec::new();
    for r in store.query(&sql, &params)? {
        let (b, d) = (r[0].int().div_euclid(step) * step, r[1].text().unwrap_or("").to_string());
        match out.last_mut() {
            Some(last) if last.0 == b => last.1 = d,
            _ => out.push((b, d)),
        }
    }
    Ok(out)
}

/// Found blocks in `[from, to)` of every instance (or one), newest first, at most 1,000.
pub fn blocks(store: &mut Store, q: &Query) -> Result<Vec<BlockRow>> {
    let mut sql = "SELECT instance, hash, height, username, workername, found, status, confirmations FROM hist_blocks \
                   WHERE found >= ? AND found < ?"
        .to_string();
    let mut params = vec![Val::I(q.from), Val::I(q.to)];
    q.filters(&mut sql, &mut params, false);
    sql.push_str(" ORDER BY found DESC, height DESC LIMIT 1000");
    Ok(store
        .query(&sql, &params)?
        .into_iter()
        .map(|r| BlockRow {
            instance: r[0].text().unwrap_or("").into(),
            hash: r[1].text().unwrap_or("").into(),
            height: r[2].int(),
            username: r[3].text().unwrap_or("").into(),
            workername: r[4].text().unwrap_or("").into(),
            found: r[5].int(),
            status: r[6].text().unwrap_or("").into(),
            confirmations: r[7].int(),
        })
        .collect())
}

/// The hashrate a difficulty sum of `units` (10^-12) over `secs` seconds means, exactly:
/// floor(units × 2^32 / (10^12 × secs)) H/s. `None` for zero seconds.
pub fn hashrate_exact(units: u128, secs: u64) -> Option<u128> {
    if secs == 0 {
        return None;
    }
    let num = ruint::aliases::U256::from(units) << 32;
    let den = ruint::aliases::U256::from(SCALE) * ruint::aliases::U256::from(secs);
    u128::try_from(num / den).ok()
}

/// The same for display (H/s as a float).
pub fn hashrate(units: u128, secs: i64) -> f64 {
    if secs <= 0 {
        return 0.0;
    }
    units as f64 / SCALE as f64 * 4_294_967_296.0 / secs as f64
}

/// The API's own connection to the history, on its own thread ("history-reader": PostgreSQL's
/// blocking client must not run inside the API's runtime), opened on first use; after a failure
/// it is not tried again for [`READER_BACKOFF`], so a database that is away costs a request
/// little, and a request waits at most [`READER_WAIT`].
pub struct Reader {
    pub target: super::Target,
    pub instance: String,
    tx: std::sync::Mutex<std::sync::mpsc::SyncSender<Job>>,
}

type Job = Box<dyn FnOnce(&mut ReaderState) + Send>;

struct ReaderState {
    target: super::Target,
    store: Option<Store>,
    failed: Option<std::time::Instant>,
}

pub const READER_BACKOFF: std::time::Duration = std::time::Duration::from_secs(5);
pub const READER_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

impl std::fmt::Debug for Reader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Reader({})", self.target.show())
    }
}

impl Reader {
    pub fn new(target: super::Target, instance: String) -> Reader {
        let (tx, rx) = std::sync::mpsc::sync_channel::<Job>(16);
        let mut st = ReaderState { target: target.clone(), store: None, failed: None };
        let spawned = std::thread::Builder::new().name("history-reader".into()).spawn(move || {
            while let Ok(job) = rx.recv() {
                job(&mut st);
            }
        });
        if let Err(e) = spawned {
            tracing::error!("history: cannot start its reader thread: {e}");
        }
        Reader { target, instance, tx: std::sync::Mutex::new(tx) }
    }

    /// Runs `f` on the reader's connection (opening it if needed); an error drops the connection.
    pub fn with<T: Send + 'static>(&self, f: impl FnOnce(&mut Store) -> Result<T> + Send + 'static) -> Result<T> {
        let (rtx, rrx) = std::sync::mpsc::sync_channel(1);
        let job: Job = Box::new(move |st: &mut ReaderState| {
            let _ = rtx.send(run(st, f));
        });
        self.tx
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .try_send(job)
            .map_err(|_| anyhow::anyhow!("the history reader is busy"))?;
        rrx.recv_timeout(READER_WAIT)
            .map_err(|_| anyhow::anyhow!("no answer from {} within {READER_WAIT:?}", self.target.show()))?
    }
}

fn run<T>(st: &mut ReaderState, f: impl FnOnce(&mut Store) -> Result<T>) -> Result<T> {
    if st.store.is_none() {
        if let Some(t) = st.failed.filter(|t| t.elapsed() < READER_BACKOFF) {
            anyhow::bail!("{} unreachable (tried {} s ago)", st.target.show(), t.elapsed().as_secs());
        }
        match Store::open(&st.target) {
            Ok(s) => st.store = Some(s),
            Err(e) => {
                st.failed = Some(std::time::Instant::now());
                return Err(e);
            }
        }
    }
    let r = f(st.store.as_mut().expect("opened"));
    if r.is_err() {
        st.store = None;
        st.failed = Some(std::time::Instant::now());
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exact_hashrate() {
        // One difficulty-1 share per second is 2^32 H/s.
        assert_eq!(hashrate_exact(SCALE * 600, 600), Some(4_294_967_296));
        // 0.001 difficulty × 7 shares over 90 s: floor(7e9 × 2^32 / (1e12 × 90)) = floor(334053.0...)
        assert_eq!(hashrate_exact(7_000_000_000, 90), Some(7_000_000_000u128 * 4_294_967_296 / (SCALE * 90)));
        assert_eq!(hashrate_exact(1, 0), None);
        assert_eq!(hashrate(SCALE * 60, 60), 4_294_967_296.0);
    }

    #[test]
    fn ranges_align_on_their_step() {
        let q = Query::range("day", 1_764_000_123).unwrap();
        assert_eq!((q.step, q.to % 300, q.to - q.from), (300, 0, 86_400));
        assert!(q.from <= 1_764_000_123 - 86_400 + 300 && q.to > 1_764_000_123);
        assert!(Query::range("century", 0).is_none());
        assert!(RANGES.iter().all(|r| r.1 / r.2 <= MAX_POINTS));
    }
}
