//! The Debian package (issue #19): built by cargo-deb from the test binary, checked by lintian,
//! installed with the real dpkg into a throwaway root, upgraded and purged. Needs root for the
//! ownership checks (dpkg writes numeric ids).

mod common;

use std::collections::HashMap;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::Command;

use common::package::{build_deb, repo, run};

fn read(rel: &str) -> String {
    std::fs::read_to_string(repo().join(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

/// A throwaway root with an empty dpkg database, a passwd/group holding only root, and a
/// policy-rc.d refusing service actions (deb-systemd-invoke asks it: nothing on this machine is
/// started, restarted or stopped by the maintainer scripts). Returns the files it made.
fn throwaway_root(r: &Path) -> Vec<&'static str> {
    for d in ["var/lib/dpkg/info", "var/lib/dpkg/updates", "etc", "usr/sbin"] {
        std::fs::create_dir_all(r.join(d)).unwrap();
    }
    let files = [
        ("var/lib/dpkg/status", ""),
        ("var/lib/dpkg/available", ""),
        ("etc/passwd", "root:x:0:0:root:/root:/bin/sh\n"),
        ("etc/group", "root:x:0:\n"),
        ("etc/shadow", "root:*:19000:0:99999:7:::\n"),
        ("etc/gshadow", "root:*::\n"),
        ("usr/sbin/policy-rc.d", "#!/bin/sh\nexit 101\n"),
    ];
    for (f, text) in files {
        std::fs::write(r.join(f), text).unwrap();
    }
    std::fs::set_permissions(r.join("usr/sbin/policy-rc.d"), std::fs::Permissions::from_mode(0o755)).unwrap();
    files.iter().map(|(f, _)| *f).collect()
}

/// Every file (not directory) under `dir`, relative.
fn files_under(dir: &Path) -> Vec<String> {
    let mut found = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let e = e.unwrap();
            let t = e.file_type().unwrap();
            if t.is_dir() {
                todo.push(e.path());
            } else {
                found.push(e.path().strip_prefix(dir).unwrap().to_string_lossy().into_owned());
            }
        }
    }
    found.sort();
    found
}

/// CI test 5 (issue #19): the package is built by cargo-deb from the test binary and lintian
/// finds no error and no warning in it; it installs with the real dpkg into a throwaway root
/// (`dpkg --root`, maintainer scripts run chrootless with DPKG_ROOT: systemd-sysusers and
/// systemd-tmpfiles make the user, /var/log/stratum and /var/lib/ckpool in that root); the
/// configs are root:ckpool 0640 after configure (and an administrator's dpkg-statoverride is
/// kept); the units are installed but not enabled; `man` renders the installed pages; the bash
/// completions load; an upgrade to a newer build keeps an edited conffile; purge removes what
/// the package made and keeps what the operator made.
#[test]
fn debian_package_builds_and_installs_into_a_throwaway_root() {
    let out = tempfile::tempdir().unwrap();
    let deb = build_deb(out.path(), &[]);

    // lintian: no errors, no warnings (overrides only with a reason, in packaging/lintian-overrides:
    // each override follows a comment giving it).
    let overrides = read("packaging/lintian-overrides");
    let mut reason = false;
    for l in overrides.lines() {
        if l.starts_with('#') {
            reason = true;
        } else if !l.trim().is_empty() {
            assert!(reason, "lintian override without a reason: {l}");
            reason = false;
        }
    }
    let (ok, lint, err) = run(Command::new("lintian").arg("--fail-on").arg("error,warning").arg(&deb));
    println!("lintian --fail-on error,warning {}: ok={ok}\n{lint}{err}", deb.display());
    assert!(ok, "lintian (apt-get install lintian: contrib/setup.sh):\n{lint}{err}");
    assert!(!lint.lines().any(|l| l.starts_with("E:") || l.starts_with("W:")), "{lint}");

    let (ok, contents, err) = run(Command::new("dpkg-deb").arg("--contents").arg(&deb));
    assert!(ok, "{err}");
    println!("{contents}");
    let mut listed: HashMap<String, (String, String)> = HashMap::new();
    for l in contents.lines() {
        let f: Vec<&str> = l.split_whitespace().collect();
        let path = f[5].trim_start_matches('.').to_string();
        listed.insert(path, (f[0].to_string(), f[1].to_string()));
    }
    for (path, mode) in [
        ("/usr/bin/ckpool", "-rwxr-xr-x"),
        ("/usr/bin/ckproxy", "lrwxrwxrwx"),
        ("/usr/lib/systemd/system/ckpool.service", "-rw-r--r--"),
        ("/usr/lib/systemd/system/ckproxy.service", "-rw-r--r--"),
        ("/usr/lib/systemd/system/stratssh@.service", "-rw-r--r--"),
        ("/usr/lib/systemd/system/ckpool.socket", "-rw-r--r--"),
        ("/usr/lib/systemd/system/ckproxy.socket", "-rw-r--r--"),
        ("/usr/lib/sysusers.d/ckpool.conf", "-rw-r--r--"),
        ("/usr/lib/tmpfiles.d/ckpool.conf", "-rw-r--r--"),
        ("/etc/logrotate.d/stratum", "-rw-r--r--"),
        // Shipped with the ordinary mode; postinst makes them root:ckpool 0640.
        ("/etc/ckpool.conf", "-rw-r--r--"),
        ("/etc/ckproxy.conf", "-rw-r--r--"),
        ("/usr/share/doc/ckpool/copyright", "-rw-r--r--"),
        ("/usr/share/doc/ckpool/changelog.Debian.gz", "-rw-r--r--"),
        ("/usr/share/doc/ckpool/README.md", "-rw-r--r--"),
        ("/usr/share/doc/ckpool/configuration.md", "-rw-r--r--"),
        ("/usr/share/doc/ckpool/api.md", "-rw-r--r--"),
        ("/usr/share/doc/ckpool/restarts.md", "-rw-r--r--"),
        ("/usr/share/doc/ckpool/examples/p2pssh@example", "-rw-r--r--"),
        ("/usr/share/man/man1/ckpool.1.gz", "-rw-r--r--"),
        ("/usr/share/man/man1/ckproxy.1.gz", "-rw-r--r--"),
        ("/usr/share/man/man1/ckpool-check.1.gz", "-rw-r--r--"),
        ("/usr/share/man/man1/ckpool-rpcauth.1.gz", "-rw-r--r--"),
        ("/usr/share/bash-completion/completions/ckpool", "-rw-r--r--"),
        ("/usr/share/bash-completion/completions/ckproxy", "-rw-r--r--"),
        ("/usr/share/zsh/vendor-completions/_ckpool", "-rw-r--r--"),
        ("/usr/share/fish/vendor_completions.d/ckpool.fish", "-rw-r--r--"),
    ] {
        let (m, owner) = listed.get(path).unwrap_or_else(|| panic!("{path} not in the package:\n{contents}"));
        // cargo-deb writes numeric ids: uid 0, gid 0 (root).
        assert_eq!((m.as_str(), owner.as_str()), (mode, "0/0"), "{path}");
    }
    assert!(contents.contains("./usr/bin/ckproxy -> ckpool"), "ckproxy symlink");
    let (ok, conffiles, _) = run(Command::new("dpkg-deb").arg("-I").arg(&deb).arg("conffiles"));
    assert!(ok);
    let mut cf: Vec<&str> = conffiles.lines().collect();
    cf.sort();
    assert_eq!(cf, ["/etc/ckpool.conf", "/etc/ckproxy.conf", "/etc/logrotate.d/stratum"]);
    let (ok, control, _) = run(Command::new("dpkg-deb").arg("-f").arg(&deb).arg("Maintainer"));
    assert!(ok && !control.contains("localhost"), "{control}");
    // The changelog's newest entry is this version (packaging/changelog gets an entry per release).
    let (ok, version, err) = run(Command::new("dpkg-deb").arg("-f").arg(&deb).arg("Version"));
    assert!(ok && version.trim() == format!("{}-1", env!("CARGO_PKG_VERSION")), "{version}{err}");
    let (ok, logged, err) = run(Command::new("dpkg-parsechangelog")
        .arg("-l")
        .arg(repo().join("packaging/changelog"))
        .args(["-S", "Version"]));
    assert!(ok, "{err}");
    assert_eq!(logged.trim(), version.trim(), "packaging/changelog's newest entry is not the package's version");

    let root = tempfile::tempdir().unwrap();
    let r = root.path();
    let made_here = throwaway_root(r);
    let dpkg = |args: &[&str]| {
        let mut c = Command::new("dpkg");
        c.arg(format!("--root={}", r.display()))
            .args(["--force-script-chrootless", "--force-depends", "--force-not-root", "--log=/dev/null"])
            .args(args);
        let (ok, o, e) = run(&mut c);
        assert!(ok, "dpkg {args:?} failed:\n{o}{e}");
        o
    };
    dpkg(&["-i", deb.to_str().unwrap()]);
    // postinst: user and group ckpool (sysusers), /var/log/stratum root:ckpool 0770 and
    // /var/lib/ckpool ckpool:ckpool 0750 (tmpfiles), configs root:ckpool 0640.
    let passwd = std::fs::read_to_string(r.join("etc/passwd")).unwrap();
    let group = std::fs::read_to_string(r.join("etc/group")).unwrap();
    let user = passwd.lines().find(|l| l.starts_with("ckpool:")).expect("postinst created user ckpool");
    assert!(user.ends_with(":/nonexistent:/usr/sbin/nologin"), "{user}");
    let field = |line: &str, i: usize| -> u32 { line.split(':').nth(i).unwrap().parse().unwrap() };
    let uid = field(user, 2);
    let gid = field(group.lines().find(|l| l.starts_with("ckpool:")).expect("group ckpool"), 2);
    assert!(uid > 0 && gid > 0 && uid < 1000, "a system user: {user}");
    for (dir, owner, mode) in [("var/log/stratum", (0, gid), 0o770), ("var/lib/ckpool", (uid, gid), 0o750)] {
        let m = std::fs::metadata(r.join(dir)).unwrap_or_else(|e| panic!("postinst created /{dir}: {e}"));
        assert!(m.is_dir());
        assert_eq!(((m.uid(), m.gid()), m.mode() & 0o7777), (owner, mode), "/{dir}");
    }
    let owner_mode = |f: &str| {
        let m = std::fs::metadata(r.join(f)).unwrap();
        (m.uid(), m.gid(), m.mode() & 0o7777)
    };
    for f in ["etc/ckpool.conf", "etc/ckproxy.conf"] {
        assert_eq!(owner_mode(f), (0, gid, 0o640), "{f}");
    }
    let installed = std::fs::read_link(r.join("usr/bin/ckproxy")).unwrap();
    assert_eq!(installed, Path::new("ckpool"));
    let (ok, version, _) = run(Command::new(r.join("usr/bin/ckpool")).arg("--version"));
    assert!(ok && version.contains(env!("CARGO_PKG_VERSION")), "{version}");
    let (ok, _, err) = run(Command::new(r.join("usr/bin/ckproxy")).arg("--help"));
    assert!(ok, "the stripped binary runs: {err}");
    // The installed units are the repository's, and none is enabled (the operator configures first).
    for u in ["ckpool.service", "ckproxy.service", "stratssh@.service", "ckpool.socket", "ckproxy.socket"] {
        assert_eq!(
            std::fs::read_to_string(r.join("usr/lib/systemd/system").join(u)).unwrap(),
            read(&format!("systemd/{u}")),
            "{u}"
        );
    }
    // Exactly those units: no other unit (cargo-deb once copied ckpool.socket to
    // stratssh@.socket, whose enabling bound the pool's port and started the tunnel).
    let mut units: Vec<String> = std::fs::read_dir(r.join("usr/lib/systemd/system"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    units.sort();
    assert_eq!(units, ["ckpool.service", "ckpool.socket", "ckproxy.service", "ckproxy.socket", "stratssh@.service"]);
    // Every page the installed README links is installed where the link points.
    let doc = r.join("usr/share/doc/ckpool");
    let readme = std::fs::read_to_string(doc.join("README.md")).unwrap();
    let mut linked = 0;
    for link in readme.split("](").skip(1).filter_map(|t| t.split(')').next()) {
        let target = link.split('#').next().unwrap();
        if target.is_empty() || target.contains("://") || !target.ends_with(".md") {
            continue;
        }
        linked += 1;
        assert!(doc.join(target).exists(), "the installed README links {link}, which the package does not ship");
    }
    assert!(linked >= 7, "{linked} links checked");
    // ... but known to deb-systemd-helper (postinst ran its snippets), so an operator's enable
    // is kept across upgrades and purge cleans up.
    for u in ["ckpool.service", "ckproxy.service"] {
        let state = r.join("var/lib/systemd/deb-systemd-helper-enabled").join(format!("{u}.dsh-also"));
        assert!(state.exists(), "deb-systemd-helper state of {u}");
    }
    for target in ["multi-user.target.wants", "sockets.target.wants"] {
        let wants = r.join("etc/systemd/system").join(target);
        assert!(
            !wants.exists() || std::fs::read_dir(&wants).unwrap().next().is_none(),
            "a unit was enabled on install"
        );
    }

    // man renders the installed pages, flags included; the completions load in bash.
    for (page, needles) in [
        (
            "ckpool.1.gz",
            &[
                "--config",
                "--killold",
                "--handover",
                "--log-shares",
                "rpcauth",
                "completions",
                "/etc/ckpool.conf",
                "SEE ALSO",
            ][..],
        ),
        ("ckproxy.1.gz", &["--config", "--proxy"][..]),
        ("ckpool-check.1.gz", &["--config"][..]),
    ] {
        let path = r.join("usr/share/man/man1").join(page);
        let (ok, text, err) =
            run(Command::new("man").arg("-l").arg(&path).env("MANWIDTH", "100").env("MAN_KEEP_FORMATTING", ""));
        assert!(ok, "man -l {}: {err}", path.display());
        let plain: String = text.replace(['\u{2010}', '\u{2212}'], "-");
        for n in needles {
            assert!(plain.contains(n), "man {page} lacks {n}:\n{plain}");
        }
        let (_, _, warnings) = run(Command::new("man").arg("--warnings").arg("-l").arg(&path).env("MANWIDTH", "80"));
        assert!(warnings.trim().is_empty(), "man --warnings {page}:\n{warnings}");
    }
    for name in ["ckpool", "ckproxy"] {
        let file = r.join("usr/share/bash-completion/completions").join(name);
        let (ok, spec, err) =
            run(Command::new("bash").arg("-c").arg(format!("source '{}' && complete -p {name}", file.display())));
        assert!(
            ok && spec.contains(&format!("-F _{name} ")) && spec.trim_end().ends_with(&format!(" {name}")),
            "{name}: {spec}{err}"
        );
    }
    // zsh registers the completion function; fish completes a flag from its description.
    let zsh_file = r.join("usr/share/zsh/vendor-completions/_ckpool");
    let (ok, comp, err) = run(Command::new("zsh").arg("-fc").arg(format!(
        "autoload -Uz compinit && compinit -u -d '{}'; source '{}'; print -r -- $_comps[ckpool]",
        r.join("zcompdump").display(),
        zsh_file.display()
    )));
    assert!(ok && comp.trim() == "_ckpool", "zsh (contrib/setup.sh installs it): {comp}{err}");
    let fish_file = r.join("usr/share/fish/vendor_completions.d/ckpool.fish");
    let (ok, comp, err) = run(Command::new("fish")
        .arg("--no-config")
        .arg("-c")
        .arg(format!("source '{}'; complete -C'ckpool --kil'", fish_file.display())));
    assert!(ok && comp.starts_with("--killold\t"), "fish (contrib/setup.sh installs it): {comp}{err}");
    std::fs::remove_file(r.join("zcompdump")).ok();
    // The bash completion offers the subcommands and the long flags.
    let (ok, words, err) = run(Command::new("bash").arg("-c").arg(format!(
        "source '{}'; COMP_WORDS=(ckpool --); COMP_CWORD=1; COMP_LINE='ckpool --'; COMP_POINT=9; _ckpool ckpool -- ckpool; \
         printf '%s\\n' \"${{COMPREPLY[@]}}\"",
        r.join("usr/share/bash-completion/completions/ckpool").display()
    )));
    assert!(ok && words.lines().any(|w| w == "--config") && words.lines().any(|w| w == "--killold"), "{words}{err}");

    // An operator's edit of a conffile survives an upgrade to a newer build; configure runs again
    // without a second user. An administrator's dpkg-statoverride on the other config is kept.
    let conf = r.join("etc/ckpool.conf");
    let edited = std::fs::read_to_string(&conf).unwrap().replace("\"startdiff\" : 42", "\"startdiff\" : 64");
    assert!(edited.contains("\"startdiff\" : 64"));
    std::fs::write(&conf, &edited).unwrap();
    let (ok, _, err) = run(Command::new("dpkg-statoverride").env("DPKG_ROOT", r).args([
        "--update",
        "--add",
        "root",
        &format!("#{gid}"),
        "0600",
        "/etc/ckproxy.conf",
    ]));
    assert!(ok, "dpkg-statoverride: {err}");
    let out2 = tempfile::tempdir().unwrap();
    let deb2 = build_deb(out2.path(), &["--deb-revision", "2"]);
    dpkg(&["-i", deb2.to_str().unwrap()]);
    let status = dpkg(&["-s", "ckpool"]);
    assert!(status.contains("Status: install ok installed") && status.contains("Version: 0.1.0-2"), "{status}");
    assert_eq!(std::fs::read_to_string(&conf).unwrap(), edited, "conffile edit lost on upgrade");
    assert_eq!(owner_mode("etc/ckpool.conf"), (0, gid, 0o640));
    assert_eq!(owner_mode("etc/ckproxy.conf"), (0, gid, 0o600), "dpkg-statoverride not respected");
    assert_eq!(std::fs::read_to_string(r.join("etc/passwd")).unwrap().matches("ckpool:").count(), 1);
    let (ok, _, err) =
        run(Command::new("dpkg-statoverride").env("DPKG_ROOT", r).args(["--remove", "/etc/ckproxy.conf"]));
    assert!(ok, "{err}");

    // Removal takes the files but keeps conffiles (until purge) and the logs.
    std::fs::write(r.join("var/log/stratum/ckpool.log"), "an operator's log\n").unwrap();
    std::fs::write(r.join("var/lib/ckpool/state"), "state the service made\n").unwrap();
    dpkg(&["-r", "ckpool"]);
    assert!(!r.join("usr/bin/ckpool").exists());
    assert!(!r.join("usr/lib/systemd/system/ckpool.service").exists());
    assert!(conf.exists(), "remove (not purge) keeps conffiles");
    assert!(r.join("var/log/stratum/ckpool.log").exists());
    // Purge: conffiles, /var/lib/ckpool, dpkg's records go; the operator's log (and so its
    // directory) stays. Left: only what the throwaway root started with, dpkg's own database
    // files, the user ckpool in passwd/group (sysusers users are kept) and the log.
    dpkg(&["--purge", "ckpool"]);
    assert!(!conf.exists() && !r.join("etc/ckproxy.conf").exists(), "purge removes conffiles");
    assert!(!r.join("var/lib/ckpool").exists(), "purge removes /var/lib/ckpool");
    let left: Vec<String> = files_under(r)
        .into_iter()
        .filter(|f| {
            !made_here.contains(&f.as_str())
                && !f.starts_with("var/lib/dpkg/")
                && !f.starts_with("etc/passwd")
                && !f.starts_with("etc/group")
                && !f.starts_with("etc/shadow")
                && !f.starts_with("etc/gshadow")
                && f != "etc/.pwd.lock"
        })
        .collect();
    assert_eq!(left, ["var/log/stratum/ckpool.log"], "purge left these behind");
    let (_, info, _) = run(Command::new("ls").arg(r.join("var/lib/dpkg/info")));
    assert!(!info.contains("ckpool"), "{info}");
}
