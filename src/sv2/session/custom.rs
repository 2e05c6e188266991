//! SetCustomMiningJob: an extended channel of a connection that asked for work selection mines
//! a job its owner declared to the pool's Job Declaration server (`sv2/jds/`). The job must be
//! the declared one in every part (tip, nbits, version, coinbase, merkle path); it becomes the
//! channel's work in the mining core, judged and assembled like the pool's own.

use mining_sv2::{SetCustomMiningJob, SetCustomMiningJobError, SetCustomMiningJobSuccess};

use super::*;
use crate::work::declared::DeclaredCoinbase;

/// Job ids of custom jobs, above any the template source gives (local ids are `id << 8`).
const CUSTOM_ID_BASE: u64 = 1 << 52;

impl Sv2Session {
    pub(super) fn on_custom_job<W: AsyncWrite + Unpin>(
        &mut self,
        m: SetCustomMiningJob<'_>,
        wr: &mut FrameWriter<W>,
    ) -> Result<(), End> {
        let (channel_id, request_id) = (m.channel_id, m.request_id);
        match self.custom_job(&m) {
            Ok(job_id) => {
                let ok = SetCustomMiningJobSuccess { channel_id, request_id, job_id };
                push(wr, AnyMessage::Mining(Mining::SetCustomMiningJobSuccess(ok)))
            }
            Err((code, why)) => {
                if self.ctx.guard.log(LogKind::Refusal) {
                    tracing::warn!(peer = %self.peer, client = self.id, channel = channel_id, "sv2: SetCustomMiningJob {request_id} refused ({code}): {}", Esc(&why));
                }
                let e = SetCustomMiningJobError {
                    channel_id,
                    request_id,
                    error_code: Str0255::new(code.as_bytes()).expect("short code"),
                };
                push(wr, AnyMessage::Mining(Mining::SetCustomMiningJobError(e)))
            }
        }
    }

    /// Checks the job against its declaration and issues it on the channel; its SV2 job id.
    fn custom_job(&mut self, m: &SetCustomMiningJob<'_>) -> Result<u32, (&'static str, String)> {
        let Some(registry) = self.ctx.params.declared.clone() else {
            return Err(("jd-not-supported", "this pool serves no job declaration (sv2jdurl)".into()));
        };
        if !self.work_selection {
            return Err((
                "jd-not-supported",
                "the connection did not ask for work selection in SetupConnection".into(),
            ));
        }
        let Some(ch) = self.channels.get_mut(&m.channel_id).filter(|c| c.extended) else {
            return Err(("invalid-channel-id", format!("no extended channel {} on this connection", m.channel_id)));
        };
        let token = m.token.try_as_array::<8>().ok().map(u64::from_le_bytes);
        let Some(declared) = token.and_then(|t| registry.get(t)) else {
            return Err((
                "invalid-mining-job-token",
                "no declared job has this token (declare it first; a new block drops the last block's)".into(),
            ));
        };
        let tip = self.ctx.work.borrow().as_ref().map(|w| w.job.prev_hash);
        if m.prev_hash.to_array() != declared.tip.prev_hash || tip != Some(declared.tip.prev_hash) {
            return Err(("stale-chain-tip", "the job is not on the pool's current block".into()));
        }
        if m.nbits != declared.tip.nbits {
            return Err((
                "invalid-nbits",
                format!("nbits {:08x}, the block needs {:08x}", m.nbits, declared.tip.nbits),
            ));
        }
        if m.version != declared.version {
            return Err(("invalid-version", format!("version {:08x}, declared {:08x}", m.version, declared.version)));
        }
        let n1 = ch.core.en1().len();
        let full = n1 + ch.n2;
        let coinbase = DeclaredCoinbase::from_parts(
            m.coinbase_tx_version,
            m.coinbase_prefix.as_bytes(),
            full,
            m.coinbase_tx_input_n_sequence,
            m.coinbase_tx_outputs.as_bytes(),
            m.coinbase_tx_locktime,
        )
        .map_err(|e| ("invalid-coinbase-tx", e.to_string()))?;
        if coinbase != declared.coinbase {
            return Err(("invalid-coinbase-tx", coinbase_difference(&coinbase, &declared.coinbase, full)));
        }
        let path: Vec<[u8; 32]> = m.merkle_path.clone().into_inner().iter().map(|u| u.to_array()).collect();
        if path != declared.branches() {
            return Err(("invalid-merkle-path", "the merkle path is not the declared transactions'".into()));
        }
        let ntime = m.min_ntime.max(declared.tip.mintime);
        let seq = CUSTOM_ID_BASE | (self.names as u64) << 24 | u64::from(m.request_id & 0xff_ffff);
        let work = Arc::new(Work::new(Arc::new(declared.job(seq, n1, ntime))));
        let Issued::Job { local_id, .. } = ch.core.issue(&work, true) else {
            return Err(("internal-error", "the channel did not take the job".into()));
        };
        let job_id = ch.ids.assign(local_id);
        ch.last_prev = Some(declared.tip.prev_hash);
        ch.custom = Some(work);
        if self.ctx.guard.log(LogKind::Connect) {
            tracing::info!(
                peer = %self.peer, client = self.id, channel = m.channel_id, user = %Esc(&declared.user),
                "sv2: mining a declared job at height {} ({} transaction(s)) as job {job_id}",
                declared.tip.height, declared.txids.len()
            );
        }
        Ok(job_id)
    }
}

/// Which part of a custom job's coinbase differs from the declaration (for the log).
fn coinbase_difference(got: &DeclaredCoinbase, declared: &DeclaredCoinbase, full: usize) -> String {
    if got.extranonce_len != declared.extranonce_len {
        return format!(
            "its extranonce is {full} bytes (this channel's prefix and rollable part), the declaration's {}",
            declared.extranonce_len
        );
    }
    let part = if got.version != declared.version {
        "transaction version"
    } else if got.script_head != declared.script_head {
        "scriptSig before the extranonce"
    } else if got.sequence != declared.sequence {
        "input sequence"
    } else if got.outputs != declared.outputs {
        "outputs"
    } else if got.locktime != declared.locktime {
        "lock time"
    } else {
        "witness"
    };
    format!("its coinbase differs from the declared one in the {part}")
}
