//! A found block's fate after a node took it (pure: what the node's chain says in, the change to
//! record out): confirmations as blocks are built on it, matured at 100 confirmations (the
//! coinbase can be spent), or orphaned when another block takes its height. Following stops at
//! matured or orphaned.

/// Confirmations at which a coinbase can be spent (COINBASE_MATURITY).
pub const MATURITY: u64 = 100;

/// Confirmation counts that get a blocks.log line before maturity: in the chain, and the usual
/// "settled" depth. (A line per confirmation would be 100 lines a block.)
pub const MILESTONES: [u64; 2] = [1, 6];

/// Where a followed block stands, as recorded in blocks.log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// A node took it; no confirmation recorded yet.
    Accepted,
    /// Recorded with this many confirmations.
    Confirmed(u64),
    Matured,
    Orphaned,
}

impl Stage {
    /// Still worth polling the node for.
    pub fn followed(self) -> bool {
        matches!(self, Stage::Accepted | Stage::Confirmed(_))
    }

    fn recorded_confirmations(self) -> u64 {
        match self {
            Stage::Confirmed(n) => n,
            _ => 0,
        }
    }
}

/// A change worth a blocks.log line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    Confirmed { confirmations: u64 },
    Matured { confirmations: u64 },
    Orphaned { by: String },
}

impl Change {
    pub fn stage(&self) -> Stage {
        match self {
            Change::Confirmed { confirmations } => Stage::Confirmed(*confirmations),
            Change::Matured { .. } => Stage::Matured,
            Change::Orphaned { .. } => Stage::Orphaned,
        }
    }
}

/// What the node says now: its tip height and the hash of its best-chain block at our height
/// (`None` when its chain is shorter than that).
pub fn observe(stage: Stage, height: u64, ours: &str, tip: u64, hash_at_height: Option<&str>) -> Option<Change> {
    if !stage.followed() {
        return None;
    }
    let at = hash_at_height.filter(|_| tip >= height)?;
    if at != ours {
        return Some(Change::Orphaned { by: at.to_string() });
    }
    let confirmations = tip - height + 1;
    if confirmations >= MATURITY {
        return Some(Change::Matured { confirmations });
    }
    let recorded = stage.recorded_confirmations();
    let reached = MILESTONES.iter().copied().filter(|&m| confirmations >= m).max()?;
    (reached > recorded).then_some(Change::Confirmed { confirmations })
}

#[cfg(test)]
mod tests {
    use super::*;

    const OURS: &str = "0000aa";

    #[test]
    fn confirmations_are_recorded_at_milestones_then_maturity() {
        assert_eq!(observe(Stage::Accepted, 10, OURS, 9, None), None, "node behind: nothing to say");
        assert_eq!(observe(Stage::Accepted, 10, OURS, 10, Some(OURS)), Some(Change::Confirmed { confirmations: 1 }));
        assert_eq!(observe(Stage::Confirmed(1), 10, OURS, 10, Some(OURS)), None);
        assert_eq!(observe(Stage::Confirmed(1), 10, OURS, 14, Some(OURS)), None, "5 confirmations: no milestone");
        assert_eq!(
            observe(Stage::Confirmed(1), 10, OURS, 15, Some(OURS)),
            Some(Change::Confirmed { confirmations: 6 })
        );
        assert_eq!(observe(Stage::Confirmed(6), 10, OURS, 50, Some(OURS)), None);
        assert_eq!(
            observe(Stage::Confirmed(6), 10, OURS, 109, Some(OURS)),
            Some(Change::Matured { confirmations: 100 })
        );
        // A jump straight past several milestones records where it landed.
        assert_eq!(observe(Stage::Accepted, 10, OURS, 20, Some(OURS)), Some(Change::Confirmed { confirmations: 11 }));
        assert_eq!(observe(Stage::Accepted, 10, OURS, 200, Some(OURS)), Some(Change::Matured { confirmations: 191 }));
    }

    #[test]
    fn another_block_at_our_height_orphans_it() {
        let by = "0000bb";
        assert_eq!(observe(Stage::Accepted, 10, OURS, 11, Some(by)), Some(Change::Orphaned { by: by.into() }));
        assert_eq!(observe(Stage::Confirmed(6), 10, OURS, 20, Some(by)), Some(Change::Orphaned { by: by.into() }));
    }

    #[test]
    fn matured_and_orphaned_blocks_are_no_longer_followed() {
        assert_eq!(observe(Stage::Matured, 10, OURS, 300, Some("0000bb")), None);
        assert_eq!(observe(Stage::Orphaned, 10, OURS, 300, Some(OURS)), None);
        assert!(Stage::Accepted.followed() && Stage::Confirmed(3).followed());
        assert!(!Stage::Matured.followed() && !Stage::Orphaned.followed());
    }
}
