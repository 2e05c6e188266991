//! `ckpool check --config F`: validates a config and reaches each btcd (and the payout address)
//! without starting the pool. Prints one line per check; exit code 1 when anything failed.

use std::path::Path;
use std::time::Duration;

use serde_json::json;

use crate::bitcoind::Rpc;
use crate::config::Config;

pub fn run(path: &Path, proxy: bool) -> anyhow::Result<()> {
    let cfg = Config::load(path)?;
    println!("ok: {} parses", path.display());
    for k in &cfg.unknown_keys {
        println!("warning: unknown key \"{k}\" is ignored");
    }
    if proxy {
        cfg.require_proxy()?
    } else {
        cfg.require_pool()?
    }
    println!(
        "ok: listening on {}, mindiff {} startdiff {} maxdiff {}",
        cfg.serverurl.iter().map(|a| a.to_string()).collect::<Vec<_>>().join(", "),
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
        let rpc = Rpc::new(&cfg.btcd, Duration::from_secs(10));
        let mut failed = 0;
        for i in 0..rpc.node_count() {
            match rpc.call_node(i, "getblockchaininfo", json!([])).await {
                Ok(v) => println!(
                    "ok: btcd {} answers: chain {}, height {}",
                    rpc.node_label(i),
                    v["chain"].as_str().unwrap_or("?"),
                    v["blocks"]
                ),
                Err(e) => {
                    failed += 1;
                    println!("FAILED: {e}");
                }
            }
        }
        if !proxy && failed < rpc.node_count() {
            match crate::pool::payout_script(&rpc, &cfg.btcaddress).await {
                Ok((_, chain)) => println!("ok: btcaddress {} is valid on {chain}", cfg.btcaddress),
                Err(e) => {
                    failed += 1;
                    println!("FAILED: {e:#}");
                }
            }
        }
        failed
    });
    if failed > 0 {
        anyhow::bail!("{failed} check(s) failed");
    }
    println!("all checks passed");
    Ok(())
}
