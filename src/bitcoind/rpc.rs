//! bitcoind JSON-RPC over HTTP: basic auth (rpcauth) or cookie file, timeouts, failover across
//! the configured `btcd` entries. Errors name the node and the method, never the password.
//!
//! [`Rpc::call`] gives the result as a `serde_json::Value`; [`Rpc::call_raw`] gives its JSON text
//! as the node wrote it, for amounts that must not pass through a binary float (`ckpool payout`).

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use serde::de::{DeserializeOwned, Deserializer};
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{json, Value};

use super::body::SubmitBody;
use crate::config::{Btcd, RpcAuth};

/// One node's RPC endpoint.
#[derive(Clone, Debug)]
struct Endpoint {
    url: String,
    auth: RpcAuth,
    /// host:port, for messages.
    label: String,
}

/// Why a call failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum RpcError {
    #[error("bitcoind {node}: cannot connect ({why}); is the node running and is the btcd url right?")]
    Connect { node: String, why: String },
    #[error("bitcoind {node}: {method} timed out after {secs} s")]
    Timeout { node: String, method: String, secs: u64 },
    #[error("bitcoind {node}: authentication refused for {method} (HTTP 401): check btcd auth/pass against the node's rpcauth line")]
    Unauthorized { node: String, method: String },
    #[error("bitcoind {node}: {method}: HTTP {status}: {body}")]
    Http { node: String, method: String, status: u16, body: String },
    #[error("bitcoind {node}: {method} returned error {code}: {message}")]
    Node { node: String, method: String, code: i64, message: String },
    #[error("bitcoind {node}: {method}: unreadable reply: {why}")]
    Reply { node: String, method: String, why: String },
    #[error("bitcoind: cookie file {path}: {why}")]
    Cookie { path: String, why: String },
    #[error("no btcd configured")]
    NoNode,
}

impl RpcError {
    /// bitcoind is starting up (RPC_IN_WARMUP, -28) or not yet connected to peers (-9, -10).
    pub fn is_warming_up(&self) -> bool {
        matches!(self, RpcError::Node { code: -28 | -9 | -10, .. })
    }

    /// The node answered (as opposed to being unreachable).
    pub fn node_answered(&self) -> bool {
        matches!(self, RpcError::Node { .. } | RpcError::Http { .. } | RpcError::Unauthorized { .. })
    }
}

/// A JSON-RPC client over one or more nodes, in failover order.
#[derive(Debug)]
pub struct Rpc {
    http: reqwest::Client,
    nodes: Vec<Endpoint>,
    /// Index of the node that last answered; calls start there.
    current: AtomicUsize,
    timeout: Duration,
    /// Calls and failed calls per node (for the operator's metrics), in `nodes` order.
    counts: Vec<(AtomicU64, AtomicU64)>,
}

fn label_of(url: &str) -> String {
    url.trim_start_matches("http://").trim_end_matches('/').to_string()
}

impl Rpc {
    pub fn new(btcd: &[Btcd], timeout: Duration) -> Rpc {
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(Duration::from_secs(5).min(timeout))
            .pool_idle_timeout(Duration::from_secs(30))
            .build()
            .expect("HTTP client without TLS always builds");
        let nodes = btcd
            .iter()
            .map(|b| Endpoint { url: b.url.clone(), auth: b.auth.clone(), label: label_of(&b.url) })
            .collect();
        let counts = btcd.iter().map(|_| Default::default()).collect();
        Rpc { http, nodes, current: AtomicUsize::new(0), timeout, counts }
    }

    /// A client for one node.
    pub fn single(url: &str, auth: RpcAuth, timeout: Duration) -> Rpc {
        Rpc::new(&[Btcd { url: url.to_string(), auth, notify: false }], timeout)
    }

    pub fn node_count(&self) -> usize {
        self.nodes.len()
    }

    /// host:port of node `i`.
    pub fn node_label(&self, i: usize) -> &str {
        &self.nodes[i].label
    }

    /// host:port of the node that answered last (the one the next call tries first).
    pub fn current_label(&self) -> &str {
        self.nodes.get(self.current.load(Ordering::Relaxed) % self.nodes.len().max(1)).map_or("", |n| &n.label)
    }

    /// Calls `method` on node `i` only.
    pub async fn call_node(&self, i: usize, method: &str, params: Value) -> Result<Value, RpcError> {
        self.call_node_as(i, method, params).await
    }

    /// Calls `method` on node `i` only; the result's JSON text as the node wrote it.
    pub async fn call_node_raw(&self, i: usize, method: &str, params: Value) -> Result<Box<RawValue>, RpcError> {
        self.call_node_as(i, method, params).await
    }

    /// Calls `method`, starting with the node that last answered and failing over to the next
    /// `btcd` entry when a node is unreachable or errs. Returns the first answer or the last error.
    pub async fn call(&self, method: &str, params: Value) -> Result<Value, RpcError> {
        self.call_as(method, params).await
    }

    /// As [`Rpc::call`], the result's JSON text as the node wrote it (numbers exactly as written).
    pub async fn call_raw(&self, method: &str, params: Value) -> Result<Box<RawValue>, RpcError> {
        self.call_as(method, params).await
    }

    /// One HTTP exchange with node `i`: the status and the body.
    async fn post(&self, i: usize, method: &str, params: Value) -> Result<(u16, String), RpcError> {
        let body = json!({"jsonrpc": "1.0", "id": "ckpool", "method": method, "params": params});
        let body = serde_json::to_vec(&body).expect("a JSON value serializes");
        self.post_body(i, method, body.into()).await
    }

    /// One HTTP exchange with node `i`, the request body given.
    async fn post_body(&self, i: usize, method: &str, body: reqwest::Body) -> Result<(u16, String), RpcError> {
        let ep = &self.nodes[i];
        let node = ep.label.clone();
        let (user, pass) = match &ep.auth {
            RpcAuth::UserPass { user, pass } => (user.clone(), pass.expose().to_string()),
            RpcAuth::Cookie(path) => {
                let text = tokio::fs::read_to_string(path)
                    .await
                    .map_err(|e| RpcError::Cookie { path: path.display().to_string(), why: e.to_string() })?;
                let (u, p) = text.trim().split_once(':').ok_or_else(|| RpcError::Cookie {
                    path: path.display().to_string(),
                    why: "not in user:password form".into(),
                })?;
                (u.to_string(), p.to_string())
            }
        };
        let resp = self
            .http
            .post(&ep.url)
            .basic_auth(user, Some(pass))
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body)
            .send()
            .await
            .map_err(|e| {
                if e.is_timeout() {
                    RpcError::Timeout { node: node.clone(), method: method.into(), secs: self.timeout.as_secs() }
                } else {
                    // reqwest's error chain names the url (no credentials: they are in a header).
                    let mut why = e.to_string();
                    let mut src = std::error::Error::source(&e);
                    while let Some(s) = src {
                        why = format!("{why}: {s}");
                        src = s.source();
                    }
                    RpcError::Connect { node: node.clone(), why }
                }
            })?;
        let status = resp.status().as_u16();
        if status == 401 || status == 403 {
            return Err(RpcError::Unauthorized { node, method: method.into() });
        }
        let text = resp.text().await.map_err(|e| {
            if e.is_timeout() {
                RpcError::Timeout { node: node.clone(), method: method.into(), secs: self.timeout.as_secs() }
            } else {
                RpcError::Reply { node: node.clone(), method: method.into(), why: e.to_string() }
            }
        })?;
        Ok((status, text))
    }

    async fn call_node_as<T: DeserializeOwned>(&self, i: usize, method: &str, params: Value) -> Result<T, RpcError> {
        let r = self.post(i, method, params).await;
        self.answer_of(i, method, r)
    }

    /// `submitblock` on node `i`: the request body is the block's hex with the JSON around it,
    /// made once per block ([`SubmitBody`]) and shared by every node's request; its parts are
    /// sent as they are, so a found block costs no JSON value of a megabyte built and escaped,
    /// nor a copy of its hex, on its way out.
    pub async fn submit_block(&self, i: usize, body: SubmitBody) -> Result<Value, RpcError> {
        let r = self.post_body(i, "submitblock", body.into_http()).await;
        self.answer_of(i, "submitblock", r)
    }

    /// A reply (or the failed exchange) as a result, counted for the metrics.
    fn answer_of<T: DeserializeOwned>(
        &self,
        i: usize,
        method: &str,
        reply: Result<(u16, String), RpcError>,
    ) -> Result<T, RpcError> {
        let r = match reply {
            Ok((status, text)) => parse_reply_as(&self.nodes[i].label, method, status, &text),
            Err(e) => Err(e),
        };
        let (calls, errors) = &self.counts[i];
        calls.fetch_add(1, Ordering::Relaxed);
        if r.is_err() {
            errors.fetch_add(1, Ordering::Relaxed);
        }
        r
    }

    /// Per node: its host:port (any `user:pass@` part left out), calls made and calls that failed.
    pub fn node_counts(&self) -> Vec<(String, u64, u64)> {
        self.nodes
            .iter()
            .zip(&self.counts)
            .map(|(ep, (calls, errors))| {
                let label = ep.label.rsplit_once('@').map_or(&*ep.label, |(_, hostport)| hostport).to_string();
                (label, calls.load(Ordering::Relaxed), errors.load(Ordering::Relaxed))
            })
            .collect()
    }

    async fn call_as<T: DeserializeOwned>(&self, method: &str, params: Value) -> Result<T, RpcError> {
        let n = self.nodes.len();
        if n == 0 {
            return Err(RpcError::NoNode);
        }
        let start = self.current.load(Ordering::Relaxed) % n;
        let mut last = RpcError::NoNode;
        for k in 0..n {
            let i = (start + k) % n;
            match self.call_node_as(i, method, params.clone()).await {
                Ok(v) => {
                    if i != start {
                        tracing::warn!(node = %self.nodes[i].label, "bitcoind failover: now using {}", self.nodes[i].label);
                    }
                    self.current.store(i, Ordering::Relaxed);
                    return Ok(v);
                }
                Err(e) => last = e,
            }
        }
        Err(last)
    }

    /// `submitblock` to every node at once; each node's answer (null = accepted).
    pub async fn submit_block_everywhere(&self, block_hex: &str) -> Vec<(String, Result<Value, RpcError>)> {
        let body = SubmitBody::of_hex(block_hex);
        let calls = (0..self.nodes.len()).map(|i| {
            let body = body.clone();
            async move { (self.nodes[i].label.clone(), self.submit_block(i, body).await) }
        });
        futures_join_all(calls).await
    }
}

/// Runs futures concurrently and collects their outputs in order (small, dependency-free join_all).
async fn futures_join_all<F: std::future::Future>(futs: impl IntoIterator<Item = F>) -> Vec<F::Output> {
    let mut set = Vec::new();
    for f in futs {
        set.push(Box::pin(f));
    }
    let mut out: Vec<Option<F::Output>> = (0..set.len()).map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut pending = false;
        for (i, f) in set.iter_mut().enumerate() {
            if out[i].is_none() {
                match f.as_mut().poll(cx) {
                    std::task::Poll::Ready(v) => out[i] = Some(v),
                    std::task::Poll::Pending => pending = true,
                }
            }
        }
        if pending {
            std::task::Poll::Pending
        } else {
            std::task::Poll::Ready(())
        }
    })
    .await;
    out.into_iter().map(|o| o.expect("all ready")).collect()
}

/// One JSON-RPC reply, as bitcoind sends it: legacy 1.0 (`result` and `error` both present, HTTP
/// 500/404 on error) or 2.0 (only one of them, HTTP 200), or a plain-text HTTP error (Core's
/// 503 "Work queue depth exceeded"). Pure: `status` and `text` in, the result or a typed error out.
pub fn parse_reply(node: &str, method: &str, status: u16, text: &str) -> Result<Value, RpcError> {
    parse_reply_as(node, method, status, text)
}

/// As [`parse_reply`], the result's JSON text as the node wrote it.
pub fn parse_reply_raw(node: &str, method: &str, status: u16, text: &str) -> Result<Box<RawValue>, RpcError> {
    parse_reply_as(node, method, status, text)
}

/// A JSON-RPC reply; `result` is `Some` whenever the key is there, `null` included (submitblock's
/// "accepted" is a null result).
#[derive(Deserialize)]
#[serde(bound(deserialize = "T: DeserializeOwned"))]
struct Reply<T> {
    #[serde(default, deserialize_with = "present")]
    result: Option<T>,
    #[serde(default)]
    error: Option<Value>,
}

fn present<'de, D: Deserializer<'de>, T: DeserializeOwned>(d: D) -> Result<Option<T>, D::Error> {
    T::deserialize(d).map(Some)
}

fn parse_reply_as<T: DeserializeOwned>(node: &str, method: &str, status: u16, text: &str) -> Result<T, RpcError> {
    let reply: Reply<T> = match serde_json::from_str(text) {
        Ok(v) => v,
        Err(e) => {
            return Err(if status != 200 {
                RpcError::Http {
                    node: node.into(),
                    method: method.into(),
                    status,
                    body: text.chars().take(200).collect(),
                }
            } else {
                RpcError::Reply { node: node.into(), method: method.into(), why: e.to_string() }
            })
        }
    };
    match reply.error {
        Some(err) if !err.is_null() => Err(RpcError::Node {
            node: node.into(),
            method: method.into(),
            code: err.get("code").and_then(Value::as_i64).unwrap_or(0),
            message: err.get("message").and_then(Value::as_str).unwrap_or("").to_string(),
        }),
        _ => reply.result.ok_or_else(|| RpcError::Reply {
            node: node.into(),
            method: method.into(),
            why: "no result field".into(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Bodies as Bitcoin Core (master) writes them; tests/core.rs checks the same shapes live.
    #[test]
    fn legacy_and_strict_replies_parse_alike() {
        let ok1 = r#"{"result":7,"error":null,"id":"ckpool"}"#;
        let ok2 = r#"{"jsonrpc":"2.0","result":7,"id":"ckpool"}"#;
        assert_eq!(parse_reply("n", "getblockcount", 200, ok1).unwrap(), json!(7));
        assert_eq!(parse_reply("n", "getblockcount", 200, ok2).unwrap(), json!(7));
        // A null result is a result (submitblock's "accepted").
        assert_eq!(
            parse_reply("n", "submitblock", 200, r#"{"jsonrpc":"2.0","result":null,"id":1}"#).unwrap(),
            Value::Null
        );
        let e1 = r#"{"result":null,"error":{"code":-32601,"message":"Method not found"},"id":"ckpool"}"#;
        let e2 = r#"{"jsonrpc":"2.0","error":{"code":-32601,"message":"Method not found"},"id":"ckpool"}"#;
        for (status, body) in [(404, e1), (200, e2)] {
            match parse_reply("127.0.0.1:8332", "getx", status, body) {
                Err(RpcError::Node { code: -32601, message, node, method }) => {
                    assert_eq!(
                        (message.as_str(), node.as_str(), method.as_str()),
                        ("Method not found", "127.0.0.1:8332", "getx")
                    )
                }
                other => panic!("{body}: {other:?}"),
            }
        }
    }

    #[test]
    fn warm_up_is_recognised_and_named() {
        let body =
            "{\"result\":null,\"error\":{\"code\":-28,\"message\":\"Loading block index\u{2026}\"},\"id\":\"ckpool\"}";
        let e = parse_reply("127.0.0.1:8332", "getblockchaininfo", 500, body).unwrap_err();
        assert!(e.is_warming_up() && e.node_answered());
        assert_eq!(
            e.to_string(),
            "bitcoind 127.0.0.1:8332: getblockchaininfo returned error -28: Loading block index\u{2026}"
        );
    }

    #[test]
    fn plain_http_errors_and_garbage() {
        // Core's RPC work queue overflow: plain text, HTTP 503.
        match parse_reply("n", "getblocktemplate", 503, "Work queue depth exceeded") {
            Err(RpcError::Http { status: 503, body, .. }) => assert_eq!(body, "Work queue depth exceeded"),
            other => panic!("{other:?}"),
        }
        assert!(matches!(parse_reply("n", "m", 200, "<html>"), Err(RpcError::Reply { .. })));
        assert!(matches!(parse_reply("n", "m", 200, r#"{"id":1}"#), Err(RpcError::Reply { .. })));
        // An overlong error body is cut for the log.
        let long = "x".repeat(5000);
        match parse_reply("n", "m", 500, &long) {
            Err(RpcError::Http { body, .. }) => assert_eq!(body.len(), 200),
            other => panic!("{other:?}"),
        }
    }

    /// Raw results keep the node's text: amounts as written (BTC with 8 places, big integers),
    /// never through a float; errors and null results as for `parse_reply`.
    #[test]
    fn raw_results_keep_the_nodes_text() {
        let body = r#"{"result":{"totalfee":0.00014345,"subsidy":2099999997690000,"x":92233720368.54775807},"error":null,"id":"ckpool"}"#;
        let raw = parse_reply_raw("n", "getblockstats", 200, body).unwrap();
        assert_eq!(raw.get(), r#"{"totalfee":0.00014345,"subsidy":2099999997690000,"x":92233720368.54775807}"#);
        // Through f64 the last one would read 92233720368.54776.
        assert_ne!(serde_json::from_str::<Value>(raw.get()).unwrap()["x"].to_string(), "92233720368.54775807");
        assert_eq!(
            parse_reply_raw("n", "submitblock", 200, r#"{"jsonrpc":"2.0","result":null,"id":1}"#).unwrap().get(),
            "null"
        );
        let e = r#"{"result":null,"error":{"code":-32601,"message":"Method not found"},"id":"ckpool"}"#;
        assert!(matches!(parse_reply_raw("n", "getblockstats", 404, e), Err(RpcError::Node { code: -32601, .. })));
        assert!(matches!(parse_reply_raw("n", "m", 200, r#"{"id":1}"#), Err(RpcError::Reply { .. })));
        assert!(matches!(
            parse_reply_raw("n", "m", 503, "Work queue depth exceeded"),
            Err(RpcError::Http { status: 503, .. })
        ));
    }
}
