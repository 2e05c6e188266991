//! Share validation: rebuild the header of a `mining.submit`, hash it and judge it. Pure.

use crate::difficulty::{Difficulty, Target};
use crate::hex;
use crate::work::coinbase::MAX_NONCE2_LEN;
use crate::work::job::Job;
use crate::work::merkle::sha256d_header;

/// How far past the job's ntime a share may roll (ckpool's window).
pub const NTIME_MAX_ROLL: u32 = 7000;

/// The BIP310 mask used when a miner sends version bits without `mining.configure`.
pub const DEFAULT_VERSION_MASK: u32 = 0x1fff_e000;

/// The fields of a `mining.submit` after the worker name, as sent.
#[derive(Debug, Clone, Copy)]
pub struct Submit<'a> {
    pub job_id: &'a str,
    pub extranonce2: &'a str,
    pub ntime: &'a str,
    pub nonce: &'a str,
    pub version_bits: Option<&'a str>,
}

/// A share that met the session's difficulty (or the network's).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Accepted {
    pub hash: [u8; 32],
    /// The difficulty the hash achieves.
    pub difficulty: Difficulty,
    /// The hash meets the network target: assemble and submit the block.
    pub block: bool,
    pub header: [u8; 80],
    pub version: u32,
    pub ntime: u32,
    pub nonce: u32,
    pub extranonce2: [u8; MAX_NONCE2_LEN],
    pub extranonce2_len: usize,
}

impl Accepted {
    pub fn extranonce2(&self) -> &[u8] {
        &self.extranonce2[..self.extranonce2_len]
    }
}

/// Why a share was refused. Codes follow the stratum convention (20 other, 21 job not found,
/// 22 duplicate, 23 low difficulty, 24 unauthorized, 25 not subscribed).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Reject {
    #[error("Invalid JobID")]
    UnknownJob,
    #[error("Stale")]
    Stale,
    #[error("Invalid nonce2 length: expected {expected} bytes, got {got}")]
    BadExtranonce2Length { expected: usize, got: usize },
    #[error("Invalid hex in {0}")]
    BadHex(&'static str),
    #[error("Ntime out of range")]
    NtimeOutOfRange,
    #[error("Invalid version mask")]
    VersionOutsideMask,
    #[error("Duplicate")]
    Duplicate,
    #[error("Above target")]
    LowDifficulty { difficulty: Difficulty, hash: [u8; 32] },
}

impl Reject {
    /// The reason as replied and logged; borrowed for every reject but a bad extranonce2 length.
    pub fn reason(&self) -> std::borrow::Cow<'static, str> {
        use std::borrow::Cow;
        match self {
            Reject::UnknownJob => Cow::Borrowed("Invalid JobID"),
            Reject::Stale => Cow::Borrowed("Stale"),
            Reject::BadHex("extranonce2") => Cow::Borrowed("Invalid hex in extranonce2"),
            Reject::BadHex("ntime") => Cow::Borrowed("Invalid hex in ntime"),
            Reject::BadHex("nonce") => Cow::Borrowed("Invalid hex in nonce"),
            Reject::NtimeOutOfRange => Cow::Borrowed("Ntime out of range"),
            Reject::VersionOutsideMask => Cow::Borrowed("Invalid version mask"),
            Reject::Duplicate => Cow::Borrowed("Duplicate"),
            Reject::LowDifficulty { .. } => Cow::Borrowed("Above target"),
            other => Cow::Owned(other.to_string()),
        }
    }

    /// The stratum error code for the reply.
    pub fn code(&self) -> i32 {
        match self {
            Reject::UnknownJob | Reject::Stale => 21,
            Reject::Duplicate => 22,
            Reject::LowDifficulty { .. } => 23,
            _ => 20,
        }
    }
}

/// A share's fields as a binary protocol carries them (Stratum V2): already decoded, with the
/// whole header version rather than the rolled bits.
#[derive(Debug, Clone, Copy)]
pub struct Decoded<'a> {
    pub extranonce2: &'a [u8],
    pub ntime: u32,
    pub nonce: u32,
    pub version: u32,
}

/// Judges a share on `job` for a session with extranonce1 `en1`.
///
/// `version_mask` is the session's negotiated BIP310 mask ([`DEFAULT_VERSION_MASK`] when it never
/// negotiated); `share_target` is the target of the difficulty in force when the job was issued.
/// A hash that meets the network target is always accepted as a block, whatever the share target.
#[inline]
pub fn check(
    job: &Job,
    en1: &[u8],
    sub: &Submit,
    version_mask: u32,
    share_target: &Target,
) -> Result<Accepted, Reject> {
    let expected = job.coinbase.nonce2_len;
    let en2_hex = sub.extranonce2.as_bytes();
    if expected > MAX_NONCE2_LEN || en2_hex.len() != expected * 2 {
        return Err(Reject::BadExtranonce2Length { expected, got: en2_hex.len() / 2 });
    }
    let mut en2 = [0u8; MAX_NONCE2_LEN];
    hex::decode_into(sub.extranonce2, &mut en2[..expected]).map_err(|_| Reject::BadHex("extranonce2"))?;
    let ntime = hex::parse_u32_be(sub.ntime).map_err(|_| Reject::BadHex("ntime"))?;
    let nonce = hex::parse_u32_be(sub.nonce).map_err(|_| Reject::BadHex("nonce"))?;
    check_ntime(job, ntime)?;
    let version = match sub.version_bits {
        None => job.version,
        Some(text) => {
            let bits = hex::parse_u32_be(text).map_err(|_| Reject::BadHex("version bits"))?;
            let outside = bits & !version_mask;
            // Accept rolled bits alone (BIP310) or the full rolled version (some firmware sends it).
            if outside != 0 && outside != job.version & !version_mask {
                return Err(Reject::VersionOutsideMask);
            }
            (job.version & !version_mask) | (bits & version_mask)
        }
    };
    judge(job, en1, (en2, expected), version, ntime, nonce, share_target)
}

/// [`check`] for a share whose fields arrived decoded (Stratum V2): the same rules, in the same
/// order; the version must equal the job's outside `version_mask`.
#[inline]
pub fn check_decoded(
    job: &Job,
    en1: &[u8],
    d: &Decoded,
    version_mask: u32,
    share_target: &Target,
) -> Result<Accepted, Reject> {
    let expected = job.coinbase.nonce2_len;
    if expected > MAX_NONCE2_LEN || d.extranonce2.len() != expected {
        return Err(Reject::BadExtranonce2Length { expected, got: d.extranonce2.len() });
    }
    let mut en2 = [0u8; MAX_NONCE2_LEN];
    en2[..expected].copy_from_slice(d.extranonce2);
    check_ntime(job, d.ntime)?;
    if (d.version ^ job.version) & !version_mask != 0 {
        return Err(Reject::VersionOutsideMask);
    }
    judge(job, en1, (en2, expected), d.version, d.ntime, d.nonce, share_target)
}

fn check_ntime(job: &Job, ntime: u32) -> Result<(), Reject> {
    if ntime < job.mintime.min(job.ntime) || ntime > job.ntime.saturating_add(NTIME_MAX_ROLL) {
        return Err(Reject::NtimeOutOfRange);
    }
    Ok(())
}

/// Hashes the header the fields make and judges it against the share and network targets.
#[inline]
fn judge(
    job: &Job,
    en1: &[u8],
    (en2, en2_len): ([u8; MAX_NONCE2_LEN], usize),
    version: u32,
    ntime: u32,
    nonce: u32,
    share_target: &Target,
) -> Result<Accepted, Reject> {
    let root = job.merkle_root(en1, &en2[..en2_len]);
    let header = job.header(&root, version, ntime, nonce);
    let hash = sha256d_header(&header);
    let block = job.network_target.is_met_by(&hash);
    if !block && !share_target.is_met_by(&hash) {
        return Err(Reject::LowDifficulty { difficulty: Difficulty::from_hash(&hash), hash });
    }
    if !job.mark_seen(&hash) {
        return Err(Reject::Duplicate);
    }
    Ok(Accepted {
        hash,
        difficulty: Difficulty::from_hash(&hash),
        block,
        header,
        version,
        ntime,
        nonce,
        extranonce2: en2,
        extranonce2_len: en2_len,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_match_display() {
        for r in [
            Reject::UnknownJob,
            Reject::Stale,
            Reject::BadExtranonce2Length { expected: 8, got: 4 },
            Reject::BadHex("extranonce2"),
            Reject::BadHex("ntime"),
            Reject::BadHex("nonce"),
            Reject::BadHex("version bits"),
            Reject::NtimeOutOfRange,
            Reject::VersionOutsideMask,
            Reject::Duplicate,
            Reject::LowDifficulty { difficulty: Difficulty::ONE, hash: [0; 32] },
        ] {
            assert_eq!(r.reason(), r.to_string());
        }
    }
}
