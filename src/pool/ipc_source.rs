//! The template source's IPC side (`ipcmining`): templates the node's mining interface sends
//! (bitcoind/ipc/) are published like getblocktemplate's, and while they come getblocktemplate
//! waits (no ZMQ-, poll- or interval-driven requests). When the link goes down, getblocktemplate
//! serves at once and keeps serving until IPC templates come again. With empty-first, the node's
//! own coinbase-only template on a new tip goes out before its full one.

use std::time::Instant;

use super::templates::{Reason, TemplateSource, Timing};
use crate::bitcoind::ipc::IpcEvent;

impl TemplateSource {
    /// Handles one event of the IPC link; true when work was published.
    pub(super) async fn on_ipc(&mut self, ev: IpcEvent) -> bool {
        match ev {
            IpcEvent::Template(t) => {
                let now = Instant::now();
                // The template's arrival is when the pool learnt of its block: the node answered
                // waitNext on the new tip with the template already built.
                let new_tip = self.work.borrow().as_ref().is_none_or(|w| w.job.prev_hash != t.prev_hash);
                self.ipc_up = true;
                self.publish_logged(*t, Reason::Ipc, new_tip.then_some(now), now, &Timing::default(), 0)
            }
            IpcEvent::Empty(t) => {
                // Empty-first over IPC: the node's coinbase-only template on a new tip, ahead of
                // its full one (which then goes out clean). Late or off: nothing.
                let on_tip = self.work.borrow().as_ref().is_some_and(|w| w.job.prev_hash == t.prev_hash);
                if on_tip || self.empty_first.is_none() {
                    return false;
                }
                let (height, tip) = (t.height, t.prev_hash);
                let now = Instant::now();
                let sent = self.publish(*t, Some(now), true).is_some();
                if sent {
                    tracing::debug!(
                        "empty-first: the node's coinbase-only template on {} (height {height}) sent to miners",
                        crate::hex::encode_rev(&tip)
                    );
                }
                sent
            }
            IpcEvent::Down => {
                let was = std::mem::replace(&mut self.ipc_up, false);
                // Miners keep their work; a fresh getblocktemplate now, then the usual triggers.
                was && self.refresh(Reason::IpcLost, None).await
            }
        }
    }

    /// The last IPC template again with the current coinbase settings (a reload's `btcsig`):
    /// an update on the same block, no call to the node.
    pub(super) fn republish(&mut self) {
        let Some(t) = self.last.clone() else { return };
        self.publish_logged((*t).clone(), Reason::Update, None, Instant::now(), &Timing::default(), 0);
    }
}
