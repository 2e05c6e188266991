//! `-H`/`--handover` (ckpool's meaning): a new instance with the same socket dir takes the
//! running instance's listening sockets, so no miner's connection is ever refused.
//!
//! Every running instance serves `<sockdir>/handover.sock` (a UNIX socket, 0600, same user only:
//! the peer's uid is checked); one that took over binds it once the old one let go. The
//! exchange, one line each way, fds passed with SCM_RIGHTS:
//! 1. new → old: `{"handover":1,"pid":NEW}`
//! 2. old → new: `{"pid":OLD,"keys":["serverurl",...]}` with one fd per key (dup(2)s of the old
//!    instance's listeners). Both now hold the sockets; the old one keeps accepting.
//! 3. new → old, once the new instance serves work (READY): `release`
//! 4. old → new: `released`; the old instance stops accepting, closes its sessions (miners
//!    reconnect, to the new instance: the socket is the same) and exits.
//!
//! fd passing is `nix`'s `sendmsg`/`recvmsg` with `ScmRights`: nix is already this program's
//! signal and process crate, and std's `UnixStream` ancillary-data API is still unstable.
//!
//! If the new instance dies before step 3, the old one notices the closed connection and goes
//! on serving. Connections that arrive meanwhile wait in the shared accept queue, never refused.

use std::io::{BufRead, BufReader, IoSlice, IoSliceMut, Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context};
use nix::sys::socket::{recvmsg, sendmsg, ControlMessage, ControlMessageOwned, MsgFlags};
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt};
use tokio::sync::{mpsc, watch};

use super::Inherited;

/// How long each side waits for the other's answer.
pub const TIMEOUT: Duration = Duration::from_secs(5);

/// Most fds one handover carries.
const MAX_FDS: usize = 64;

/// The handover socket's path in `sockdir`.
pub fn socket_path(sockdir: &Path) -> PathBuf {
    sockdir.join("handover.sock")
}

/// The sockets received from the old instance and the connection to release it with.
pub struct Taken {
    pub old_pid: i32,
    pub sockets: Vec<Inherited>,
    conn: UnixStream,
}

/// Asks the instance running on `sockdir` for its listeners. `Ok(None)`: no instance is
/// running there (no socket, or nobody listening on it: a dead instance's leftover).
pub fn request(sockdir: &Path, timeout: Duration) -> anyhow::Result<Option<Taken>> {
    let path = socket_path(sockdir);
    let conn = match UnixStream::connect(&path) {
        Ok(c) => c,
        Err(e) if matches!(e.kind(), std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused) => {
            return Ok(None)
        }
        Err(e) => return Err(e).with_context(|| format!("handover: cannot connect to {}", path.display())),
    };
    // Sockets are taken only from a process of our own user (the directory is ours, but a
    // socket there could still be another user's).
    let peer = nix::sys::socket::getsockopt(&conn, nix::sys::socket::sockopt::PeerCredentials)
        .with_context(|| format!("handover: cannot read the peer credentials on {}", path.display()))?;
    let ours = nix::unistd::geteuid().as_raw();
    if peer.uid() != ours {
        bail!(
            "handover: the process on {} (pid {}) runs as uid {}, not as this user (uid {ours}): refusing its sockets",
            path.display(),
            peer.pid(),
            peer.uid()
        );
    }
    let unresponsive = || {
        format!(
            "handover: the running instance did not answer on {} within {} s (stopped or hung? its pid is in {})",
            path.display(),
            timeout.as_secs(),
            sockdir.join("main.pid").display()
        )
    };
    conn.set_read_timeout(Some(timeout)).context("handover: set timeout")?;
    conn.set_write_timeout(Some(timeout)).context("handover: set timeout")?;
    (&conn)
        .write_all(format!("{}\n", json!({"handover": 1, "pid": std::process::id()})).as_bytes())
        .with_context(unresponsive)?;
    // The answer's first bytes carry the fds.
    let mut buf = vec![0u8; 4096];
    let mut cmsg = nix::cmsg_space!([RawFd; MAX_FDS]);
    let (n, fds) = {
        let mut iov = [IoSliceMut::new(&mut buf)];
        let msg = recvmsg::<()>(conn.as_raw_fd(), &mut iov, Some(&mut cmsg), MsgFlags::MSG_CMSG_CLOEXEC)
            .map_err(std::io::Error::from)
            .with_context(unresponsive)?;
        let mut fds = Vec::new();
        for c in msg.cmsgs().context("handover: reading the passed fds")? {
            if let ControlMessageOwned::ScmRights(f) = c {
                // SAFETY: received with SCM_RIGHTS: new fds owned by this process.
                fds.extend(f.into_iter().map(|fd| unsafe { OwnedFd::from_raw_fd(fd) }));
            }
        }
        (msg.bytes, fds)
    };
    if n == 0 {
        bail!("handover: the running instance closed the connection without an answer");
    }
    buf.truncate(n);
    while !buf.contains(&b'\n') && buf.len() < 65536 {
        let mut more = [0u8; 1024];
        let m = (&conn).read(&mut more).with_context(unresponsive)?;
        if m == 0 {
            bail!("handover: the running instance's answer was cut short");
        }
        buf.extend_from_slice(&more[..m]);
    }
    let line = buf.split(|&b| b == b'\n').next().unwrap_or_default();
    let answer: Value = serde_json::from_slice(line).context("handover: the running instance's answer is not JSON")?;
    let old_pid = answer["pid"].as_i64().unwrap_or(0) as i32;
    let mut sockets = Vec::new();
    for fd in fds {
        match super::systemd::inspect(fd.as_raw_fd()) {
            Ok(addr) => sockets.push(Inherited { addr, listener: std::net::TcpListener::from(fd) }),
            Err(why) => tracing::warn!("handover: pid {old_pid} passed an unusable fd ({why}); closed"),
        }
    }
    tracing::info!(
        "handover: pid {old_pid} passed {} listening socket(s): {}",
        sockets.len(),
        sockets.iter().map(|s| s.addr.to_string()).collect::<Vec<_>>().join(", ")
    );
    Ok(Some(Taken { old_pid, sockets, conn }))
}

/// The connection to the old instance, kept until this one is ready.
pub struct Release {
    pub old_pid: i32,
    conn: UnixStream,
}

impl Taken {
    /// Splits the sockets from the connection that releases the old instance later.
    pub fn split(self) -> (Vec<Inherited>, Release) {
        (self.sockets, Release { old_pid: self.old_pid, conn: self.conn })
    }
}

impl Release {
    /// Tells the old instance to stop accepting and exit; waits (bounded) for its answer.
    pub fn release(self) -> anyhow::Result<()> {
        let pid = self.old_pid;
        (&self.conn).write_all(b"release\n").with_context(|| format!("handover: telling pid {pid} to stop"))?;
        let mut line = String::new();
        BufReader::new(&self.conn)
            .take(256)
            .read_line(&mut line)
            .with_context(|| format!("handover: pid {pid} did not confirm within {} s", TIMEOUT.as_secs()))?;
        if line.trim() != "released" {
            bail!("handover: pid {pid} answered {:?} instead of released", line.trim());
        }
        Ok(())
    }
}

/// The handover socket of this instance; the file is removed on drop unless a newer instance
/// has put its own at the same path.
pub struct Server {
    path: PathBuf,
    ino: u64,
    listener: tokio::net::UnixListener,
}

impl Drop for Server {
    fn drop(&mut self) {
        if std::fs::metadata(&self.path).is_ok_and(|m| m.ino() == self.ino) {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// Binds `<sockdir>/handover.sock`, replacing what is there: this instance owns the pid file, so
/// a socket there belongs to a dead instance or to the one that just handed over and is leaving.
/// Inside the runtime.
pub fn bind(sockdir: &Path) -> anyhow::Result<Server> {
    let path = socket_path(sockdir);
    let _ = std::fs::remove_file(&path);
    let listener =
        tokio::net::UnixListener::bind(&path).with_context(|| format!("handover socket {}", path.display()))?;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))
        .with_context(|| format!("handover socket {}: chmod 0600", path.display()))?;
    let ino = std::fs::metadata(&path).map(|m| m.ino()).unwrap_or(0);
    Ok(Server { path, ino, listener })
}

impl Server {
    /// Serves handover requests with `listeners` (key, dup) until one new instance releases this
    /// one (its pid is sent on `released`) or `shutdown` flips. One request at a time.
    pub async fn run(
        self,
        listeners: Vec<(&'static str, std::net::TcpListener)>,
        released: mpsc::Sender<i32>,
        mut shutdown: watch::Receiver<bool>,
    ) {
        let uid = nix::unistd::geteuid().as_raw();
        loop {
            let conn = tokio::select! {
                c = self.listener.accept() => c,
                _ = shutdown.changed() => return,
            };
            let mut conn = match conn {
                Ok((c, _)) => c,
                Err(e) => {
                    tracing::warn!("handover socket {}: accept failed: {e}", self.path.display());
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            match conn.peer_cred() {
                Ok(c) if c.uid() == uid => {}
                Ok(c) => {
                    tracing::warn!(
                        "handover: refused a request from uid {} (this instance runs as uid {uid})",
                        c.uid()
                    );
                    continue;
                }
                Err(e) => {
                    tracing::warn!("handover: cannot read the requester's credentials: {e}; refused");
                    continue;
                }
            }
            let pid = tokio::select! {
                r = serve_one(&mut conn, &listeners) => match r {
                    Ok(pid) => pid,
                    Err(e) => {
                        tracing::warn!("{e:#}");
                        continue;
                    }
                },
                _ = shutdown.changed() => return,
            };
            let _ = conn.write_all(b"released\n").await;
            tracing::info!("handover: pid {pid} serves the listeners now; this instance stops accepting and exits");
            let _ = released.send(pid).await;
            return;
        }
    }
}

/// One request: answer with the fds, then wait for `release`. Returns the new instance's pid.
async fn serve_one(
    conn: &mut tokio::net::UnixStream,
    listeners: &[(&'static str, std::net::TcpListener)],
) -> anyhow::Result<i32> {
    let (rd, _) = conn.split();
    let mut rd = tokio::io::BufReader::new(rd);
    let mut line = String::new();
    tokio::time::timeout(TIMEOUT, (&mut rd).take(4096).read_line(&mut line))
        .await
        .context("handover: the requester sent nothing")?
        .context("handover: reading the request")?;
    let req: Value = serde_json::from_str(&line).context("handover: the request is not JSON")?;
    let pid = req["pid"].as_i64().unwrap_or(0) as i32;
    if req["handover"] != json!(1) {
        bail!("handover: unknown request {:?}", line.trim());
    }
    drop(rd);
    let keys: Vec<&str> = listeners.iter().map(|l| l.0).collect();
    let answer = format!("{}\n", json!({"pid": std::process::id(), "keys": keys}));
    let fds: Vec<RawFd> = listeners.iter().map(|l| l.1.as_raw_fd()).collect();
    // A short message to an empty socket buffer: sent at once (waited for if not).
    loop {
        conn.writable().await.context("handover: socket")?;
        let sent = conn.try_io(tokio::io::Interest::WRITABLE, || {
            sendmsg::<()>(
                conn.as_raw_fd(),
                &[IoSlice::new(answer.as_bytes())],
                &[ControlMessage::ScmRights(&fds)],
                MsgFlags::empty(),
                None,
            )
            .map_err(std::io::Error::from)
        });
        match sent {
            Ok(n) if n == answer.len() => break,
            Ok(n) => bail!("handover: sent {n} of {} bytes to pid {pid}", answer.len()),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
            Err(e) => return Err(e).context(format!("handover: sending the listeners to pid {pid}")),
        }
    }
    tracing::info!(
        "handover: passed {} listener(s) to pid {pid}; serving on until it is ready and releases this instance",
        fds.len()
    );
    // No deadline here: the new instance may wait long for its node before it serves work.
    let (rd, _) = conn.split();
    let mut rd = tokio::io::BufReader::new(rd);
    let mut line = String::new();
    let n = (&mut rd).take(256).read_line(&mut line).await.context("handover: reading release")?;
    if n == 0 {
        bail!("handover: pid {pid} closed the connection before it was ready; this instance keeps serving");
    }
    if line.trim() != "release" {
        bail!("handover: pid {pid} sent {:?} instead of release; this instance keeps serving", line.trim());
    }
    Ok(pid)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The whole exchange between two ends in this process, over a real UNIX socket: the fds
    /// arrive with their addresses, the old end keeps serving until release.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn fds_pass_and_release_stops_the_server() {
        let dir = tempfile::tempdir().unwrap();
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        let server = bind(dir.path()).unwrap();
        let (tx, mut rx) = mpsc::channel(1);
        let (_stop_tx, stop_rx) = watch::channel(false);
        let task = tokio::spawn(server.run(vec![("serverurl", l.try_clone().unwrap())], tx, stop_rx));
        let d = dir.path().to_path_buf();
        let taken = tokio::task::spawn_blocking(move || request(&d, TIMEOUT)).await.unwrap().unwrap().unwrap();
        assert_eq!(taken.old_pid, std::process::id() as i32);
        assert_eq!(taken.sockets.len(), 1);
        assert_eq!(taken.sockets[0].addr, addr);
        let (sockets, rel) = taken.split();
        // The passed socket is the same listening socket: a connection made to it is accepted
        // through the received fd.
        let _c = std::net::TcpStream::connect(addr).unwrap();
        drop(l);
        let (_s, _) = sockets[0].listener.accept().unwrap();
        assert!(rx.try_recv().is_err(), "released before release was sent");
        tokio::task::spawn_blocking(move || rel.release()).await.unwrap().unwrap();
        assert_eq!(rx.recv().await, Some(std::process::id() as i32));
        task.await.unwrap();
        assert!(!socket_path(dir.path()).exists(), "the socket file is removed when the server ends");
    }

    /// No instance: no socket file, or a leftover file nobody listens on.
    #[test]
    fn no_running_instance_is_none() {
        let dir = tempfile::tempdir().unwrap();
        assert!(request(dir.path(), TIMEOUT).unwrap().is_none());
        drop(std::os::unix::net::UnixListener::bind(socket_path(dir.path())).unwrap());
        assert!(socket_path(dir.path()).exists());
        assert!(request(dir.path(), TIMEOUT).unwrap().is_none());
    }

    /// An instance that accepts but never answers (hung): a clear error within the timeout.
    #[test]
    fn unresponsive_instance_times_out_with_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let _hung = std::os::unix::net::UnixListener::bind(socket_path(dir.path())).unwrap();
        let e = request(dir.path(), Duration::from_millis(300)).err().expect("an error");
        let text = format!("{e:#}");
        assert!(text.contains("did not answer") && text.contains("main.pid"), "{text}");
    }
}
