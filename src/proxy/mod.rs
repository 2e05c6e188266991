//! Proxy mode's work source: the upstream pool, reached over Stratum V1 with failover across the
//! `proxy` entries; its jobs are re-issued to local miners and their shares forwarded.

pub mod upstream;
