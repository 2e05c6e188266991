//! The mining core: what a pool decides about work and shares, whatever protocol carries them.
//!
//! No sockets, no clock reads, no tokio, no locks: a [`Channel`] (one miner's SV1 session, or an
//! SV2 standard channel) takes typed inputs — work issued, a submit's fields, the time as plain
//! microseconds — and returns a verdict plus [`Effects`] (share-log record, block candidate,
//! share for the upstream pool, retarget). The protocol faces (`sv1::session`, `sv2::session`) own
//! the sockets, encode what the channel decided, and send the effects to the outputs (share log,
//! statistics, block submitter, upstream).
//!
//! ```text
//!  work sources                      mining core                          outputs
//!  pool/templates.rs ─┐                                                  log/sharelog, log/stats
//!  proxy/upstream.rs ─┴─► Work ─► Channel::issue / Channel::submit ─►    blocks/, proxy upstream
//!                                  (jobs sent, stale window, vardiff)
//! ```

pub mod channel;
mod tally;
pub mod vardiff;
mod work;

pub use channel::{Channel, ChannelParams, Effects, Issued, ShareRecord, Verdict};
pub use tally::ShareTally;
pub use work::{Announcement, BlockCandidate, UpstreamJob, UpstreamShare, Work};
