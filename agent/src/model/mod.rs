//! Pure models over plain data: no I/O, table-tested.

pub mod affinity;
pub mod concave;
pub mod hist;
pub mod interval;
pub mod precopy;
#[cfg(test)]
mod precopy_replay;
pub mod remote_access;
pub mod topk;
pub mod ustack;
pub mod workload;
