//! The SV1 handshake and difficulty wishes: subscribe (with session resume), authorize,
//! configure, suggest_difficulty / suggest_target.

use serde_json::{json, Value};

use super::Session;
use crate::difficulty::{Difficulty, Target};
use crate::hex;
use crate::log::escape::Esc;
use crate::log::ratelimit::LogKind;
use crate::log::stats::StatEvent;
use crate::serve::guard::NAMES_PER_SV1_CONNECTION;
use crate::sv1::proto::{self, code};

impl Session {
    pub(super) fn on_subscribe(&mut self, id: &str, params: &Value) {
        if let Some(agent) = proto::str_param(params, 0) {
            self.agent = agent.chars().take(128).collect::<String>().into();
        }
        let prefix = self.ctx.work.borrow().as_ref().map(|w| w.en1_prefix.clone());
        if let Some(p) = prefix {
            self.channel.set_prefix(&p);
        }
        if !self.subscribed {
            self.resume(proto::str_param(params, 1));
        }
        self.en1_hex = hex::encode(self.channel.en1()).into();
        self.subscribed = true;
        let result = json!([
            [["mining.set_difficulty", &*self.en1_hex], ["mining.notify", &*self.en1_hex]],
            &*self.en1_hex,
            self.ctx_nonce2_len()
        ]);
        self.reply(id, &result.to_string());
        self.maybe_start();
    }

    /// Session resume: a miner reconnecting with its old session id (its extranonce1) gets it
    /// back when no live session holds it.
    pub(super) fn resume(&mut self, old_session: Option<&str>) {
        let prefix = self.channel.prefix();
        let Some(old) = old_session
            .and_then(|s| hex::decode(s).ok())
            .filter(|o| o.starts_with(prefix))
            .map(|o| o[prefix.len()..].to_vec())
        else {
            return;
        };
        if old.len() != self.ctx.params.nonce1_len || old == self.channel.own_en1() {
            return;
        }
        let mut key_bytes = [0u8; 8];
        key_bytes[8 - old.len()..].copy_from_slice(&old);
        let key = u64::from_be_bytes(key_bytes);
        if self.ctx.enonces.swap(self.en1_key, key) {
            self.en1_key = key;
            self.channel.set_own_en1(&old);
        }
    }

    pub(super) fn ctx_nonce2_len(&self) -> usize {
        self.ctx.work.borrow().as_ref().map(|w| w.job.coinbase.nonce2_len).unwrap_or(8)
    }

    pub(super) fn on_authorize(&mut self, id: &str, params: &Value) {
        let Some(user) = proto::str_param(params, 0).filter(|u| !u.is_empty()) else {
            self.error(id, code::OTHER, "Invalid params: expected [\"username\", \"password\"]");
            return;
        };
        let user: String = user.chars().take(256).collect();
        if !self.authorized || **self.channel.worker() != *user {
            // A new name: each costs the statistics a worker while connected, so a connection
            // may use only so many (a re-authorize flood is refused, not remembered).
            if self.names >= NAMES_PER_SV1_CONNECTION {
                return self.refuse_name(id, &user);
            }
            self.names += 1;
        }
        let base = user.split(['.', '_']).next().unwrap_or(&user).to_string();
        let mut new_payout = false;
        if let Some(solo) = &self.ctx.params.solo {
            match solo.payout_script(&user) {
                Ok(script) => {
                    new_payout = self.payout.as_ref() != Some(&script);
                    self.payout = Some(script);
                }
                Err(why) => return self.refuse_solo_worker(id, &user, &why),
            }
        } else if let Some(payees) = &self.ctx.params.payees {
            if let Err(why) = payees.payout_script(&user) {
                return self.refuse_solo_worker(id, &user, &why);
            }
        }
        // Shares so far belong to the name they were sent under.
        self.close_tally();
        let renamed = !self.authorized || **self.channel.worker() != *user;
        if self.authorized && renamed {
            let (u, w) = (self.channel.user().clone(), self.channel.worker().clone());
            self.outbox.stat(StatEvent::Gone { user: u, worker: w });
        }
        self.channel.set_identity(base.into(), user.into());
        if renamed {
            let (u, w) = (self.channel.user().clone(), self.channel.worker().clone());
            self.outbox.stat(StatEvent::Agent { user: u.clone(), worker: w.clone(), agent: self.agent.clone() });
            self.outbox.stat(StatEvent::Authorized { user: u, worker: w });
        }
        // A "d=N" / "+N"-free password is ignored; "d=0.001" asks for a start difficulty.
        if let Some(pass) = proto::str_param(params, 1) {
            if let Some(d) =
                pass.split(',').find_map(|kv| kv.trim().strip_prefix("d=")).and_then(|v| v.parse::<Difficulty>().ok())
            {
                if self.working {
                    // Work is flowing: set_difficulty, then the work under a new id.
                    self.apply_suggestion(d);
                } else {
                    self.channel.ask_start_difficulty(d);
                }
            }
        }
        if !self.authorized && self.ctx.guard.log(LogKind::Connect) {
            tracing::info!(peer = %self.peer, client = self.id, worker = %Esc(self.worker()), agent = %Esc(&self.agent), "miner authorized");
        }
        self.authorized = true;
        if self.working && new_payout {
            // Solo: another address on a working session: its own coinbase, under new job ids.
            self.channel.renumber();
            if let Some(w) = self.current_work() {
                self.send_work(&w, true);
            }
        }
        // The first work goes out before the answer (docs/firmware.md: ckproxy 0.9.9 reads up to the
        // authorize answer and leaves what follows it in the same read unread until the next
        // notify). Every client handles notifications before a pending reply.
        self.maybe_start();
        self.reply(id, "true");
    }

    /// Past the names one connection may use: `false` with the reason; the name is not taken.
    fn refuse_name(&mut self, id: &str, user: &str) {
        self.ctx.guard.counts.names_refused.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        if self.ctx.guard.log(LogKind::Limit) {
            tracing::warn!(
                peer = %self.peer, client = self.id, worker = %Esc(self.worker()),
                "refusing name {:?}: this connection used {NAMES_PER_SV1_CONNECTION} names already", Esc(user)
            );
        }
        let msg =
            format!("Too many names on one connection (limit {NAMES_PER_SV1_CONNECTION}); reconnect to use another");
        self.error(id, code::UNAUTHORIZED, &msg);
    }

    /// Solo mode and PPLNS: a username that is no payout address of the node's chain gets
    /// `false`, the reason as a `client.show_message`, and no work; the operator log says why.
    fn refuse_solo_worker(&mut self, id: &str, user: &str, why: &str) {
        let mode = if self.ctx.params.solo.is_some() { "solo" } else { "pplns" };
        if self.ctx.guard.log(LogKind::Refusal) {
            tracing::warn!(peer = %self.peer, client = self.id, agent = %Esc(&self.agent), "{mode}: refusing worker {:?}: {why}", Esc(user));
        }
        let what = if mode == "solo" { "Solo mining" } else { "This pool pays miners by address" };
        let text = format!("{what}: the username must start with a payout address of this pool's chain ({why})");
        self.out.extend_from_slice(proto::notification_line("client.show_message", &json!([text])).as_bytes());
        self.reply(id, "false");
    }

    pub(super) fn on_configure(&mut self, id: &str, params: &Value) {
        let exts: Vec<&str> = params
            .get(0)
            .and_then(Value::as_array)
            .map(|a| a.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        let opts = params.get(1).cloned().unwrap_or(Value::Null);
        let mut result = serde_json::Map::new();
        for ext in exts {
            match ext {
                "version-rolling" => {
                    let asked = opts
                        .get("version-rolling.mask")
                        .and_then(Value::as_str)
                        .and_then(|m| hex::parse_u32_be(m).ok())
                        .unwrap_or(u32::MAX);
                    let mask = self.channel.negotiate_version_mask(asked);
                    result.insert("version-rolling".into(), Value::Bool(true));
                    result.insert("version-rolling.mask".into(), Value::String(format!("{mask:08x}")));
                }
                "minimum-difficulty" => {
                    if let Some(d) = opts.get("minimum-difficulty.value").and_then(|v| Difficulty::from_json(v).ok()) {
                        self.apply_suggestion(d);
                    }
                    result.insert("minimum-difficulty".into(), Value::Bool(true));
                }
                "subscribe-extranonce" => {
                    result.insert("subscribe-extranonce".into(), Value::Bool(true));
                }
                other => {
                    result.insert(other.to_string(), Value::Bool(false));
                }
            }
        }
        self.reply(id, &Value::Object(result).to_string());
    }

    pub(super) fn on_suggest(&mut self, method: &str, params: &Value) {
        let d = if method == "mining.suggest_target" {
            proto::str_param(params, 0).and_then(|t| {
                let mut be = [0u8; 32];
                hex::decode_into(t, &mut be).ok()?;
                Some(Difficulty::from_target(&Target::from_u256(ruint::aliases::U256::from_be_bytes(be))))
            })
        } else {
            proto::suggested_difficulty(params)
        };
        match d {
            Some(d) if !d.is_zero() => self.apply_suggestion(d),
            _ => tracing::debug!(peer = %self.peer, "ignoring {method} with params {}", Esc(&params.to_string())),
        }
    }

    /// Takes a miner's difficulty wish (within mindiff..maxdiff); when work is flowing, the new
    /// difficulty is sent followed by the current job under a new id.
    pub(super) fn apply_suggestion(&mut self, d: Difficulty) {
        let now = self.now_us();
        if self.channel.suggest(d, now).is_none() || !self.working {
            return;
        }
        let w = self.current_work();
        if let Some(w) = w {
            self.send_difficulty(None);
            self.send_work(&w, true);
        }
    }
}
