//! The command line as operators use it: config errors stop the start with a message naming the
//! key; `ckpool check` reaches the node; the guide's exact config text is accepted.

mod common;

use std::process::Command;

use common::{free_port, pool_config, NodePair, Pool, RPC_PASS, RPC_USER};
use serde_json::json;

fn ckpool(args: &[&str]) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_ckpool")).args(args).output().expect("run ckpool");
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    (out.status.code().unwrap_or(-1), text)
}

#[test]
fn bad_config_values_stop_the_start_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    for (text, needle) in [
        (
            r#"{"btcd": [{"url": "localhost:1", "auth": "u", "pass": "p"}], "btcaddress": "x", "mindiff": "lots"}"#,
            "\"mindiff\"",
        ),
        (
            r#"{"btcd": [{"url": "localhost:1", "auth": "u", "pass": "p"}], "btcaddress": "x", "startdiff": 0.5}"#,
            "startdiff",
        ),
        (r#"{"btcd": "#, "not valid JSON"),
        (r#"{"btcaddress": "x"}"#, "\"btcd\""),
    ] {
        let path = dir.path().join("bad.conf");
        std::fs::write(&path, text).unwrap();
        let logdir = dir.path().join("logs");
        let _ = std::fs::create_dir_all(&logdir);
        let (code, out) = ckpool(&["check", "--config", path.to_str().unwrap()]);
        assert_ne!(code, 0, "{text}: {out}");
        assert!(out.contains(needle), "{text}: expected {needle:?} in {out}");
    }
    // The server itself refuses too, before anything starts.
    let path = dir.path().join("bad.conf");
    std::fs::write(&path, r#"{"mindiff": -2}"#).unwrap();
    let (code, out) = ckpool(&["--config", path.to_str().unwrap(), "--sockdir", dir.path().to_str().unwrap()]);
    assert_ne!(code, 0);
    assert!(out.contains("\"mindiff\" = -2"), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_reaches_the_node_with_the_guides_config_text() {
    let nodes = NodePair::start().await;
    let address = nodes.a.new_address().await;
    let dir = tempfile::tempdir().unwrap();
    // The guide's heredoc, with this node's port, user, password and address.
    let conf = format!(
        "{{\n\"btcd\" : [\n\t{{\n\t\"url\" : \"localhost:{port}\",\n\t\"auth\" : \"{RPC_USER}\",\n\t\"pass\" : \"{RPC_PASS}\",\n\t\"notify\" : true\n\t}}\n],\n\"btcaddress\" : \"{address}\",\n\"btcsig\" : \"\",\n\"serverurl\" : [\n\t\"127.0.0.1:{stratum}\"\n],\n\"mindiff\" : 1,\n\"startdiff\" : 42,\n\"maxdiff\" : 0,\n\"zmqblock\" : \"tcp://127.0.0.1:{zmq}\",\n\"logdir\" : \"{logdir}\"\n}}\nComments from here on are ignored.\n",
        port = nodes.a.rpc_port,
        stratum = free_port(),
        zmq = nodes.a.zmq_port,
        logdir = dir.path().join("logs").display()
    );
    let path = dir.path().join("ckpool.conf");
    std::fs::write(&path, conf).unwrap();
    let (code, out) = ckpool(&["check", "--config", path.to_str().unwrap()]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("chain regtest"), "{out}");
    assert!(out.contains("all checks passed"), "{out}");
    assert!(!out.contains(RPC_PASS), "the password must never be printed: {out}");

    // A wrong password: a clear failure that names the node, not the password.
    let bad = std::fs::read_to_string(&path).unwrap().replace(RPC_PASS, "wrong-password");
    std::fs::write(&path, bad).unwrap();
    let (code, out) = ckpool(&["check", "--config", path.to_str().unwrap()]);
    assert_ne!(code, 0, "{out}");
    assert!(out.contains("authentication refused"), "{out}");
    assert!(!out.contains("wrong-password"), "{out}");

    // An address of another network is refused by name.
    let mainnet = std::fs::read_to_string(&path)
        .unwrap()
        .replace("wrong-password", RPC_PASS)
        .replace(&address, "1BvBMSEYstWetqTFn5Au4m4GFg7xJaNVN2");
    std::fs::write(&path, mainnet).unwrap();
    let (code, out) = ckpool(&["check", "--config", path.to_str().unwrap()]);
    assert_ne!(code, 0, "{out}");
    assert!(out.contains("btcaddress"), "{out}");
}

fn write(dir: &std::path::Path, name: &str, v: &serde_json::Value) -> String {
    let path = dir.join(name);
    std::fs::write(&path, serde_json::to_string_pretty(v).unwrap()).unwrap();
    path.display().to_string()
}

/// `check` tries what the start would: a port another process holds and a `zmqblock` nobody
/// publishes on fail it (each named), where it used to say "ok: listening on" and pass.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_binds_the_ports_and_reaches_the_zmq_publisher() {
    let nodes = NodePair::start().await;
    let address = nodes.a.new_address().await;
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = pool_config(&nodes.a, &address).await;
    cfg["serverurl"] = json!([format!("127.0.0.1:{}", free_port())]);
    cfg["logdir"] = json!(dir.path().join("logs").display().to_string());
    let good = write(dir.path(), "good.conf", &cfg);
    let (code, out) = ckpool(&["check", "--config", &good]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("can be listened on"), "{out}");
    assert!(out.contains(&format!("zmqblock {}: btcd", nodes.a.zmq_url())), "{out}");
    assert!(out.contains("publishes new blocks there"), "{out}");

    // A port held by another process.
    let held = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let held_addr = held.local_addr().unwrap();
    let mut busy = cfg.clone();
    busy["serverurl"] = json!([held_addr.to_string()]);
    let (code, out) = ckpool(&["check", "--config", &write(dir.path(), "busy.conf", &busy)]);
    assert_ne!(code, 0, "{out}");
    assert!(out.contains(&format!("FAILED: serverurl {held_addr}: cannot listen")), "{out}");
    assert!(!out.contains("all checks passed"), "{out}");
    drop(held);

    // A zmqblock endpoint with nothing behind it.
    let mut dead = cfg.clone();
    let dead_ep = format!("tcp://127.0.0.1:{}", free_port());
    dead["zmqblock"] = json!(dead_ep);
    let (code, out) = ckpool(&["check", "--config", &write(dir.path(), "dead.conf", &dead)]);
    assert_ne!(code, 0, "{out}");
    assert!(out.contains(&format!("FAILED: zmqblock {dead_ep}: nothing accepts connections")), "{out}");

    // Something listens there, but the node does not publish blocks there (its RPC port).
    let mut wrong = cfg.clone();
    let rpc_ep = format!("tcp://127.0.0.1:{}", nodes.a.rpc_port);
    wrong["zmqblock"] = json!(rpc_ep);
    let (code, out) = ckpool(&["check", "--config", &write(dir.path(), "wrong.conf", &wrong)]);
    assert_ne!(code, 0, "{out}");
    assert!(out.contains(&format!("FAILED: zmqblock {rpc_ep}: btcd")), "{out}");
    assert!(out.contains(&format!("pubhashblock {}", nodes.a.zmq_url())), "names what the node publishes: {out}");
}

/// `ckproxy check` contacts each upstream (subscribe and authorize) and leaves the unused
/// `btcd` alone: the guide's proxy file names a local node the proxy never asks.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxy_check_contacts_upstreams_and_not_btcd() {
    let nodes = NodePair::start().await;
    let address = nodes.a.new_address().await;
    let pool = Pool::start(pool_config(&nodes.a, &address).await, &[]);
    let dir = tempfile::tempdir().unwrap();
    // The guide's proxy file: btcd on a port where no node answers, one upstream.
    let mut cfg = json!({
        "btcd": [{"url": format!("localhost:{}", free_port()), "auth": "satoshi", "pass": "s3cretPassw0rd", "notify": true}],
        "proxy": [{"url": pool.addr(), "auth": format!("{address}.me@example.org"), "pass": "x"}],
        "btcaddress": "",
        "serverurl": [format!("127.0.0.1:{}", free_port())],
        "mindiff": 1, "startdiff": 42, "maxdiff": 0,
        "logdir": dir.path().join("logs").display().to_string(),
    });
    let (code, out) = ckpool(&["check", "--proxy", "--config", &write(dir.path(), "ckproxy.conf", &cfg)]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains(&format!("ok: proxy[0] {} answers", pool.addr())), "{out}");
    assert!(out.contains("btcd entries are not used in proxy mode"), "{out}");
    assert!(!out.contains("FAILED"), "{out}");

    // A dead tunnel: nothing on the upstream's port.
    let dead = format!("127.0.0.1:{}", free_port());
    cfg["proxy"][0]["url"] = json!(dead);
    let (code, out) = ckpool(&["check", "--proxy", "--config", &write(dir.path(), "dead.conf", &cfg)]);
    assert_ne!(code, 0, "{out}");
    assert!(out.contains(&format!("FAILED: proxy[0] {dead}: cannot connect")), "{out}");
    assert!(!out.contains("all checks passed"), "{out}");
}

/// A misspelled key is named, with the key meant, in the error it causes and in `check`.
#[test]
fn misspelled_keys_are_named_with_the_key_meant() {
    let dir = tempfile::tempdir().unwrap();
    let btcd = json!([{"url": "localhost:1", "auth": "u", "pass": "p"}]);
    // "btcadress": btcaddress stays empty; the error says why.
    let cfg = json!({"btcd": btcd, "btcadress": "mipcBbFg9gMiCh81Kj8tqqdgoZub1ZJRfn"});
    let (code, out) = ckpool(&["check", "--config", &write(dir.path(), "a.conf", &cfg)]);
    assert_ne!(code, 0, "{out}");
    assert!(out.contains("unknown key \"btcadress\" is ignored (did you mean \"btcaddress\"?)"), "{out}");
    // "mindif": the default mindiff is used; a rule broken because of it names the misspelling.
    let cfg = json!({"btcd": btcd, "btcaddress": "x", "mindif": 0.5, "startdiff": 0.5});
    let (code, out) = ckpool(&["check", "--config", &write(dir.path(), "b.conf", &cfg)]);
    assert_ne!(code, 0, "{out}");
    assert!(out.contains("startdiff"), "{out}");
    assert!(out.contains("did you mean \"mindiff\"?"), "{out}");
}

/// Started as `ckproxy` (the package's symlink), the binary names itself ckproxy: `--version`,
/// errors, and a help that does not offer `-p` (proxy mode is implied).
#[test]
fn ckproxy_names_itself() {
    let dir = tempfile::tempdir().unwrap();
    let link = dir.path().join("ckproxy");
    std::os::unix::fs::symlink(env!("CARGO_BIN_EXE_ckpool"), &link).unwrap();
    let run = |args: &[&str]| {
        let out = Command::new(&link).args(args).output().expect("run ckproxy");
        format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
    };
    let version = run(&["--version"]);
    assert!(version.starts_with("ckproxy "), "{version}");
    let help = run(&["--help"]);
    assert!(help.contains("ckproxy") && help.contains("--config"), "{help}");
    assert!(!help.contains("-p, --proxy"), "{help}");
    let missing = dir.path().join("none.conf");
    let err = run(&["--config", missing.to_str().unwrap(), "--sockdir", dir.path().to_str().unwrap(), "-q"]);
    assert!(err.starts_with("ckproxy: "), "{err}");
}

/// The tests' wait helper (tests/common/wait.rs), checked here once: it returns the value
/// waited for, and on timeout it stops, bounded in time and in checks, saying what it awaited.
mod wait_helper {
    use std::time::{Duration, Instant};

    use super::common::wait;

    #[tokio::test]
    async fn returns_the_value_once_the_condition_holds() {
        let mut n = 0;
        let got = wait::until("the third check", Duration::from_secs(5), || {
            n += 1;
            (n == 3).then_some(n * 10)
        })
        .await;
        assert_eq!((got, n), (30, 3));
        let mut m = 0;
        wait::blocking("the second check", Duration::from_secs(5), || {
            m += 1;
            m == 2
        });
        assert_eq!(m, 2);
    }

    #[tokio::test]
    async fn a_timeout_names_what_was_awaited_and_is_bounded() {
        let (mut checks, start) = (0u64, Instant::now());
        let limit = Duration::from_millis(300);
        let r = tokio::spawn(async move {
            wait::until_or("the impossible", limit, || false, || "state: none".to_string()).await
        })
        .await;
        let msg = *r.expect_err("it panics").into_panic().downcast::<String>().unwrap();
        assert!(msg.contains("timed out waiting for the impossible") && msg.contains("state: none"), "{msg}");
        assert!(start.elapsed() < Duration::from_secs(10), "a 300 ms wait took {:?}", start.elapsed());
        // The count bounds it too: at most limit / POLL + 1 checks.
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            wait::blocking("the impossible", limit, || {
                checks += 1;
                false
            })
        }));
        assert!(r.is_err());
        assert!(checks <= limit.as_millis() as u64 / wait::POLL.as_millis() as u64 + 1, "{checks} checks");
    }

    #[tokio::test]
    async fn async_conditions_are_awaited() {
        let got = wait::until_async("an answer", Duration::from_secs(5), || async { Some(7) }).await;
        assert_eq!(got, 7);
    }
}
