//! Restarts that refuse no miner (issue #18): `-H`/`--handover` between two real pool
//! processes, systemd socket activation through `systemd-socket-activate`, and SIGHUP config
//! reload. A real regtest node pair, everything on 127.0.0.1, every loop bounded in count and
//! time.

mod common;

use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ckpool::sv1::client::Client as Sv1Client;
use common::{free_port, pool_config, solve, wait, Client, NodePair, Pool, IO_LIMIT};
use serde_json::{json, Value};
use tokio::sync::watch;

const BIN: &str = env!("CARGO_BIN_EXE_ckpool");

/// Rewrites the pool's config file (the first JSON value) with `edit`.
fn edit_config(pool: &Pool, edit: impl FnOnce(&mut Value)) {
    let text = std::fs::read_to_string(&pool.config_path).unwrap();
    let mut v: Value = serde_json::Deserializer::from_str(&text).into_iter::<Value>().next().unwrap().unwrap();
    edit(&mut v);
    std::fs::write(&pool.config_path, serde_json::to_string_pretty(&v).unwrap()).unwrap();
}

/// Waits (≤ 60 s) for the old instance to exit after `-H`; panics at once if the new one exits.
async fn old_exits(first: &mut Pool, second: &mut Pool) -> std::process::ExitStatus {
    let log = first.log_path();
    let exited = || {
        assert!(
            second.try_wait().is_none(),
            "the new instance exited; log:\n{}",
            std::fs::read_to_string(&log).unwrap()
        );
        first.try_wait()
    };
    let context = || format!("log:\n{}", std::fs::read_to_string(&log).unwrap_or_default());
    wait::until_or("the old instance to exit after -H", Duration::from_secs(60), exited, context).await
}

fn sighup(pool: &Pool) {
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pool.pid() as i32), nix::sys::signal::Signal::SIGHUP).unwrap();
}

/// What the miners and the prober saw.
#[derive(Default)]
struct Seen {
    /// Connection attempts that failed (refused, reset before connect): must stay empty.
    refused: Mutex<Vec<String>>,
    /// Miners that have work on their current connection, by index.
    with_work: Mutex<Vec<bool>>,
    reconnects: AtomicUsize,
}

/// One miner: connects, subscribes, authorizes, waits for work; when the server closes the
/// connection it reconnects (at most 20 times). Once `check` flips it proves its connection is
/// served (authorize answered) and returns how many connections it made.
async fn miner(addr: String, i: usize, seen: Arc<Seen>, mut check: watch::Receiver<bool>) -> usize {
    for conn in 1..=20 {
        let mut sv1 = match Sv1Client::connect(&addr).await {
            Ok(c) => c,
            Err(e) => {
                seen.refused.lock().unwrap().push(format!("miner {i} connection {conn}: {e}"));
                tokio::time::sleep(Duration::from_millis(20)).await;
                continue;
            }
        };
        if conn > 1 {
            seen.reconnects.fetch_add(1, Ordering::Relaxed);
        }
        let worker = format!("m{i}");
        let ok = async {
            sv1.subscribe("restart-test/1", None).await.ok()?;
            sv1.authorize(&worker, "x").await.ok()?.ok()?;
            loop {
                let line = sv1.next_line().await.ok()?;
                let v: Value = serde_json::from_slice(line).ok()?;
                if v["method"] == json!("mining.notify") {
                    return Some(());
                }
            }
        };
        // A connection the old instance accepted while stopping may close before answering.
        if tokio::time::timeout(IO_LIMIT, ok).await.ok().flatten().is_none() {
            continue;
        }
        seen.with_work.lock().unwrap()[i] = true;
        // Wait for the check or for the server to close this connection.
        let closed = loop {
            tokio::select! {
                r = sv1.next_line() => if r.is_err() { break true },
                r = check.wait_for(|c| *c) => { r.unwrap(); break false; }
            }
        };
        seen.with_work.lock().unwrap()[i] = false;
        if closed {
            continue;
        }
        let verdict = tokio::time::timeout(IO_LIMIT, sv1.authorize(&worker, "x")).await;
        assert!(matches!(verdict, Ok(Ok(Ok(())))), "miner {i}: its connection is not served: {verdict:?}");
        return conn;
    }
    panic!("miner {i}: no served connection in 20 attempts");
}

/// `-H` under load: 200 miners connected and a new connection every 5 ms across the handover.
/// No connection is refused, the old instance exits 0, and every miner is back with work on the
/// new instance (the old one is gone, so any served connection is the new one's). The API
/// listener is handed over too. The first instance is itself started with `-H` and no instance
/// running: it says so and binds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handover_under_200_miners_refuses_no_connection() {
    let nodes = NodePair::start().await;
    let address = nodes.a.new_address().await;
    let api_port = free_port();
    let mut config = pool_config(&nodes.a, &address).await;
    config["apiurl"] = json!(format!("127.0.0.1:{api_port}"));
    let mut first = Pool::start(config, &["-H"]);
    assert!(first.log().contains("handover (-H): no instance is running in"), "{}", first.log());
    let addr = first.addr();

    const MINERS: usize = 200;
    let seen = Arc::new(Seen { with_work: Mutex::new(vec![false; MINERS]), ..Default::default() });
    let (check_tx, check_rx) = watch::channel(false);
    let mut tasks = Vec::new();
    for i in 0..MINERS {
        tasks.push(tokio::spawn(miner(addr.clone(), i, seen.clone(), check_rx.clone())));
    }
    let all_working = || seen.with_work.lock().unwrap().iter().filter(|w| **w).count() == MINERS;
    wait::until("the 200 miners to get work from the first instance", Duration::from_secs(120), all_working).await;

    // The prober: a fresh connection every 5 ms until told to stop (at most 60 s, 12,000
    // connections); each must connect and have its subscribe answered by the instance that took
    // it. One accepted and then closed (or left) without an answer counts as refused: to a miner
    // it is the same as a refused connection.
    let probing = Arc::new(AtomicBool::new(true));
    let probes = Arc::new(AtomicUsize::new(0));
    let prober = {
        let (addr, seen, probing, probes) = (addr.clone(), seen.clone(), probing.clone(), probes.clone());
        tokio::spawn(async move {
            let (mut made, mut answered) = (0usize, 0usize);
            let until = Instant::now() + Duration::from_secs(60);
            let mut tick = tokio::time::interval(Duration::from_millis(5));
            let mut open = tokio::task::JoinSet::new();
            while probing.load(Ordering::Relaxed) && Instant::now() < until {
                tick.tick().await;
                made += 1;
                probes.store(made, Ordering::Relaxed);
                match Sv1Client::connect(&addr).await {
                    Ok(mut c) => {
                        let seen = seen.clone();
                        open.spawn(async move {
                            let r = tokio::time::timeout(IO_LIMIT, c.subscribe("probe/1", None)).await;
                            let why = match r {
                                Ok(Ok(_)) => return true,
                                Ok(Err(e)) => format!("{e:#}"),
                                Err(_) => format!("no answer within {IO_LIMIT:?}"),
                            };
                            seen.refused
                                .lock()
                                .unwrap()
                                .push(format!("probe {made}: accepted, then not answered: {why}"));
                            false
                        });
                    }
                    Err(e) => seen.refused.lock().unwrap().push(format!("probe {made}: {e}")),
                }
                while let Some(r) = open.try_join_next() {
                    answered += r.unwrap() as usize;
                }
            }
            while let Some(r) = open.join_next().await {
                answered += r.unwrap() as usize;
            }
            (made, answered)
        })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;

    // The new instance: the same command line as the first (the units' --killold included) plus -H.
    let mut second = Pool::prepare(json!({}));
    second.port = first.port;
    second.logdir = first.logdir.clone();
    let mut cmd = Command::new(BIN);
    cmd.args(first.args(&["-H"]));
    second.spawn_command(cmd);
    let status = old_exits(&mut first, &mut second).await;
    assert_eq!(status.code(), Some(0), "old instance's exit after the handover");
    let probes_at_exit = probes.load(Ordering::Relaxed);
    let log = first.log();
    assert!(log.contains(&format!("serverurl {addr}: socket handed over by pid")), "{log}");
    assert!(log.contains(&format!("apiurl 127.0.0.1:{api_port}: socket handed over by pid")), "{log}");
    assert!(log.contains("handover: stopping; pid"), "{log}");
    assert!(!log.contains("--killold: stopping"), "the new instance killed the old one instead: {log}");
    assert_eq!(log.matches("ckpool ready").count(), 2, "{log}");
    // The new instance writes the pid file once the old one let go.
    let pidfile = first.sockdir().join("main.pid");
    let names_second = || std::fs::read_to_string(&pidfile).unwrap_or_default().trim() == second.pid().to_string();
    wait::until("the pid file to name the new instance", Duration::from_secs(10), names_second).await;

    // Keep probing a moment on the new instance alone, then stop.
    tokio::time::sleep(Duration::from_millis(500)).await;
    probing.store(false, Ordering::Relaxed);
    let (made, answered) = prober.await.unwrap();
    println!("prober: {made} connections, {answered} answered");

    // Every miner back with work on the new instance: check each connection is served.
    wait::until("every miner back with work on the new instance", Duration::from_secs(120), all_working).await;
    check_tx.send(true).unwrap();
    let mut conns = Vec::new();
    for t in tasks {
        conns.push(t.await.unwrap());
    }
    let refused = seen.refused.lock().unwrap().clone();
    assert!(
        refused.is_empty(),
        "{} connection(s) refused, e.g. {:?} ({probes_at_exit} probes made when the old instance had exited, \
         {made} in all); handover lines:\n{}",
        refused.len(),
        &refused[..refused.len().min(5)],
        first.log().lines().filter(|l| l.contains("handover") || l.contains("ready")).collect::<Vec<_>>().join("\n")
    );
    assert!(conns.iter().all(|&c| c >= 2), "a miner never left the old instance: {conns:?}");
    // Probes on both instances, every one answered (an unanswered one is in `refused` above).
    assert!(
        probes_at_exit > 0 && made > probes_at_exit,
        "the prober did not run across the handover: {probes_at_exit} connections before the old instance \
         exited, {made} in all"
    );
    assert_eq!(answered, made, "probes answered of those made");
    println!("reconnects: {}", seen.reconnects.load(Ordering::Relaxed));

    // A share mined on the new instance is accepted; the API answers on the handed-over port.
    let mut c = Client::connect(&addr).await;
    let (en1, _) = c.handshake("after-handover").await;
    let n = c.notification("mining.notify").await;
    let share = solve(&n, &en1, "0000000000000001", "0.0001", false).unwrap();
    let id = c.request("mining.submit", share).await;
    assert_eq!(c.reply(id).await["result"], json!(true));
    let api = std::net::TcpStream::connect(("127.0.0.1", api_port));
    assert!(api.is_ok(), "API port after the handover: {api:?}");
    assert_eq!(second.stop().and_then(|s| s.code()), Some(0));
}

/// `-H` when the configs differ: the old instance's matching listener is taken, an address it
/// does not listen on is bound, and its listener the new config does not name is left to close
/// with it. A hung old instance (SIGSTOP) gets a clear error within the timeout and is left alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handover_mismatch_and_hung_instance() {
    let nodes = NodePair::start().await;
    let address = nodes.a.new_address().await;
    let api_port = free_port();
    let mut config = pool_config(&nodes.a, &address).await;
    config["apiurl"] = json!(format!("127.0.0.1:{api_port}"));
    let mut first = Pool::start(config, &[]);
    let addr = first.addr();

    // Hung: the handover socket accepts but nobody answers. The new instance must give up by
    // itself (its handover timeout is 5 s); the test bounds it, and continues the old instance
    // whatever happens.
    let pid = nix::unistd::Pid::from_raw(first.pid() as i32);
    struct Continue(nix::unistd::Pid);
    impl Drop for Continue {
        fn drop(&mut self) {
            let _ = nix::sys::signal::kill(self.0, nix::sys::signal::Signal::SIGCONT);
        }
    }
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGSTOP).unwrap();
    let stopped = Continue(pid);
    let run = tokio::process::Command::new(BIN)
        .arg("--config")
        .arg(&first.config_path)
        .arg("--sockdir")
        .arg(first.sockdir())
        .args(["-q", "-H"])
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(30), run)
        .await
        .expect("`ckpool -H` beside a hung instance still runs after 30 s")
        .unwrap();
    drop(stopped);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "started beside a hung instance");
    assert!(err.contains("did not answer") && err.contains("--killold"), "unclear error: {err}");
    assert!(first.try_wait().is_none(), "the hung instance was harmed");

    // Mismatch: the new config keeps the stratum port, adds another, drops the API.
    let extra = free_port();
    let mut second = Pool::prepare(json!({}));
    std::fs::copy(&first.config_path, &second.config_path).unwrap();
    edit_config(&second, |v| {
        v["serverurl"] = json!([addr, format!("127.0.0.1:{extra}")]);
        v.as_object_mut().unwrap().remove("apiurl");
    });
    second.port = first.port;
    second.logdir = first.logdir.clone();
    // Its own config, the first's socket dir: -H finds the running instance there.
    let mut cmd = Command::new(BIN);
    for a in second.args(&["-H"]) {
        cmd.arg(if a == second.sockdir().into_os_string() { first.sockdir().into_os_string() } else { a });
    }
    second.spawn_command(cmd);
    let status = old_exits(&mut first, &mut second).await;
    assert_eq!(status.code(), Some(0));
    let log = first.log();
    assert!(log.contains(&format!("serverurl {addr}: socket handed over by pid {}", pid)), "{log}");
    assert!(
        log.contains(&format!(
            "serverurl 127.0.0.1:{extra}: the old instance (pid {pid}) does not listen there; binding it"
        )),
        "{log}"
    );
    assert!(log.contains(&format!("listener on 127.0.0.1:{api_port} is not in this config: not taken")), "{log}");
    // Both stratum addresses serve; the API's port closed with the old instance.
    for a in [addr.clone(), format!("127.0.0.1:{extra}")] {
        let mut c = Client::connect(&a).await;
        c.handshake("mismatch").await;
        c.notification("mining.notify").await;
    }
    assert!(std::net::TcpStream::connect(("127.0.0.1", api_port)).is_err(), "the old API port still listens");
    assert_eq!(second.stop().and_then(|s| s.code()), Some(0));
}

/// systemd socket activation with Debian's `systemd-socket-activate`: it holds the port (and a
/// second one no serverurl names) and starts the pool at the first connection with LISTEN_FDS;
/// the pool serves that miner on the inherited socket, logs the unused one, and binds nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn socket_activation_serves_a_miner_on_the_inherited_socket() {
    assert!(
        std::path::Path::new("/usr/bin/systemd-socket-activate").exists(),
        "systemd-socket-activate missing (Debian's systemd package): run contrib/setup.sh"
    );
    let nodes = NodePair::start().await;
    let address = nodes.a.new_address().await;
    let mut pool = Pool::prepare(pool_config(&nodes.a, &address).await);
    let (port, unused) = (free_port(), free_port());
    edit_config(&pool, |v| v["serverurl"] = json!([format!("127.0.0.1:{port}")]));
    pool.port = port;
    let mut cmd = Command::new("systemd-socket-activate");
    cmd.args(["-l", &format!("127.0.0.1:{port}"), "-l", &format!("127.0.0.1:{unused}"), BIN]);
    cmd.args(pool.args(&[]));
    pool.spawn_command(cmd);
    // systemd-socket-activate listens first; the pool starts when this miner connects.
    let activator = std::sync::Mutex::new(&mut pool);
    let running = &activator;
    let sv1 = wait::until_async("systemd-socket-activate to listen", Duration::from_secs(30), move || async move {
        let c = Sv1Client::connect(("127.0.0.1", port)).await.ok();
        assert!(c.is_some() || running.lock().unwrap().try_wait().is_none(), "systemd-socket-activate exited");
        c
    })
    .await;
    let mut c = Client { sv1, backlog: Vec::new() };
    let (en1, _) = c.handshake("activated").await;
    let n = c.notification("mining.notify").await;
    let share = solve(&n, &en1, "0000000000000002", "0.0001", false).unwrap();
    let id = c.request("mining.submit", share).await;
    assert_eq!(c.reply(id).await["result"], json!(true), "share on the inherited socket");
    let log = pool.log();
    assert!(log.contains(&format!("serverurl 127.0.0.1:{port}: socket inherited from systemd")), "{log}");
    assert!(log.contains("socket activation: 2 listening socket(s) from systemd"), "{log}");
    assert!(
        log.contains(&format!(
            "systemd passed a listening socket on 127.0.0.1:{unused} that no serverurl/apiurl entry names"
        )),
        "{log}"
    );
    assert!(!log.contains("cannot listen"), "{log}");
    assert_eq!(pool.stop().and_then(|s| s.code()), Some(0));
}

/// The first set_difficulty a new miner gets.
async fn first_difficulty(addr: &str, worker: &str) -> (Client, f64) {
    let mut c = Client::connect(addr).await;
    c.handshake(worker).await;
    let d = c.notification("mining.set_difficulty").await;
    (c, d["params"][0].as_f64().unwrap())
}

/// SIGHUP (`systemctl reload`): new mindiff/startdiff apply to miners that connect afterwards and
/// the new btcsig to the next job,
/// a connected miner keeps its difficulty, keys that need a restart are named in one line, and a
/// broken config is one error line while the pool keeps serving with the running values.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_applies_difficulties_and_survives_a_broken_config() {
    let nodes = NodePair::start().await;
    let address = nodes.a.new_address().await;
    let mut pool = Pool::start(pool_config(&nodes.a, &address).await, &[]);
    let addr = pool.addr();
    let (mut before, d) = first_difficulty(&addr, "before").await;
    assert_eq!(d, 0.0001);

    edit_config(&pool, |v| {
        v["mindiff"] = json!(0.0002);
        v["startdiff"] = json!(0.0003);
        v["maxclients"] = json!(500);
        v["blockpoll"] = json!(250);
        v["btcsig"] = json!("/reloaded-sig/");
        v["loglevel"] = json!("warn");
    });
    sighup(&pool);
    pool.wait_log("SIGHUP: config", Duration::from_secs(20));
    pool.wait_log("reloaded; applied mindiff, startdiff, btcsig (mindiff 0.0002", Duration::from_secs(20));
    let log = pool.log();
    assert!(log.contains("SIGHUP: loglevel changed in the config, but -l on the command line wins"), "{log}");
    // (serverurl too: the harness started the pool on port 0 and wrote the chosen port in since.)
    let restart = log.lines().find(|l| l.contains("changed keys that need a restart to apply")).expect("restart line");
    assert!(restart.ends_with("blockpoll, maxclients") && !restart.contains("mindiff"), "{restart}");
    let (mut after, d) = first_difficulty(&addr, "after").await;
    assert_eq!(d, 0.0003, "a new session starts at the reloaded startdiff");
    // The new btcsig is in the coinbase of the job made at the reload (coinb2 carries it).
    let sig = ckpool::hex::encode(b"/reloaded-sig/");
    let deadline = Instant::now() + IO_LIMIT;
    loop {
        let n = after.notification("mining.notify").await;
        if n["params"][3].as_str().unwrap().contains(&sig) {
            break;
        }
        assert!(Instant::now() < deadline, "no job with the reloaded btcsig");
    }
    // The connected miner keeps the difficulty it started with: no set_difficulty since.
    before.backlog.retain(|v| v["method"] == json!("mining.set_difficulty"));
    assert!(before.backlog.is_empty(), "{:?}", before.backlog);
    while let Some(v) = before.read_within(Duration::from_millis(300)).await {
        assert_ne!(v["method"], json!("mining.set_difficulty"), "a connected miner's difficulty changed: {v}");
    }

    // A broken file: one error line, the pool serves on with the reloaded values.
    let good = std::fs::read_to_string(&pool.config_path).unwrap();
    std::fs::write(&pool.config_path, "{ \"mindiff\": 0.1, oops").unwrap();
    sighup(&pool);
    pool.wait_log("SIGHUP: config not reloaded, keeping the running one", Duration::from_secs(20));
    let errors: Vec<_> = pool.log().lines().filter(|l| l.contains("config not reloaded")).map(String::from).collect();
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(errors[0].contains("is not valid JSON") && errors[0].contains(&pool.config_path.display().to_string()));
    // A bad value names the key.
    std::fs::write(&pool.config_path, good.replace("\"mindiff\": 0.0002", "\"mindiff\": 0")).unwrap();
    sighup(&pool);
    pool.wait_log_count("config not reloaded", 2, Duration::from_secs(20));
    assert!(pool.log().contains("key \"mindiff\" = 0"), "{}", pool.log());
    assert!(pool.try_wait().is_none(), "the pool exited on a bad reload");
    let (mut c, d) = first_difficulty(&addr, "broken").await;
    assert_eq!(d, 0.0003, "the running values stay after a bad reload");
    c.notification("mining.notify").await;
    assert_eq!(pool.stop().and_then(|s| s.code()), Some(0));
}

/// Issue 26: a block the old instance finds while a `-H` handover is under way is taken over by
/// the new one, which follows it to its confirmations once the old one has exited.
///
/// To hold the overlap open, the new instance's config names node b, stopped when it starts: it
/// reads blocks.log, then waits for b (not ready, so the old instance keeps serving). Meanwhile
/// the old instance, on node a, finds a block a takes. Then b starts and syncs from a, the new
/// instance gets ready and the old one exits: every later blocks.log line is the new one's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_block_found_by_the_old_instance_during_a_handover_is_followed_by_the_new_one() {
    const LIMIT: Duration = Duration::from_secs(60);
    let mut nodes = NodePair::start().await;
    let address = nodes.a.new_address().await;
    let mut first = Pool::start(pool_config(&nodes.a, &address).await, &[]);
    let mut c = Client::connect(&first.addr()).await;
    let (en1, _) = c.handshake("finder.rig1").await;
    let notify = c.notification("mining.notify").await;
    let height = nodes.a.height().await + 1;

    let on_b = pool_config(&nodes.b, &address).await;
    edit_config(&first, |v| {
        v["btcd"] = on_b["btcd"].clone();
        v["zmqblock"] = on_b["zmqblock"].clone();
    });
    nodes.b.stop().await;
    let mut second = Pool::prepare(json!({}));
    second.port = first.port;
    second.logdir = first.logdir.clone();
    let mut cmd = Command::new(BIN);
    cmd.args(first.args(&["-H"]));
    second.spawn_command(cmd);
    // Both instances log to the same file; this line is the new one's, after its block task began.
    first.wait_log("waiting for bitcoind", LIMIT);

    let submit = solve(&notify, &en1, "0000000000000001", "0.0001", true).expect("regtest share");
    let id = c.request("mining.submit", submit).await;
    assert_eq!(c.reply(id).await["result"], json!(true), "{}", first.log());
    let text = first.wait_blocks_log("\"outcome\":\"accepted\"");
    let found: Value = serde_json::from_str(text.lines().find(|l| l.contains("accepted")).unwrap()).unwrap();
    let hash = found["hash"].as_str().unwrap().to_string();
    assert_eq!(found["height"], json!(height));

    nodes.b.restart().await;
    nodes.b.connect_to(&nodes.a).await;
    let status = old_exits(&mut first, &mut second).await;
    let lines_at_exit = std::fs::read_to_string(second.logdir.join("blocks.log")).unwrap().lines().count();
    assert_eq!(status.code(), Some(0), "old instance's exit after the handover");
    second.wait_log("blocks.log read again: 1 block(s) it found taken over", LIMIT);

    nodes.a.call("generate", json!([6])).await;
    // A "confirmed" line carries the confirmations seen (6 or more once the 6th milestone passed).
    let confirmed_6 = || {
        let text = std::fs::read_to_string(second.logdir.join("blocks.log")).unwrap_or_default();
        text.lines().skip(lines_at_exit).any(|l| {
            let v: Value = serde_json::from_str(l).unwrap();
            v["hash"] == json!(hash) && v["outcome"] == "confirmed" && v["confirmations"].as_u64() >= Some(6)
        })
    };
    let context = || format!("log:\n{}", second.log());
    wait::until_or("the new instance to record 6 confirmations", LIMIT, confirmed_6, context).await;
    assert_eq!(second.stop().and_then(|s| s.code()), Some(0));
}
