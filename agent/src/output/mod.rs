//! Views of a [`crate::snapshot::Snapshot`]: Prometheus text, the diagnose
//! report, and (through serde) JSON.

pub mod check;
pub mod prometheus;
pub mod report;
