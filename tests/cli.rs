//! The command line as operators use it: config errors stop the start with a message naming the
//! key; `ckpool check` reaches the node; the guide's exact config text is accepted.

mod common;

use std::process::Command;

use common::{NodePair, RPC_PASS, RPC_USER};

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
        "{{\n\"btcd\" : [\n\t{{\n\t\"url\" : \"localhost:{port}\",\n\t\"auth\" : \"{RPC_USER}\",\n\t\"pass\" : \"{RPC_PASS}\",\n\t\"notify\" : true\n\t}}\n],\n\"btcaddress\" : \"{address}\",\n\"btcsig\" : \"\",\n\"serverurl\" : [\n\t\"127.0.0.1:3333\"\n],\n\"mindiff\" : 1,\n\"startdiff\" : 42,\n\"maxdiff\" : 0,\n\"zmqblock\" : \"tcp://127.0.0.1:28332\",\n\"logdir\" : \"{logdir}\"\n}}\nComments from here on are ignored.\n",
        port = nodes.a.rpc_port,
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
