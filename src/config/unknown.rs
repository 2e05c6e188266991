//! Unknown keys named with what was probably meant: a misspelled key (`"mindif"`) is ignored,
//! so its consequence (a default taking its place) is explained by naming it.

use super::{BTCD_KEYS, KNOWN_KEYS, PROXY_KEYS, SERVERURL_KEYS};

/// The operator's line for one unknown key (`key` as `Config::unknown_keys` holds it:
/// `name` at the top level, `btcd[0].name` inside an entry).
pub fn unknown_key_note(key: &str) -> String {
    match suggestion(key) {
        Some(s) => format!("unknown key \"{key}\" is ignored (did you mean \"{s}\"?)"),
        None => format!("unknown key \"{key}\" is ignored"),
    }
}

/// The known key closest to `key` (at most two edits away), written as `key` is.
pub fn suggestion(key: &str) -> Option<String> {
    let (prefix, name) = match key.rsplit_once('.') {
        Some((p, n)) => (Some(p), n),
        None => (None, key),
    };
    let known = match prefix.map(|p| p.split('[').next().unwrap_or(p)) {
        None => KNOWN_KEYS,
        Some("btcd") => BTCD_KEYS,
        Some("proxy") => PROXY_KEYS,
        Some("serverurl") => SERVERURL_KEYS,
        Some(_) => return None,
    };
    let lower = name.to_ascii_lowercase();
    let (best, d) = known.iter().map(|k| (*k, edits(&lower, k))).min_by_key(|(_, d)| *d)?;
    (d <= 2 && d < name.len()).then(|| match prefix {
        Some(p) => format!("{p}.{best}"),
        None => best.to_string(),
    })
}

/// Levenshtein distance (keys are short ASCII names).
fn edits(a: &str, b: &str) -> usize {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.iter().enumerate() {
        let mut diag = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let up = row[j + 1];
            row[j + 1] = (diag + usize::from(ca != cb)).min(row[j] + 1).min(up + 1);
            diag = up;
        }
    }
    row[b.len()]
}

/// The notes for all unknown keys, joined for one error or warning line.
pub fn notes(keys: &[String]) -> String {
    keys.iter().map(|k| unknown_key_note(k)).collect::<Vec<_>>().join("; ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn misspelled_keys_get_the_key_meant() {
        assert_eq!(suggestion("mindif").as_deref(), Some("mindiff"));
        assert_eq!(suggestion("btcadress").as_deref(), Some("btcaddress"));
        assert_eq!(suggestion("StartDiff").as_deref(), Some("startdiff"));
        assert_eq!(suggestion("btcd[0].notfy").as_deref(), Some("btcd[0].notify"));
        assert_eq!(suggestion("proxy[1].password"), None);
        assert_eq!(suggestion("frobnicate"), None);
        assert_eq!(unknown_key_note("mindif"), "unknown key \"mindif\" is ignored (did you mean \"mindiff\"?)");
        assert_eq!(unknown_key_note("zz"), "unknown key \"zz\" is ignored");
    }
}
