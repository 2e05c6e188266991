//! The history database: SQLite (embedded, a file in logdir) or PostgreSQL (`dburl`, shared by
//! several instances). One schema and the same SQL for both (`?` placeholders, numbered for
//! PostgreSQL); every row is tagged with the instance that wrote it.
//!
//! Difficulty sums are exact: a sum of 10^-12 units is stored as whole difficulties (`*_hi`) plus
//! the remaining units (`*_lo`, below 10^12), and additions carry from `lo` into `hi` in SQL, so a
//! 64-bit column holds a pool's sums exactly (up to 9.2·10^18 difficulty per row).

use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

use anyhow::{bail, Context, Result};

use super::agg::{Batch, PoolRow, WorkerRow};
use super::retention::{self, Plan, Row, Sums, HOUR, MINUTE};
pub use super::target::Target;
use crate::config::dburl::DbUrl;
use crate::difficulty::SCALE;

/// A value passed to or read from SQL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Val {
    I(i64),
    T(String),
    Null,
}

impl Val {
    pub fn int(&self) -> i64 {
        match self {
            Val::I(i) => *i,
            _ => 0,
        }
    }
    pub fn text(&self) -> Option<&str> {
        match self {
            Val::T(s) => Some(s),
            _ => None,
        }
    }
}

impl rusqlite::ToSql for Val {
    fn to_sql(&self) -> rusqlite::Result<rusqlite::types::ToSqlOutput<'_>> {
        use rusqlite::types::{ToSqlOutput, ValueRef};
        Ok(match self {
            Val::I(i) => ToSqlOutput::Borrowed(ValueRef::Integer(*i)),
            Val::T(s) => ToSqlOutput::Borrowed(ValueRef::Text(s.as_bytes())),
            Val::Null => ToSqlOutput::Borrowed(ValueRef::Null),
        })
    }
}

impl postgres::types::ToSql for Val {
    fn to_sql(
        &self,
        ty: &postgres::types::Type,
        out: &mut bytes::BytesMut,
    ) -> std::result::Result<postgres::types::IsNull, Box<dyn std::error::Error + Sync + Send>> {
        match self {
            Val::I(i) => i.to_sql(ty, out),
            Val::T(s) => s.to_sql(ty, out),
            Val::Null => Ok(postgres::types::IsNull::Yes),
        }
    }
    fn accepts(ty: &postgres::types::Type) -> bool {
        <i64 as postgres::types::ToSql>::accepts(ty) || <String as postgres::types::ToSql>::accepts(ty)
    }
    postgres::types::to_sql_checked!();
}

/// 10^-12 units as (whole difficulties, remaining units).
pub fn split(units: u128) -> (i64, i64) {
    let hi = (units / SCALE).min(i64::MAX as u128) as i64;
    (hi, (units % SCALE) as i64)
}

/// (whole difficulties, units) back to units.
pub fn join(hi: i64, lo: i64) -> u128 {
    hi.max(0) as u128 * SCALE + lo.max(0) as u128
}

const SCHEMA: &[&str] = &[
    "CREATE TABLE IF NOT EXISTS hist_worker (instance TEXT NOT NULL, res BIGINT NOT NULL, ts BIGINT NOT NULL, \
     username TEXT NOT NULL, workername TEXT NOT NULL, acc_hi BIGINT NOT NULL, acc_lo BIGINT NOT NULL, \
     acc_n BIGINT NOT NULL, rej_hi BIGINT NOT NULL, rej_lo BIGINT NOT NULL, rej_n BIGINT NOT NULL, \
     PRIMARY KEY (instance, res, ts, username, workername))",
    "CREATE INDEX IF NOT EXISTS hist_worker_user ON hist_worker (username, ts)",
    "CREATE TABLE IF NOT EXISTS hist_pool (instance TEXT NOT NULL, res BIGINT NOT NULL, ts BIGINT NOT NULL, \
     acc_hi BIGINT NOT NULL, acc_lo BIGINT NOT NULL, acc_n BIGINT NOT NULL, rej_hi BIGINT NOT NULL, \
     rej_lo BIGINT NOT NULL, rej_n BIGINT NOT NULL, workers BIGINT NOT NULL, netdiff TEXT, \
     PRIMARY KEY (instance, res, ts))",
    "CREATE INDEX IF NOT EXISTS hist_pool_ts ON hist_pool (ts)",
    "CREATE TABLE IF NOT EXISTS hist_blocks (instance TEXT NOT NULL, hash TEXT NOT NULL, height BIGINT NOT NULL, \
     username TEXT NOT NULL, workername TEXT NOT NULL, found BIGINT NOT NULL, status TEXT NOT NULL, \
     confirmations BIGINT NOT NULL, PRIMARY KEY (instance, hash))",
];

/// Adds the sums of `excluded` to the row in place, carrying units into whole difficulties.
const MERGE_SUMS: &str = "acc_hi = T.acc_hi + excluded.acc_hi + (T.acc_lo + excluded.acc_lo) / 1000000000000, \
     acc_lo = (T.acc_lo + excluded.acc_lo) % 1000000000000, acc_n = T.acc_n + excluded.acc_n, \
     rej_hi = T.rej_hi + excluded.rej_hi + (T.rej_lo + excluded.rej_lo) / 1000000000000, \
     rej_lo = (T.rej_lo + excluded.rej_lo) % 1000000000000, rej_n = T.rej_n + excluded.rej_n";

fn upsert_worker_sql() -> String {
    format!(
        "INSERT INTO hist_worker (instance, res, ts, username, workername, acc_hi, acc_lo, acc_n, rej_hi, rej_lo, rej_n) \
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (instance, res, ts, username, workername) DO UPDATE SET {}",
        MERGE_SUMS.replace("T.", "hist_worker.")
    )
}

fn upsert_pool_sql() -> String {
    format!(
        "INSERT INTO hist_pool (instance, res, ts, acc_hi, acc_lo, acc_n, rej_hi, rej_lo, rej_n, workers, netdiff) \
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (instance, res, ts) DO UPDATE SET {}, \
         workers = CASE WHEN excluded.workers > hist_pool.workers THEN excluded.workers ELSE hist_pool.workers END, \
         netdiff = COALESCE(excluded.netdiff, hist_pool.netdiff)",
        MERGE_SUMS.replace("T.", "hist_pool.")
    )
}

/// One found block's row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlockRow {
    pub instance: String,
    pub hash: String,
    pub height: i64,
    pub username: String,
    pub workername: String,
    pub found: i64,
    pub status: String,
    pub confirmations: i64,
}

enum Conn {
    Sqlite(rusqlite::Connection),
    Postgres { client: Box<postgres::Client>, cache: HashMap<String, postgres::Statement> },
}

/// An open history database.
pub struct Store {
    conn: Conn,
    pub target: Target,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Store({})", self.target.show())
    }
}

/// `?` placeholders numbered `$1`, `$2`... for PostgreSQL (none of our SQL has `?` in a literal).
fn numbered(sql: &str) -> String {
    let mut out = String::with_capacity(sql.len() + 16);
    let mut n = 0;
    for c in sql.chars() {
        if c == '?' {
            n += 1;
            out.push('$');
            out.push_str(&n.to_string());
        } else {
            out.push(c);
        }
    }
    out
}

/// SQLite, when run as root, gives its `-wal`/`-shm` files the database file's owner with
/// `fchown`: a system call the units' `SystemCallFilter=@system-service` refuses (the units run
/// the pool as `ckpool`, where SQLite never calls it, but a root-run pool must not be killed for
/// it either). The unix VFS's `fchown` is replaced by one that does nothing, once per process.
fn sqlite_without_fchown() {
    unsafe extern "C" fn no_fchown(_fd: std::ffi::c_int, _uid: u32, _gid: u32) -> std::ffi::c_int {
        0
    }
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        // SAFETY: the default VFS lives for the process; xSetSystemCall is SQLite's documented way
        // to override a system call of the unix VFS, called before any connection exists here;
        // the replacement has fchown's C signature (int, uid_t, gid_t) -> int, passed as SQLite's
        // generic syscall pointer as SQLite's own table does.
        unsafe {
            let vfs = rusqlite::ffi::sqlite3_vfs_find(std::ptr::null());
            if let Some(set) = vfs.as_ref().and_then(|v| v.xSetSystemCall) {
                let f = std::mem::transmute::<
                    unsafe extern "C" fn(std::ffi::c_int, u32, u32) -> std::ffi::c_int,
                    unsafe extern "C" fn(),
                >(no_fchown);
                set(vfs, c"fchown".as_ptr(), Some(f));
            }
        }
    });
}

impl Store {
    /// Opens (and creates) the database, with its tables.
    pub fn open(target: &Target) -> Result<Store> {
        let conn = match target {
            Target::Sqlite(path) => {
                sqlite_without_fchown();
                if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
                }
                let c = rusqlite::Connection::open(path).with_context(|| format!("opening {}", path.display()))?;
                c.busy_timeout(Duration::from_secs(5))?;
                // WAL: the API's reader never blocks the writer; NORMAL sync is durable at each checkpoint.
                c.execute_batch("PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;")
                    .with_context(|| format!("setting up {}", path.display()))?;
                Conn::Sqlite(c)
            }
            Target::Postgres(url) => {
                let url = DbUrl::parse(url).map_err(|why| anyhow::anyhow!("dburl: {why}"))?;
                let mut cfg: postgres::Config =
                    url.rest.parse().context("dburl is not a PostgreSQL connection string")?;
                if cfg.get_connect_timeout().is_none() {
                    cfg.connect_timeout(Duration::from_secs(5));
                }
                cfg.keepalives(true).keepalives_idle(Duration::from_secs(30));
                // No statement may hold the writer (and so the buffer) for long.
                cfg.options("-c statement_timeout=30000");
                // The pool's connections are told apart in pg_stat_activity.
                if cfg.get_application_name().is_none() {
                    cfg.application_name("ckpool-rs");
                }
                let client = super::pgtls::connect(&mut cfg, &url, &target.show())?;
                Conn::Postgres { client: Box::new(client), cache: HashMap::new() }
            }
        };
        let mut s = Store { conn, target: target.clone() };
        s.create_schema().with_context(|| format!("creating the history tables in {}", target.show()))?;
        Ok(s)
    }

    fn create_schema(&mut self) -> Result<()> {
        self.begin()?;
        if let Conn::Postgres { .. } = self.conn {
            // Two instances starting at once must not race on CREATE TABLE.
            self.exec("SELECT pg_advisory_xact_lock(7263012)", &[])?;
        }
        let sqlite = matches!(self.conn, Conn::Sqlite(_));
        for s in SCHEMA {
            // SQLite: tables clustered on their primary key (no rowid, no second copy of the key).
            let s = if sqlite && s.starts_with("CREATE TABLE") { format!("{s} WITHOUT ROWID") } else { s.to_string() };
            self.exec(&s, &[])?;
        }
        self.commit()
    }

    pub fn begin(&mut self) -> Result<()> {
        self.exec("BEGIN", &[]).map(|_| ())
    }

    pub fn commit(&mut self) -> Result<()> {
        self.exec("COMMIT", &[]).map(|_| ())
    }

    fn rollback(&mut self) {
        let _ = self.exec("ROLLBACK", &[]);
    }

    /// Runs a statement; returns the rows it changed.
    pub fn exec(&mut self, sql: &str, params: &[Val]) -> Result<u64> {
        match &mut self.conn {
            Conn::Sqlite(c) => {
                if params.is_empty() && !sql.contains('?') {
                    c.execute_batch(sql).with_context(|| format!("sqlite: {}", first_words(sql)))?;
                    return Ok(0);
                }
                let mut st = c.prepare_cached(sql).with_context(|| format!("sqlite: {}", first_words(sql)))?;
                Ok(st.execute(rusqlite::params_from_iter(params.iter()))? as u64)
            }
            Conn::Postgres { client, cache } => {
                if params.is_empty() {
                    client.batch_execute(sql).with_context(|| format!("postgresql: {}", first_words(sql)))?;
                    return Ok(0);
                }
                let st = pg_prepare(client, cache, sql)?;
                let refs: Vec<&(dyn postgres::types::ToSql + Sync)> = params.iter().map(|p| p as _).collect();
                client.execute(&st, &refs).with_context(|| format!("postgresql: {}", first_words(sql)))
            }
        }
    }

    /// Runs a query; each row as values (integers and texts).
    pub fn query(&mut self, sql: &str, params: &[Val]) -> Result<Vec<Vec<Val>>> {
        match &mut self.conn {
            Conn::Sqlite(c) => {
                let mut st = c.prepare_cached(sql).with_context(|| format!("sqlite: {}", first_words(sql)))?;
                let n = st.column_count();
                let rows = st.query_map(rusqlite::params_from_iter(params.iter()), |r| {
                    (0..n)
                        .map(|i| {
                            Ok(match r.get_ref(i)? {
                                rusqlite::types::ValueRef::Integer(v) => Val::I(v),
                                rusqlite::types::ValueRef::Real(v) => Val::I(v as i64),
                                rusqlite::types::ValueRef::Text(t) => Val::T(String::from_utf8_lossy(t).into_owned()),
                                _ => Val::Null,
                            })
                        })
                        .collect::<rusqlite::Result<Vec<Val>>>()
                })?;
                rows.collect::<rusqlite::Result<Vec<_>>>().with_context(|| format!("sqlite: {}", first_words(sql)))
            }
            Conn::Postgres { client, cache } => {
                let st = pg_prepare(client, cache, sql)?;
                let refs: Vec<&(dyn postgres::types::ToSql + Sync)> = params.iter().map(|p| p as _).collect();
                let rows = client.query(&st, &refs).with_context(|| format!("postgresql: {}", first_words(sql)))?;
                Ok(rows
                    .iter()
                    .map(|r| {
                        (0..r.len())
                            .map(|i| match *r.columns()[i].type_() {
                                postgres::types::Type::INT8 => r.get::<_, Option<i64>>(i).map_or(Val::Null, Val::I),
                                postgres::types::Type::INT4 => {
                                    r.get::<_, Option<i32>>(i).map_or(Val::Null, |v| Val::I(v as i64))
                                }
                                _ => r.get::<_, Option<String>>(i).map_or(Val::Null, Val::T),
                            })
                            .collect()
                    })
                    .collect())
            }
        }
    }

    /// Writes a batch in one transaction (additive: a minute written twice adds up).
    pub fn write(&mut self, instance: &str, b: &Batch, blocks: &[BlockRow]) -> Result<()> {
        self.begin()?;
        let r = self.write_rows(instance, MINUTE, &b.workers, &b.pool, blocks);
        match r {
            Ok(()) => self.commit(),
            Err(e) => {
                self.rollback();
                Err(e)
            }
        }
    }

    fn write_rows(
        &mut self,
        instance: &str,
        res: i64,
        workers: &[WorkerRow],
        pool: &[PoolRow],
        blocks: &[BlockRow],
    ) -> Result<()> {
        let (wsql, psql) = (upsert_worker_sql(), upsert_pool_sql());
        let inst = Val::T(instance.to_string());
        for w in workers {
            let mut p =
                vec![inst.clone(), Val::I(res), Val::I(w.ts), Val::T(w.user.to_string()), Val::T(w.worker.to_string())];
            p.extend(sums_vals(&w.sums));
            self.exec(&wsql, &p)?;
        }
        for r in pool {
            let mut p = vec![inst.clone(), Val::I(res), Val::I(r.ts)];
            p.extend(sums_vals(&r.sums));
            p.push(Val::I(r.workers as i64));
            p.push(r.netdiff.clone().map_or(Val::Null, Val::T));
            self.exec(&psql, &p)?;
        }
        for b in blocks {
            self.exec(
                "INSERT INTO hist_blocks (instance, hash, height, username, workername, found, status, confirmations) \
                 VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (instance, hash) DO UPDATE SET status = excluded.status, \
                 confirmations = excluded.confirmations",
                &[
                    Val::T(b.instance.clone()),
                    Val::T(b.hash.clone()),
                    Val::I(b.height),
                    Val::T(b.username.clone()),
                    Val::T(b.workername.clone()),
                    Val::I(b.found),
                    Val::T(b.status.clone()),
                    Val::I(b.confirmations),
                ],
            )?;
        }
        Ok(())
    }

    /// Applies retention to this instance's rows: folds minute rows older than a week into hour
    /// rows (one hour per transaction, through [`retention::apply`]), deletes rows older than a
    /// year. Returns the minute rows folded.
    pub fn retain(&mut self, instance: &str, plan: Plan) -> Result<u64> {
        let inst = Val::T(instance.to_string());
        let mut folded = 0;
        for table in ["hist_worker", "hist_pool"] {
            let oldest = self.query(
                &format!("SELECT MIN(ts) FROM {table} WHERE instance = ? AND res = ? AND ts < ?"),
                &[inst.clone(), Val::I(MINUTE), Val::I(plan.fold_before)],
            )?;
            let Some(Val::I(oldest)) = oldest.first().and_then(|r| r.first()).cloned() else { continue };
            for h in retention::fold_hours(oldest, plan) {
                folded += self.fold_hour(table, instance, h, plan)?;
            }
        }
        self.begin()?;
        for table in ["hist_worker", "hist_pool"] {
            if let Err(e) = self.exec(
                &format!("DELETE FROM {table} WHERE instance = ? AND ts < ?"),
                &[inst.clone(), Val::I(plan.drop_before)],
            ) {
                self.rollback();
                return Err(e);
            }
        }
        self.commit()?;
        Ok(folded)
    }

    fn fold_hour(&mut self, table: &str, instance: &str, hour: i64, plan: Plan) -> Result<u64> {
        let inst = Val::T(instance.to_string());
        let range = [inst.clone(), Val::I(MINUTE), Val::I(hour), Val::I(hour + HOUR)];
        self.begin()?;
        let r = (|| -> Result<u64> {
            if table == "hist_worker" {
                let rows = self.query(
                    "SELECT ts, username, workername, acc_hi, acc_lo, acc_n, rej_hi, rej_lo, rej_n FROM hist_worker \
                     WHERE instance = ? AND res = ? AND ts >= ? AND ts < ?",
                    &range,
                )?;
                let n = rows.len() as u64;
                let model: Vec<Row<(String, String)>> = rows
                    .iter()
                    .map(|r| Row {
                        res: MINUTE,
                        ts: r[0].int(),
                        key: (r[1].text().unwrap_or("").to_string(), r[2].text().unwrap_or("").to_string()),
                        sums: sums_of(&r[3..9]),
                    })
                    .collect();
                let hours: Vec<WorkerRow> = retention::apply(model, plan)
                    .into_iter()
                    .map(|r| WorkerRow { ts: r.ts, user: r.key.0.into(), worker: r.key.1.into(), sums: r.sums })
                    .collect();
                self.write_rows(instance, HOUR, &hours, &[], &[])?;
                self.exec("DELETE FROM hist_worker WHERE instance = ? AND res = ? AND ts >= ? AND ts < ?", &range)?;
                Ok(n)
            } else {
                let rows = self.query(
                    "SELECT ts, acc_hi, acc_lo, acc_n, rej_hi, rej_lo, rej_n, workers, netdiff FROM hist_pool \
                     WHERE instance = ? AND res = ? AND ts >= ? AND ts < ? ORDER BY ts",
                    &range,
                )?;
                let n = rows.len() as u64;
                let mut hour_row = PoolRow { ts: hour, ..Default::default() };
                for r in &rows {
                    hour_row.sums.add(&sums_of(&r[1..7]));
                    hour_row.workers = hour_row.workers.max(r[7].int().max(0) as u64);
                    if let Some(d) = r[8].text() {
                        hour_row.netdiff = Some(d.to_string()); // the hour's last
                    }
                }
                if n > 0 {
                    self.write_rows(instance, HOUR, &[], &[hour_row], &[])?;
                }
                self.exec("DELETE FROM hist_pool WHERE instance = ? AND res = ? AND ts >= ? AND ts < ?", &range)?;
                Ok(n)
            }
        })();
        match r {
            Ok(n) => {
                self.commit()?;
                Ok(n)
            }
            Err(e) => {
                self.rollback();
                Err(e)
            }
        }
    }

    /// Bytes the database takes (SQLite: the file and its WAL; PostgreSQL: the history tables).
    pub fn size_bytes(&mut self) -> Result<u64> {
        match self.target.clone() {
            Target::Sqlite(p) => {
                let _ = self.exec("PRAGMA wal_checkpoint(TRUNCATE)", &[]);
                let wal = p.with_extension("sqlite-wal");
                let len = |p: &Path| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0);
                Ok(len(&p) + len(&wal))
            }
            Target::Postgres(_) => {
                let r = self.query(
                    "SELECT CAST(pg_total_relation_size('hist_worker') + pg_total_relation_size('hist_pool') \
                     + pg_total_relation_size('hist_blocks') AS BIGINT)",
                    &[],
                )?;
                Ok(r.first().and_then(|r| r.first()).map_or(0, |v| v.int().max(0) as u64))
            }
        }
    }
}

fn pg_prepare(
    client: &mut postgres::Client,
    cache: &mut HashMap<String, postgres::Statement>,
    sql: &str,
) -> Result<postgres::Statement> {
    if let Some(s) = cache.get(sql) {
        return Ok(s.clone());
    }
    let st = client.prepare(&numbered(sql)).with_context(|| format!("postgresql: preparing {}", first_words(sql)))?;
    cache.insert(sql.to_string(), st.clone());
    Ok(st)
}

fn first_words(sql: &str) -> String {
    sql.split_whitespace().take(4).collect::<Vec<_>>().join(" ")
}

fn sums_vals(s: &Sums) -> [Val; 6] {
    let (ah, al) = split(s.acc);
    let (rh, rl) = split(s.rej);
    [Val::I(ah), Val::I(al), Val::I(s.acc_n as i64), Val::I(rh), Val::I(rl), Val::I(s.rej_n as i64)]
}

/// Six values (acc_hi, acc_lo, acc_n, rej_hi, rej_lo, rej_n) → sums.
pub fn sums_of(v: &[Val]) -> Sums {
    Sums {
        acc: join(v[0].int(), v[1].int()),
        acc_n: v[2].int().max(0) as u64,
        rej: join(v[3].int(), v[4].int()),
        rej_n: v[5].int().max(0) as u64,
    }
}

/// Refuses an instance name that could not be a label (empty or over 100 bytes).
pub fn check_instance(name: &str) -> Result<()> {
    if name.is_empty() || name.len() > 100 {
        bail!("instance name {name:?} must be 1 to 100 bytes");
    }
    Ok(())
}

/// Reads an error chain for one log line.
pub fn why(e: &anyhow::Error) -> String {
    let s = format!("{e:#}");
    s.replace('\n', " ")
}

#[cfg(test)]
mod tests;
