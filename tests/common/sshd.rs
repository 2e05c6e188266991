//! A real OpenSSH server on 127.0.0.1 for the tunnel tests: tests/service.rs runs the stratssh@
//! unit's autossh line against it on the host, tests/systemd.rs runs the unit itself under a
//! real systemd in a container that shares the host's loopback. Throwaway host and client keys
//! (the client key the only authorized one), `LogLevel VERBOSE` into a log the tests read. And
//! [`Reaped`], which stops a daemon a test started (sshd, autossh).

use super::*;

use std::os::unix::fs::PermissionsExt;

use super::package::run;

/// A running sshd: its port, its directory (keys, config, log) and the daemon.
pub struct Sshd {
    pub port: u16,
    pub dir: tempfile::TempDir,
    _daemon: Reaped,
}

impl Sshd {
    /// Starts sshd for public-key logins as `user` with [`Sshd::client_key`]. An account the
    /// machine has (root) is used as it is. A name it lacks is given to this sshd alone, so that
    /// the machine gets no new account: sshd runs in its own mount namespace (`unshare -m`) with a copy of
    /// /etc/passwd that adds the user (an unused uid, group nogroup, no home, shell
    /// /usr/sbin/nologin: a tunnel-only login) bound over the machine's.
    pub fn start(user: &str) -> Sshd {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        for k in ["host_ed25519", "client_ed25519"] {
            let (ok, _, e) =
                run(Command::new("ssh-keygen").args(["-q", "-t", "ed25519", "-N", "", "-f"]).arg(d.join(k)));
            assert!(ok, "ssh-keygen: {e}");
        }
        std::fs::copy(d.join("client_ed25519.pub"), d.join("authorized_keys")).unwrap();
        // sshd reads authorized_keys as the user: a non-root login must be able to reach it.
        std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::set_permissions(d.join("authorized_keys"), std::fs::Permissions::from_mode(0o644)).unwrap();
        let port = free_port();
        let config = d.join("sshd_config");
        std::fs::write(
            &config,
            format!(
                "Port {port}\nListenAddress 127.0.0.1\nHostKey {dir}/host_ed25519\nPidFile {dir}/sshd.pid\n\
                 AuthorizedKeysFile {dir}/authorized_keys\nStrictModes no\nUsePAM no\nPasswordAuthentication no\n\
                 KbdInteractiveAuthentication no\nPubkeyAuthentication yes\nPermitRootLogin prohibit-password\n\
                 AllowUsers {user}\nAllowTcpForwarding yes\nLogLevel VERBOSE\n",
                dir = d.display()
            ),
        )
        .unwrap();
        // sshd's privilege separation directory (the openssh-server service creates it at boot).
        std::fs::create_dir_all("/run/sshd").unwrap();
        let (ok, o, e) = run(Command::new("/usr/sbin/sshd").arg("-t").arg("-f").arg(&config));
        assert!(ok, "sshd -t: {o}{e}");
        let passwd = std::fs::read_to_string("/etc/passwd").unwrap();
        let mut cmd = if passwd.lines().any(|l| l.split(':').next() == Some(user)) {
            let mut c = Command::new("/usr/sbin/sshd");
            c.args(["-D", "-e", "-f"]).arg(&config);
            c
        } else {
            let passwd = if passwd.ends_with('\n') || passwd.is_empty() { passwd } else { passwd + "\n" };
            let used: Vec<u32> = passwd.lines().filter_map(|l| l.split(':').nth(2)?.parse().ok()).collect();
            let uid = (59_000..60_000).find(|u| !used.contains(u)).expect("a free uid");
            let mine = d.join("passwd");
            std::fs::write(
                &mine,
                format!("{passwd}{user}:x:{uid}:65534:tunnel login:/nonexistent:/usr/sbin/nologin\n"),
            )
            .unwrap();
            std::fs::set_permissions(&mine, std::fs::Permissions::from_mode(0o644)).unwrap();
            // unshare and sh exec: the child's pid is sshd's.
            let mut c = Command::new("unshare");
            c.args(["--mount", "--propagation", "private", "--", "/bin/sh", "-c"])
                .arg("mount --bind \"$0\" /etc/passwd && exec /usr/sbin/sshd -D -e -f \"$1\"")
                .arg(&mine)
                .arg(&config);
            c
        };
        let log = std::fs::File::create(d.join("sshd.log")).unwrap();
        let daemon = Reaped(cmd.stdin(Stdio::null()).stdout(Stdio::null()).stderr(log).spawn().expect("start sshd"));
        let sshd = Sshd { port, dir, _daemon: daemon };
        let sa: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        wait::blocking_or(
            "sshd to listen",
            Duration::from_secs(20),
            || std::net::TcpStream::connect_timeout(&sa, Duration::from_millis(200)).is_ok(),
            || sshd.log(),
        );
        sshd
    }

    /// The private key of the one authorized client key.
    pub fn client_key(&self) -> PathBuf {
        self.dir.path().join("client_ed25519")
    }

    /// This server's line for a client's known_hosts: `[127.0.0.1]:PORT ssh-ed25519 AAAA…`.
    pub fn known_hosts_line(&self) -> String {
        let host = std::fs::read_to_string(self.dir.path().join("host_ed25519.pub")).unwrap();
        let host: Vec<&str> = host.split_whitespace().take(2).collect();
        format!("[127.0.0.1]:{} {} {}\n", self.port, host[0], host[1])
    }

    /// What sshd has logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("sshd.log")).unwrap_or_default()
    }
}

/// Child processes of `pid` (from /proc).
pub fn children(pid: u32) -> Vec<u32> {
    std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
        .unwrap_or_default()
        .split_whitespace()
        .filter_map(|p| p.parse().ok())
        .collect()
}

/// A daemon the test started (sshd, autossh), stopped on drop with SIGTERM (autossh passes it
/// on to its ssh; sshd's sessions end with their clients), then SIGKILL after 5 s; children it
/// had that are still alive are killed too, so none outlives the test (holding its output pipe).
pub struct Reaped(pub Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        use nix::sys::signal::{kill, Signal};
        use nix::unistd::Pid;
        let pid = self.0.id();
        let kids: Vec<(u32, String)> = children(pid)
            .into_iter()
            .map(|k| (k, std::fs::read_to_string(format!("/proc/{k}/comm")).unwrap_or_default()))
            .collect();
        let _ = kill(Pid::from_raw(pid as i32), Signal::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(5);
        while self.0.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
        for (k, comm) in kids {
            let now = std::fs::read_to_string(format!("/proc/{k}/comm")).unwrap_or_default();
            if !comm.is_empty() && now == comm {
                let _ = kill(Pid::from_raw(k as i32), Signal::SIGKILL);
            }
        }
    }
}
