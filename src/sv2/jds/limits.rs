//! What one Job Declaration connection may cost: tokens held, declarations a minute (each one
//! is a node check), transactions it provided kept. Pure: the time is passed in.

/// Tokens allocated and not yet declared with, per connection; past it the oldest is revoked
/// (declaring with it is refused: invalid-mining-job-token).
pub const MAX_TOKENS: usize = 16;
/// Declared jobs of one connection kept for its SetCustomMiningJob and PushSolution (its
/// latest; each may hold a block's transactions).
pub const MAX_OWN_JOBS: usize = 8;
/// Declarations a connection may make at once, and per minute after that (a JDC declares one
/// per template: SRI's default is one every few seconds, and one per new block).
pub const DECLARE_BURST: u32 = 20;
pub const DECLARE_PER_MINUTE: u32 = 30;
/// Bytes of transactions a connection provided that are kept for its later declarations
/// (about a block's worth); dropped all at once past it, and on a new block.
pub const PROVIDED_MAX_BYTES: usize = 4 << 20;
/// A declaration waiting for its missing transactions is refused (missing-txs) after this long.
pub const MISSING_TXS_WAIT_US: u64 = 30_000_000;
/// The largest frame the server reads: a ProvideMissingTransactions.Success with a block's
/// transactions (a block is at most 4 MB).
pub const JDS_FRAME_LIMIT: usize = (4 << 20) + (64 << 10);
/// Job Declaration connections at once (each may hold `PROVIDED_MAX_BYTES`).
pub const MAX_CONNECTIONS: usize = 64;

/// A token bucket: `burst` at once, refilled at `per_minute`.
#[derive(Debug, Clone)]
pub struct Bucket {
    /// Thousandths of a token held.
    milli: u64,
    last_us: u64,
    burst: u32,
    per_minute: u32,
}

impl Bucket {
    pub fn new(burst: u32, per_minute: u32, now_us: u64) -> Bucket {
        Bucket { milli: u64::from(burst) * 1000, last_us: now_us, burst, per_minute }
    }

    /// Takes one token at `now_us`; false when none is left.
    pub fn take(&mut self, now_us: u64) -> bool {
        let elapsed = now_us.saturating_sub(self.last_us);
        // per_minute tokens in 60e6 us: milli-tokens = elapsed * per_minute * 1000 / 60e6.
        let earned = (u128::from(elapsed) * u128::from(self.per_minute) / 60_000) as u64;
        if earned > 0 {
            // The time those milli-tokens took, exactly (no fraction lost between calls).
            self.last_us += (u128::from(earned) * 60_000 / u128::from(self.per_minute.max(1))) as u64;
            self.milli = (self.milli + earned).min(u64::from(self.burst) * 1000);
        }
        if self.milli >= 1000 {
            self.milli -= 1000;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bucket_gives_its_burst_then_its_rate() {
        let mut b = Bucket::new(3, 30, 0);
        assert!((0..3).all(|_| b.take(0)));
        assert!(!b.take(0));
        // 30 a minute: one every 2 s.
        assert!(!b.take(1_999_000));
        assert!(b.take(2_000_000));
        assert!(!b.take(2_000_001));
        // A long pause refills to the burst, not beyond.
        assert!((0..3).all(|_| b.take(600_000_000)));
        assert!(!b.take(600_000_000));
    }
}
