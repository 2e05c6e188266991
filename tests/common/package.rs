//! The Debian package as the tests build it: packaging/build-deb.sh (cargo-deb) on the test
//! binary, so there is no second, release build. Used by tests/package.rs and tests/systemd.rs.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// The pool binary the tests built.
pub const BIN: &str = env!("CARGO_BIN_EXE_ckpool");

/// The repository's root.
pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Runs a command to completion; returns (success, stdout, stderr).
pub fn run(cmd: &mut Command) -> (bool, String, String) {
    let out = cmd.stdin(Stdio::null()).output().unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    (out.status.success(), String::from_utf8_lossy(&out.stdout).into(), String::from_utf8_lossy(&out.stderr).into())
}

/// Builds the package into `out`; extra arguments go to cargo-deb. Returns the .deb's path.
pub fn build_deb(out: &Path, cargo_deb_args: &[&str]) -> PathBuf {
    let (ok, stdout, err) = run(Command::new("bash")
        .arg(repo().join("packaging/build-deb.sh"))
        .arg(BIN)
        .arg(out)
        .arg("--")
        .args(cargo_deb_args)
        .env("DEB_COMPRESS", "fast"));
    assert!(ok, "build-deb.sh failed (cargo-deb missing? run contrib/setup.sh):\n{stdout}{err}");
    let deb = PathBuf::from(stdout.lines().last().unwrap().trim());
    assert!(deb.exists(), "{}", deb.display());
    deb
}
