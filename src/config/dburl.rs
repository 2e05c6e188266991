//! `dburl`'s TLS parameters, read as libpq reads them. The PostgreSQL client crate knows only
//! `sslmode=disable|prefer|require` and no `sslrootcert`; this takes `sslmode` and `sslrootcert`
//! out of the connection string (URL `postgresql://...?sslmode=verify-full&sslrootcert=/p` or
//! key/value `host=... sslmode=verify-full sslrootcert='/p'`) and hands back the rest untouched,
//! for the client crate to parse. Pure: the history store (`history::pgtls`) makes the
//! connection.

use std::path::PathBuf;

/// libpq's `sslmode` values (the default, as libpq's, is `prefer`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SslMode {
    /// Plain only.
    Disable,
    /// Plain first; TLS if the plain connection is refused.
    Allow,
    /// TLS first; plain if the server offers no TLS or the TLS connection fails.
    #[default]
    Prefer,
    /// TLS only; the certificate is not checked (unless `sslrootcert` is given: then as verify-ca).
    Require,
    /// TLS only; the certificate must chain to `sslrootcert`.
    VerifyCa,
    /// TLS only; the certificate must chain to `sslrootcert` and name the host.
    VerifyFull,
}

/// What every `sslmode` value is called, in libpq's order.
pub const SSLMODES: &str = "disable, allow, prefer, require, verify-ca, verify-full";

impl SslMode {
    pub fn parse(s: &str) -> Option<SslMode> {
        Some(match s {
            "disable" => SslMode::Disable,
            "allow" => SslMode::Allow,
            "prefer" => SslMode::Prefer,
            "require" => SslMode::Require,
            "verify-ca" => SslMode::VerifyCa,
            "verify-full" => SslMode::VerifyFull,
            _ => return None,
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            SslMode::Disable => "disable",
            SslMode::Allow => "allow",
            SslMode::Prefer => "prefer",
            SslMode::Require => "require",
            SslMode::VerifyCa => "verify-ca",
            SslMode::VerifyFull => "verify-full",
        }
    }
}

/// The certificates a server's must chain to (`sslrootcert`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RootCert {
    /// A PEM file of one or more certificates.
    File(PathBuf),
    /// `sslrootcert=system`: the webpki roots built into the binary (Mozilla's).
    System,
}

/// A `dburl` split: the TLS parameters, and the rest for the client crate.
#[derive(Clone, PartialEq, Eq)]
pub struct DbUrl {
    /// The connection string without `sslmode` and `sslrootcert` (may hold a password).
    pub rest: String,
    pub sslmode: SslMode,
    pub sslrootcert: Option<RootCert>,
}

impl std::fmt::Debug for DbUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "DbUrl(<redacted>, {}, {:?})", self.sslmode.name(), self.sslrootcert)
    }
}

impl DbUrl {
    /// What the TLS settings mean, for a log line: "sslmode=require: encrypted, certificate not
    /// verified".
    pub fn describe(&self) -> String {
        let root = match &self.sslrootcert {
            Some(RootCert::File(p)) => format!("sslrootcert {}", p.display()),
            Some(RootCert::System) => "the built-in roots".into(),
            None => String::new(),
        };
        let what = match (self.sslmode, self.sslrootcert.is_some()) {
            (SslMode::Disable, _) => "no TLS".to_string(),
            (SslMode::Allow, _) => "plain, TLS if plain is refused".to_string(),
            (SslMode::Prefer, false) => "TLS when the server offers it, certificate not verified".to_string(),
            (SslMode::Prefer, true) => format!("TLS when the server offers it, certificate verified against {root}"),
            (SslMode::Require, false) => "TLS, certificate not verified".to_string(),
            (SslMode::Require | SslMode::VerifyCa, true) => format!("TLS, certificate verified against {root}"),
            (SslMode::VerifyFull, true) => format!("TLS, certificate and host name verified against {root}"),
            (SslMode::VerifyCa | SslMode::VerifyFull, false) => "TLS, no root certificate".to_string(),
        };
        format!("sslmode={}: {what}", self.sslmode.name())
    }

    /// Reads `dburl`. Errors say what is wrong without repeating the string (it may hold a
    /// password).
    pub fn parse(s: &str) -> Result<DbUrl, String> {
        let s = s.trim();
        let (rest, params) =
            if s.starts_with("postgres://") || s.starts_with("postgresql://") { split_url(s)? } else { split_kv(s)? };
        let mut sslmode = None;
        let mut sslrootcert = None;
        for (key, value) in params {
            if key == "sslmode" {
                sslmode = Some(SslMode::parse(&value).ok_or_else(|| {
                    format!("sslmode must be one of {SSLMODES} (not {:?})", value.chars().take(40).collect::<String>())
                })?);
            } else if value.is_empty() {
                return Err("sslrootcert is empty (give the path of a PEM file, or \"system\")".into());
            } else if value == "system" {
                sslrootcert = Some(RootCert::System);
            } else {
                sslrootcert = Some(RootCert::File(PathBuf::from(value)));
            }
        }
        let sslmode = match (sslmode, &sslrootcert) {
            // libpq: the system roots are only ever used to check the host name too.
            (None, Some(RootCert::System)) => SslMode::VerifyFull,
            (Some(m), Some(RootCert::System)) if m != SslMode::VerifyFull => {
                return Err(format!("sslrootcert=system needs sslmode=verify-full (not {})", m.name()));
            }
            (m, _) => m.unwrap_or_default(),
        };
        if matches!(sslmode, SslMode::VerifyCa | SslMode::VerifyFull) && sslrootcert.is_none() {
            return Err(format!(
                "sslmode={} needs sslrootcert=PATH (the PEM file of the certificate authority to verify the server against)",
                sslmode.name()
            ));
        }
        Ok(DbUrl { rest, sslmode, sslrootcert })
    }
}

/// A URL: `sslmode` and `sslrootcert` taken out of its query (values percent-decoded).
fn split_url(s: &str) -> Result<(String, Vec<(String, String)>), String> {
    // As the client crate reads a URL: the credentials run to the first '@'; the query starts
    // at the first '?' after them.
    let scheme_end = s.find("://").map_or(0, |i| i + 3);
    let after_creds = s[scheme_end..].find('@').map_or(scheme_end, |i| scheme_end + i + 1);
    let Some(q) = s[after_creds..].find('?').map(|i| after_creds + i) else {
        return Ok((s.to_string(), Vec::new()));
    };
    let mut kept = Vec::new();
    let mut params = Vec::new();
    for pair in s[q + 1..].split('&') {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let key = percent_decode(k)?;
        if key == "sslmode" || key == "sslrootcert" {
            params.push((key, percent_decode(v)?));
        } else if !pair.is_empty() {
            kept.push(pair);
        }
    }
    let mut rest = s[..q].to_string();
    if !kept.is_empty() {
        rest.push('?');
        rest.push_str(&kept.join("&"));
    }
    Ok((rest, params))
}

fn percent_decode(s: &str) -> Result<String, String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let h = b.get(i + 1..i + 3).and_then(|h| std::str::from_utf8(h).ok());
            let v = h.and_then(|h| u8::from_str_radix(h, 16).ok()).ok_or("a '%' not followed by two hex digits")?;
            out.push(v);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| "a percent-encoded value that is not UTF-8".to_string())
}

/// A key/value string (libpq: `key = value` separated by spaces, a value quoted with '...' and
/// escaped with backslashes): `sslmode` and `sslrootcert` taken out, every other pair kept as
/// it was written.
fn split_kv(s: &str) -> Result<(String, Vec<(String, String)>), String> {
    let b = s.as_bytes();
    let mut i = 0;
    let mut rest = String::with_capacity(s.len());
    let mut params = Vec::new();
    let skip_ws = |i: &mut usize| {
        while *i < b.len() && b[*i].is_ascii_whitespace() {
            *i += 1;
        }
    };
    loop {
        skip_ws(&mut i);
        if i == b.len() {
            break;
        }
        let start = i;
        while i < b.len() && b[i] != b'=' && !b[i].is_ascii_whitespace() {
            i += 1;
        }
        let key = &s[start..i];
        skip_ws(&mut i);
        if i == b.len() || b[i] != b'=' {
            return Err(format!("{key:?} is not followed by '='"));
        }
        i += 1;
        skip_ws(&mut i);
        let mut value = Vec::new();
        if b.get(i) == Some(&b'\'') {
            i += 1;
            loop {
                match b.get(i) {
                    None => return Err("a quoted value is not closed".into()),
                    Some(b'\'') => {
                        i += 1;
                        break;
                    }
                    Some(b'\\') if i + 1 < b.len() => {
                        value.push(b[i + 1]);
                        i += 2;
                    }
                    Some(&c) => {
                        value.push(c);
                        i += 1;
                    }
                }
            }
        } else {
            while i < b.len() && !b[i].is_ascii_whitespace() {
                if b[i] == b'\\' && i + 1 < b.len() {
                    i += 1;
                }
                value.push(b[i]);
                i += 1;
            }
        }
        if key == "sslmode" || key == "sslrootcert" {
            let value = String::from_utf8(value).map_err(|_| format!("{key} is not UTF-8"))?;
            params.push((key.to_string(), value));
        } else {
            if !rest.is_empty() {
                rest.push(' ');
            }
            rest.push_str(&s[start..i]);
        }
    }
    Ok((rest, params))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(s: &str) -> DbUrl {
        DbUrl::parse(s).unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    #[test]
    fn urls_and_key_values_split() {
        let u = ok("postgresql://u:p?w@h:5/db?sslmode=verify-full&application_name=x&sslrootcert=%2Fetc%2Fca.pem");
        assert_eq!(u.rest, "postgresql://u:p?w@h:5/db?application_name=x");
        assert_eq!((u.sslmode, u.sslrootcert), (SslMode::VerifyFull, Some(RootCert::File("/etc/ca.pem".into()))));
        let u = ok("postgres://u@h/db?sslmode=require");
        assert_eq!((u.rest.as_str(), u.sslmode, u.sslrootcert), ("postgres://u@h/db", SslMode::Require, None));
        let u = ok("postgresql://u:secret@h/db");
        assert_eq!((u.rest.as_str(), u.sslmode), ("postgresql://u:secret@h/db", SslMode::Prefer));
        let u = ok("host=h  password='a b\\'c' sslmode = verify-ca sslrootcert='/x y/ca.pem' dbname=d");
        assert_eq!(u.rest, "host=h password='a b\\'c' dbname=d");
        assert_eq!((u.sslmode, u.sslrootcert), (SslMode::VerifyCa, Some(RootCert::File("/x y/ca.pem".into()))));
        let u = ok("host=h sslrootcert=system");
        assert_eq!((u.sslmode, u.sslrootcert), (SslMode::VerifyFull, Some(RootCert::System)));
        for m in ["disable", "allow", "prefer", "require", "verify-ca", "verify-full"] {
            let u = ok(&format!("host=h sslmode={m} sslrootcert=/ca.pem"));
            assert_eq!(u.sslmode.name(), m);
        }
        // The rest parses as the client crate's connection string.
        for s in ["postgresql://u:p@h:5/db?sslmode=verify-full&sslrootcert=/c", "host=h sslmode=allow password=x"] {
            ok(s).rest.parse::<postgres::Config>().unwrap();
        }
    }

    #[test]
    fn what_is_refused_says_why_without_the_password() {
        for (s, why) in [
            (
                "postgresql://u:hunter2@h/db?sslmode=on",
                "sslmode must be one of disable, allow, prefer, require, verify-ca, verify-full (not \"on\")",
            ),
            (
                "host=h password=hunter2 sslmode=Require",
                "sslmode must be one of disable, allow, prefer, require, verify-ca, verify-full (not \"Require\")",
            ),
            ("host=h password=hunter2 sslmode=verify-full", "sslmode=verify-full needs sslrootcert=PATH"),
            ("postgresql://u:hunter2@h/db?sslmode=verify-ca", "sslmode=verify-ca needs sslrootcert=PATH"),
            ("host=h sslmode=require sslrootcert=system", "sslrootcert=system needs sslmode=verify-full"),
            ("host=h password='hunter2", "a quoted value is not closed"),
            ("postgresql://u:hunter2@h/db?sslrootcert=%zz", "a '%' not followed by two hex digits"),
        ] {
            let e = DbUrl::parse(s).unwrap_err();
            assert!(e.starts_with(why), "{s}: {e}");
            assert!(!e.contains("hunter2"), "{e}");
        }
        assert!(!format!("{:?}", ok("host=h password=hunter2")).contains("hunter2"));
    }
}
