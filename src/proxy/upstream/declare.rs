//! Job Declaration from the proxy's side (a Stratum V2 `proxy` entry with `jds`): templates
//! from the proxy's own node (`btcd`, `getblocktemplate`), a coinbase paying the pool's output
//! in full, declared to the pool's Job Declaration server; a declared job is handed to the
//! upstream session, which sets it on its channel (SetCustomMiningJob) and publishes it to
//! local miners with its transactions (a block found on it is also submitted to the own node).
//! A refusal or a lost server leaves the pool's own jobs in use, with one line saying so.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use tokio::time::Instant;

use crate::bitcoind::Rpc;
use crate::log::escape::Esc;
use crate::sv2::jd_client::{Declaration, JdClient, JdEvent, DECLARE_TX_DATA};
use crate::work::declared::DeclaredCoinbase;
use crate::work::merkle::sha256d;
use crate::work::{tx_walk, Template};

/// How long the server may take to answer a step of a declaration.
const ANSWER_WITHIN: Duration = Duration::from_secs(30);
/// Tokens asked for ahead.
const TOKENS_AHEAD: usize = 2;

/// A job the server accepted, to set on the channel.
pub(super) struct Declared {
    pub token: Vec<u8>,
    pub template: Arc<Template>,
    pub coinbase: DeclaredCoinbase,
}

/// What the declarer has for the session.
pub(super) enum Step {
    Declared(Declared),
    /// The server refused a declaration (the pool's jobs stay in use on this block).
    Refused(String),
    /// The server is gone or broke the protocol: declaring stops for this session.
    Failed(String),
}

/// One declaration on its way: the template, the coinbase and where each transaction lies.
struct Inflight {
    request_id: u32,
    token: Vec<u8>,
    template: Arc<Template>,
    coinbase: DeclaredCoinbase,
    /// Each transaction's bytes (for ProvideMissingTransactions).
    txs: Vec<Vec<u8>>,
    since: Instant,
}

pub(super) struct Declarer {
    jd: JdClient,
    rpc: Arc<Rpc>,
    user: String,
    tag: Vec<u8>,
    poll: Duration,
    refresh: Duration,
    /// The pool's output script (from the first token).
    pool_script: Option<Vec<u8>>,
    tokens: VecDeque<Vec<u8>>,
    asked_tokens: usize,
    next_request: u32,
    inflight: Option<Inflight>,
    /// The node's tip last declared on (or refused on), and when.
    tip: Option<String>,
    declared_at: Option<Instant>,
    refused_tip: Option<String>,
    next_poll: Instant,
}

impl Declarer {
    /// Connects to the server at `addr` (the pool's key), sets up a full-template connection.
    pub async fn connect(
        addr: &str,
        key: &[u8; 32],
        user: &str,
        rpc: Arc<Rpc>,
        tag: &str,
        poll: Duration,
        refresh: Duration,
    ) -> anyhow::Result<Declarer> {
        let sock = tokio::net::lookup_host(addr).await?.next().ok_or_else(|| anyhow::anyhow!("{addr}: no address"))?;
        let mut jd = tokio::time::timeout(ANSWER_WITHIN, JdClient::connect(sock, key, DECLARE_TX_DATA))
            .await
            .map_err(|_| anyhow::anyhow!("no Noise handshake within {ANSWER_WITHIN:?}"))??;
        match tokio::time::timeout(ANSWER_WITHIN, jd.next_event()).await {
            Ok(Ok(JdEvent::SetupOk)) => {}
            Ok(Ok(JdEvent::SetupRefused { code })) => anyhow::bail!("SetupConnection refused: {}", Esc(&code)),
            Ok(Ok(other)) => anyhow::bail!("expected SetupConnection.Success, got {other:?}"),
            Ok(Err(e)) => return Err(e),
            Err(_) => anyhow::bail!("no SetupConnection answer within {ANSWER_WITHIN:?}"),
        }
        Ok(Declarer {
            jd,
            rpc,
            user: user.to_string(),
            tag: tag.as_bytes().to_vec(),
            poll: poll.max(Duration::from_millis(50)),
            refresh,
            pool_script: None,
            tokens: VecDeque::new(),
            asked_tokens: 0,
            next_request: 0,
            inflight: None,
            tip: None,
            declared_at: None,
            refused_tip: None,
            next_poll: Instant::now(),
        })
    }

    fn request_id(&mut self) -> u32 {
        self.next_request = self.next_request.wrapping_add(1);
        self.next_request
    }

    /// Runs until there is something for the session; `extranonce_len` is the channel's full
    /// extranonce (its prefix and rolled part), which the coinbase's scriptSig ends with.
    /// Cancel-safe: state changes only once a step has completed.
    pub async fn next(&mut self, extranonce_len: usize) -> Step {
        loop {
            if self.tokens.len() + self.asked_tokens < TOKENS_AHEAD {
                let id = self.request_id();
                self.asked_tokens += 1;
                if let Err(e) = self.jd.allocate(&self.user, id).await {
                    return Step::Failed(format!("{e:#}"));
                }
            }
            if let Some(f) = &self.inflight {
                if f.since.elapsed() > ANSWER_WITHIN {
                    return Step::Failed(format!("no answer to declaration {} within {ANSWER_WITHIN:?}", f.request_id));
                }
            }
            tokio::select! {
                ev = self.jd.next_event() => {
                    let ev = match ev {
                        Ok(ev) => ev,
                        Err(e) => return Step::Failed(format!("{e:#}")),
                    };
                    if let Some(step) = self.on_event(ev).await {
                        return step;
                    }
                }
                _ = tokio::time::sleep_until(self.next_poll) => {
                    self.next_poll = Instant::now() + self.poll;
                    if let Err(e) = self.maybe_declare(extranonce_len).await {
                        tracing::warn!("jds {}: {}", self.user, Esc(&e));
                    }
                }
            }
        }
    }

    async fn on_event(&mut self, ev: JdEvent) -> Option<Step> {
        match ev {
            JdEvent::Token { token, outputs, .. } => {
                self.asked_tokens = self.asked_tokens.saturating_sub(1);
                match bitcoin::consensus::encode::deserialize::<Vec<bitcoin::TxOut>>(&outputs) {
                    Ok(outs) if outs.len() == 1 => self.pool_script = Some(outs[0].script_pubkey.to_bytes()),
                    Ok(outs) => {
                        return Some(Step::Failed(format!(
                            "the server asks for {} coinbase outputs; this proxy pays one (the pool's)",
                            outs.len()
                        )))
                    }
                    Err(e) => return Some(Step::Failed(format!("unreadable coinbase outputs from the server: {e}"))),
                }
                self.tokens.push_back(token);
                None
            }
            JdEvent::Missing { request_id, positions } => {
                let f = self.inflight.as_ref().filter(|f| f.request_id == request_id)?;
                let txs: Vec<Vec<u8>> = positions.iter().filter_map(|&p| f.txs.get(p as usize).cloned()).collect();
                tracing::info!(
                    "jds {}: the server asks for {} transaction(s) of declaration {request_id}",
                    self.user,
                    txs.len()
                );
                if let Err(e) = self.jd.provide(request_id, &txs).await {
                    return Some(Step::Failed(format!("{e:#}")));
                }
                None
            }
            JdEvent::Declared { request_id, token } => {
                let f = self.inflight.take_if(|f| f.request_id == request_id)?;
                let _ = f.token;
                Some(Step::Declared(Declared { token, template: f.template, coinbase: f.coinbase }))
            }
            JdEvent::Refused { request_id, code, details } => {
                let f = self.inflight.take_if(|f| f.request_id == request_id)?;
                self.refused_tip = self.tip.clone();
                Some(Step::Refused(format!(
                    "declaration {request_id} at height {} refused ({}): {}",
                    f.template.height,
                    Esc(&code),
                    Esc(&details)
                )))
            }
            other => {
                tracing::debug!("jds {}: ignoring {other:?}", self.user);
                None
            }
        }
    }

    /// A new tip on the node, or `refresh` since the last declaration: a new one.
    async fn maybe_declare(&mut self, extranonce_len: usize) -> Result<(), String> {
        if self.inflight.is_some() {
            return Ok(());
        }
        let best = self.rpc.call("getbestblockhash", json!([])).await.map_err(|e| e.to_string())?;
        let best = best.as_str().unwrap_or_default().to_string();
        let new_tip = self.tip.as_deref() != Some(best.as_str());
        let due = self.declared_at.is_none_or(|t| t.elapsed() >= self.refresh);
        if !new_tip && !due {
            return Ok(());
        }
        if self.refused_tip.as_deref() == Some(best.as_str()) && !new_tip {
            // Refused on this block: the pool's jobs until the next one.
            return Ok(());
        }
        let (Some(token), Some(script)) = (self.tokens.front().cloned(), self.pool_script.clone()) else {
            return Ok(());
        };
        let text = self
            .rpc
            .call_raw("getblocktemplate", json!([{"rules": ["segwit"]}]))
            .await
            .map_err(|e| format!("getblocktemplate: {e}"))?;
        let template = Template::from_gbt_json(text.get()).map_err(|e| e.to_string())?;
        let bytes = crate::hex::decode(std::str::from_utf8(&template.txs_hex).unwrap_or_default())
            .map_err(|e| format!("template transactions: {e}"))?;
        let walked = tx_walk::walk(&bytes, template.transactions.len()).map_err(|e| e.to_string())?;
        let mut txs = Vec::with_capacity(walked.len());
        let mut wtxids = Vec::with_capacity(walked.len());
        let mut start = 0;
        for (_, end) in walked {
            wtxids.push(sha256d(&bytes[start..end]));
            txs.push(bytes[start..end].to_vec());
            start = end;
        }
        let coinbase = DeclaredCoinbase::for_template(&template, &script, &self.tag, extranonce_len);
        let (prefix, suffix) = coinbase.declared_parts();
        let request_id = self.request_id();
        let d = Declaration {
            request_id,
            token: &token,
            version: template.version,
            coinbase_prefix: &prefix,
            coinbase_suffix: &suffix,
            wtxids: &wtxids,
        };
        self.jd.declare(&d).await.map_err(|e| format!("{e:#}"))?;
        self.tokens.pop_front();
        self.tip = Some(best);
        self.declared_at = Some(Instant::now());
        self.inflight =
            Some(Inflight { request_id, token, template: Arc::new(template), coinbase, txs, since: Instant::now() });
        Ok(())
    }
}
