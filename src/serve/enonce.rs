//! The extranonce1 space both faces draw from: an SV1 session's extranonce1 and an SV2 channel's
//! prefix come from one set, so no two live miners ever share one.

use std::collections::hash_map::RandomState;
use std::collections::HashSet;
use std::hash::{BuildHasher, Hasher};
use std::sync::Mutex;

/// The extranonce1 values held by live sessions and channels.
#[derive(Debug, Default)]
pub struct Enonces(Mutex<HashSet<u64>>);

/// Every extranonce1 value is held: how many are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Full {
    pub held: usize,
}

impl Enonces {
    /// Takes a free value of `mask`+1 after `*next` (and moves `*next` there).
    pub fn take(&self, next: &mut u64, mask: u64) -> Result<u64, Full> {
        let mut set = self.0.lock().unwrap_or_else(|p| p.into_inner());
        take_en1(&mut set, next, mask).ok_or(Full { held: set.len() })
    }

    /// Takes `wanted` in place of `held` (a resumed SV1 session's old extranonce1): true when
    /// `wanted` was free; otherwise nothing changes.
    pub fn swap(&self, held: u64, wanted: u64) -> bool {
        let mut set = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if !set.insert(wanted) {
            return false;
        }
        set.remove(&held);
        true
    }

    /// Gives values back (a session or channel closed).
    pub fn release(&self, keys: impl IntoIterator<Item = u64>) {
        let mut set = self.0.lock().unwrap_or_else(|p| p.into_inner());
        for k in keys {
            set.remove(&k);
        }
    }

    /// How many are held.
    pub fn held(&self) -> usize {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).len()
    }
}

/// The mask of an extranonce1 of `len` bytes.
pub fn mask_of(len: usize) -> u64 {
    if len >= 8 {
        u64::MAX
    } else {
        (1u64 << (8 * len)) - 1
    }
}

/// A random 64-bit start for an extranonce1 search (distinct per run and per caller).
pub fn random_start() -> u64 {
    let mut h = RandomState::new().build_hasher();
    h.write_u64(std::process::id() as u64);
    h.finish()
}

/// Takes a free extranonce1 value (of `mask`+1) after `*next`, or None when every value is held
/// by a live session. Never loops more than once around the space, so it cannot spin while the
/// caller holds the lock on `set`.
fn take_en1(set: &mut HashSet<u64>, next: &mut u64, mask: u64) -> Option<u64> {
    if mask != u64::MAX && set.len() as u64 > mask {
        return None;
    }
    // At least one value is free: found within mask+1 steps.
    loop {
        *next = next.wrapping_add(1) & mask;
        if set.insert(*next) {
            return Some(*next);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_space_refuses_without_spinning() {
        let e = Enonces::default();
        let mut next = 0u64;
        let mut got: Vec<u64> = (0..256).map(|_| e.take(&mut next, 0xff).unwrap()).collect();
        got.sort();
        assert_eq!(got, (0..256).collect::<Vec<_>>());
        assert_eq!(e.take(&mut next, 0xff), Err(Full { held: 256 }));
        e.release([200]);
        assert_eq!(e.take(&mut next, 0xff), Ok(200));
        assert_eq!(e.take(&mut next, 0xff), Err(Full { held: 256 }));
        let wide = Enonces::default();
        let mut n = 0;
        assert_eq!(wide.take(&mut n, u64::MAX), Ok(1));
    }

    #[test]
    fn swap_takes_a_free_value_only() {
        let e = Enonces::default();
        let mut next = 0u64;
        let a = e.take(&mut next, 0xff).unwrap();
        let b = e.take(&mut next, 0xff).unwrap();
        assert!(!e.swap(a, b), "b is held");
        assert!(e.swap(a, 77));
        assert_eq!(e.held(), 2);
        assert_eq!(mask_of(1), 0xff);
        assert_eq!(mask_of(8), u64::MAX);
    }
}
