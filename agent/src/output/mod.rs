//! Views of a [`crate::snapshot::Snapshot`]: Prometheus text, the diagnose
//! report, a pprof profile, and (through serde) JSON.

pub mod check;
pub mod pprof;
pub mod prometheus;
pub mod report;
