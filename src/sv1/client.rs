//! One stratum v1 client, used by `ckpool mine`, the proxy's upstream session, `ckpool bench`
//! and the tests: it owns the TCP stream, numbers its requests, remembers what each id was
//! sent for, and hands every server line on, in order, as a typed [`Event`].
//!
//! Requests are queued (`send_*`, no I/O) and written by the next read, concurrently with it, so
//! many pipelined requests go out in one write and a server that stops reading cannot stall
//! what it sends us. Reads are capped ([`LineReader`]) and cancel-safe: `next_event` can sit
//! in a `select!` beside timers and channels. The awaiting forms (`subscribe`, `authorize`,
//! `submit`, `configure`) keep the lines that arrive meanwhile for the next `next_event`.
//! Raw lines stay possible (`send_raw`, `next_line`) for tests of malformed input.

use std::collections::VecDeque;
use std::ops::Range;

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use serde_json::Value;
use tokio::io::{AsyncRead, AsyncWriteExt, ReadBuf, ReadHalf, WriteHalf};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpStream, ToSocketAddrs};

use super::server_msg::{self, Event, Kind, Refusal, Subscription};
use crate::difficulty::Difficulty;
use crate::jsonw::{push_json_str, push_u64};
use crate::share::Submit;
use crate::sv1::lines::{Line, LineReader};

/// Longest server line read (a notify with a big coinbase and many branches fits).
pub const MAX_LINE: usize = 64 * 1024;

/// Requests remembered for their replies at most; older ones are forgotten (their replies
/// then arrive as [`Event::Stray`]).
const MAX_PENDING: usize = 1 << 17;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("the server closed the connection")]
    Closed,
    #[error("the server sent a line over {0} bytes")]
    TooLong(usize),
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// An awaited request was refused (or answered with something unusable).
    #[error("{method} refused: {refusal}")]
    Refused { method: &'static str, refusal: Refusal<'static> },
}

/// An accepted request, or why not.
pub type Verdict = Result<(), Refusal<'static>>;

/// The kinds of requests awaiting a reply, by id. Ids are handed out in sequence, so this is a
/// window over them: O(1) to add and to take, whatever order the replies come in.
#[derive(Debug, Default)]
struct Pending {
    base: u64,
    slots: VecDeque<Option<Kind>>,
}

impl Pending {
    fn add(&mut self, id: u64, kind: Kind) {
        if self.slots.is_empty() {
            self.base = id;
        }
        debug_assert_eq!(id, self.base + self.slots.len() as u64);
        self.slots.push_back(Some(kind));
        if self.slots.len() > MAX_PENDING {
            self.slots.pop_front();
            self.base += 1;
            self.trim();
        }
    }

    fn take(&mut self, id: u64) -> Option<Kind> {
        let i = usize::try_from(id.checked_sub(self.base)?).ok()?;
        let kind = self.slots.get_mut(i)?.take();
        self.trim();
        kind
    }

    fn trim(&mut self) {
        while let Some(None) = self.slots.front() {
            self.slots.pop_front();
            self.base += 1;
        }
    }

    fn len(&self) -> usize {
        self.slots.iter().filter(|s| s.is_some()).count()
    }
}

/// Where the line being handed out lives.
enum Src {
    /// `Client::replay`: a line kept while an awaited reply was read.
    Replay,
    Reader(Range<usize>),
}

type TlsStream = tokio_rustls::client::TlsStream<TcpStream>;

/// The read side: a TCP half, or the read half of a TLS stream.
enum Rd {
    Plain(OwnedReadHalf),
    Tls(ReadHalf<TlsStream>),
}

impl AsyncRead for Rd {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Rd::Plain(r) => Pin::new(r).poll_read(cx, buf),
            Rd::Tls(r) => Pin::new(r).poll_read(cx, buf),
        }
    }
}

/// The write side. TLS: rustls may hold records the socket did not take yet (`dirty`) until
/// flushed, which the reads do while they wait.
enum Wr {
    Plain(OwnedWriteHalf),
    Tls { w: WriteHalf<TlsStream>, dirty: bool },
}

impl Wr {
    /// A write without waiting (TCP only; TLS writes go through `write`).
    fn try_write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match self {
            Wr::Plain(w) => w.try_write(buf),
            Wr::Tls { .. } => Err(std::io::ErrorKind::WouldBlock.into()),
        }
    }

    /// Whether written bytes may still sit in rustls.
    fn dirty(&self) -> bool {
        matches!(self, Wr::Tls { dirty: true, .. })
    }

    /// Writes some of `buf`, or with nothing to write flushes rustls. Cancel-safe.
    async fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match self {
            Wr::Plain(w) => w.write(buf).await,
            Wr::Tls { w, dirty } if buf.is_empty() => {
                w.flush().await?;
                *dirty = false;
                Ok(0)
            }
            Wr::Tls { w, dirty } => {
                let n = w.write(buf).await?;
                *dirty = true;
                Ok(n)
            }
        }
    }
}

pub struct Client {
    rd: Rd,
    wr: Wr,
    reader: LineReader,
    /// Queued output and how much of it is written.
    out: Vec<u8>,
    written: usize,
    next_id: u64,
    pending: Pending,
    /// Lines read while awaiting a reply, handed out first.
    backlog: VecDeque<Vec<u8>>,
    replay: Vec<u8>,
    dump: bool,
}

impl Client {
    /// Connects (TCP_NODELAY on: requests are small and pipelined).
    pub async fn connect(addr: impl ToSocketAddrs) -> std::io::Result<Client> {
        Ok(Client::new(TcpStream::connect(addr).await?))
    }

    /// Connects over TLS (`stratum+tls://`), checking the server's certificate against `config`'s
    /// roots; errors name the step that failed (certificate errors with rustls's reason).
    pub async fn connect_tls(hostport: &str, config: Arc<rustls::ClientConfig>) -> anyhow::Result<Client> {
        Ok(Client::from_tls(crate::tls::connect(hostport, config).await?))
    }

    /// Connects to a `stratum+tcp://HOST:PORT`, `stratum+tls://HOST:PORT` or `HOST:PORT` url;
    /// TLS with `ca` (PEM) as its trust, or the built-in webpki roots.
    pub async fn connect_url(url: &str, ca: Option<&std::path::Path>) -> anyhow::Result<Client> {
        let url = url.trim().trim_end_matches('/');
        match url.strip_prefix("stratum+tls://") {
            Some(hp) => Client::connect_tls(hp, crate::tls::client_config(ca)?).await,
            None => {
                let hp = url.trim_start_matches("stratum+tcp://");
                Ok(Client::connect(hp).await.map_err(|e| anyhow::anyhow!("cannot connect to {hp}: {e}"))?)
            }
        }
    }

    /// A client over an established TLS stream.
    pub fn from_tls(stream: TlsStream) -> Client {
        let (rd, w) = tokio::io::split(stream);
        Client::with_halves(Rd::Tls(rd), Wr::Tls { w, dirty: false })
    }

    pub fn new(stream: TcpStream) -> Client {
        let _ = stream.set_nodelay(true);
        let (rd, wr) = stream.into_split();
        Client::with_halves(Rd::Plain(rd), Wr::Plain(wr))
    }

    fn with_halves(rd: Rd, wr: Wr) -> Client {
        Client {
            rd,
            wr,
            reader: LineReader::new(MAX_LINE),
            out: Vec::new(),
            written: 0,
            next_id: 1,
            pending: Pending::default(),
            backlog: VecDeque::new(),
            replay: Vec::new(),
            dump: false,
        }
    }

    /// Prints every line sent (`> `) and received (`< `) on stdout (`ckpool mine -P`).
    pub fn dump_protocol(&mut self, on: bool) {
        self.dump = on;
    }

    /// Requests sent and not answered yet.
    pub fn pending(&self) -> usize {
        self.pending.len()
    }

    fn begin(&mut self, method: &str, kind: Option<Kind>) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        self.out.extend_from_slice(b"{\"id\":");
        match kind {
            Some(k) => {
                self.pending.add(id, k);
                push_u64(&mut self.out, id);
            }
            None => self.out.extend_from_slice(b"null"),
        }
        self.out.extend_from_slice(b",\"method\":");
        push_json_str(&mut self.out, method);
        self.out.extend_from_slice(b",\"params\":");
        id
    }

    fn end(&mut self, from: usize) {
        self.out.extend_from_slice(b"}\n");
        if self.dump {
            print!("> {}", String::from_utf8_lossy(&self.out[from..]));
        }
    }

    /// Queues `mining.configure` asking for version rolling within `mask` (at least 2 bits).
    pub fn send_configure(&mut self, mask: u32) -> u64 {
        let from = self.out.len();
        let id = self.begin("mining.configure", Some(Kind::Configure));
        let params = format!(
            "[[\"version-rolling\"],{{\"version-rolling.mask\":\"{mask:08x}\",\"version-rolling.min-bit-count\":2}}]"
        );
        self.out.extend_from_slice(params.as_bytes());
        self.end(from);
        id
    }

    /// Queues `mining.subscribe` with a user agent and, to resume a session, its id.
    pub fn send_subscribe(&mut self, agent: &str, session: Option<&str>) -> u64 {
        let from = self.out.len();
        let id = self.begin("mining.subscribe", Some(Kind::Subscribe));
        self.out.push(b'[');
        push_json_str(&mut self.out, agent);
        if let Some(s) = session {
            self.out.push(b',');
            push_json_str(&mut self.out, s);
        }
        self.out.push(b']');
        self.end(from);
        id
    }

    pub fn send_authorize(&mut self, user: &str, pass: &str) -> u64 {
        let from = self.out.len();
        let id = self.begin("mining.authorize", Some(Kind::Authorize));
        self.out.push(b'[');
        push_json_str(&mut self.out, user);
        self.out.push(b',');
        push_json_str(&mut self.out, pass);
        self.out.push(b']');
        self.end(from);
        id
    }

    /// Queues a share from `user` (each field sent as the JSON string given); its answer comes
    /// as [`Event::Submitted`] with the id returned.
    pub fn send_submit(&mut self, user: &str, s: &Submit) -> u64 {
        let from = self.out.len();
        let id = self.begin("mining.submit", Some(Kind::Submit));
        for (i, p) in [user, s.job_id, s.extranonce2, s.ntime, s.nonce].into_iter().chain(s.version_bits).enumerate() {
            self.out.push(if i == 0 { b'[' } else { b',' });
            push_json_str(&mut self.out, p);
        }
        self.out.push(b']');
        self.end(from);
        id
    }

    /// Queues `mining.suggest_difficulty` as a notification (id null): servers do not answer it.
    pub fn suggest_difficulty(&mut self, d: Difficulty) {
        let from = self.out.len();
        self.begin("mining.suggest_difficulty", None);
        self.out.push(b'[');
        d.write_decimal(&mut self.out);
        self.out.push(b']');
        self.end(from);
    }

    /// Queues any request; its reply comes as [`Event::Replied`] (or, read raw, by its id).
    pub fn send_request(&mut self, method: &str, params: &Value) -> u64 {
        let from = self.out.len();
        let id = self.begin(method, Some(Kind::Other));
        self.out.extend_from_slice(params.to_string().as_bytes());
        self.end(from);
        id
    }

    /// Bytes queued and not yet written.
    pub fn queued(&self) -> usize {
        self.out.len() - self.written
    }

    /// Queues bytes as they are (tests: garbage, exact firmware lines; add the newline).
    pub fn send_raw(&mut self, bytes: &[u8]) {
        self.out.extend_from_slice(bytes);
    }

    /// Writes everything queued. Cancel-safe.
    pub async fn flush(&mut self) -> Result<(), ClientError> {
        while self.written < self.out.len() {
            let n = self.wr.write(&self.out[self.written..]).await?;
            self.wrote(n)?;
        }
        if self.wr.dirty() {
            self.wr.write(&[]).await?;
        }
        Ok(())
    }

    fn wrote(&mut self, n: usize) -> Result<(), ClientError> {
        if n == 0 {
            return Err(std::io::Error::from(std::io::ErrorKind::WriteZero).into());
        }
        self.written += n;
        if self.written == self.out.len() {
            self.out.clear();
            self.written = 0;
        }
        Ok(())
    }

    fn src(&self, l: Line) -> Result<Src, ClientError> {
        match l {
            Line::Data(r) => Ok(Src::Reader(r)),
            Line::TooLong => Err(ClientError::TooLong(MAX_LINE)),
            Line::Eof => Err(ClientError::Closed),
        }
    }

    /// The next line without waiting, if one is here already.
    fn buffered(&mut self) -> Option<Result<Src, ClientError>> {
        if let Some(l) = self.backlog.pop_front() {
            self.replay = l;
            return Some(Ok(Src::Replay));
        }
        self.reader.buffered_line().map(|l| self.src(l))
    }

    /// The next line: the backlog's first, else one read. Cancel-safe.
    async fn fill(&mut self) -> Result<Src, ClientError> {
        if let Some(l) = self.backlog.pop_front() {
            self.replay = l;
            return Ok(Src::Replay);
        }
        self.read_line().await
    }

    /// The next line from the socket, writing queued output while waiting for it. Cancel-safe.
    async fn read_line(&mut self) -> Result<Src, ClientError> {
        if let Some(l) = self.reader.buffered_line() {
            return self.src(l);
        }
        if self.written < self.out.len() {
            // The socket usually takes it all at once, without a future.
            match self.wr.try_write(&self.out[self.written..]) {
                Ok(n) => self.wrote(n)?,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(e) => return Err(e.into()),
            }
        }
        while self.written < self.out.len() || self.wr.dirty() {
            // Writing first: requests go out as soon as they are queued, as one write (TLS:
            // then flushed out of rustls).
            let pending = self.written < self.out.len();
            tokio::select! {
                biased;
                n = self.wr.write(&self.out[self.written..]) => {
                    let n = n?;
                    if pending { self.wrote(n)? }
                }
                l = self.reader.next_line(&mut self.rd) => return self.src(l?),
            }
        }
        let l = self.reader.next_line(&mut self.rd).await?;
        self.src(l)
    }

    fn line(&self, src: &Src) -> &[u8] {
        match src {
            Src::Replay => &self.replay,
            Src::Reader(r) => self.reader.line(r.clone()),
        }
    }

    fn dump_in(&self, line: &[u8]) {
        if self.dump {
            println!("< {}", String::from_utf8_lossy(line));
        }
    }

    /// The next server line as it came (tests). Cancel-safe.
    pub async fn next_line(&mut self) -> Result<&[u8], ClientError> {
        let src = self.fill().await?;
        self.dump_in(self.line(&src));
        Ok(self.line(&src))
    }

    /// The next server line as an event, replies matched to the requests they answer.
    /// Cancel-safe.
    pub async fn next_event(&mut self) -> Result<Event<'_>, ClientError> {
        let src = self.fill().await?;
        Ok(self.event(src))
    }

    /// An event already read (no I/O), for handling a burst of lines before writing once.
    pub fn try_event(&mut self) -> Option<Result<Event<'_>, ClientError>> {
        match self.buffered()? {
            Ok(src) => Some(Ok(self.event(src))),
            Err(e) => Some(Err(e)),
        }
    }

    fn event(&mut self, src: Src) -> Event<'_> {
        let line = match &src {
            Src::Replay => &self.replay[..],
            Src::Reader(r) => self.reader.line(r.clone()),
        };
        if self.dump {
            println!("< {}", String::from_utf8_lossy(line));
        }
        let pending = &mut self.pending;
        server_msg::event(line, |id| pending.take(id))
    }

    /// Reads until the reply to `id`, keeping other lines for `next_event`; returns its event.
    async fn reply(&mut self, id: u64) -> Result<Event<'_>, ClientError> {
        if let Some(i) = self.backlog.iter().position(|l| server_msg::reply_id(l) == Some(id)) {
            self.replay = self.backlog.remove(i).expect("position is in range");
            return Ok(self.event(Src::Replay));
        }
        loop {
            let src = self.read_line().await?;
            if server_msg::reply_id(self.line(&src)) == Some(id) {
                return Ok(self.event(src));
            }
            let keep = self.line(&src).to_vec();
            self.backlog.push_back(keep);
        }
    }

    /// Asks for version rolling within `mask`; the mask granted (0: refused).
    pub async fn configure(&mut self, mask: u32) -> Result<u32, ClientError> {
        let id = self.send_configure(mask);
        match self.reply(id).await? {
            Event::Configured(m) => Ok(m),
            other => unreachable!("a configure reply is read as Configured: {other:?}"),
        }
    }

    /// Subscribes; the extranonce1 and extranonce2 size given.
    pub async fn subscribe(&mut self, agent: &str, session: Option<&str>) -> Result<Subscription, ClientError> {
        let id = self.send_subscribe(agent, session);
        match self.reply(id).await? {
            Event::Subscribed(Ok(s)) => Ok(s),
            Event::Subscribed(Err(r)) => {
                Err(ClientError::Refused { method: "mining.subscribe", refusal: r.into_owned() })
            }
            other => unreachable!("a subscribe reply is read as Subscribed: {other:?}"),
        }
    }

    pub async fn authorize(&mut self, user: &str, pass: &str) -> Result<Verdict, ClientError> {
        let id = self.send_authorize(user, pass);
        match self.reply(id).await? {
            Event::Authorized(v) => Ok(v.map_err(Refusal::into_owned)),
            other => unreachable!("an authorize reply is read as Authorized: {other:?}"),
        }
    }

    /// Submits one share and waits for its answer (pipelined shares: `send_submit`).
    pub async fn submit(&mut self, user: &str, s: &Submit<'_>) -> Result<Verdict, ClientError> {
        let id = self.send_submit(user, s);
        match self.reply(id).await? {
            Event::Submitted { result, .. } => Ok(result.map_err(Refusal::into_owned)),
            other => unreachable!("a submit reply is read as Submitted: {other:?}"),
        }
    }
}

#[cfg(test)]
mod tests;
