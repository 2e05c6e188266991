//! The found blocks as `blocks.log` tells them, for the operator's view (API, `ckpool status`)
//! and the history store: each block with when it was found and where its fate stands. The log
//! is read by the journal's ledger ([`Ledger::parse`]), the one reader of blocks.log. Pure.

use super::fate::Stage;
use super::journal::{Ledger, State};

/// Most blocks listed (the newest).
const BLOCKS_LISTED: usize = 1000;

/// One found block as blocks.log tells it.
#[derive(Debug, Clone)]
pub struct Block {
    pub height: u64,
    pub hash: String,
    pub workername: String,
    pub username: String,
    pub diff: f64,
    /// When it was found (its first line).
    pub found: u64,
    pub state: State,
    pub recorded_confirmations: u64,
}

/// blocks.log's text → its blocks, newest first (pure).
pub fn parse_blocks(text: &str) -> Vec<Block> {
    let (ledger, _) = Ledger::parse(text);
    let mut out: Vec<Block> = ledger
        .entries()
        .filter_map(|e| {
            Some(Block {
                height: e.meta.height,
                hash: e.meta.hash.clone(),
                workername: e.meta.workername.clone(),
                username: e.meta.username.clone(),
                diff: e.meta.diff,
                found: e.found?,
                state: e.state,
                recorded_confirmations: e.max_confirmations,
            })
        })
        .collect();
    out.sort_by(|a, b| (b.height, b.found, &b.hash).cmp(&(a.height, a.found, &a.hash)));
    out.truncate(BLOCKS_LISTED);
    out
}

/// A block's status word and its confirmations with the chain's tip at `tip` (when known).
pub fn block_fate(b: &Block, tip: Option<u64>) -> (&'static str, u64) {
    let live = |floor: u64| tip.filter(|t| *t >= b.height).map_or(floor, |t| (t - b.height + 1).max(floor));
    match b.state {
        State::Pending => ("pending", 0),
        State::Rejected => ("rejected", 0),
        State::Stale => ("stale", 0),
        State::Fate(Stage::Accepted) => ("accepted", live(0)),
        State::Fate(Stage::Confirmed(n)) => ("confirmed", live(n)),
        State::Fate(Stage::Matured) => ("matured", live(super::fate::MATURITY)),
        State::Fate(Stage::Orphaned) => ("orphaned", 0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_newest_first_with_fates() {
        let text = concat!(
            r#"{"height":7,"hash":"aa","workername":"w.1","username":"w","diff":1.5,"workinfoid":1,"createdate":100,"outcome":"accepted","accepted":true}"#,
            "\n",
            r#"{"height":9,"hash":"bb","workername":"w.2","username":"w","diff":2.0,"workinfoid":2,"createdate":200,"outcome":"accepted","accepted":true}"#,
            "\n",
            r#"{"height":7,"hash":"aa","workername":"w.1","username":"w","diff":1.5,"workinfoid":1,"createdate":300,"outcome":"confirmed","confirmations":1,"accepted":true}"#,
            "\n",
            r#"{"height":9,"hash":"bb","workername":"w.2","username":"w","diff":2.0,"workinfoid":2,"createdate":400,"outcome":"orphaned","by":"cc","accepted":true}"#,
            "\n",
        );
        let b = parse_blocks(text);
        assert_eq!(b.iter().map(|b| b.hash.as_str()).collect::<Vec<_>>(), ["bb", "aa"]);
        assert_eq!((b[1].found, b[1].recorded_confirmations), (100, 1));
        assert_eq!(block_fate(&b[1], Some(10)), ("confirmed", 4));
        assert_eq!(block_fate(&b[1], None), ("confirmed", 1));
        assert_eq!(block_fate(&b[0], Some(10)), ("orphaned", 0));
    }
}
