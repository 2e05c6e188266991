//! What the pool writes for operators: the operator log and the share log.

pub mod operator;
pub mod sharelog;
pub mod stats;
