//! The page-dirtying section: file pages, dirty throttling and write
//! faults per workload, file pages per device.

use serde::Serialize;

/// Page dirtying since start, per workload (top-K + `other`) and device.
#[derive(Debug, Clone, Default, Serialize)]
pub struct DirtySection {
    /// Most dirtying first; `other` last.
    pub workloads: Vec<WorkloadDirty>,
    pub devices: Vec<DeviceDirty>,
}

#[derive(Debug, Clone, Serialize)]
pub struct WorkloadDirty {
    pub workload: String,
    /// File pages (folios, at their size) that went from clean to dirty.
    pub file_dirtied_bytes: u64,
    pub file_dirtied_folios: u64,
    /// User write faults on unmapped pages: newly touched memory.
    pub write_faults_new: u64,
    /// User write faults on mapped, write-protected pages: copy-on-write.
    pub write_faults_present: u64,
    /// Time paused by dirty throttling (`None`: kernel HZ unknown).
    pub throttle_seconds: Option<f64>,
    pub throttle_pauses: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct DeviceDirty {
    /// Mount source (e.g. /dev/vda) or `fstype:major:minor`.
    pub device: String,
    pub file_dirtied_bytes: u64,
    pub file_dirtied_folios: u64,
}
