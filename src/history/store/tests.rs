//! The stores' pure helpers (exact decimal split and join, dburl shown without its password)
//! and the SQLite store's retention checked against the pure model.

use super::*;
use crate::history::retention::{plan, MINUTE_KEEP};

#[test]
fn split_join_exact() {
    for u in [0u128, 1, SCALE - 1, SCALE, SCALE * 7 + 3, 123_456_789_012_345_678_901] {
        let (h, l) = split(u);
        assert!(l < SCALE as i64);
        assert_eq!(join(h, l), u);
    }
    assert_eq!(numbered("a = ? AND b = ?"), "a = $1 AND b = $2");
}

#[test]
fn dburl_password_never_shown() {
    let t = Target::Postgres("postgresql://pool:s3cret@127.0.0.1:5433/hist".into());
    assert_eq!(t.show(), "postgresql://pool@127.0.0.1:5433/hist");
    assert!(!format!("{t:?}").contains("s3cret"));
    let t = Target::Postgres("host=127.0.0.1 port=5 user=u password=s3cret dbname=d".into());
    assert!(!t.show().contains("s3cret"), "{}", t.show());
}

/// The SQLite store's retention gives what the pure model gives, exactly (carries included).
#[test]
fn sqlite_retention_equals_the_model() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = Store::open(&Target::Sqlite(dir.path().join("h.sqlite"))).unwrap();
    const T0: i64 = 1_764_000_000;
    let mut model = Vec::new();
    let mut batch = Batch::default();
    for i in 0..200i64 {
        for w in ["a.1", "a.2"] {
            // 0.9 difficulty plus a few units: carries across 10^12 when summed
            let sums = Sums { acc: 900_000_000_007 + i as u128, acc_n: 3, rej: i as u128, rej_n: 1 };
            batch.workers.push(WorkerRow { ts: T0 + i * MINUTE, user: "a".into(), worker: w.into(), sums });
            model.push(Row { res: MINUTE, ts: T0 + i * MINUTE, key: ("a".to_string(), w.to_string()), sums });
        }
    }
    s.write("me", &batch, &[]).unwrap();
    // Written twice: sums add up.
    s.write("me", &batch, &[]).unwrap();
    let twice: Vec<_> = model.iter().cloned().chain(model.iter().cloned()).collect();
    let p = plan(T0 + MINUTE_KEEP + 2 * HOUR + 100);
    let folded = s.retain("me", p).unwrap();
    assert_eq!(folded, 2 * 120);
    let want = retention::apply(twice, p);
    let got = s
        .query(
            "SELECT res, ts, username, workername, acc_hi, acc_lo, acc_n, rej_hi, rej_lo, rej_n FROM hist_worker \
             ORDER BY res, ts, username, workername",
            &[],
        )
        .unwrap();
    let got: Vec<Row<(String, String)>> = got
        .iter()
        .map(|r| Row {
            res: r[0].int(),
            ts: r[1].int(),
            key: (r[2].text().unwrap().to_string(), r[3].text().unwrap().to_string()),
            sums: sums_of(&r[4..10]),
        })
        .collect();
    let mut want = want;
    want.sort_by(|a, b| (a.res, a.ts, &a.key).cmp(&(b.res, b.ts, &b.key)));
    assert_eq!(got, want);
    // Another instance's rows are not touched.
    s.write("other", &batch, &[]).unwrap();
    s.retain("me", p).unwrap();
    let n = s
        .query(
            "SELECT COUNT(*) FROM hist_worker WHERE instance = ? AND res = ?",
            &[Val::T("other".into()), Val::I(MINUTE)],
        )
        .unwrap();
    assert_eq!(n[0][0], Val::I(400));
}
