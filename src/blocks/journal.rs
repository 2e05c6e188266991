//! `logdir/blocks.log`: one JSON line per event in a found block's life, and the state read back
//! from it at start (pure: text in, state out; the shell reads and appends the file).
//!
//! Every line repeats the block's identity (`height`, `hash`, `workername`, `username`, `diff`,
//! `workinfoid`, `createdate`) and says what happened in `outcome`:
//! `retrying` (no node reachable yet), `accepted`, `rejected`, `stale` (another block took the
//! height first), then `confirmed` (with `confirmations`), `matured` or `orphaned` (with `by`).
//! `accepted` (bool) is kept from the first format: true once a node has the block.
//! The last line of a block is its state: blocks.log is the only record, there is no second
//! state file to disagree with it. Lines of the first format (no `outcome`) read as `accepted`
//! when `accepted` is true, else as still to be submitted.

use std::collections::BTreeMap;

use serde_json::{json, Value};

use super::fate::Stage;
use crate::log::stats::BlockCounts;

/// Who found a block and where.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Meta {
    pub height: u64,
    /// Display order hex.
    pub hash: String,
    pub workername: String,
    pub username: String,
    pub diff: f64,
    pub workinfoid: u64,
}

/// Where a block stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// Found, no node has it and none refused it: submit (again).
    Pending,
    Rejected,
    Stale,
    /// A node has it: followed to its fate.
    Fate(Stage),
}

impl State {
    /// Later stages win; an earlier-stage line after a later one (a manual `submitblock`
    /// answering "accepted" after "confirmed") changes nothing.
    fn rank(self) -> u8 {
        match self {
            State::Pending => 0,
            State::Rejected | State::Stale => 1,
            State::Fate(Stage::Accepted) => 2,
            State::Fate(Stage::Confirmed(_)) => 3,
            State::Fate(Stage::Matured | Stage::Orphaned) => 4,
        }
    }

    fn from_line(v: &Value) -> Option<State> {
        let accepted = v.get("accepted").and_then(Value::as_bool).unwrap_or(false);
        Some(match v.get("outcome").and_then(Value::as_str) {
            None if accepted => State::Fate(Stage::Accepted),
            None | Some("retrying") => State::Pending,
            Some("accepted") => State::Fate(Stage::Accepted),
            Some("rejected") => State::Rejected,
            Some("stale") => State::Stale,
            Some("confirmed") => State::Fate(Stage::Confirmed(v.get("confirmations").and_then(Value::as_u64)?)),
            Some("matured") => State::Fate(Stage::Matured),
            Some("orphaned") => State::Fate(Stage::Orphaned),
            Some(_) => return None,
        })
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    pub meta: Meta,
    pub state: State,
    /// A node has had it at some point.
    pub ever_accepted: bool,
    pub max_confirmations: u64,
    /// `createdate` of its first line: when it was found.
    pub found: Option<u64>,
}

/// Every block blocks.log knows, by hash.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Ledger {
    entries: BTreeMap<String, Entry>,
}

/// One blocks.log line.
pub fn line(meta: &Meta, outcome: &str, accepted: bool, createdate: u64, extra: Value) -> Value {
    let mut v = json!({
        "height": meta.height,
        "hash": meta.hash,
        "workername": meta.workername,
        "username": meta.username,
        "diff": meta.diff,
        "workinfoid": meta.workinfoid,
        "createdate": createdate,
        "outcome": outcome,
        "accepted": accepted,
    });
    if let (Some(obj), Value::Object(more)) = (v.as_object_mut(), extra) {
        obj.extend(more);
    }
    v
}

impl Ledger {
    /// Reads blocks.log's text; returns the ledger and one message per line it could not use.
    pub fn parse(text: &str) -> (Ledger, Vec<String>) {
        let mut l = Ledger::default();
        let mut bad = Vec::new();
        for (n, text) in text.lines().enumerate().filter(|(_, t)| !t.trim().is_empty()) {
            match serde_json::from_str::<Value>(text) {
                Ok(v) => {
                    if !l.apply(&v) {
                        bad.push(format!("line {}: not a block record", n + 1));
                    }
                }
                Err(e) => bad.push(format!("line {}: {e}", n + 1)),
            }
        }
        (l, bad)
    }

    /// Folds one line in; false when it is not a block record.
    pub fn apply(&mut self, v: &Value) -> bool {
        let (Some(hash), Some(height), Some(state)) =
            (v.get("hash").and_then(Value::as_str), v.get("height").and_then(Value::as_u64), State::from_line(v))
        else {
            return false;
        };
        let s = |k: &str| v.get(k).and_then(Value::as_str).unwrap_or("").to_string();
        let meta = Meta {
            height,
            hash: hash.to_string(),
            workername: s("workername"),
            username: s("username"),
            diff: v.get("diff").and_then(Value::as_f64).unwrap_or(0.0),
            workinfoid: v.get("workinfoid").and_then(Value::as_u64).unwrap_or(0),
        };
        let created = v.get("createdate").and_then(Value::as_u64);
        self.set(meta, state);
        if let Some(e) = self.entries.get_mut(hash) {
            e.found = e.found.or(created);
        }
        true
    }

    /// Records `state` for the block (a newer stage replaces an older one, never the reverse).
    pub fn set(&mut self, meta: Meta, state: State) {
        let e = self.entries.entry(meta.hash.clone()).or_insert_with(|| Entry {
            meta: meta.clone(),
            state,
            ever_accepted: false,
            max_confirmations: 0,
            found: None,
        });
        if e.meta.workername.is_empty() && !meta.workername.is_empty() {
            e.meta = meta;
        }
        if let State::Fate(stage) = state {
            e.ever_accepted = true;
            if let Stage::Confirmed(n) = stage {
                e.max_confirmations = e.max_confirmations.max(n);
            }
        }
        let newer = state.rank() > e.state.rank()
            || state.rank() == e.state.rank()
                && !matches!((e.state, state), (State::Fate(Stage::Confirmed(a)), State::Fate(Stage::Confirmed(b))) if b < a);
        if newer {
            e.state = state;
        }
    }

    /// A block hex saved under logdir/blocks (file name `<height>-<hash>.hex`) that blocks.log
    /// may not know: without a line it is still to be submitted.
    pub fn add_saved(&mut self, height: u64, hash: &str) {
        if !self.entries.contains_key(hash) {
            self.set(Meta { height, hash: hash.to_string(), ..Meta::default() }, State::Pending);
        }
    }

    /// Every block, by hash.
    pub fn entries(&self) -> impl Iterator<Item = &Entry> {
        self.entries.values()
    }

    pub fn get(&self, hash: &str) -> Option<&Entry> {
        self.entries.get(hash)
    }

    /// Blocks no node has and none refused: to be submitted (again).
    pub fn pending(&self) -> Vec<Meta> {
        self.entries.values().filter(|e| e.state == State::Pending).map(|e| e.meta.clone()).collect()
    }

    /// Blocks a node took whose fate is not settled.
    pub fn followed(&self) -> Vec<(Meta, Stage)> {
        self.entries
            .values()
            .filter_map(|e| match e.state {
                State::Fate(s) if s.followed() => Some((e.meta.clone(), s)),
                _ => None,
            })
            .collect()
    }

    pub fn counts(&self) -> BlockCounts {
        let mut c = BlockCounts::default();
        for e in self.entries.values() {
            c.found += 1;
            c.accepted += e.ever_accepted as u64;
            c.confirmed += (e.max_confirmations > 0 || e.state == State::Fate(Stage::Matured)) as u64;
            match e.state {
                State::Rejected => c.rejected += 1,
                State::Stale => c.stale += 1,
                State::Fate(Stage::Orphaned) => c.orphaned += 1,
                State::Fate(Stage::Matured) => c.matured += 1,
                _ => {}
            }
        }
        c
    }
}

/// `<height>-<hash>.hex` → (height, hash).
pub fn parse_hex_name(name: &str) -> Option<(u64, String)> {
    let stem = name.strip_suffix(".hex")?;
    let (h, hash) = stem.split_once('-')?;
    (hash.len() == 64 && hash.bytes().all(|b| b.is_ascii_hexdigit())).then_some(())?;
    Some((h.parse().ok()?, hash.to_ascii_lowercase()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(hash: &str) -> Meta {
        Meta { height: 7, hash: hash.into(), workername: "w.1".into(), username: "w".into(), diff: 0.5, workinfoid: 9 }
    }

    fn text(lines: &[Value]) -> String {
        lines.iter().map(|l| format!("{l}\n")).collect()
    }

    #[test]
    fn the_last_stage_of_each_block_wins_and_counts_follow() {
        let (a, b, c, d) = (meta("aa"), meta("bb"), meta("cc"), meta("dd"));
        let log = text(&[
            line(&a, "retrying", false, 1, json!({})),
            line(&a, "accepted", true, 2, json!({"answers": []})),
            line(&a, "confirmed", true, 3, json!({"confirmations": 1})),
            line(&b, "retrying", false, 4, json!({})),
            line(&c, "accepted", true, 5, json!({})),
            line(&c, "orphaned", true, 6, json!({"by": "ee"})),
            line(&d, "stale", false, 7, json!({"by": "ee"})),
            // A manual resubmission's "accepted" after "confirmed" changes nothing.
            line(&a, "accepted", true, 8, json!({})),
        ]);
        let (l, bad) = Ledger::parse(&text_with_junk(&log));
        assert_eq!(bad.len(), 1, "{bad:?}");
        assert_eq!(l.get("aa").unwrap().state, State::Fate(Stage::Confirmed(1)));
        assert_eq!(l.pending(), vec![b.clone()]);
        assert_eq!(l.followed(), vec![(a.clone(), Stage::Confirmed(1))]);
        let c = l.counts();
        assert_eq!(
            c,
            BlockCounts { found: 4, accepted: 2, rejected: 0, stale: 1, confirmed: 1, orphaned: 1, matured: 0 }
        );
    }

    fn text_with_junk(s: &str) -> String {
        format!("{s}not json\n\n")
    }

    #[test]
    fn first_format_lines_and_bare_hex_files() {
        let old = r#"{"height":5,"hash":"aa","workername":"x","username":"x","diff":1.0,"workinfoid":1,"createdate":1,"answers":[],"accepted":false}
{"height":6,"hash":"bb","workername":"y","username":"y","diff":1.0,"workinfoid":2,"createdate":2,"answers":[],"accepted":true}
"#;
        let (mut l, bad) = Ledger::parse(old);
        assert!(bad.is_empty());
        assert_eq!(l.get("aa").unwrap().state, State::Pending, "refused once by the old code: try again");
        assert_eq!(l.get("bb").unwrap().state, State::Fate(Stage::Accepted));
        l.add_saved(6, "bb");
        l.add_saved(8, "cc");
        assert_eq!(l.get("bb").unwrap().state, State::Fate(Stage::Accepted));
        let cc = l.get("cc").unwrap();
        assert_eq!((cc.state, cc.meta.height, cc.meta.workername.as_str()), (State::Pending, 8, ""));
        // The finder's name arrives with a later line.
        l.set(Meta { height: 8, ..meta("cc") }, State::Fate(Stage::Accepted));
        assert_eq!(l.get("cc").unwrap().meta.workername, "w.1");
    }

    #[test]
    fn stages_only_move_forward_except_a_refused_block_a_node_later_takes() {
        let mut l = Ledger::default();
        let m = meta("aa");
        l.set(m.clone(), State::Rejected);
        l.set(m.clone(), State::Pending);
        assert_eq!(l.get("aa").unwrap().state, State::Rejected, "a refusal is not undone by a retry line");
        l.set(m.clone(), State::Fate(Stage::Accepted));
        assert_eq!(l.get("aa").unwrap().state, State::Fate(Stage::Accepted), "taken by hand after a refusal");
        l.set(m.clone(), State::Fate(Stage::Confirmed(6)));
        l.set(m.clone(), State::Fate(Stage::Confirmed(1)));
        assert_eq!(l.get("aa").unwrap().state, State::Fate(Stage::Confirmed(6)));
        l.set(m.clone(), State::Fate(Stage::Orphaned));
        l.set(m.clone(), State::Fate(Stage::Accepted));
        l.set(m, State::Stale);
        assert_eq!(l.get("aa").unwrap().state, State::Fate(Stage::Orphaned));
        assert!(l.followed().is_empty() && l.pending().is_empty());
    }

    #[test]
    fn hex_file_names() {
        let h = "0".repeat(60) + "abCD";
        assert_eq!(parse_hex_name(&format!("00000102-{h}.hex")), Some((102, h.to_ascii_lowercase())));
        assert_eq!(parse_hex_name("00000102-abcd.hex"), None);
        assert_eq!(parse_hex_name(&format!("x-{h}.hex")), None);
        assert_eq!(parse_hex_name(&format!("00000102-{h}.tmp")), None);
    }
}
