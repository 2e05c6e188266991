//! Stratum v1 messages: parsing miner requests and encoding replies. Pure, no I/O.

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

/// A request as received: the id kept verbatim (number, string or null) to echo back.
#[derive(Debug, Deserialize)]
pub struct Request<'a> {
    #[serde(borrow, default)]
    pub id: Option<&'a RawValue>,
    #[serde(default)]
    pub method: Option<String>,
    #[serde(default)]
    pub params: Value,
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
    if req.method.is_none() {
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

/// `{"id":ID,"result":RESULT,"error":null}\n`
pub fn result_line(id: &str, result: &str) -> String {
    let mut s = String::with_capacity(32 + id.len() + result.len());
    s.push_str("{\"id\":");
    s.push_str(id);
    s.push_str(",\"result\":");
    s.push_str(result);
    s.push_str(",\"error\":null}\n");
    s
}

/// `{"id":ID,"result":null,"error":[CODE,"MESSAGE",null]}\n`
pub fn error_line(id: &str, code: i32, message: &str) -> String {
    let msg = serde_json::to_string(message).expect("string serializes");
    format!("{{\"id\":{id},\"result\":null,\"error\":[{code},{msg},null]}}\n")
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
    }

    #[test]
    fn bad_lines() {
        assert_eq!(parse_request(b"\xff\xfe").unwrap_err(), ParseError::NotUtf8);
        assert!(matches!(parse_request(b"{nope").unwrap_err(), ParseError::Json(_)));
        assert_eq!(parse_request(br#"{"id":1}"#).unwrap_err(), ParseError::NoMethod);
        assert!(matches!(parse_request(br#"{"id":1,"method":5}"#).unwrap_err(), ParseError::Json(_)));
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
}
