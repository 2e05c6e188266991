//! systemd socket activation, with `sd_listen_fds(3)`'s rules: `LISTEN_PID` must be this
//! process, `LISTEN_FDS` sockets start at fd 3 (`SD_LISTEN_FDS_START`); the variables are
//! removed so children do not take them, and each fd is made close-on-exec.

use std::net::{SocketAddr, TcpListener};
use std::os::fd::{FromRawFd, OwnedFd, RawFd};

use nix::fcntl::{fcntl, FcntlArg, FdFlag};
use nix::sys::socket::{getsockname, getsockopt, sockopt, SockType, SockaddrLike, SockaddrStorage};

use super::Inherited;

/// `SD_LISTEN_FDS_START`.
pub const LISTEN_FDS_START: RawFd = 3;

/// The fd numbers systemd passed to this process (empty when not socket-activated or when the
/// variables are meant for another process), with a note for the log when they were ignored;
/// the variables are removed. Call once, first thing, before any thread starts (it edits the
/// environment), and log the note once logging is up.
pub fn listen_fds() -> (Vec<RawFd>, Option<String>) {
    let pid = std::env::var("LISTEN_PID").ok();
    let fds = std::env::var("LISTEN_FDS").ok();
    std::env::remove_var("LISTEN_PID");
    std::env::remove_var("LISTEN_FDS");
    std::env::remove_var("LISTEN_FDNAMES");
    let (Some(pid), Some(fds)) = (pid, fds) else { return (Vec::new(), None) };
    if pid.trim().parse::<u32>().ok() != Some(std::process::id()) {
        return (Vec::new(), Some(format!("LISTEN_FDS is set for pid {pid}, not this process: ignored")));
    }
    match fds.trim().parse::<RawFd>() {
        Ok(n) if (0..=4096).contains(&n) => ((LISTEN_FDS_START..LISTEN_FDS_START + n).collect(), None),
        _ => (Vec::new(), Some(format!("LISTEN_FDS={fds:?} is not a count of sockets: ignored"))),
    }
}

/// Takes the passed fds: listening TCP sockets become [`Inherited`] with their local address;
/// anything else (a UNIX or UDP socket, a closed fd) is logged and left alone.
pub fn take(fds: &[RawFd]) -> Vec<Inherited> {
    let mut out = Vec::new();
    for &fd in fds {
        match inspect(fd) {
            Ok(addr) => {
                // SAFETY: borrowed for this call only; the fd is open (inspected just above).
                let _ =
                    fcntl(unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) }, FcntlArg::F_SETFD(FdFlag::FD_CLOEXEC));
                // SAFETY: systemd passed this fd to this process, which owns it from here on
                // (sd_listen_fds semantics); it was checked to be a listening TCP socket.
                let owned = unsafe { OwnedFd::from_raw_fd(fd) };
                out.push(Inherited { addr, listener: TcpListener::from(owned) });
            }
            Err(why) => tracing::warn!("systemd passed fd {fd}, which is not usable: {why}; ignored"),
        }
    }
    if !fds.is_empty() {
        tracing::info!(
            "socket activation: {} listening socket(s) from systemd: {}",
            out.len(),
            out.iter().map(|i| i.addr.to_string()).collect::<Vec<_>>().join(", ")
        );
    }
    out
}

/// The local address of `fd` when it is a listening TCP socket.
pub(super) fn inspect(fd: RawFd) -> Result<SocketAddr, String> {
    // SAFETY: only borrowed for the calls below; the fd stays open.
    let b = unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) };
    match getsockopt(&b, sockopt::SockType) {
        Ok(SockType::Stream) => {}
        Ok(t) => return Err(format!("a {t:?} socket, not a stream (ListenStream=) socket")),
        Err(e) => return Err(format!("not a socket ({e})")),
    }
    if !getsockopt(&b, sockopt::AcceptConn).unwrap_or(false) {
        return Err("a stream socket that is not listening".into());
    }
    let addr: SockaddrStorage = getsockname(fd).map_err(|e| format!("getsockname: {e}"))?;
    if let Some(v4) = addr.as_sockaddr_in() {
        Ok(SocketAddr::V4((*v4).into()))
    } else if let Some(v6) = addr.as_sockaddr_in6() {
        Ok(SocketAddr::V6((*v6).into()))
    } else {
        Err(format!("not a TCP/IP socket (family {:?})", addr.family()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::{AsRawFd, IntoRawFd};

    /// A real listening socket is taken with its address; a UNIX socket and a non-listening TCP
    /// socket are refused with the reason.
    #[test]
    fn inspect_tells_listeners_from_other_fds() {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        assert_eq!(inspect(l.as_raw_fd()).unwrap(), l.local_addr().unwrap());
        let dir = tempfile::tempdir().unwrap();
        let u = std::os::unix::net::UnixListener::bind(dir.path().join("s")).unwrap();
        assert!(inspect(u.as_raw_fd()).unwrap_err().contains("not a TCP/IP socket"));
        let c = std::net::TcpStream::connect(l.local_addr().unwrap()).unwrap();
        assert!(inspect(c.as_raw_fd()).unwrap_err().contains("not listening"));
        let f = std::fs::File::open("/dev/null").unwrap();
        assert!(inspect(f.as_raw_fd()).unwrap_err().contains("not a socket"));
        let fd = l.into_raw_fd();
        let taken = take(&[fd]);
        assert_eq!(taken.len(), 1);
        assert!(fcntl(&taken[0].listener, FcntlArg::F_GETFD).unwrap() & FdFlag::FD_CLOEXEC.bits() != 0);
    }
}
