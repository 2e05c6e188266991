//! Stratum v1 messages: parsing miner requests and encoding replies. Pure, no I/O.

use std::borrow::Cow;

use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::Value;

use crate::difficulty::Difficulty;

/// Longest line accepted from a miner (a submit is ~200 bytes; configure with extensions < 1 KB).
pub const MAX_LINE: usize = 16 * 1024;

/// Stratum error codes.
pub mod code {
    pub const OTHER: i32 = 20;
    pub const JOB_NOT_FOUND: i32 = 21;
    pub const DUPLICATE: i32 = 22;
    pub const LOW_DIFFICULTY: i32 = 23;
    pub const UNAUTHORIZED: i32 = 24;
    pub const NOT_SUBSCRIBED: i32 = 25;
}

/// A request as received, borrowed from its line: the id kept verbatim (number, string or null)
/// to echo back, the params left unparsed until the method says what they should be.
#[derive(Debug, Deserialize)]
pub struct Request<'a> {
    #[serde(borrow, default)]
    pub id: Option<&'a RawValue>,
    /// Empty when absent (refused by [`parse_request`]).
    #[serde(borrow, default)]
    pub method: Cow<'a, str>,
    #[serde(borrow, default)]
    pub params: Option<&'a RawValue>,
}

impl Request<'_> {
    /// The params as a JSON value (`null` when absent), for the rare methods that need a tree.
    pub fn params_value(&self) -> Value {
        self.params.and_then(|p| serde_json::from_str(p.get()).ok()).unwrap_or(Value::Null)
    }
}

/// One param of a `mining.submit`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Param<'a> {
    Str(Cow<'a, str>),
    Null,
    /// A number, bool, array or object: not what a submit carries.
    Other,
}

impl<'a> Param<'a> {
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Param::Str(s) => Some(s),
            _ => None,
        }
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for Param<'a> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<'a>(std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a> serde::de::Visitor<'de> for V<'a> {
            type Value = Param<'a>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Param<'a>, E> {
                Ok(Param::Str(Cow::Borrowed(v)))
            }
            fn visit_str<E>(self, v: &str) -> Result<Param<'a>, E> {
                Ok(Param::Str(Cow::Owned(v.to_owned())))
            }
            fn visit_unit<E>(self) -> Result<Param<'a>, E> {
                Ok(Param::Null)
            }
            fn visit_none<E>(self) -> Result<Param<'a>, E> {
                Ok(Param::Null)
            }
            fn visit_bool<E>(self, _: bool) -> Result<Param<'a>, E> {
                Ok(Param::Other)
            }
            fn visit_i64<E>(self, _: i64) -> Result<Param<'a>, E> {
                Ok(Param::Other)
            }
            fn visit_u64<E>(self, _: u64) -> Result<Param<'a>, E> {
                Ok(Param::Other)
            }
            fn visit_f64<E>(self, _: f64) -> Result<Param<'a>, E> {
                Ok(Param::Other)
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut a: A) -> Result<Param<'a>, A::Error> {
                while a.next_element::<serde::de::IgnoredAny>()?.is_some() {}
                Ok(Param::Other)
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, mut a: A) -> Result<Param<'a>, A::Error> {
                while a.next_entry::<serde::de::IgnoredAny, serde::de::IgnoredAny>()?.is_some() {}
                Ok(Param::Other)
            }
        }
        d.deserialize_any(V(std::marker::PhantomData))
    }
}

/// Most params a submit carries: worker, job id, extranonce2, ntime, nonce, version bits.
pub const SUBMIT_PARAMS: usize = 6;

/// The params of a `mining.submit`, parsed without building a JSON tree: the first
/// [`SUBMIT_PARAMS`] kept (borrowed from the line unless they hold escapes), the rest skipped.
#[derive(Debug, Default)]
pub struct SubmitParams<'a> {
    params: [Option<Param<'a>>; SUBMIT_PARAMS],
}

impl<'a> SubmitParams<'a> {
    /// `None` when the params are not an array.
    pub fn parse(raw: Option<&'a RawValue>) -> Option<SubmitParams<'a>> {
        struct V<'a>(std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a> serde::de::Visitor<'de> for V<'a> {
            type Value = SubmitParams<'a>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("an array")
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut a: A) -> Result<SubmitParams<'a>, A::Error> {
                let mut out = SubmitParams::default();
                for slot in out.params.iter_mut() {
                    match a.next_element::<Param<'a>>()? {
                        Some(p) => *slot = Some(p),
                        None => return Ok(out),
                    }
                }
                while a.next_element::<serde::de::IgnoredAny>()?.is_some() {}
                Ok(out)
            }
        }
        let mut de = serde_json::Deserializer::from_str(raw?.get());
        serde::Deserializer::deserialize_seq(&mut de, V(std::marker::PhantomData)).ok()
    }

    /// Param `i`: absent (`None`), or present.
    pub fn get(&self, i: usize) -> Option<&Param<'a>> {
        self.params.get(i)?.as_ref()
    }

    /// Param `i` when it is a string.
    pub fn str(&self, i: usize) -> Option<&str> {
        self.get(i)?.as_str()
    }
}

/// Why a line could not be understood.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    #[error("line is not valid UTF-8")]
    NotUtf8,
    #[error("invalid JSON: {0}")]
    Json(String),
    #[error("request has no method")]
    NoMethod,
}

/// Parses one line (without its newline).
pub fn parse_request(line: &[u8]) -> Result<Request<'_>, ParseError> {
    let text = std::str::from_utf8(line).map_err(|_| ParseError::NotUtf8)?;
    let req: Request = serde_json::from_str(text).map_err(|e| ParseError::Json(e.to_string()))?;
    if req.method.is_empty() {
        return Err(ParseError::NoMethod);
    }
    Ok(req)
}

/// The id to echo, as JSON text ("null" when absent).
pub fn id_text(id: Option<&RawValue>) -> &str {
    id.map(RawValue::get).unwrap_or("null")
}

/// True when the request carries a non-null id (expects a reply).
pub fn wants_reply(id: Option<&RawValue>) -> bool {
    !matches!(id.map(RawValue::get), None | Some("null"))
}

/// Appends `{"id":ID,"result":RESULT,"error":null}\n` (RESULT is JSON text).
pub fn push_result(out: &mut Vec<u8>, id: &str, result: &str) {
    out.extend_from_slice(b"{\"id\":");
    out.extend_from_slice(id.as_bytes());
    out.extend_from_slice(b",\"result\":");
    out.extend_from_slice(result.as_bytes());
    out.extend_from_slice(b",\"error\":null}\n");
}

/// Appends `{"id":ID,"result":null,"error":[CODE,"MESSAGE",null]}\n`.
pub fn push_error(out: &mut Vec<u8>, id: &str, code: i32, message: &str) {
    out.extend_from_slice(b"{\"id\":");
    out.extend_from_slice(id.as_bytes());
    out.extend_from_slice(b",\"result\":null,\"error\":[");
    if code < 0 {
        out.push(b'-');
    }
    crate::jsonw::push_u64(out, code.unsigned_abs() as u64);
    out.push(b',');
    crate::jsonw::push_json_str(out, message);
    out.extend_from_slice(b",null]}\n");
}

/// A server notification line.
pub fn notification_line(method: &str, params: &Value) -> String {
    format!("{{\"id\":null,\"method\":\"{method}\",\"params\":{params}}}\n")
}

/// `mining.set_difficulty` with the exact decimal difficulty.
pub fn set_difficulty_line(d: Difficulty) -> String {
    format!("{{\"id\":null,\"method\":\"mining.set_difficulty\",\"params\":[{d}]}}\n")
}

/// The difficulty a `mining.suggest_difficulty` carries: a number, a string, or an array of either.
pub fn suggested_difficulty(params: &Value) -> Option<Difficulty> {
    let v = match params {
        Value::Array(a) => a.first()?,
        other => other,
    };
    Difficulty::from_json(v).ok()
}

/// A string param, or `None` when absent or not a string.
pub fn str_param(params: &Value, i: usize) -> Option<&str> {
    params.get(i)?.as_str()
}

#[cfg(test)]
mod tests {
    use super::*;

    // Reference encodings (format!-based) that the in-place writers must match.
    /// `{"id":ID,"result":RESULT,"error":null}\n`
    fn result_line(id: &str, result: &str) -> String {
        let mut s = String::with_capacity(32 + id.len() + result.len());
        s.push_str("{\"id\":");
        s.push_str(id);
        s.push_str(",\"result\":");
        s.push_str(result);
        s.push_str(",\"error\":null}\n");
        s
    }

    /// `{"id":ID,"result":null,"error":[CODE,"MESSAGE",null]}\n`
    fn error_line(id: &str, code: i32, message: &str) -> String {
        let msg = serde_json::to_string(message).expect("string serializes");
        format!("{{\"id\":{id},\"result\":null,\"error\":[{code},{msg},null]}}\n")
    }

    #[test]
    fn ids_echo_verbatim() {
        for (line, id) in [
            (r#"{"id":1,"method":"mining.subscribe","params":[]}"#, "1"),
            (r#"{"id":"abc","method":"mining.subscribe","params":[]}"#, "\"abc\""),
            (r#"{"method":"mining.subscribe","params":[]}"#, "null"),
            (r#"{"id":null,"method":"x"}"#, "null"),
        ] {
            let r = parse_request(line.as_bytes()).unwrap();
            assert_eq!(id_text(r.id), id);
        }
        assert_eq!(result_line("\"a\"", "true"), "{\"id\":\"a\",\"result\":true,\"error\":null}\n");
        assert_eq!(error_line("7", 21, "Stale"), "{\"id\":7,\"result\":null,\"error\":[21,\"Stale\",null]}\n");
        for (id, code, msg) in [("7", 21, "Stale"), ("\"x\"", 20, "say \"hi\"\n"), ("null", -1, "")] {
            let mut out = Vec::new();
            push_error(&mut out, id, code, msg);
            assert_eq!(String::from_utf8(out).unwrap(), error_line(id, code, msg));
        }
        let mut out = Vec::new();
        push_result(&mut out, "3", "true");
        assert_eq!(String::from_utf8(out).unwrap(), result_line("3", "true"));
    }

    #[test]
    fn bad_lines() {
        assert_eq!(parse_request(b"\xff\xfe").unwrap_err(), ParseError::NotUtf8);
        assert!(matches!(parse_request(b"{nope").unwrap_err(), ParseError::Json(_)));
        assert_eq!(parse_request(br#"{"id":1}"#).unwrap_err(), ParseError::NoMethod);
        assert!(matches!(parse_request(br#"{"id":1,"method":5}"#).unwrap_err(), ParseError::Json(_)));
    }

    #[test]
    fn submit_params_borrowed() {
        let line = r#"{"id":4,"method":"mining.submit","params":["w.1","1a00","00000001","5f5e1000","deadbeef","1fffe000",7]}"#;
        let r = parse_request(line.as_bytes()).unwrap();
        assert_eq!(r.method, "mining.submit");
        assert!(matches!(r.method, Cow::Borrowed(_)));
        let p = SubmitParams::parse(r.params).unwrap();
        assert_eq!(p.str(0), Some("w.1"));
        assert_eq!(p.str(5), Some("1fffe000"));
        assert!(matches!(p.get(1), Some(Param::Str(Cow::Borrowed(_)))));
        // Escapes are decoded into an owned string; null, numbers and nesting are told apart.
        let r =
            parse_request(br#"{"id":1,"method":"mining.submit","params":["a\u0041",null,5,[1,[2]],{"x":1}]}"#).unwrap();
        let p = SubmitParams::parse(r.params).unwrap();
        assert_eq!(p.str(0), Some("aA"));
        assert_eq!(p.get(1), Some(&Param::Null));
        assert_eq!(p.get(2), Some(&Param::Other));
        assert_eq!(p.get(3), Some(&Param::Other));
        assert_eq!(p.get(4), Some(&Param::Other));
        assert_eq!(p.get(5), None);
        // Not an array, or absent.
        let r = parse_request(br#"{"id":1,"method":"mining.submit","params":{"a":1}}"#).unwrap();
        assert!(SubmitParams::parse(r.params).is_none());
        let r = parse_request(br#"{"id":1,"method":"mining.submit"}"#).unwrap();
        assert!(SubmitParams::parse(r.params).is_none());
        // An escaped method name still matches.
        let r = parse_request(br#"{"id":1,"method":"mining.\u0073ubmit","params":[]}"#).unwrap();
        assert_eq!(r.method, "mining.submit");
    }

    #[test]
    fn suggest_difficulty_shapes() {
        let d = |s: &str| suggested_difficulty(&serde_json::from_str(s).unwrap()).map(|d| d.to_string());
        assert_eq!(d("[1000]").as_deref(), Some("1000"));
        assert_eq!(d("[\"512\"]").as_deref(), Some("512"));
        assert_eq!(d("0.00015").as_deref(), Some("0.00015"));
        assert_eq!(d("[0.0001]").as_deref(), Some("0.0001"));
        assert_eq!(d("[]"), None);
        assert_eq!(d("[{}]"), None);
        assert_eq!(
            set_difficulty_line("0.001".parse().unwrap()),
            "{\"id\":null,\"method\":\"mining.set_difficulty\",\"params\":[0.001]}\n"
        );
    }

    /// The composed notify line is the one the job's params give, for any id and flag.
    #[test]
    fn notify_line_matches_params() {
        let p = serde_json::json!([
            "1",
            "4d16b6f85af6e2198f44ae2a6de67f78487ae5611b77c6c0440b921e00000000",
            "01000000010000",
            "00000000",
            ["aa".repeat(32), "bb".repeat(32)],
            "20000000",
            "207fffff",
            "504e86b9",
            true
        ]);
        let job = crate::work::job::Job::from_notify(7, &p, 4, 4).unwrap();
        let w = crate::mining::Work::new(std::sync::Arc::new(job));
        for (id, clean) in [(0u64, true), (0x1a00, false), (u64::MAX, true)] {
            let mut out = Vec::new();
            w.push_notify(&mut out, id, clean);
            let mut params = w.job.notify_params();
            params[0] = serde_json::Value::String(format!("{id:x}"));
            params[8] = serde_json::Value::Bool(clean);
            assert_eq!(String::from_utf8(out).unwrap(), notification_line("mining.notify", &params));
        }
    }
}
