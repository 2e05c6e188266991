//! The API's HTTP/1.1 server (hyper) and its routes. Bounded everywhere, so that a hostile or
//! slow client costs the pool nothing but this thread's time:
//! - at most [`MAX_CONNECTIONS`] connections; more are closed at once;
//! - request headers at most [`MAX_HEAD`] bytes, and in full within [`HEAD_TIMEOUT`]
//!   (slowloris); a connection lives at most [`CONN_LIFETIME`];
//! - GET and HEAD only, request bodies never read;
//! - a token bucket over all requests ([`RATE`] per second, [`BURST`] at once): past it, 429.

use std::convert::Infallible;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{HeaderValue, CACHE_CONTROL, CONTENT_TYPE, RETRY_AFTER};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::sync::{watch, Semaphore};

use super::{dashboard, json, metrics, Api};

pub const MAX_CONNECTIONS: usize = 64;
pub const MAX_HEAD: usize = 16 * 1024;
pub const HEAD_TIMEOUT: Duration = Duration::from_secs(5);
pub const CONN_LIFETIME: Duration = Duration::from_secs(60);
pub const RATE: f64 = 200.0;
pub const BURST: f64 = 400.0;

/// A token bucket (time passed in).
#[derive(Debug)]
pub struct Bucket {
    tokens: f64,
    at: tokio::time::Instant,
}

impl Bucket {
    pub fn new(now: tokio::time::Instant) -> Bucket {
        Bucket { tokens: BURST, at: now }
    }

    pub fn take(&mut self, now: tokio::time::Instant) -> bool {
        let dt = now.saturating_duration_since(self.at).as_secs_f64();
        self.at = now;
        self.tokens = (self.tokens + dt * RATE).min(BURST);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// Serves until `shutdown` flips.
pub async fn serve(api: Arc<Api>, listeners: Vec<tokio::net::TcpListener>, shutdown: watch::Receiver<bool>) {
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let bucket = Arc::new(Mutex::new(Bucket::new(tokio::time::Instant::now())));
    let mut tasks = Vec::new();
    for l in listeners {
        tasks.push(tokio::spawn(accept_loop(api.clone(), l, slots.clone(), bucket.clone(), shutdown.clone())));
    }
    for t in tasks {
        let _ = t.await;
    }
}

async fn accept_loop(
    api: Arc<Api>,
    listener: tokio::net::TcpListener,
    slots: Arc<Semaphore>,
    bucket: Arc<Mutex<Bucket>>,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        let (stream, _) = tokio::select! {
            r = listener.accept() => match r {
                Ok(s) => s,
                Err(e) => {
                    // Out of file descriptors and the like: back off, do not spin.
                    tracing::debug!("API accept: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            _ = shutdown.changed() => return,
        };
        let Ok(permit) = slots.clone().try_acquire_owned() else {
            api.limited.fetch_add(1, Ordering::Relaxed);
            drop(stream);
            continue;
        };
        let (api, bucket) = (api.clone(), bucket.clone());
        tokio::spawn(async move {
            let svc = hyper::service::service_fn(move |req| {
                let (api, bucket) = (api.clone(), bucket.clone());
                async move { Ok::<_, Infallible>(handle(&api, &bucket, req)) }
            });
            let mut b = hyper::server::conn::http1::Builder::new();
            b.timer(TokioTimer::new())
                .header_read_timeout(HEAD_TIMEOUT)
                .max_buf_size(MAX_HEAD)
                .keep_alive(true)
                .max_headers(64);
            let conn = b.serve_connection(TokioIo::new(stream), svc);
            let _ = tokio::time::timeout(CONN_LIFETIME, conn).await;
            drop(permit);
        });
    }
}

type Resp = Response<Full<Bytes>>;

fn reply(status: StatusCode, ctype: &'static str, body: impl Into<Bytes>) -> Resp {
    let mut r = Response::new(Full::new(body.into()));
    *r.status_mut() = status;
    r.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static(ctype));
    r.headers_mut().insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r.headers_mut().insert("x-content-type-options", HeaderValue::from_static("nosniff"));
    r
}

fn json_reply(v: &serde_json::Value) -> Resp {
    let mut body = serde_json::to_vec_pretty(v).expect("JSON serializes");
    body.push(b'\n');
    reply(StatusCode::OK, "application/json", body)
}

fn error(status: StatusCode, msg: &str) -> Resp {
    let mut body = serde_json::to_vec(&serde_json::json!({ "error": msg })).expect("JSON serializes");
    body.push(b'\n');
    reply(status, "application/json", body)
}

/// `%XX`-decodes a path segment; `None` when it is not valid UTF-8 or a `%` is malformed.
pub fn percent_decode(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = std::str::from_utf8(b.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// A user name that can only name a file directly under logdir/users (as the statistics writer
/// names them): no separator, no leading dot, no NUL, at most 200 bytes.
pub fn user_name_ok(name: &str) -> bool {
    !name.is_empty() && !name.starts_with('.') && !name.contains(['/', '\\', '\0']) && name.len() <= 200
}

fn handle(api: &Arc<Api>, bucket: &Mutex<Bucket>, req: Request<Incoming>) -> Resp {
    if !bucket.lock().unwrap_or_else(|p| p.into_inner()).take(tokio::time::Instant::now()) {
        api.limited.fetch_add(1, Ordering::Relaxed);
        let mut r = error(StatusCode::TOO_MANY_REQUESTS, "too many requests");
        r.headers_mut().insert(RETRY_AFTER, HeaderValue::from_static("1"));
        return r;
    }
    api.served.fetch_add(1, Ordering::Relaxed);
    let head = req.method() == Method::HEAD;
    if req.method() != Method::GET && !head {
        let mut r = error(StatusCode::METHOD_NOT_ALLOWED, "read-only: GET or HEAD");
        r.headers_mut().insert("allow", HeaderValue::from_static("GET, HEAD"));
        return r;
    }
    let mut r = route(api, req.uri().path(), req.uri().query());
    if head {
        *r.body_mut() = Full::new(Bytes::new());
    }
    r
}

fn route(api: &Arc<Api>, path: &str, query: Option<&str>) -> Resp {
    let view = || api.src.view.borrow().clone();
    match path {
        "/" | "/index.html" => reply(StatusCode::OK, "text/html; charset=utf-8", dashboard::PAGE),
        "/metrics" => {
            reply(StatusCode::OK, "application/openmetrics-text; version=1.0.0; charset=utf-8", metrics::render(api))
        }
        "/api/pool" => json_reply(&json::pool(api)),
        "/api/users" => json_reply(&json::users(&view())),
        "/api/workers" => json_reply(&json::workers(&view())),
        "/api/blocks" => json_reply(&json::blocks(api)),
        "/api/network" => json_reply(&json::network(api)),
        "/api/history" => match query.filter(|q| !q.is_empty()) {
            None => json_reply(&json::history(api)),
            Some(q) => match crate::api::stored::parse(q) {
                Ok(p) => json_reply(&crate::api::stored::history(api, &p)),
                Err(why) => error(StatusCode::BAD_REQUEST, &why),
            },
        },
        "/api/widget" => json_reply(&json::widget(api)),
        "/pool/pool.status" => file(api, &["pool", "pool.status"], "text/plain; charset=utf-8"),
        p => {
            if let Some(name) = p.strip_prefix("/api/users/") {
                match percent_decode(name).filter(|n| user_name_ok(n)) {
                    Some(n) => match json::user(&view(), &n) {
                        Some(v) => json_reply(&v),
                        None => error(StatusCode::NOT_FOUND, "no such user"),
                    },
                    None => error(StatusCode::BAD_REQUEST, "not a user name"),
                }
            } else if let Some(name) = p.strip_prefix("/users/") {
                match percent_decode(name).filter(|n| user_name_ok(n)) {
                    Some(n) => file(api, &["users", &n], "application/json"),
                    None => error(StatusCode::BAD_REQUEST, "not a user name"),
                }
            } else {
                error(StatusCode::NOT_FOUND, "not found")
            }
        }
    }
}

/// Logdir's file under `parts` (fixed names, or a checked user name), as its bytes.
fn file(api: &Api, parts: &[&str], ctype: &'static str) -> Resp {
    let mut path = api.src.logdir.clone();
    for p in parts {
        path.push(p);
    }
    match std::fs::read(&path) {
        Ok(bytes) => reply(StatusCode::OK, ctype, bytes),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => error(StatusCode::NOT_FOUND, "no such file (yet)"),
        Err(_) => error(StatusCode::INTERNAL_SERVER_ERROR, "cannot read the file"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_that_leave_users_are_refused() {
        for bad in ["..", ".", "../pool/pool.status", "a/b", "a\\b", "", ".hidden", "x\0y"] {
            assert!(!user_name_ok(bad), "{bad:?}");
        }
        for (raw, ok) in [("%2e%2e", false), ("..%2fpool", false), ("alice", true), ("bc1q.rig_1", true)] {
            assert_eq!(percent_decode(raw).is_some_and(|n| user_name_ok(&n)), ok, "{raw}");
        }
        assert_eq!(percent_decode("a%20b").as_deref(), Some("a b"));
        assert_eq!(percent_decode("%zz"), None);
        assert_eq!(percent_decode("%c3%28"), None);
    }

    #[test]
    fn bucket_refills_at_rate() {
        let t0 = tokio::time::Instant::now();
        let mut b = Bucket::new(t0);
        let taken = (0..1000).filter(|_| b.take(t0)).count();
        assert_eq!(taken, BURST as usize);
        assert!(!b.take(t0));
        let later = t0 + Duration::from_millis(100);
        let taken = (0..1000).filter(|_| b.take(later)).count();
        assert_eq!(taken, (RATE / 10.0) as usize);
    }
}
