//! The transactions the server knows a declaration's wtxids by: those of the pool's current
//! template (indexed once per template, on the first declaration that needs it) and those the
//! declaring connection provided (ProvideMissingTransactions.Success), bounded.

use std::collections::HashMap;
use std::sync::Arc;

use bytes::Bytes;

use crate::mining::Work;
use crate::work::merkle::sha256d;
use crate::work::tx_walk;

/// A template's transactions by wtxid.
#[derive(Debug, Default)]
pub struct TemplateIndex {
    /// Which template (its transactions' hex, shared): the index is rebuilt when it changes.
    hex: Bytes,
    by_wtxid: HashMap<[u8; 32], usize>,
    /// Each transaction's txid, fee, and its range in `hex` (hex characters).
    txs: Vec<([u8; 32], Option<u64>, std::ops::Range<usize>)>,
}

/// One transaction of a declaration, found.
#[derive(Debug, Clone)]
pub struct Found {
    pub txid: [u8; 32],
    pub fee: Option<u64>,
    /// Its serialization as hex.
    pub hex: Bytes,
}

impl TemplateIndex {
    /// The index of `work`'s template; `self` when it is that template's already.
    pub fn for_work(current: &Option<Arc<TemplateIndex>>, work: &Work) -> Arc<TemplateIndex> {
        let job = &work.job;
        if let Some(c) =
            current.as_ref().filter(|c| c.hex.as_ptr() == job.txs_hex.as_ptr() && c.hex.len() == job.txs_hex.len())
        {
            return c.clone();
        }
        let mut ix = TemplateIndex { hex: job.txs_hex.clone(), ..TemplateIndex::default() };
        let Some(list) = job.transactions.as_ref() else { return Arc::new(ix) };
        let Ok(bytes) = crate::hex::decode(std::str::from_utf8(&job.txs_hex).unwrap_or("")) else {
            return Arc::new(ix);
        };
        let Ok(walked) = tx_walk::walk(&bytes, list.len()) else { return Arc::new(ix) };
        let mut start = 0;
        ix.txs.reserve(walked.len());
        ix.by_wtxid.reserve(walked.len());
        for (i, ((txid, end), t)) in walked.into_iter().zip(list.iter()).enumerate() {
            ix.by_wtxid.insert(sha256d(&bytes[start..end]), i);
            ix.txs.push((txid, t.fee, start * 2..end * 2));
            start = end;
        }
        Arc::new(ix)
    }

    pub fn get(&self, wtxid: &[u8; 32]) -> Option<Found> {
        let &i = self.by_wtxid.get(wtxid)?;
        let (txid, fee, range) = &self.txs[i];
        Some(Found { txid: *txid, fee: *fee, hex: self.hex.slice(range.clone()) })
    }
}

/// Transactions one connection provided, by wtxid.
#[derive(Debug, Default)]
pub struct Provided {
    txs: HashMap<[u8; 32], Found>,
    bytes: usize,
}

/// Why a provided transaction is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProvideError {
    #[error("transaction {0} of the answer is not one transaction ({1})")]
    NotATransaction(usize, String),
    #[error("transaction {0} of the answer has wtxid {1}, not the one asked for at that position")]
    WrongTransaction(usize, String),
}

impl Provided {
    pub fn get(&self, wtxid: &[u8; 32]) -> Option<Found> {
        self.txs.get(wtxid).cloned()
    }

    /// Keeps `raw` as the transaction `wtxid` (checked: exactly one transaction with that wtxid).
    pub fn add(&mut self, index: usize, wtxid: &[u8; 32], raw: &[u8], limit: usize) -> Result<(), ProvideError> {
        let walked = tx_walk::walk(raw, 1).map_err(|e| ProvideError::NotATransaction(index, e.to_string()))?;
        let got = sha256d(raw);
        if got != *wtxid {
            let mut shown = got;
            shown.reverse();
            return Err(ProvideError::WrongTransaction(index, crate::hex::encode(&shown)));
        }
        if self.bytes + raw.len() > limit {
            self.clear();
        }
        self.bytes += raw.len();
        let hex = Bytes::from(crate::hex::encode(raw).into_bytes());
        self.txs.insert(*wtxid, Found { txid: walked[0].0, fee: None, hex });
        Ok(())
    }

    pub fn clear(&mut self) {
        self.txs = HashMap::new();
        self.bytes = 0;
    }
}
