//! Pure models over plain data: no I/O, table-tested.

pub mod affinity;
pub mod hist;
pub mod interval;
pub mod precopy;
pub mod remote_access;
pub mod topk;
pub mod workload;
