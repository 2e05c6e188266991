//! `ckpool check --config F`: validates a config and tries what the start would do, without
//! starting: binds each listening address (then lets go), reaches each btcd, the payout address
//! and the `zmqblock` publisher (pool), or each upstream pool (proxy, which never uses `btcd`).
//! Prints one line per check; exit code 1 when anything failed.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use serde_json::json;
use tokio::time::timeout;

use crate::bitcoind::Rpc;
use crate::config::{Config, Upstream};

/// How long one upstream may take to connect and answer subscribe and authorize.
const UPSTREAM_LIMIT: Duration = Duration::from_secs(10);
/// How long a TCP connect to the ZMQ publisher may take.
const ZMQ_CONNECT_LIMIT: Duration = Duration::from_secs(3);

pub fn run(path: &Path, proxy: bool) -> anyhow::Result<()> {
    let cfg = Config::load(path)?;
    println!("ok: {} parses", path.display());
    for k in &cfg.unknown_keys {
        println!("warning: {}", crate::config::unknown_key_note(k));
    }
    if proxy {
        cfg.require_proxy()?
    } else {
        cfg.require_pool()?
    }
    println!(
        "ok: mindiff {} startdiff {} maxdiff {}",
        cfg.mindiff,
        cfg.startdiff,
        if cfg.maxdiff.is_zero() { "none".to_string() } else { cfg.maxdiff.to_string() }
    );
    if crate::tls::TlsServer::from_config(&cfg)?.is_some() {
        println!("ok: TLS listeners' tlscert and tlskey load and belong together");
    }
    for (i, up) in cfg.proxy.iter().enumerate().filter(|(_, u)| u.tls) {
        crate::tls::client_config(up.tlsca.as_deref()).map_err(|e| anyhow::anyhow!("proxy[{i}]: {e:#}"))?;
    }
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let failed = rt.block_on(async {
        let mut failed = listeners(&cfg, proxy);
        failed += if proxy { upstreams(&cfg).await } else { node(&cfg).await };
        failed
    });
    if failed > 0 {
        anyhow::bail!("{failed} check(s) failed");
    }
    println!("all checks passed");
    Ok(())
}

/// Binds every address the start would listen on, and lets go at once.
fn listeners(cfg: &Config, proxy: bool) -> usize {
    let mut wanted: Vec<(&str, SocketAddr)> = cfg.serverurl.iter().map(|a| ("serverurl", *a)).collect();
    wanted.extend(cfg.apiurl.iter().map(|a| ("apiurl", *a)));
    if !proxy {
        wanted.extend(cfg.sv2url.iter().map(|a| ("sv2url", *a)));
        wanted.extend(cfg.sv2jdurl.iter().map(|a| ("sv2jdurl", *a)));
    }
    let mut failed = 0;
    for (key, addr) in wanted {
        match crate::serve::accept::bind_all(&[addr]) {
            Ok(_) => println!("ok: {key} {addr} can be listened on"),
            Err(_) => {
                failed += 1;
                let why = std::net::TcpListener::bind(addr).err().map_or("in use".to_string(), |e| e.to_string());
                println!(
                    "FAILED: {key} {addr}: cannot listen: {why} (another process holds the port: a running \
                     instance, or its systemd socket unit)"
                );
            }
        }
    }
    failed
}

/// Pool mode: each btcd, the payout address, the ZMQ publisher.
async fn node(cfg: &Config) -> usize {
    let rpc = Rpc::new(&cfg.btcd, Duration::from_secs(10));
    let mut failed = 0;
    let mut answering = None;
    for i in 0..rpc.node_count() {
        match rpc.call_node(i, "getblockchaininfo", json!([])).await {
            Ok(v) => {
                println!(
                    "ok: btcd {} answers: chain {}, height {}",
                    rpc.node_label(i),
                    v["chain"].as_str().unwrap_or("?"),
                    v["blocks"]
                );
                answering.get_or_insert(i);
            }
            Err(e) => {
                failed += 1;
                println!("FAILED: {e}");
            }
        }
    }
    if answering.is_some() {
        match crate::pool::payout_script(&rpc, &cfg.btcaddress).await {
            Ok((_, chain)) => println!("ok: btcaddress {} is valid on {chain}", cfg.btcaddress),
            Err(e) => {
                failed += 1;
                println!("FAILED: {e:#}");
            }
        }
    }
    if let Some(ep) = &cfg.zmqblock {
        failed += zmq(&rpc, answering, ep).await;
    }
    failed
}

/// `zmqblock`: something listens there, and the node (when it can say) publishes blocks there.
async fn zmq(rpc: &Rpc, node: Option<usize>, ep: &str) -> usize {
    if let Err(why) = zmq_listening(ep).await {
        println!(
            "FAILED: zmqblock {ep}: {why}; the pool would poll the node instead (set bitcoind's \
             -zmqpubhashblock={ep}, or remove zmqblock)"
        );
        return 1;
    }
    let Some(i) = node else {
        println!("ok: zmqblock {ep} accepts connections");
        return 0;
    };
    match crate::pool::zmq_publishers(rpc, Some(i)).await {
        Ok(v) => match crate::bitcoind::zmq::published_at(&v, ep) {
            Ok(()) => {
                println!("ok: zmqblock {ep}: btcd {} publishes new blocks there", rpc.node_label(i));
                0
            }
            Err(listed) => {
                println!(
                    "FAILED: zmqblock {ep}: btcd {} publishes no blocks there (it publishes: {})",
                    rpc.node_label(i),
                    if listed.is_empty() { "nothing".to_string() } else { listed.join(", ") }
                );
                1
            }
        },
        Err(e) => {
            println!("ok: zmqblock {ep} accepts connections (the node does not list its publishers: {e})");
            0
        }
    }
}

/// Whether a ZMQ publisher could be there: a TCP connect, or an existing `ipc://` socket file.
async fn zmq_listening(ep: &str) -> Result<(), String> {
    if let Some(path) = ep.strip_prefix("ipc://") {
        return match Path::new(path).exists() {
            true => Ok(()),
            false => Err(format!("no socket file {path}")),
        };
    }
    let hostport = ep.strip_prefix("tcp://").unwrap_or(ep);
    match timeout(ZMQ_CONNECT_LIMIT, tokio::net::TcpStream::connect(hostport)).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) => Err(format!("nothing accepts connections there: {e}")),
        Err(_) => Err(format!("no connection within {ZMQ_CONNECT_LIMIT:?}")),
    }
}

/// Proxy mode: each upstream pool takes a connection and answers subscribe and authorize (a
/// Stratum V2 one: the handshake with its key, and a channel).
async fn upstreams(cfg: &Config) -> usize {
    if !cfg.btcd.is_empty() {
        println!("ok: btcd entries are not used in proxy mode (not contacted)");
    }
    let mut failed = 0;
    for (i, up) in cfg.proxy.iter().enumerate() {
        let url = crate::api::without_userinfo(&up.url);
        match timeout(UPSTREAM_LIMIT, upstream(up)).await {
            Ok(Ok(note)) => println!("ok: proxy[{i}] {url} answers: {note}"),
            Ok(Err(e)) => {
                failed += 1;
                println!("FAILED: proxy[{i}] {url}: {e:#}");
            }
            Err(_) => {
                failed += 1;
                println!("FAILED: proxy[{i}] {url}: no subscribe/authorize answer within {UPSTREAM_LIMIT:?}");
            }
        }
    }
    failed
}

async fn upstream(up: &Upstream) -> anyhow::Result<String> {
    use crate::sv1::client::Client;
    if let Some(key) = &up.authority {
        return sv2_upstream(up, key).await;
    }
    let mut c = if up.tls {
        Client::connect_tls(&up.url, crate::tls::client_config(up.tlsca.as_deref())?).await?
    } else {
        Client::connect(&up.url).await.map_err(|e| anyhow::anyhow!("cannot connect: {e}"))?
    };
    let agent = concat!("ckpool-rs-check/", env!("CARGO_PKG_VERSION"));
    let sub = c.subscribe(agent, None).await?;
    match c.authorize(&up.auth, up.pass.expose()).await? {
        Ok(()) => Ok(format!("subscribed (extranonce2 {} bytes), authorized as {}", sub.extranonce2_size, up.auth)),
        Err(r) => anyhow::bail!("authorize as {} refused: {r}", up.auth),
    }
}

/// A `stratum2+tcp://` entry: the Noise handshake with the url's key, SetupConnection and an
/// extended channel for `auth`.
async fn sv2_upstream(up: &Upstream, key: &[u8; 32]) -> anyhow::Result<String> {
    use crate::sv2::client::{Event, Sv2Client};
    let stream = tokio::net::TcpStream::connect(&up.url).await.map_err(|e| anyhow::anyhow!("cannot connect: {e}"))?;
    let mut c = Sv2Client::connect_on(stream, key, 0).await?;
    c.open_extended(&up.auth, 0.0, 2).await?;
    loop {
        match c.next_event().await? {
            Event::ExtendedOpened { extranonce_prefix, extranonce_size, .. } => {
                return Ok(format!(
                    "Stratum V2, the pool's key checked, extended channel opened for {} (extranonce {}+{extranonce_size} bytes)",
                    up.auth,
                    extranonce_prefix.len()
                ))
            }
            Event::OpenRefused { code, .. } => anyhow::bail!("extended channel for {} refused: {code}", up.auth),
            _ => {}
        }
    }
}
