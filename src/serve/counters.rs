//! Pool-wide counters both faces update lock-free, and why shares are rejected as a bounded set
//! of labels for the operator's metrics.

use std::sync::atomic::{AtomicU64, Ordering};

use crate::difficulty::Difficulty;
use crate::share::Reject;

/// Why a share was rejected, as the metrics and the API label it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RejectKind {
    Stale,
    Duplicate,
    LowDifficulty,
    UnknownJob,
    BadExtranonce2Length,
    BadHex,
    NtimeOutOfRange,
    BadVersion,
    /// A submit the face could not read (missing or wrongly typed fields).
    InvalidParams,
}

impl RejectKind {
    /// Every kind, in the order the API and the metrics list them.
    pub const ALL: [RejectKind; 9] = [
        RejectKind::Stale,
        RejectKind::Duplicate,
        RejectKind::LowDifficulty,
        RejectKind::UnknownJob,
        RejectKind::BadExtranonce2Length,
        RejectKind::BadHex,
        RejectKind::NtimeOutOfRange,
        RejectKind::BadVersion,
        RejectKind::InvalidParams,
    ];

    /// The metrics label.
    pub fn label(self) -> &'static str {
        match self {
            RejectKind::Stale => "stale",
            RejectKind::Duplicate => "duplicate",
            RejectKind::LowDifficulty => "low_difficulty",
            RejectKind::UnknownJob => "unknown_job",
            RejectKind::BadExtranonce2Length => "bad_extranonce2_length",
            RejectKind::BadHex => "bad_hex",
            RejectKind::NtimeOutOfRange => "ntime_out_of_range",
            RejectKind::BadVersion => "bad_version",
            RejectKind::InvalidParams => "invalid_params",
        }
    }
}

impl From<&Reject> for RejectKind {
    /// A share check's verdict, by variant (no text compared; a new variant fails to compile here).
    fn from(r: &Reject) -> RejectKind {
        match r {
            Reject::Stale => RejectKind::Stale,
            Reject::Duplicate => RejectKind::Duplicate,
            Reject::LowDifficulty { .. } => RejectKind::LowDifficulty,
            Reject::UnknownJob => RejectKind::UnknownJob,
            Reject::BadExtranonce2Length { .. } => RejectKind::BadExtranonce2Length,
            Reject::BadHex(_) => RejectKind::BadHex,
            Reject::NtimeOutOfRange => RejectKind::NtimeOutOfRange,
            Reject::VersionOutsideMask => RejectKind::BadVersion,
        }
    }
}

/// Pool-wide counters, updated lock-free by sessions.
#[derive(Debug, Default)]
pub struct Counters {
    pub accepted: AtomicU64,
    pub rejected: AtomicU64,
    /// Rejected shares by kind, index for index with [`RejectKind::ALL`] (their sum is `rejected`).
    rejected_by: [AtomicU64; RejectKind::ALL.len()],
    /// Accepted difficulty, in 10^-12 units, wrapping (rates are taken from differences).
    pub accepted_diff_units: AtomicU64,
    pub blocks: AtomicU64,
    pub connections: AtomicU64,
    pub sessions_total: AtomicU64,
    /// Proxy mode: shares for the upstream dropped because its task's queue was full.
    pub upstream_dropped: AtomicU64,
}

impl Counters {
    pub fn add_accepted(&self, d: Difficulty) {
        self.accepted.fetch_add(1, Ordering::Relaxed);
        self.accepted_diff_units.fetch_add(d.units().min(u64::MAX as u128) as u64, Ordering::Relaxed);
    }

    /// Counts a rejected share under its kind.
    pub fn add_rejected(&self, kind: RejectKind) {
        self.rejected.fetch_add(1, Ordering::Relaxed);
        self.rejected_by[kind as usize].fetch_add(1, Ordering::Relaxed);
    }

    /// Rejected shares by kind, in [`RejectKind::ALL`]'s order.
    pub fn rejected_by(&self) -> impl Iterator<Item = (RejectKind, u64)> + '_ {
        RejectKind::ALL.iter().map(|k| (*k, self.rejected_by[*k as usize].load(Ordering::Relaxed)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_reject_has_its_own_label_and_count() {
        for (i, k) in RejectKind::ALL.iter().enumerate() {
            assert_eq!(*k as usize, i, "ALL is in declaration order");
        }
        let mut labels: Vec<_> = RejectKind::ALL.iter().map(|k| k.label()).collect();
        labels.sort();
        labels.dedup();
        assert_eq!(labels.len(), RejectKind::ALL.len());
        let c = Counters::default();
        for r in [Reject::Stale, Reject::Duplicate, Reject::Stale, Reject::VersionOutsideMask] {
            c.add_rejected(RejectKind::from(&r));
        }
        c.add_rejected(RejectKind::InvalidParams);
        assert_eq!(c.rejected.load(Ordering::Relaxed), 5);
        let by: Vec<_> = c.rejected_by().filter(|(_, n)| *n > 0).map(|(k, n)| (k.label(), n)).collect();
        assert_eq!(by, [("stale", 2), ("duplicate", 1), ("bad_version", 1), ("invalid_params", 1)]);
    }
}
