//! The one way tests wait for something: poll a condition every [`POLL`] until it holds, at
//! most `limit` long and so at most `limit / POLL + 1` times; on timeout panic saying what was
//! awaited, for how long, how many times it was checked, and (the `_or` forms) the state then.
//!
//! A condition returns `bool` or `Option<T>` (the value waited for, returned). `until` and
//! `until_or` sleep with tokio, `until_async` awaits its condition (an RPC, an HTTP request),
//! `blocking` and `blocking_or` sleep the thread.
//! ```ignore
//! let line = wait::until("a share line", Duration::from_secs(20), || pool.share_lines().pop()).await;
//! wait::until_or("ckpool ready", LIMIT, || pool.log().contains("ckpool ready"), || pool.log()).await;
//! ```

use std::future::Future;
use std::time::{Duration, Instant};

/// How often a condition is checked.
pub const POLL: Duration = Duration::from_millis(50);

/// What a condition gives: `true` / `Some(value)` when it holds.
pub trait Outcome {
    type Value;
    fn ready(self) -> Option<Self::Value>;
}

impl Outcome for bool {
    type Value = ();
    fn ready(self) -> Option<()> {
        self.then_some(())
    }
}

impl<T> Outcome for Option<T> {
    type Value = T;
    fn ready(self) -> Option<T> {
        self
    }
}

/// The bounds of one wait: the deadline and the most checks it may make.
struct Bound {
    start: Instant,
    limit: Duration,
    tries: u64,
    max_tries: u64,
}

impl Bound {
    fn new(limit: Duration) -> Bound {
        let max_tries = (limit.as_millis() / POLL.as_millis()) as u64 + 1;
        Bound { start: Instant::now(), limit, tries: 0, max_tries }
    }

    /// Counts a failed check; false once the time or the count is used up.
    fn again(&mut self) -> bool {
        self.tries += 1;
        self.tries < self.max_tries && self.start.elapsed() < self.limit
    }

    fn fail(&self, what: &str, context: Option<String>) -> ! {
        let then = context.map(|c| format!("\n{c}")).unwrap_or_default();
        panic!("timed out waiting for {what}: not so after {:?} ({} checks){then}", self.limit, self.tries)
    }
}

/// Waits (tokio) until `cond` holds; returns its value.
pub async fn until<R: Outcome>(what: &str, limit: Duration, cond: impl FnMut() -> R) -> R::Value {
    wait(what, limit, cond, None::<fn() -> String>).await
}

/// [`until`], and on timeout the panic shows `context()` (a log, the last answer).
pub async fn until_or<R: Outcome>(
    what: &str,
    limit: Duration,
    cond: impl FnMut() -> R,
    context: impl FnOnce() -> String,
) -> R::Value {
    wait(what, limit, cond, Some(context)).await
}

async fn wait<R: Outcome>(
    what: &str,
    limit: Duration,
    mut cond: impl FnMut() -> R,
    context: Option<impl FnOnce() -> String>,
) -> R::Value {
    let mut b = Bound::new(limit);
    loop {
        if let Some(v) = cond().ready() {
            return v;
        }
        if !b.again() {
            b.fail(what, context.map(|c| c()));
        }
        tokio::time::sleep(POLL).await;
    }
}

/// Waits until the future `cond()` makes gives a ready outcome (an RPC, an HTTP request). Each
/// check is itself bounded by what is left of `limit`.
pub async fn until_async<R: Outcome, F: Future<Output = R>>(
    what: &str,
    limit: Duration,
    cond: impl FnMut() -> F,
) -> R::Value {
    until_async_or(what, limit, cond, String::new).await
}

/// [`until_async`], and on timeout the panic shows `context()`.
pub async fn until_async_or<R: Outcome, F: Future<Output = R>>(
    what: &str,
    limit: Duration,
    mut cond: impl FnMut() -> F,
    context: impl FnOnce() -> String,
) -> R::Value {
    let mut b = Bound::new(limit);
    loop {
        let left = limit.saturating_sub(b.start.elapsed()).max(POLL);
        if let Ok(r) = tokio::time::timeout(left, cond()).await {
            if let Some(v) = r.ready() {
                return v;
            }
        }
        if !b.again() {
            b.fail(what, Some(context()).filter(|c| !c.is_empty()));
        }
        tokio::time::sleep(POLL).await;
    }
}

/// [`until`] on a plain thread (std sleep). Inside a tokio test it holds its worker thread
/// while it waits: for conditions on files and processes, not on the test's own tasks.
pub fn blocking<R: Outcome>(what: &str, limit: Duration, cond: impl FnMut() -> R) -> R::Value {
    blocking_wait(what, limit, cond, None::<fn() -> String>)
}

/// [`blocking`], and on timeout the panic shows `context()`.
pub fn blocking_or<R: Outcome>(
    what: &str,
    limit: Duration,
    cond: impl FnMut() -> R,
    context: impl FnOnce() -> String,
) -> R::Value {
    blocking_wait(what, limit, cond, Some(context))
}

fn blocking_wait<R: Outcome>(
    what: &str,
    limit: Duration,
    mut cond: impl FnMut() -> R,
    context: Option<impl FnOnce() -> String>,
) -> R::Value {
    let mut b = Bound::new(limit);
    loop {
        if let Some(v) = cond().ready() {
            return v;
        }
        if !b.again() {
            b.fail(what, context.map(|c| c()));
        }
        std::thread::sleep(POLL);
    }
}
