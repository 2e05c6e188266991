//! Miner-supplied text as the operator log may show it: one token that cannot end a line or
//! start another. A username, worker, user agent, method or any echoed field is written through
//! [`Esc`], which escapes CR, LF, the Unicode line and paragraph separators, every control
//! character (C0, DEL, C1), the bidirectional overrides, backslash and the double quote, and cuts
//! what is left at [`MAX_CHARS`] characters. Pure and allocation-free (a `Display`).

use std::fmt::{self, Write as _};

/// Characters of a miner-supplied string shown at most (the rest is replaced by `...`).
pub const MAX_CHARS: usize = 256;

/// `Display` of a miner-supplied string, escaped for the operator log.
#[derive(Clone, Copy)]
pub struct Esc<'a>(pub &'a str);

/// Whether `c` must not reach the log raw.
fn must_escape(c: char) -> bool {
    c.is_control()
        || matches!(c, '\\' | '"' | '\u{2028}' | '\u{2029}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

impl fmt::Display for Esc<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = self.0;
        // Runs of safe characters are written as slices; only what needs it is escaped.
        let mut start = 0;
        for (n, (i, c)) in s.char_indices().enumerate() {
            if n == MAX_CHARS {
                f.write_str(&s[start..i])?;
                return f.write_str("...");
            }
            if !must_escape(c) {
                continue;
            }
            f.write_str(&s[start..i])?;
            start = i + c.len_utf8();
            match c {
                '\n' => f.write_str("\\n")?,
                '\r' => f.write_str("\\r")?,
                '\t' => f.write_str("\\t")?,
                '\\' => f.write_str("\\\\")?,
                '"' => f.write_str("\\\"")?,
                c => write!(f, "\\u{{{:04x}}}", c as u32)?,
            }
        }
        f.write_str(&s[start..])
    }
}

impl fmt::Debug for Esc<'_> {
    /// Quoted, for places that showed a name with `{:?}`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_char('"')?;
        fmt::Display::fmt(self, f)?;
        f.write_char('"')
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nothing_that_breaks_a_line_passes_raw() {
        for (raw, want) in [
            ("alice.rig1", "alice.rig1"),
            ("a\nb", "a\\nb"),
            ("a\r\nINFO forged", "a\\r\\nINFO forged"),
            ("x\u{2028}y\u{2029}z\u{85}", "x\\u{2028}y\\u{2029}z\\u{0085}"),
            ("bell\u{7}esc\u{1b}[31mdel\u{7f}", "bell\\u{0007}esc\\u{001b}[31mdel\\u{007f}"),
            ("back\\slash \"q\"", "back\\\\slash \\\"q\\\""),
            ("rtl\u{202e}txt\u{2066}", "rtl\\u{202e}txt\\u{2066}"),
            ("tab\there", "tab\\there"),
            ("ünïcödé ⛏", "ünïcödé ⛏"),
            ("", ""),
        ] {
            assert_eq!(Esc(raw).to_string(), want, "{raw:?}");
        }
        assert_eq!(format!("{:?}", Esc("a\nb")), "\"a\\nb\"");
    }

    #[test]
    fn long_names_are_cut() {
        let long = "é".repeat(MAX_CHARS + 10);
        let shown = Esc(&long).to_string();
        assert_eq!(shown, format!("{}...", "é".repeat(MAX_CHARS)));
        assert_eq!(Esc(&"a".repeat(MAX_CHARS)).to_string(), "a".repeat(MAX_CHARS));
    }

    /// Every char of the first planes: an escaped string never holds a line break, a control
    /// character or a separator, so the log line it is written in stays one line.
    #[test]
    fn no_char_breaks_out() {
        let mut s = String::new();
        for c in (0u32..0x3_0000).filter_map(char::from_u32) {
            s.clear();
            s.push('<');
            s.push(c);
            s.push('>');
            let shown = Esc(&s).to_string();
            assert!(
                !shown.chars().any(|c| c.is_control() || c == '\u{2028}' || c == '\u{2029}'),
                "U+{:04X} shown as {shown:?}",
                c as u32
            );
        }
    }
}
