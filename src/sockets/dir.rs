//! The socket directory (`-s`, default `/tmp/<name>`: the pid file and the handover socket):
//! created 0700, and refused with a clear error when it is not a directory of ours that only we
//! may write (another user could otherwise plant a pid file or a handover socket in it).

use std::os::unix::fs::{DirBuilderExt, MetadataExt};
use std::path::Path;

use anyhow::{bail, Context};

/// Why a directory is not safe, from its lstat (pure).
pub fn judge(is_dir: bool, owner: u32, mode: u32, our_uid: u32) -> Result<(), String> {
    if !is_dir {
        return Err("is not a directory (a symlink or a file)".into());
    }
    if owner != our_uid {
        return Err(format!("is owned by uid {owner}, not by this user (uid {our_uid})"));
    }
    if mode & 0o022 != 0 {
        return Err(format!("may be written by others (mode {:o}); chmod go-w it", mode & 0o7777));
    }
    Ok(())
}

/// Creates `dir` (0700, parents as needed) or checks the one there.
pub fn prepare(dir: &Path) -> anyhow::Result<()> {
    // The parent is made only when missing (a sandbox may let us write the directory only).
    if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty() && !p.exists()) {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("cannot create the socket dir's parent {}", parent.display()))?;
    }
    match std::fs::DirBuilder::new().mode(0o700).create(dir) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(e).with_context(|| format!("cannot create socket dir {}", dir.display())),
    }
    let m = std::fs::symlink_metadata(dir).with_context(|| format!("socket dir {}", dir.display()))?;
    if let Err(why) = judge(m.file_type().is_dir(), m.uid(), m.mode(), nix::unistd::geteuid().as_raw()) {
        bail!(
            "socket dir {} {why}: refusing to keep the pid file and handover socket there (use -s DIR)",
            dir.display()
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_our_own_unshared_directory() {
        assert_eq!(judge(true, 1000, 0o40700, 1000), Ok(()));
        assert_eq!(judge(true, 1000, 0o40755, 1000), Ok(()));
        assert!(judge(false, 1000, 0o120777, 1000).unwrap_err().contains("not a directory"));
        assert!(judge(true, 0, 0o40700, 1000).unwrap_err().contains("owned by uid 0"));
        assert!(judge(true, 1000, 0o41777, 1000).unwrap_err().contains("mode 1777"));
        assert!(judge(true, 1000, 0o40770, 1000).unwrap_err().contains("written by others"));
    }

    #[test]
    fn created_0700_and_a_symlink_refused() {
        let t = tempfile::tempdir().unwrap();
        let d = t.path().join("a/ckpool");
        prepare(&d).unwrap();
        assert_eq!(std::fs::metadata(&d).unwrap().mode() & 0o777, 0o700);
        prepare(&d).unwrap();
        let link = t.path().join("link");
        std::os::unix::fs::symlink(&d, &link).unwrap();
        assert!(prepare(&link).unwrap_err().to_string().contains("not a directory"));
        std::fs::set_permissions(&d, std::os::unix::fs::PermissionsExt::from_mode(0o777)).unwrap();
        assert!(prepare(&d).unwrap_err().to_string().contains("written by others"));
    }
}
