//! What a stratum v1 server sends, read into typed messages: the client's side of
//! `sv1/proto.rs`. Pure, no I/O; [`super::client::Client`] feeds it lines.
//!
//! Two shapes are recognised without a JSON parse, because a bench or a proxy reads them by the
//! hundred thousand: a share answer exactly as our server writes it (`{"id":N,"result":true,
//! "error":null}`, or `"result":null` with `"error":[CODE,"MSG",null]`), and a notification
//! written `{"id":null,"method":"M","params":P}` (P one array, checked by a bracket scan). Every
//! other line goes through a borrowed serde parse; both give the same message (a property test
//! and the `client_lines` fuzz target hold them to it).
//!
//! A `mining.notify` is handed on unparsed ([`Notify`]): a session that keeps no job (the
//! bench's idle ones) reads only its prevhash and clean flag; one that mines builds a [`Job`].

use std::borrow::Cow;
use std::fmt;

use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::Value;

use crate::difficulty::Difficulty;
use crate::hex;
use crate::work::job::NotifyError;
use crate::work::Job;

/// One server line, before the client knows which of its requests a reply answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServerMsg<'a> {
    /// A notification or server request: its method and params text (`null` when absent).
    Method { method: Cow<'a, str>, params: &'a str },
    /// A reply to the request with numeric `id`: the result text, or why it was refused.
    Reply { id: u64, result: Result<&'a str, Refusal<'a>> },
    /// Neither a method nor a numeric id (a null or string id): the line.
    Stray(&'a str),
}

/// Why a request was refused: stratum's `[code, "message", data]` error, ckpool's
/// `"reject-reason"` (no code), or whatever else the server put in `error`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal<'a> {
    pub code: Option<i64>,
    pub message: Cow<'a, str>,
}

impl Refusal<'_> {
    pub fn into_owned(self) -> Refusal<'static> {
        Refusal { code: self.code, message: Cow::Owned(self.message.into_owned()) }
    }
}

impl fmt::Display for Refusal<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.code {
            Some(c) => write!(f, "{} (code {c})", self.message),
            None => f.write_str(&self.message),
        }
    }
}

/// Why a line is not a stratum message.
#[derive(Debug, thiserror::Error)]
pub enum LineError {
    #[error("not UTF-8")]
    NotUtf8,
    #[error("not JSON: {0}")]
    NotJson(serde_json::Error),
}

/// Which request an id was sent for, so that its reply is read as the right answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Configure,
    Subscribe,
    Authorize,
    Submit,
    /// A request the client does not interpret (`send_request`).
    Other,
}

/// The extranonce a subscribe answer (or `mining.set_extranonce`) gives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subscription {
    pub extranonce1: Vec<u8>,
    pub extranonce2_size: usize,
}

/// A `mining.notify`, its params not yet parsed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Notify<'a> {
    params: &'a str,
}

/// A job built from a notify, with the server's job id (sent back in submits).
#[derive(Debug)]
pub struct NotifyJob {
    pub job: Job,
    pub job_id: String,
}

impl<'a> Notify<'a> {
    pub fn new(params: &'a str) -> Notify<'a> {
        Notify { params }
    }

    /// The params' JSON text.
    pub fn params(&self) -> &'a str {
        self.params
    }

    /// The job for a session whose extranonce1 is `nonce1_len` bytes and extranonce2
    /// `nonce2_len` bytes (see [`Job::from_notify`]); the job id must be a string.
    pub fn job(&self, id: u64, nonce1_len: usize, nonce2_len: usize) -> Result<NotifyJob, NotifyError> {
        let v: Value = serde_json::from_str(self.params).map_err(|_| NotifyError::Shape(clip(self.params)))?;
        let job = Job::from_notify(id, &v, nonce1_len, nonce2_len)?;
        match v[0].as_str() {
            Some(job_id) => Ok(NotifyJob { job, job_id: job_id.to_string() }),
            None => Err(NotifyError::Field { field: "job_id", why: format!("{} is not a string", v[0]) }),
        }
    }

    /// The prevhash (as sent) and the clean_jobs flag, read without a JSON parse when the
    /// params are written compactly (our server's form), else with one.
    pub fn prevhash_clean(&self) -> Option<(Cow<'a, str>, bool)> {
        let fast = || {
            let (job_id, rest) = self.params.strip_prefix("[\"")?.split_once("\",\"")?;
            let (prev, _) = rest.split_once('"')?;
            if job_id.contains('\\') || prev.contains('\\') {
                return None;
            }
            let flag = self.params.strip_suffix(']')?.rsplit_once(',')?.1;
            Some((Cow::Borrowed(prev), flag == "true"))
        };
        fast().or_else(|| {
            let v: Value = serde_json::from_str(self.params).ok()?;
            Some((Cow::Owned(v.get(1)?.as_str()?.to_string()), v.get(8).and_then(Value::as_bool).unwrap_or(false)))
        })
    }
}

/// A server line as the client sees it once replies are matched to its requests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event<'a> {
    Notify(Notify<'a>),
    /// `mining.set_difficulty` with a difficulty above zero.
    SetDifficulty(Difficulty),
    SetExtranonce(Subscription),
    SetVersionMask(u32),
    /// `client.reconnect`: `host:port` when both are given, else the same address.
    Reconnect(Option<String>),
    ShowMessage(Cow<'a, str>),
    /// A method the client does not act on (including server requests such as
    /// `client.get_version`).
    Method {
        method: Cow<'a, str>,
        params: &'a str,
    },
    /// A method the client acts on whose params are unusable (`set_difficulty` 0, ...).
    Malformed {
        method: Cow<'a, str>,
        params: &'a str,
    },
    /// The configure answer: the version-rolling mask granted, 0 when refused.
    Configured(u32),
    Subscribed(Result<Subscription, Refusal<'a>>),
    Authorized(Result<(), Refusal<'a>>),
    /// The answer to the submit with this id: accepted, or why not.
    Submitted {
        id: u64,
        result: Result<(), Refusal<'a>>,
    },
    /// The answer to a request sent with `send_request`: its result text, or why it was refused.
    Replied {
        id: u64,
        result: Result<&'a str, Refusal<'a>>,
    },
    /// A reply to no request of ours, or a line that is neither a method nor a reply.
    Stray(&'a str),
    NotJson {
        line: Cow<'a, str>,
        error: String,
    },
}

/// Reads one line into an event; `take` gives the kind of request a reply's id was sent for
/// (and forgets the id), `None` when the id is not ours.
pub fn event<'a>(line: &'a [u8], take: impl FnOnce(u64) -> Option<Kind>) -> Event<'a> {
    match parse(line) {
        Err(e) => Event::NotJson { line: String::from_utf8_lossy(line), error: e.to_string() },
        Ok(ServerMsg::Method { method, params }) => method_event(method, params),
        Ok(ServerMsg::Reply { id, result }) => match take(id) {
            Some(kind) => reply_event(kind, id, result),
            None => Event::Stray(std::str::from_utf8(line).unwrap_or_default()),
        },
        Ok(ServerMsg::Stray(line)) => Event::Stray(line),
    }
}

/// The id of a reply line, if it is one (cheaply for our server's answers).
pub fn reply_id(line: &[u8]) -> Option<u64> {
    match parse(line) {
        Ok(ServerMsg::Reply { id, .. }) => Some(id),
        _ => None,
    }
}

/// Reads one line's envelope.
pub fn parse(line: &[u8]) -> Result<ServerMsg<'_>, LineError> {
    let text = std::str::from_utf8(line).map_err(|_| LineError::NotUtf8)?;
    if let Some(m) = fast_answer(text).or_else(|| fast_method(text)) {
        return Ok(m);
    }
    let env: Envelope = serde_json::from_str(text).map_err(LineError::NotJson)?;
    if let Some(method) = env.method {
        return Ok(ServerMsg::Method { method, params: env.params.map_or("null", RawValue::get) });
    }
    let Some(id) = env.id.and_then(|i| i.get().parse::<u64>().ok()) else { return Ok(ServerMsg::Stray(text)) };
    let error = env.error.map(RawValue::get).filter(|e| *e != "null");
    let result = env.result.map_or("null", RawValue::get);
    if error.is_none() && result != "false" && result != "null" {
        return Ok(ServerMsg::Reply { id, result: Ok(result) });
    }
    Ok(ServerMsg::Reply { id, result: Err(refusal(error, env.reject_reason, result)) })
}

#[derive(Deserialize)]
struct Envelope<'a> {
    #[serde(borrow, default)]
    id: Option<&'a RawValue>,
    #[serde(borrow, default)]
    method: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    params: Option<&'a RawValue>,
    #[serde(borrow, default)]
    result: Option<&'a RawValue>,
    #[serde(borrow, default)]
    error: Option<&'a RawValue>,
    #[serde(borrow, default, rename = "reject-reason")]
    reject_reason: Option<Cow<'a, str>>,
}

fn refusal<'a>(error: Option<&'a str>, reject_reason: Option<Cow<'a, str>>, result: &str) -> Refusal<'a> {
    let e: Value = error.and_then(|e| serde_json::from_str(e).ok()).unwrap_or(Value::Null);
    let (code, message) = match &e {
        Value::Array(a) => (a.first().and_then(Value::as_i64), a.get(1).and_then(Value::as_str).map(str::to_string)),
        Value::Object(o) => {
            (o.get("code").and_then(Value::as_i64), o.get("message").and_then(Value::as_str).map(str::to_string))
        }
        Value::String(s) => (None, Some(s.clone())),
        _ => (None, None),
    };
    let message = match (message, reject_reason) {
        (Some(m), _) => Cow::Owned(m),
        (None, Some(r)) => r,
        (None, None) if !e.is_null() => Cow::Owned(e.to_string()),
        (None, None) => Cow::Owned(format!("refused (result {result})")),
    };
    Refusal { code, message }
}

/// `{"id":N,"result":true,"error":null}` or `{"id":N,"result":null,"error":[CODE,"MSG",null]}`,
/// exactly (MSG without escapes).
fn fast_answer(line: &str) -> Option<ServerMsg<'_>> {
    let rest = line.strip_prefix("{\"id\":")?;
    let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
    let id = json_uint(&rest[..digits])?;
    let rest = &rest[digits..];
    if rest == ",\"result\":true,\"error\":null}" {
        return Some(ServerMsg::Reply { id, result: Ok("true") });
    }
    let (code, msg) = rest.strip_prefix(",\"result\":null,\"error\":[")?.strip_suffix(",null]}")?.split_once(',')?;
    let code = match code.strip_prefix('-') {
        Some(c) => -i64::try_from(json_uint(c)?).ok()?,
        None => i64::try_from(json_uint(code)?).ok()?,
    };
    let msg = msg.strip_prefix('"')?.strip_suffix('"')?;
    if msg.bytes().any(|b| b == b'"' || b == b'\\' || b < 0x20) {
        return None;
    }
    Some(ServerMsg::Reply { id, result: Err(Refusal { code: Some(code), message: Cow::Borrowed(msg) }) })
}

/// Digits as JSON writes an unsigned integer (no sign, no leading zero).
fn json_uint(d: &str) -> Option<u64> {
    if d.is_empty() || (d.len() > 1 && d.starts_with('0')) || !d.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    d.parse().ok()
}

/// `{"id":null,"method":"M","params":[...]}` with nothing after the params array.
fn fast_method(line: &str) -> Option<ServerMsg<'_>> {
    let (method, rest) = line.strip_prefix("{\"id\":null,\"method\":\"")?.split_once('"')?;
    if method.bytes().any(|b| b == b'\\' || b < 0x20) {
        return None;
    }
    let params = rest.strip_prefix(",\"params\":")?.strip_suffix('}')?;
    if !params.starts_with('[') || !one_array(params.as_bytes()) {
        return None;
    }
    Some(ServerMsg::Method { method: Cow::Borrowed(method), params })
}

/// Whether `s` closes its first bracket at its last byte (strings skipped). Not a validation:
/// it only tells one array from an array followed by more members.
fn one_array(s: &[u8]) -> bool {
    let (mut depth, mut in_str, mut esc) = (0u32, false, false);
    for (i, &b) in s.iter().enumerate() {
        if in_str {
            if esc {
                esc = false;
            } else if b == b'\\' {
                esc = true;
            } else if b == b'"' {
                in_str = false;
            }
            continue;
        }
        match b {
            b'"' => in_str = true,
            b'[' | b'{' => depth += 1,
            b']' | b'}' => {
                depth = match depth.checked_sub(1) {
                    Some(d) => d,
                    None => return false,
                };
                if depth == 0 {
                    return i + 1 == s.len();
                }
            }
            _ => {}
        }
    }
    false
}

/// The first params as raw values (`None` when the params are not an array).
fn params_list(params: &str) -> Option<Vec<&RawValue>> {
    serde_json::from_str(params).ok()
}

fn str_at<'a>(p: &[&'a RawValue], i: usize) -> Option<Cow<'a, str>> {
    serde_json::from_str::<Cow<'a, str>>(p.get(i)?.get()).ok()
}

fn method_event<'a>(method: Cow<'a, str>, params: &'a str) -> Event<'a> {
    let p = params_list(params).unwrap_or_default();
    let known = match &*method {
        "mining.notify" => return Event::Notify(Notify::new(params)),
        "mining.set_difficulty" => p
            .first()
            .and_then(|d| serde_json::from_str::<Value>(d.get()).ok())
            .and_then(|d| Difficulty::from_json(&d).ok())
            .filter(|d| !d.is_zero())
            .map(Event::SetDifficulty),
        "mining.set_extranonce" => subscription(&p, 0).map(Event::SetExtranonce),
        "mining.set_version_mask" => str_at(&p, 0).and_then(|m| hex::parse_u32_be(&m).ok()).map(Event::SetVersionMask),
        "client.reconnect" => {
            let host = str_at(&p, 0).filter(|h| !h.is_empty());
            let port = p.get(1).and_then(|v| {
                let v: Value = serde_json::from_str(v.get()).ok()?;
                v.as_u64().or_else(|| v.as_str().and_then(|s| s.parse().ok()))
            });
            Some(Event::Reconnect(host.zip(port).map(|(h, p)| format!("{h}:{p}"))))
        }
        "client.show_message" => str_at(&p, 0).map(Event::ShowMessage),
        _ => return Event::Method { method, params },
    };
    known.unwrap_or(Event::Malformed { method, params })
}

/// `[.., EXTRANONCE1, EXTRANONCE2_SIZE]` starting at `at` (0 for set_extranonce, 1 for subscribe).
fn subscription(p: &[&RawValue], at: usize) -> Option<Subscription> {
    let extranonce1 = hex::decode(&str_at(p, at)?).ok()?;
    let extranonce2_size = p.get(at + 1)?.get().parse::<usize>().ok()?;
    Some(Subscription { extranonce1, extranonce2_size })
}

fn reply_event<'a>(kind: Kind, id: u64, result: Result<&'a str, Refusal<'a>>) -> Event<'a> {
    match kind {
        Kind::Configure => Event::Configured(result.ok().and_then(granted_mask).unwrap_or(0)),
        Kind::Subscribe => Event::Subscribed(result.and_then(|r| {
            params_list(r).and_then(|p| subscription(&p, 1)).ok_or_else(|| Refusal {
                code: None,
                message: Cow::Owned(format!("malformed subscribe answer {}", clip(r))),
            })
        })),
        Kind::Authorize => Event::Authorized(accepted(result)),
        Kind::Submit => Event::Submitted { id, result: accepted(result) },
        Kind::Other => Event::Replied { id, result },
    }
}

/// A configure result's version-rolling mask, when rolling was granted.
fn granted_mask(result: &str) -> Option<u32> {
    #[derive(Deserialize)]
    struct Configure<'a> {
        #[serde(rename = "version-rolling", default)]
        rolling: bool,
        #[serde(rename = "version-rolling.mask", borrow, default)]
        mask: Option<Cow<'a, str>>,
    }
    let c: Configure = serde_json::from_str(result).ok()?;
    c.rolling.then(|| hex::parse_u32_be(c.mask.as_deref()?).ok()).flatten()
}

/// True is accepted; any other result is a refusal.
fn accepted<'a>(result: Result<&'a str, Refusal<'a>>) -> Result<(), Refusal<'a>> {
    match result? {
        "true" => Ok(()),
        other => Err(Refusal { code: None, message: Cow::Owned(format!("result {}", clip(other))) }),
    }
}

fn clip(s: &str) -> String {
    s.chars().take(200).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(line: &str, kind: Option<Kind>) -> Event<'_> {
        event(line.as_bytes(), |_| kind)
    }

    #[test]
    fn replies_by_kind() {
        assert_eq!(
            ev(r#"{"id":2,"result":[[["mining.notify","1"]],"08000001",8],"error":null}"#, Some(Kind::Subscribe)),
            Event::Subscribed(Ok(Subscription { extranonce1: vec![8, 0, 0, 1], extranonce2_size: 8 }))
        );
        match ev(r#"{"id":2,"result":null,"error":[20,"no",null]}"#, Some(Kind::Subscribe)) {
            Event::Subscribed(Err(r)) => assert_eq!((r.code, &*r.message), (Some(20), "no")),
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            ev(r#"{"id":2,"result":[1],"error":null}"#, Some(Kind::Subscribe)),
            Event::Subscribed(Err(_))
        ));
        assert_eq!(
            ev(
                r#"{"id":1,"result":{"version-rolling":true,"version-rolling.mask":"1fffe000"},"error":null}"#,
                Some(Kind::Configure)
            ),
            Event::Configured(0x1fffe000)
        );
        assert_eq!(
            ev(r#"{"id":1,"result":{"version-rolling":false},"error":null}"#, Some(Kind::Configure)),
            Event::Configured(0)
        );
        assert_eq!(ev(r#"{"id":1,"result":null,"error":[20,"x",null]}"#, Some(Kind::Configure)), Event::Configured(0));
        assert_eq!(ev(r#"{"id":3,"result":true,"error":null}"#, Some(Kind::Authorize)), Event::Authorized(Ok(())));
        assert!(matches!(
            ev(r#"{"id":3,"result":false,"error":null}"#, Some(Kind::Authorize)),
            Event::Authorized(Err(_))
        ));
        assert_eq!(
            ev(r#"{"id":12,"result":true,"error":null}"#, Some(Kind::Submit)),
            Event::Submitted { id: 12, result: Ok(()) }
        );
        assert_eq!(
            ev(r#"{"id":13,"result":null,"error":[23,"Above target",null]}"#, Some(Kind::Submit)),
            Event::Submitted { id: 13, result: Err(Refusal { code: Some(23), message: "Above target".into() }) }
        );
        assert_eq!(
            ev(r#"{"id":9,"result":true,"error":null}"#, None),
            Event::Stray(r#"{"id":9,"result":true,"error":null}"#)
        );
        assert_eq!(ev(r#"{"id":"x","result":true}"#, Some(Kind::Submit)), Event::Stray(r#"{"id":"x","result":true}"#));
        assert_eq!(
            ev(r#"{"id":7,"result":"1.0"}"#, Some(Kind::Other)),
            Event::Replied { id: 7, result: Ok("\"1.0\"") }
        );
    }

    /// ckpool (C) writes "id" last and refuses shares with a "reject-reason" and a null "error".
    #[test]
    fn ckpools_key_order() {
        assert_eq!(
            ev(r#"{"reject-reason":"Above target","result":false,"error":null,"id":10}"#, Some(Kind::Submit)),
            Event::Submitted { id: 10, result: Err(Refusal { code: None, message: "Above target".into() }) }
        );
        assert_eq!(
            ev(r#"{"result": true, "error": null, "id": 11}"#, Some(Kind::Submit)),
            Event::Submitted { id: 11, result: Ok(()) }
        );
        let n = r#"{"params": ["1", "4d16b6f85af6e2198f44ae2a6de67f78487ae5611b77c6c0440b921e00000000", "01000000010000", "00000000", [], "20000000", "207fffff", "504e86b9", true], "id": null, "method": "mining.notify"}"#;
        let Event::Notify(n) = ev(n, None) else { panic!() };
        let (prev, clean) = n.prevhash_clean().unwrap();
        assert_eq!((&*prev, clean), ("4d16b6f85af6e2198f44ae2a6de67f78487ae5611b77c6c0440b921e00000000", true));
        assert!(n.job(1, 4, 4).unwrap().job.clean);
    }

    #[test]
    fn notifications() {
        assert_eq!(
            ev(r#"{"id":null,"method":"mining.set_difficulty","params":[0.0001]}"#, None),
            Event::SetDifficulty("0.0001".parse().unwrap())
        );
        assert_eq!(
            ev(r#"{"id":null,"method":"mining.set_difficulty","params":[0]}"#, None),
            Event::Malformed { method: "mining.set_difficulty".into(), params: "[0]" }
        );
        assert_eq!(
            ev(r#"{"id":null,"method":"client.reconnect","params":["h","3334",0]}"#, None),
            Event::Reconnect(Some("h:3334".into()))
        );
        assert_eq!(ev(r#"{"id":null,"method":"client.reconnect","params":[]}"#, None), Event::Reconnect(None));
        assert_eq!(
            ev(r#"{"id":null,"method":"mining.set_extranonce","params":["aabb",4]}"#, None),
            Event::SetExtranonce(Subscription { extranonce1: vec![0xaa, 0xbb], extranonce2_size: 4 })
        );
        assert!(matches!(
            ev(r#"{"id":null,"method":"mining.set_extranonce","params":["zz",4]}"#, None),
            Event::Malformed { .. }
        ));
        assert_eq!(
            ev(r#"{"id":null,"method":"mining.set_version_mask","params":["1fffe000"]}"#, None),
            Event::SetVersionMask(0x1fffe000)
        );
        assert_eq!(
            ev(r#"{"id":null,"method":"client.show_message","params":["hi"]}"#, None),
            Event::ShowMessage("hi".into())
        );
        assert_eq!(
            ev(r#"{"id":5,"method":"client.get_version","params":[]}"#, None),
            Event::Method { method: "client.get_version".into(), params: "[]" }
        );
        assert!(matches!(ev("this is not json", None), Event::NotJson { .. }));
        let line = r#"{"id":null,"method":"mining.notify","params":["1a00","0011aabb","01","02",["ff"],"20000000","207fffff","65000000",true]}"#;
        let Event::Notify(n) = ev(line, None) else { panic!() };
        assert_eq!(n.prevhash_clean(), Some((Cow::Borrowed("0011aabb"), true)));
        let line = line.replace("true]", "false]");
        let Event::Notify(n) = ev(&line, None) else { panic!() };
        assert_eq!(n.prevhash_clean(), Some((Cow::Borrowed("0011aabb"), false)));
        let Event::Notify(n) = ev(r#"{"id":null,"method":"mining.notify","params":[1,2,3]}"#, None) else { panic!() };
        assert!(n.job(1, 4, 4).is_err());
    }

    /// The shortcuts read what the serde parse reads, and leave to it what they cannot read.
    #[test]
    fn shortcuts_agree_with_serde() {
        let slow = |l: &str| {
            let env: Envelope = serde_json::from_str(l).unwrap();
            (
                env.method.map(|m| m.into_owned()),
                env.params.map(|p| p.get().to_string()),
                env.id.map(|i| i.get().to_string()),
            )
        };
        for line in [
            r#"{"id":12,"result":true,"error":null}"#,
            r#"{"id":0,"result":true,"error":null}"#,
            r#"{"id":13,"result":null,"error":[23,"Above target",null]}"#,
            r#"{"id":13,"result":null,"error":[-3,"x",null]}"#,
            r#"{"id":null,"method":"mining.notify","params":["1","a]b",["c"],true]}"#,
        ] {
            assert!(fast_answer(line).or_else(|| fast_method(line)).is_some(), "{line}");
            let (m, p, id) = slow(line);
            match parse(line.as_bytes()).unwrap() {
                ServerMsg::Method { method, params } => {
                    assert_eq!((Some(method.into_owned()), Some(params.to_string())), (m, p))
                }
                ServerMsg::Reply { id: got, .. } => assert_eq!(Some(got.to_string()), id),
                ServerMsg::Stray(_) => panic!("{line}"),
            }
        }
        for line in [
            r#"{"id":012,"result":true,"error":null}"#,
            r#"{"id":1,"result":true,"error":null} "#,
            r#"{"id":13,"result":null,"error":[23,"a\"b",null]}"#,
            r#"{"id":null,"method":"mining.notify","params":[1],"x":[2]}"#,
            r#"{"id":null,"method":"m\"x","params":[]}"#,
        ] {
            assert!(fast_answer(line).or_else(|| fast_method(line)).is_none(), "{line}");
        }
        // An array followed by another member is read by serde, which finds the params alone.
        match parse(br#"{"id":null,"method":"mining.notify","params":[1],"x":[2]}"#).unwrap() {
            ServerMsg::Method { params, .. } => assert_eq!(params, "[1]"),
            other => panic!("{other:?}"),
        }
    }
}
