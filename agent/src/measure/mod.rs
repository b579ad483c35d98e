//! Memory measurements that read other processes.

pub mod assess;
pub mod exact;
pub mod sampling;
