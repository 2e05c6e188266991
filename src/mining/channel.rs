//! One miner's channel: the jobs it was given (each with the difficulty in force when it was
//! issued), its extranonce1, version mask, difficulty and vardiff, and the verdict on each share.
//!
//! Pure: time comes in as microseconds since any fixed origin; nothing here reads a clock,
//! touches a socket or takes a lock (the job's duplicate set aside, which is the job's own).
//!
//! Rules it keeps (docs/firmware.md):
//! - a share is judged at the difficulty in force when its job was issued;
//! - after a difficulty change the face sends the new difficulty, then the work under a new id
//!   (the id's low byte is the difficulty revision), so no miner judges a job at the wrong one;
//! - work on a previous block is stale, but a share the job already took is a duplicate whatever
//!   arrives first; late shares on the previous block's dropped jobs are still logged (as stale);
//! - a suggestion (suggest_difficulty, configure, `d=`) is a floor for vardiff.

use std::collections::VecDeque;
use std::sync::Arc;

use super::vardiff::{Limits, Retarget, Vardiff, VardiffParams};
use super::work::{BlockCandidate, UpstreamShare, Work};
use super::ShareTally;
use crate::difficulty::{Difficulty, Target};
use crate::hex;
use crate::share::{self, Accepted, Decoded, Reject, Submit};

/// Jobs remembered per channel for late submits.
pub const JOBS_KEPT: usize = 16;

/// What a channel is given when it opens.
#[derive(Debug, Clone, Copy)]
pub struct ChannelParams {
    pub mindiff: Difficulty,
    pub startdiff: Difficulty,
    /// Zero: no maximum.
    pub maxdiff: Difficulty,
    /// The server's BIP310 mask: what a miner may roll at most.
    pub version_mask: u32,
    pub vardiff: VardiffParams,
}

impl ChannelParams {
    /// Clamps a wanted difficulty into `mindiff..=maxdiff`.
    pub fn clamp(&self, d: Difficulty) -> Difficulty {
        let mut d = d.max(self.mindiff);
        if !self.maxdiff.is_zero() {
            d = d.min(self.maxdiff);
        }
        d
    }
}

/// A job as this channel was given it: with the difficulty in force when it was issued.
/// (72 bytes: an idle miner holds one, in a deque sized for one.)
struct SentJob {
    local_id: u64,
    /// The work it came from: the job, and in proxy mode the upstream job it re-issues.
    work: Arc<Work>,
    target: Target,
    diff: Difficulty,
    /// The BIP310 mask in force when it was sent (BIP310: a new mask holds for later jobs).
    mask: u32,
}

/// The previous block's jobs dropped at a new block (or a new upstream): their local ids, height
/// and the difficulty they were sent at, so that a late share on one is still logged (as stale).
#[derive(Debug, Clone, Copy)]
struct Dropped {
    first_local_id: u64,
    last_local_id: u64,
    height: u32,
    diff: Difficulty,
}

/// What [`Channel::issue`] decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Issued {
    /// Send the work under `local_id`; `clean`: the miner must drop its older jobs.
    Job { local_id: u64, clean: bool },
    /// This exact job (same id, same difficulty) was sent already: nothing to send.
    AlreadySent,
}

/// A share's line for the share log, less what the face knows (identity, addresses, time).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ShareRecord {
    pub workinfoid: u64,
    pub height: u32,
    /// The difficulty the share was judged at, and what its hash reached (zero when not hashed).
    pub diff: Difficulty,
    pub sdiff: Difficulty,
    pub hash: Option<[u8; 32]>,
}

/// The verdict on one submit: the answer the miner gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Verdict {
    pub result: Result<(), Reject>,
    /// The difficulty it was judged at (the channel's current one when no job was found).
    pub diff: Difficulty,
}

/// What a submit causes besides its answer; owned by the face and reused (cleared by `submit`).
#[derive(Debug, Default)]
pub struct Effects {
    /// The share's share-log record; none for a submit that named no job this channel knows.
    pub share: Option<ShareRecord>,
    /// The share meets the network target: assemble and submit.
    pub block: Option<BlockCandidate>,
    /// Proxy mode: the share meets the upstream's difficulty.
    pub upstream: Option<UpstreamShare>,
    /// Vardiff moved the difficulty: send it, then the current work under a new id.
    pub retarget: Option<Retarget>,
}

impl Effects {
    fn clear(&mut self) {
        self.share = None;
        self.block = None;
        self.upstream = None;
        self.retarget = None;
    }
}

/// One miner's mining state (kept small: an idle miner costs its session and this).
pub struct Channel {
    /// The difficulty range (`mindiff`, `maxdiff`; zero: no maximum).
    mindiff: Difficulty,
    maxdiff: Difficulty,
    /// extranonce1: `prefix_len` bytes of the upstream's (proxy mode only), then this channel's own.
    en1: Vec<u8>,
    prefix_len: usize,
    /// The BIP310 mask in force: what the miner asked for (everything when it never asked)
    /// within what the server allows.
    version_mask: u32,
    /// What the miner asked for in mining.configure, if it did.
    asked_mask: Option<u32>,
    /// What the server allows; in proxy mode the upstream can change it (set_version_mask).
    allowed_mask: u32,
    diff: Difficulty,
    suggested: Option<Difficulty>,
    vardiff: Vardiff,
    jobs: VecDeque<SentJob>,
    /// Difficulty revision: the low byte of every local job id.
    rev: u8,
    last_prev: Option<[u8; 32]>,
    dropped: Option<Dropped>,
    /// The lowest and highest local id ever issued on this channel (`u64::MAX`, 0 before the
    /// first job): an id between them was ours once (stale when no longer held); any other id
    /// is one this channel never issued (unknown, an invalid share).
    issued_lo: u64,
    issued_hi: u64,
    /// Shares judged since the face last took the tally.
    tally: ShareTally,
    /// Who mines on it: the account (`user`) and the full worker name, as authorized.
    user: Arc<str>,
    worker: Arc<str>,
}

impl Channel {
    /// A channel with extranonce1 `own_en1`, opened at `now` (microseconds).
    pub fn new(params: ChannelParams, own_en1: &[u8], now: u64) -> Channel {
        Channel {
            mindiff: params.mindiff,
            maxdiff: params.maxdiff,
            en1: own_en1.to_vec(),
            prefix_len: 0,
            version_mask: params.version_mask,
            asked_mask: None,
            allowed_mask: params.version_mask,
            diff: params.clamp(params.startdiff),
            suggested: None,
            vardiff: Vardiff::new(params.vardiff, now),
            // Grows with the jobs sent (an idle miner holds one or two): no 16-slot block up front.
            jobs: VecDeque::new(),
            rev: 0,
            last_prev: None,
            dropped: None,
            issued_lo: u64::MAX,
            issued_hi: 0,
            tally: ShareTally::default(),
            user: Arc::from(""),
            worker: Arc::from(""),
        }
    }

    /// Names who mines on this channel from now on (shares so far stay in the tally under the
    /// old name: the face takes the tally first).
    pub fn set_identity(&mut self, user: Arc<str>, worker: Arc<str>) {
        self.user = user;
        self.worker = worker;
    }

    pub fn user(&self) -> &Arc<str> {
        &self.user
    }

    pub fn worker(&self) -> &Arc<str> {
        &self.worker
    }

    pub fn difficulty(&self) -> Difficulty {
        self.diff
    }

    pub fn version_mask(&self) -> u32 {
        self.version_mask
    }

    /// The whole extranonce1: upstream prefix, then this channel's own bytes.
    pub fn en1(&self) -> &[u8] {
        &self.en1
    }

    /// This channel's own extranonce1 bytes (after the upstream's prefix).
    pub fn own_en1(&self) -> &[u8] {
        &self.en1[self.prefix_len..]
    }

    pub fn prefix(&self) -> &[u8] {
        &self.en1[..self.prefix_len]
    }

    /// Replaces this channel's own extranonce1 bytes (a resumed session got its old value back).
    pub fn set_own_en1(&mut self, own: &[u8]) {
        self.en1.truncate(self.prefix_len);
        self.en1.extend_from_slice(own);
    }

    /// Puts the upstream's extranonce1 before this channel's own bytes (at subscribe).
    pub fn set_prefix(&mut self, prefix: &[u8]) {
        let own = self.own_en1().to_vec();
        self.en1.clear();
        self.en1.extend_from_slice(prefix);
        self.en1.extend_from_slice(&own);
        self.prefix_len = prefix.len();
    }

    /// A new upstream session: a new prefix, and every job sent so far is gone. Shares still on
    /// their way for them are answered stale and logged against their job, as at a new block.
    pub fn switch_prefix(&mut self, prefix: &[u8]) {
        self.set_prefix(prefix);
        if let (Some(first), Some(last)) = (self.jobs.front(), self.jobs.back()) {
            self.dropped = Some(Dropped {
                first_local_id: first.local_id,
                last_local_id: last.local_id,
                height: last.work.job.height,
                diff: last.diff,
            });
        }
        self.jobs.clear();
    }

    /// The miner asked for `asked` in mining.configure: it may roll the bits both allow.
    pub fn negotiate_version_mask(&mut self, asked: u32) -> u32 {
        self.asked_mask = Some(asked);
        self.version_mask = asked & self.allowed_mask;
        self.version_mask
    }

    /// True when the miner negotiated version rolling (it then takes `mining.set_version_mask`).
    pub fn negotiated_version_rolling(&self) -> bool {
        self.asked_mask.is_some()
    }

    /// The server now allows `allowed` (an upstream's set_version_mask) for the jobs sent from
    /// now on. Returns the miner's new mask when it changed; jobs sent before keep theirs.
    pub fn allow_version_mask(&mut self, allowed: u32) -> Option<u32> {
        if allowed == self.allowed_mask {
            return None;
        }
        self.allowed_mask = allowed;
        let new = self.asked_mask.unwrap_or(u32::MAX) & allowed;
        if new == self.version_mask {
            return None;
        }
        self.version_mask = new;
        Some(new)
    }

    /// The vardiff limits at `network` (the current job's network difficulty).
    pub fn limits(&self, network: Option<Difficulty>) -> Limits {
        Limits { mindiff: self.mindiff, maxdiff: self.maxdiff, suggested: self.suggested, network }
    }

    /// Clamps a wanted difficulty into `mindiff..=maxdiff`.
    fn clamp(&self, d: Difficulty) -> Difficulty {
        let d = d.max(self.mindiff);
        if self.maxdiff.is_zero() {
            d
        } else {
            d.min(self.maxdiff)
        }
    }

    /// A start difficulty asked for at authorize (`d=N` in the password): taken as the
    /// difficulty and as a floor, without restarting vardiff's clock (no work was sent at it).
    pub fn ask_start_difficulty(&mut self, d: Difficulty) {
        self.suggested = Some(d);
        self.diff = self.clamp(d);
    }

    /// A miner's difficulty wish (suggest_difficulty, suggest_target, configure) at `now`: a
    /// floor. Returns the new difficulty when it changed; the face then sends it, followed by
    /// the current work under a new id.
    pub fn suggest(&mut self, d: Difficulty, now: u64) -> Option<Difficulty> {
        self.suggested = Some(d);
        let new = self.clamp(d);
        if new == self.diff {
            return None;
        }
        self.set_difficulty(new);
        self.vardiff.reset(now);
        Some(new)
    }

    /// The highest difficulty this channel may be set to (`None`: no maximum).
    pub fn maxdiff(&self) -> Option<Difficulty> {
        (!self.maxdiff.is_zero()).then_some(self.maxdiff)
    }

    /// A miner's own bounds at `now` (Stratum V2's OpenChannel / UpdateChannel): `floor`, the
    /// difficulty of the easiest target it accepts, holds for vardiff from now on; `wanted`,
    /// from its nominal hashrate, is where to start. Returns the new difficulty when it changed
    /// (the face then sends the target, followed by the current work under a new id).
    pub fn miner_bounds(&mut self, floor: Difficulty, wanted: Option<Difficulty>, now: u64) -> Option<Difficulty> {
        self.suggested = (!floor.is_zero()).then_some(floor);
        let new = self.clamp(wanted.unwrap_or(self.diff).max(floor));
        if new == self.diff {
            return None;
        }
        self.set_difficulty(new);
        self.vardiff.reset(now);
        Some(new)
    }

    /// Jobs sent from now on get new ids even for work already sent (solo mode: the same
    /// template under another payout address is a different job for the miner).
    pub fn renumber(&mut self) {
        self.rev = self.rev.wrapping_add(1);
    }

    fn set_difficulty(&mut self, d: Difficulty) {
        self.diff = d;
        self.rev = self.rev.wrapping_add(1);
    }

    /// Before sending work at `now`: lowers a channel that has been quiet for a retarget
    /// interval. Returns the decision when the difficulty changed (then the work must go out
    /// under a new id, after the new difficulty).
    pub fn idle_check(&mut self, now: u64, network: Option<Difficulty>) -> Option<Retarget> {
        let lim = self.limits(network);
        let r = self.vardiff.on_idle(now, self.diff, &lim)?;
        self.set_difficulty(r.new);
        Some(r)
    }

    /// Records `w` as sent at the current difficulty. `fresh_id` sends the same job again under
    /// a new local id (after a difficulty change). clean_jobs is set whenever the previous block
    /// changed, or the work itself says so and is new to this channel.
    pub fn issue(&mut self, w: &Arc<Work>, fresh_id: bool) -> Issued {
        if !fresh_id
            && self.jobs.back().is_some_and(|s| s.work.job.id == w.job.id && s.local_id & 0xff == self.rev as u64)
        {
            return Issued::AlreadySent;
        }
        let prev_changed = self.last_prev != Some(w.job.prev_hash);
        let clean = prev_changed || (w.job.clean && self.jobs.back().is_none_or(|s| s.work.job.id != w.job.id));
        let local_id = (w.job.id << 8) | self.rev as u64;
        if prev_changed && self.jobs.len() > 1 {
            self.drop_previous_block();
        }
        if self.jobs.len() == JOBS_KEPT {
            self.jobs.pop_front();
        }
        let (target, diff, mask) = (self.diff.to_target(), self.diff, self.version_mask);
        if self.jobs.capacity() == 0 {
            // An idle miner holds one job: room for one, not the four a first push would take.
            self.jobs.reserve_exact(1);
        }
        self.jobs.push_back(SentJob { local_id, work: w.clone(), target, diff, mask });
        self.issued_lo = self.issued_lo.min(local_id);
        self.issued_hi = self.issued_hi.max(local_id);
        self.last_prev = Some(w.job.prev_hash);
        Issued::Job { local_id, clean }
    }

    /// A new block: of the old block's jobs only the last is kept (late shares on it are judged
    /// stale against it); the rest, and their memory, go, remembered as a range of ids.
    fn drop_previous_block(&mut self) {
        let n = self.jobs.len() - 1;
        // The remembered range covers only the previous block's jobs (one height).
        let old_prev = self.jobs[n - 1].work.job.prev_hash;
        let from = self.jobs.iter().take(n).position(|j| j.work.job.prev_hash == old_prev).unwrap_or(n - 1);
        let (first, last) = (&self.jobs[from], &self.jobs[n - 1]);
        self.dropped = Some(Dropped {
            first_local_id: first.local_id,
            last_local_id: last.local_id,
            height: last.work.job.height,
            diff: last.diff,
        });
        self.jobs.drain(..n);
        self.jobs.shrink_to(4);
    }

    /// Puts the jobs held under the current difficulty (Stratum V2's SetTarget on a channel
    /// whose jobs the miner set itself, SetCustomMiningJob: the new target holds for them at
    /// once, as SV2 says, since no new job can be sent in their place).
    pub fn retarget_held(&mut self) {
        let (target, diff) = (self.diff.to_target(), self.diff);
        for j in self.jobs.iter_mut() {
            j.target = target;
            j.diff = diff;
        }
    }

    /// The local id of the last job sent when it is `w`'s (for a keepalive re-send).
    pub fn current_local_id(&self, w: &Work) -> Option<u64> {
        self.jobs.back().filter(|s| s.work.job.id == w.job.id).map(|s| s.local_id)
    }

    /// A submit the face could not read (bad params): counted as rejected at the current
    /// difficulty, not logged (it names no job).
    pub fn count_unread(&mut self) {
        self.tally.add(self.diff, Difficulty::ZERO, false);
    }

    /// Judges a submit at `now`; `upstream` says a proxy's upstream takes shares. Vardiff's upper
    /// clamp is the network difficulty of the share's own job (no shared state read per share).
    pub fn submit(&mut self, sub: &Submit, now: u64, upstream: bool, fx: &mut Effects) -> Verdict {
        let lid = u64::from_str_radix(sub.job_id, 16).ok();
        let ours = lid.filter(|_| sub.job_id.len() <= 16);
        self.judge(lid, ours, now, upstream, fx, |job, en1, mask, target| share::check(job, en1, sub, mask, target))
    }

    /// [`Channel::submit`] for a share that names its job by the local id it was issued under
    /// and carries its fields decoded (Stratum V2).
    pub fn submit_decoded(
        &mut self,
        local_id: u64,
        d: &Decoded,
        now: u64,
        upstream: bool,
        fx: &mut Effects,
    ) -> Verdict {
        let lid = Some(local_id);
        self.judge(lid, lid, now, upstream, fx, |job, en1, mask, target| {
            share::check_decoded(job, en1, d, mask, target)
        })
    }

    /// Whether `local_id` lies within the ids this channel has issued (held or dropped since).
    fn was_issued(&self, local_id: u64) -> bool {
        (self.issued_lo..=self.issued_hi).contains(&local_id)
    }

    /// The verdict on a share for job `lid` (`ours`: an id this channel could have issued), the
    /// share's fields judged by `check` against the job, extranonce1, mask and target it was sent
    /// with.
    fn judge(
        &mut self,
        lid: Option<u64>,
        ours: Option<u64>,
        now: u64,
        upstream: bool,
        fx: &mut Effects,
        check: impl FnOnce(&crate::work::Job, &[u8], u32, &Target) -> Result<Accepted, Reject>,
    ) -> Verdict {
        fx.clear();
        let Some(idx) = lid.and_then(|l| self.jobs.iter().position(|s| s.local_id == l)) else {
            return self.submit_unknown_job(ours, fx);
        };
        let sent = &self.jobs[idx];
        let (diff, work) = (sent.diff, sent.work.clone());
        // Work on a previous block: stale, and logged against its job; but a share this job has
        // already taken is a duplicate whenever it comes back (the answer does not depend on
        // whether the next block's work reached the channel first).
        let mask = sent.mask;
        let checked = check(&work.job, &self.en1, mask, &sent.target);
        let checked = match checked {
            Err(Reject::Duplicate) => Err(Reject::Duplicate),
            _ if self.last_prev != Some(work.job.prev_hash) => Err(Reject::Stale),
            other => other,
        };
        let mut record =
            ShareRecord { workinfoid: work.job.id, height: work.job.height, diff, sdiff: Difficulty::ZERO, hash: None };
        let acc = match checked {
            Ok(acc) => acc,
            Err(r) => {
                if let Reject::LowDifficulty { difficulty, hash } = r {
                    (record.sdiff, record.hash) = (difficulty, Some(hash));
                }
                self.tally.add(diff, record.sdiff, false);
                fx.share = Some(record);
                return Verdict { result: Err(r), diff };
            }
        };
        (record.sdiff, record.hash) = (acc.difficulty, Some(acc.hash));
        fx.share = Some(record);
        self.tally.add(diff, acc.difficulty, true);
        if upstream {
            fx.upstream = self.upstream_share(&work, &acc, mask);
        }
        if acc.block {
            fx.block = Some(BlockCandidate {
                job: work.job.clone(),
                en1: self.en1.clone(),
                en2: acc.extranonce2().to_vec(),
                header: acc.header,
                hash: acc.hash,
                workername: self.worker.clone(),
                username: self.user.clone(),
                difficulty: acc.difficulty,
            });
        }
        let lim = self.limits(Some(work.network_diff));
        if let Some(r) = self.vardiff.on_share(now, diff, self.diff, &lim) {
            self.set_difficulty(r.new);
            fx.retarget = Some(r);
        }
        Verdict { result: Ok(()), diff }
    }

    /// A submit naming no job this channel holds: stale when the id is one this channel issued
    /// (its job was dropped since: an old block, or past the jobs kept), unknown otherwise (not
    /// hex, too long, or outside the ids ever issued: an invented id is an invalid share, held
    /// against the miner by banning, where a stale one is not). A late share on a job of the
    /// previous block that was dropped at the new block is logged as stale against that job, as
    /// if it were still kept.
    fn submit_unknown_job(&mut self, lid: Option<u64>, fx: &mut Effects) -> Verdict {
        let lid = lid.filter(|&l| self.was_issued(l));
        let r = if lid.is_some() { Reject::Stale } else { Reject::UnknownJob };
        let dropped = self.dropped.filter(|d| lid.is_some_and(|l| (d.first_local_id..=d.last_local_id).contains(&l)));
        match (dropped, lid) {
            (Some(d), Some(l)) => {
                self.tally.add(d.diff, Difficulty::ZERO, false);
                fx.share = Some(ShareRecord {
                    workinfoid: l >> 8,
                    height: d.height,
                    diff: d.diff,
                    sdiff: Difficulty::ZERO,
                    hash: None,
                });
                Verdict { result: Err(r), diff: d.diff }
            }
            _ => {
                self.tally.add(self.diff, Difficulty::ZERO, false);
                Verdict { result: Err(r), diff: self.diff }
            }
        }
    }

    /// Proxy mode: the share for the upstream pool when it meets the upstream's difficulty, or
    /// any block-meeting share (on test networks the block target can be easier than the pool's).
    fn upstream_share(&self, work: &Work, acc: &Accepted, mask: u32) -> Option<UpstreamShare> {
        let up = work.upstream.as_ref()?;
        if !acc.block && !up.target.is_met_by(&acc.hash) {
            return None;
        }
        // The upstream's extranonce2 is this channel's own extranonce1 bytes, then the miner's.
        let mut en2 = hex::encode(self.own_en1());
        hex::encode_to(acc.extranonce2(), &mut en2);
        Some(UpstreamShare {
            job_id: up.job_id.clone(),
            generation: up.generation,
            extranonce2: en2,
            ntime: format!("{:08x}", acc.ntime),
            nonce: format!("{:08x}", acc.nonce),
            version_bits: (acc.version != work.job.version).then(|| format!("{:08x}", acc.version & mask)),
            version: acc.version,
            workername: self.worker.clone(),
            difficulty: acc.difficulty,
        })
    }

    /// The shares judged since the last call.
    pub fn take_tally(&mut self) -> ShareTally {
        std::mem::take(&mut self.tally)
    }
}

#[cfg(test)]
#[path = "channel_tests.rs"]
mod tests;
