//! Share-log lines read back: the accepted shares PPLNS's window is rebuilt from at start and
//! `ckpool payout --pplns` audits a coinbase with.

use crate::difficulty::Difficulty;

/// An accepted share as its share-log line records it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Accepted {
    /// `createdate`: Unix seconds and nanoseconds.
    pub at: (u64, u32),
    pub username: String,
    /// The difficulty the share was judged at (its weight).
    pub diff: Difficulty,
}

/// Reads one share-log line: `Some` for an accepted share, `None` for a rejected one or a line
/// that is not a share (a torn last line after a crash).
pub fn parse_accepted(line: &str) -> Option<Accepted> {
    #[derive(serde::Deserialize)]
    struct Line<'a> {
        result: bool,
        #[serde(borrow)]
        diff: &'a serde_json::value::RawValue,
        username: String,
        createdate: &'a str,
    }
    let l: Line<'_> = serde_json::from_str(line).ok()?;
    if !l.result {
        return None;
    }
    let (s, ns) = l.createdate.split_once(',')?;
    Some(Accepted { at: (s.parse().ok()?, ns.parse().ok()?), username: l.username, diff: l.diff.get().parse().ok()? })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepted_shares_are_read_back_exactly() {
        let line = r#"{"workinfoid":1,"clientid":2,"enonce1":"0a","nonce2":"01","nonce":"ff","ntime":"5f","diff":0.00000000003,"sdiff":1.5,"hash":"ab","result":true,"errn":0,"createdate":"1700000000,5","createby":"code","createcode":"parse_submit","workername":"bc1qx.rig","username":"bc1qx","address":"127.0.0.1","agent":"a"}"#;
        let a = parse_accepted(line).unwrap();
        assert_eq!(a, Accepted { at: (1_700_000_000, 5), username: "bc1qx".into(), diff: Difficulty::from_units(30) });
        assert_eq!(parse_accepted(&line.replace("\"result\":true", "\"result\":false")), None);
        assert_eq!(parse_accepted(&line[..line.len() / 2]), None, "a torn line");
        assert_eq!(parse_accepted(&line.replace("1700000000,5", "soon")), None);
    }
}
