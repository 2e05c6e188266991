//! The stratum client tests drive miners with (the pool's own SV1 client, with deadlines) and
//! `solve`, which grinds a share or a block for a notify.

use super::*;

/// The pool's own stratum client ([`Sv1Client`]) with deadlines, read as JSON trees so that
/// tests can assert exact shapes.
pub struct Client {
    pub sv1: Sv1Client,
    /// Lines received but not yet consumed by `expect_*`.
    pub backlog: Vec<Value>,
}

pub const IO_LIMIT: Duration = Duration::from_secs(20);

impl Client {
    pub async fn connect(addr: &str) -> Client {
        let sv1 = Sv1Client::connect(addr).await.unwrap_or_else(|e| panic!("connect {addr}: {e}"));
        Client { sv1, backlog: Vec::new() }
    }

    /// Sends `line` as it is (a newline added when missing).
    pub async fn send_raw(&mut self, line: &str) {
        self.sv1.send_raw(line.as_bytes());
        if !line.ends_with('\n') {
            self.sv1.send_raw(b"\n");
        }
        self.flush().await;
    }

    /// Sends `line` to a server that may close the connection meanwhile (an oversized line, a
    /// flood): a write error (reset, broken pipe) is not a test failure here; false when it failed.
    pub async fn send_raw_to_closing(&mut self, line: &str) -> bool {
        self.sv1.send_raw(line.as_bytes());
        if !line.ends_with('\n') {
            self.sv1.send_raw(b"\n");
        }
        matches!(tokio::time::timeout(IO_LIMIT, self.sv1.flush()).await, Ok(Ok(_)))
    }

    pub async fn wr_bytes(&mut self, bytes: &[u8]) {
        self.sv1.send_raw(bytes);
        self.flush().await;
    }

    pub async fn flush(&mut self) {
        tokio::time::timeout(IO_LIMIT, self.sv1.flush())
            .await
            .unwrap_or_else(|_| panic!("could not write to the server within {IO_LIMIT:?}"))
            .unwrap();
    }

    /// Sends a request and returns its id.
    pub async fn request(&mut self, method: &str, params: Value) -> u64 {
        let id = self.sv1.send_request(method, &params);
        self.flush().await;
        id
    }

    /// Next line from the server, or None at EOF; panics after `IO_LIMIT`.
    pub async fn read(&mut self) -> Option<Value> {
        match tokio::time::timeout(IO_LIMIT, self.sv1.next_line()).await {
            Ok(Ok(line)) => Some(
                serde_json::from_slice(line)
                    .unwrap_or_else(|e| panic!("server sent non-JSON {:?}: {e}", String::from_utf8_lossy(line))),
            ),
            Ok(Err(ClientError::Closed | ClientError::Io(_))) => None,
            Ok(Err(e)) => panic!("reading from the server: {e}"),
            Err(_) => panic!("no line from the server within {IO_LIMIT:?}"),
        }
    }

    /// Next line, possibly waiting at most `limit`; None on timeout or EOF. Nothing is lost
    /// to the timeout (the client's reads are cancel-safe).
    pub async fn read_within(&mut self, limit: Duration) -> Option<Value> {
        match tokio::time::timeout(limit, self.sv1.next_line()).await {
            Ok(Ok(line)) => serde_json::from_slice(line).ok(),
            _ => None,
        }
    }

    /// Reads until the reply with `id`, keeping notifications in the backlog.
    pub async fn reply(&mut self, id: u64) -> Value {
        if let Some(i) = self.backlog.iter().position(|v| v["id"] == json!(id)) {
            return self.backlog.remove(i);
        }
        loop {
            let v = self.read().await.expect("connection closed while waiting for a reply");
            if v["id"] == json!(id) {
                return v;
            }
            self.backlog.push(v);
        }
    }

    /// Reads until a notification of `method`, keeping other lines in the backlog.
    pub async fn notification(&mut self, method: &str) -> Value {
        if let Some(i) = self.backlog.iter().position(|v| v["method"] == json!(method)) {
            return self.backlog.remove(i);
        }
        loop {
            let v = self.read().await.unwrap_or_else(|| panic!("connection closed while waiting for {method}"));
            if v["method"] == json!(method) {
                return v;
            }
            self.backlog.push(v);
        }
    }

    /// Discards everything up to the first `method` notification (backlog included) and returns it:
    /// later reads see only what came after it.
    pub async fn skip_to(&mut self, method: &str) -> Value {
        if let Some(i) = self.backlog.iter().position(|v| v["method"] == json!(method)) {
            let v = self.backlog[i].clone();
            self.backlog.drain(..=i);
            return v;
        }
        self.backlog.clear();
        loop {
            let v = self.read().await.unwrap_or_else(|| panic!("connection closed while waiting for {method}"));
            if v["method"] == json!(method) {
                return v;
            }
        }
    }

    /// Reads notifications until one builds on `tip` (display-order hash), i.e. the pool's
    /// work after that block; earlier notifies are skipped.
    pub async fn notify_on_tip(&mut self, tip: &str) -> Value {
        let deadline = Instant::now() + IO_LIMIT;
        loop {
            let n = self.notification("mining.notify").await;
            let prev = ckpool::work::job::prevhash_from_stratum(n["params"][1].as_str().unwrap()).unwrap();
            if ckpool::hex::encode_rev(&prev) == tip {
                return n;
            }
            assert!(Instant::now() < deadline, "no notify on tip {tip}");
        }
    }

    /// subscribe + authorize; returns (extranonce1 hex, extranonce2 size). Lines that come
    /// before the answers are read afterwards, in order.
    pub async fn handshake(&mut self, worker: &str) -> (String, usize) {
        let sub = tokio::time::timeout(IO_LIMIT, self.sv1.subscribe("ckpool-test/1.0", None))
            .await
            .expect("subscribe answered in time")
            .expect("subscribed");
        let auth = tokio::time::timeout(IO_LIMIT, self.sv1.authorize(worker, "x"))
            .await
            .expect("authorize answered in time")
            .expect("authorize answered");
        assert_eq!(auth, Ok(()), "authorize {worker}");
        (ckpool::hex::encode(&sub.extranonce1), sub.extranonce2_size)
    }
}

/// Solves a share for a notify at `difficulty` (and, when `block`, the network target) by
/// brute force over the nonce; returns submit params. Bounded: gives up after 2^26 nonces.
pub fn solve(notify: &Value, en1: &str, en2: &str, difficulty: &str, block: bool) -> Option<Value> {
    use ckpool::difficulty::Difficulty;
    use ckpool::work::job::Job;
    let params = &notify["params"];
    let en1b = ckpool::hex::decode(en1).unwrap();
    let en2b = ckpool::hex::decode(en2).unwrap();
    let job = Job::from_notify(1, params, en1b.len(), en2b.len()).unwrap();
    let target = if block { job.network_target } else { difficulty.parse::<Difficulty>().unwrap().to_target() };
    let root = job.merkle_root(&en1b, &en2b);
    let ntime = job.ntime;
    for nonce in 0u32..(1 << 26) {
        let h = job.header(&root, job.version, ntime, nonce);
        if target.is_met_by(&ckpool::work::merkle::sha256d(&h)) {
            return Some(json!(["worker", params[0], en2, format!("{ntime:08x}"), format!("{nonce:08x}")]));
        }
    }
    None
}

/// Solves a share at `difficulty` that is NOT a block (its hash misses the network target): on
/// regtest the network difficulty is ~4.7e-10, so `difficulty` must be below it (e.g. 1e-10).
/// Bounded: gives up after 2^26 nonces.
pub fn solve_not_block(notify: &Value, en1: &str, en2: &str, difficulty: &str) -> Option<Value> {
    use ckpool::difficulty::Difficulty;
    use ckpool::work::job::Job;
    let params = &notify["params"];
    let en1b = ckpool::hex::decode(en1).unwrap();
    let en2b = ckpool::hex::decode(en2).unwrap();
    let job = Job::from_notify(1, params, en1b.len(), en2b.len()).unwrap();
    let target = difficulty.parse::<Difficulty>().unwrap().to_target();
    let root = job.merkle_root(&en1b, &en2b);
    let ntime = job.ntime;
    for nonce in 0u32..(1 << 26) {
        let h = ckpool::work::merkle::sha256d(&job.header(&root, job.version, ntime, nonce));
        if target.is_met_by(&h) && !job.network_target.is_met_by(&h) {
            return Some(json!(["worker", params[0], en2, format!("{ntime:08x}"), format!("{nonce:08x}")]));
        }
    }
    None
}
