//! Shell completions and manual pages, generated from the clap definitions above so they cannot
//! drift from the parser. The Debian package runs these on the binary it ships
//! (packaging/build-deb.sh): `ckpool completions bash|zsh|fish` and the hidden
//! `ckpool manpages DIR`.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::{Args, CommandFactory};
use clap_complete::Shell;

use super::Cli;

#[derive(Debug, Clone, Args)]
pub struct CompletionsArgs {
    /// Shell to complete for
    #[arg(value_enum)]
    pub shell: Shell,
    /// Command name the script completes (ckproxy is the same binary in proxy mode)
    #[arg(long = "bin", value_name = "NAME", default_value = "ckpool", value_parser = ["ckpool", "ckproxy"])]
    pub bin: String,
}

#[derive(Debug, Clone, Args)]
pub struct ManpagesArgs {
    /// Directory to write the pages into (created if missing)
    pub dir: PathBuf,
}

/// The command as one of its names: `ckpool`, or `ckproxy` (pool flags, proxy mode: `-p` is
/// implied, so its help does not list it).
pub(super) fn command(bin: &str) -> clap::Command {
    let proxy = bin == "ckproxy";
    let name = if proxy { "ckproxy" } else { "ckpool" };
    let cmd = Cli::command().name(name).bin_name(name);
    if proxy {
        cmd.about("Stratum mining proxy: ckpool started as ckproxy (the same as ckpool --proxy)")
            .mut_arg("proxy", |a| a.hide(true))
    } else {
        cmd
    }
}

/// Writes the completion script for `args.shell` to stdout.
pub fn completions(args: &CompletionsArgs) -> anyhow::Result<()> {
    let mut cmd = command(&args.bin);
    let mut out = std::io::stdout().lock();
    clap_complete::generate(args.shell, &mut cmd, args.bin.clone(), &mut out);
    out.flush().context("writing the completion script")
}

/// The FILES section of the ckpool and ckproxy pages (roff).
const FILES: &str = r#".SH FILES
.TP
.I /etc/ckpool.conf
Pool configuration: ckpool's JSON keys. Every key, its type and default:
.IR /usr/share/doc/ckpool/configuration.md .
Check it with
.BR "ckpool check \-\-config /etc/ckpool.conf" .
.TP
.I /etc/ckproxy.conf
Proxy configuration (upstream pools in
.BR proxy ).
.TP
.I /var/log/stratum
The default
.B logdir
of the shipped configs: the operator log (ckpool.log, ckproxy.log), share logs, found blocks and
statistics.
.TP
.I /var/lib/ckpool
State of the services, owned by the user ckpool.
.TP
.I /tmp/ckpool/main.pid
The pid file used by
.BR \-\-killold
(the socket dir; see
.BR \-\-sockdir ).
.TP
.I /tmp/ckpool/handover.sock
The running instance's handover socket (mode 0600, same user only): a new instance started with
.B \-H
and the same name and socket dir receives the listening sockets through it, the old one stops
accepting, closes its miners' connections once the new one serves work (miners reconnect to the
new one on the same port) and exits. No connection is refused.
.TP
.IR /usr/lib/systemd/system/ckpool.service ", " ckproxy.service
The services: systemctl enable \-\-now ckpool.
.B systemctl reload ckpool
(SIGHUP) reopens the log and applies a changed
.BR mindiff ", " startdiff ", " maxdiff ", " btcsig ", " stats_interval " and " loglevel
at once (for miners that connect from then on); other changed keys are logged as needing a
restart, and a config that does not load is logged and ignored.
.TP
.IR /usr/lib/systemd/system/ckpool.socket ", " ckproxy.socket
Optional socket activation: systemd holds the stratum port, so
.B systemctl restart ckpool
refuses no miner. Its ListenStream= must equal a
.B serverurl
entry (sockets are matched by exact address).
"#;

/// The page, with the sections clap_mangen renders from the definitions, plus `extra` (roff)
/// before the version.
fn write_page(cmd: clap::Command, dir: &Path, extra: &str, written: &mut Vec<PathBuf>) -> anyhow::Result<()> {
    let has_options = cmd.get_arguments().any(|a| !a.is_hide_set());
    let has_subcommands = cmd.get_subcommands().any(|s| !s.is_hide_set());
    let has_version = cmd.get_version().is_some();
    let man = clap_mangen::Man::new(cmd)
        .manual("ckpool-rs manual")
        .source(format!("ckpool-rs {}", env!("CARGO_PKG_VERSION")));
    let path = dir.join(man.get_filename());
    let mut page = Vec::new();
    let render = |page: &mut Vec<u8>| -> std::io::Result<()> {
        man.render_title(page)?;
        man.render_name_section(page)?;
        man.render_synopsis_section(page)?;
        man.render_description_section(page)?;
        if has_options {
            man.render_options_section(page)?;
        }
        if has_subcommands {
            man.render_subcommands_section(page)?;
        }
        page.extend_from_slice(extra.as_bytes());
        if has_version {
            man.render_version_section(page)?;
        }
        Ok(())
    };
    render(&mut page).context("rendering a manual page")?;
    std::fs::write(&path, page).with_context(|| format!("writing {}", path.display()))?;
    written.push(path);
    Ok(())
}

/// Renders a page and its visible subcommands' pages (named `ckpool-mine.1` and so on).
fn write_pages(cmd: clap::Command, dir: &Path, written: &mut Vec<PathBuf>) -> anyhow::Result<()> {
    let subs: Vec<clap::Command> = cmd.get_subcommands().filter(|s| !s.is_hide_set()).cloned().collect();
    let see_also: Vec<String> =
        subs.iter().map(|s| format!(".BR {} (1)", s.get_display_name().unwrap_or(s.get_name()))).collect();
    for sub in subs {
        write_pages(sub, dir, written)?;
    }
    let extra = if cmd.get_name() == "ckpool" {
        format!("{FILES}.SH \"SEE ALSO\"\n.BR ckproxy (1),\n{}\n", see_also.join(",\n"))
    } else {
        ".SH \"SEE ALSO\"\n.BR ckpool (1)\n".to_string()
    };
    write_page(cmd, dir, &extra, written)
}

/// Writes ckpool.1, ckproxy.1 and ckpool-SUBCOMMAND.1 into `dir`; prints each path.
pub fn manpages(dir: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let mut written = Vec::new();
    let mut pool = command("ckpool").disable_help_subcommand(true);
    pool.build();
    write_pages(pool, dir, &mut written)?;
    // ckproxy's page shows the server flags; the tools are documented under ckpool.
    let mut proxy = command("ckproxy").disable_help_subcommand(true);
    let subs: Vec<String> = proxy.get_subcommands().map(|s| s.get_name().to_string()).collect();
    for s in subs {
        proxy = proxy.mut_subcommand(s, |c| c.hide(true));
    }
    proxy.build();
    write_page(proxy, dir, &format!("{FILES}.SH \"SEE ALSO\"\n.BR ckpool (1)\n"), &mut written)?;
    for p in written {
        println!("{}", p.display());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pages_cover_every_visible_subcommand_and_the_flags() {
        let dir = tempfile::tempdir().unwrap();
        manpages(dir.path()).unwrap();
        let mut names: Vec<String> =
            std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
        names.sort();
        let mut want = vec!["ckpool.1".to_string(), "ckproxy.1".to_string()];
        for s in Cli::command().get_subcommands().filter(|s| !s.is_hide_set()) {
            want.push(format!("ckpool-{}.1", s.get_name()));
        }
        want.sort();
        assert_eq!(names, want);
        let main = std::fs::read_to_string(dir.path().join("ckpool.1")).unwrap();
        for flag in ["\\-\\-config", "\\-\\-killold", "\\-\\-log\\-shares", "\\-\\-loglevel", "\\-\\-sockdir"] {
            assert!(main.contains(flag), "ckpool.1 lacks {flag}");
        }
        assert!(!main.contains("manpages"), "the hidden subcommand is not documented");
        let proxy = std::fs::read_to_string(dir.path().join("ckproxy.1")).unwrap();
        assert!(proxy.contains(".TH ckproxy 1"), "{proxy}");
        assert!(proxy.contains("\\-\\-config") && !proxy.contains("rpcauth"), "{proxy}");
    }

    #[test]
    fn completions_name_the_command_they_complete() {
        for (bin, shell, needle) in [
            ("ckpool", Shell::Bash, "complete -F _ckpool"),
            ("ckproxy", Shell::Bash, "complete -F _ckproxy"),
            ("ckpool", Shell::Zsh, "#compdef ckpool"),
            ("ckpool", Shell::Fish, "complete -c ckpool"),
        ] {
            let mut cmd = command(bin);
            let mut out = Vec::new();
            clap_complete::generate(shell, &mut cmd, bin, &mut out);
            let text = String::from_utf8(out).unwrap();
            assert!(text.contains(needle) && text.contains("killold"), "{bin} {shell}: {text}");
        }
    }
}
