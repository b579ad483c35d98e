//! Page-dirtying collector: reads the maps of
//! `ebpf-probes/probes/src/dirty.rs` (file folios dirtied per workload and
//! device, dirty-throttling pauses and user write faults per workload).

use std::collections::{BTreeMap, HashMap, HashSet};

use aya::maps::{MapData, PerCpuArray, PerCpuHashMap};
use aya::Ebpf;
use hostprobe_common::dirty::{counter, FileKey, FileStats, Stats};

use super::{counter, map_err, take, Pass, ProbeCounters, WorkloadRounds};
use crate::error::Result;
use crate::host::cgroup::CgroupResolver;
use crate::host::proc;
use crate::model::topk::Totals;
use crate::snapshot::{DeviceDirty, DirtySection, WorkloadDirty};

/// What one workload dirtied, summed over CPUs (and devices).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DirtyTotals {
    pub file_bytes: u64,
    pub file_folios: u64,
    pub write_faults_new: u64,
    pub write_faults_present: u64,
    pub throttle_jiffies: u64,
    pub throttle_pauses: u64,
}

impl Totals for DirtyTotals {
    /// Bytes dirtied: file bytes plus a page per write fault.
    fn activity(&self) -> u64 {
        self.file_bytes + (self.write_faults_new + self.write_faults_present) * 4096
    }

    fn add(&mut self, o: &Self) {
        self.file_bytes += o.file_bytes;
        self.file_folios += o.file_folios;
        self.write_faults_new += o.write_faults_new;
        self.write_faults_present += o.write_faults_present;
        self.throttle_jiffies += o.throttle_jiffies;
        self.throttle_pauses += o.throttle_pauses;
    }

    fn since(&self, prev: &Self) -> Self {
        Self {
            file_bytes: self.file_bytes.saturating_sub(prev.file_bytes),
            file_folios: self.file_folios.saturating_sub(prev.file_folios),
            write_faults_new: self.write_faults_new.saturating_sub(prev.write_faults_new),
            write_faults_present: self
                .write_faults_present
                .saturating_sub(prev.write_faults_present),
            throttle_jiffies: self.throttle_jiffies.saturating_sub(prev.throttle_jiffies),
            throttle_pauses: self.throttle_pauses.saturating_sub(prev.throttle_pauses),
        }
    }
}

pub struct DirtyCollector {
    workloads: PerCpuArray<MapData, Stats>,
    files: PerCpuHashMap<MapData, FileKey, FileStats>,
    counters: PerCpuArray<MapData, u64>,
    /// The kernel's tick rate, for throttle pauses given in jiffies.
    hz: Option<f64>,
    devices: HashMap<u32, String>,
    /// Removed cgroups are retired; the agent hands their entries back
    /// through `DEAD_CGROUPS` (see `DeadSet`).
    rounds: WorkloadRounds<DirtyTotals>,
    /// Device totals of deleted file entries (folios, bytes).
    device_base: HashMap<u32, (u64, u64)>,
}

impl DirtyCollector {
    /// Removed cgroups whose entries are still in the kernel tables.
    pub fn retired(&self) -> &HashSet<u64> {
        self.rounds.retired()
    }

    /// `hz`: the kernel's tick rate (`None`: unknown, throttle time is not
    /// reported), measured by the caller while the programs load.
    pub fn new(ebpf: &mut Ebpf, top_k: usize, hz: Option<f64>) -> Result<Self> {
        Ok(Self {
            workloads: PerCpuArray::try_from(take(ebpf, "DIRTY_WORKLOADS")?)
                .map_err(map_err("DIRTY_WORKLOADS"))?,
            files: PerCpuHashMap::try_from(take(ebpf, "DIRTY_FILES")?)
                .map_err(map_err("DIRTY_FILES"))?,
            counters: PerCpuArray::try_from(take(ebpf, "DIRTY_COUNTERS")?)
                .map_err(map_err("DIRTY_COUNTERS"))?,
            hz,
            devices: HashMap::new(),
            rounds: WorkloadRounds::new(top_k),
            device_base: HashMap::new(),
        })
    }

    pub fn collect(
        &mut self,
        cgroups: &mut CgroupResolver,
        pass: Pass,
    ) -> Result<(DirtySection, ProbeCounters)> {
        let mut now: HashMap<u64, DirtyTotals> = HashMap::new();
        let mut present = HashSet::new();
        for index in 0..self.workloads.len() {
            let per_cpu = self
                .workloads
                .get(&index, 0)
                .map_err(map_err("DIRTY_WORKLOADS"))?;
            for s in per_cpu.iter().filter(|s| s.cgroup_id != 0) {
                present.insert(s.cgroup_id);
                if self.rounds.retired().contains(&s.cgroup_id) {
                    continue;
                }
                let t = now.entry(s.cgroup_id).or_default();
                t.write_faults_new += s.write_faults_new;
                t.write_faults_present += s.write_faults_present;
                t.throttle_jiffies += s.throttle_jiffies;
                t.throttle_pauses += s.throttle_pauses;
            }
        }
        let mut by_device: BTreeMap<u32, (u64, u64)> = BTreeMap::new();
        let mut file_keys = Vec::new();
        for item in self.files.iter() {
            let (key, per_cpu) = item.map_err(map_err("DIRTY_FILES"))?;
            let (folios, bytes) = per_cpu
                .iter()
                .fold((0, 0), |(f, b), s| (f + s.folios, b + s.bytes));
            let d = by_device.entry(key.dev).or_default();
            d.0 += folios;
            d.1 += bytes;
            file_keys.push(key);
            present.insert(key.cgroup);
            if !self.rounds.retired().contains(&key.cgroup) {
                let t = now.entry(key.cgroup).or_default();
                t.file_folios += folios;
                t.file_bytes += bytes;
            }
        }
        let view = self.rounds.fold(cgroups, now, &present, pass);
        for (dev, base) in &self.device_base {
            let d = by_device.entry(*dev).or_default();
            d.0 += base.0;
            d.1 += base.1;
        }
        // Counted: file entries of removed cgroups are deleted, their bytes
        // kept in the device totals from the next round on.
        let retired_files = file_keys.iter().filter(|k| {
            matches!(pass, Pass::Round { .. }) && self.rounds.retired().contains(&k.cgroup)
        });
        for key in retired_files {
            if let Ok(per_cpu) = self.files.get(key, 0) {
                let base = self.device_base.entry(key.dev).or_default();
                for s in per_cpu.iter() {
                    base.0 += s.folios;
                    base.1 += s.bytes;
                }
            }
            // Already gone is fine.
            let _ = self.files.remove(key);
        }

        if by_device.keys().any(|d| !self.devices.contains_key(d)) {
            self.devices = proc::mount_devices(&proc::self_mountinfo().unwrap_or_default());
        }
        let hz = self.hz;
        let section = DirtySection {
            workloads: view
                .into_iter()
                .map(|(w, t)| WorkloadDirty {
                    workload: w,
                    file_dirtied_bytes: t.file_bytes,
                    file_dirtied_folios: t.file_folios,
                    write_faults_new: t.write_faults_new,
                    write_faults_present: t.write_faults_present,
                    throttle_seconds: hz.map(|hz| t.throttle_jiffies as f64 / hz),
                    throttle_pauses: t.throttle_pauses,
                })
                .collect(),
            devices: by_device
                .into_iter()
                .map(|(dev, (folios, bytes))| DeviceDirty {
                    device: self
                        .devices
                        .get(&dev)
                        .cloned()
                        .unwrap_or_else(|| dev_name(dev)),
                    file_dirtied_folios: folios,
                    file_dirtied_bytes: bytes,
                })
                .collect(),
        };

        let c = |i: u32| counter(&self.counters, "DIRTY_COUNTERS", i);
        let counters = ProbeCounters {
            events: BTreeMap::from([
                ("writeback_dirty_folio", c(counter::EV_DIRTY_FOLIO)?),
                ("balance_dirty_pages", c(counter::EV_BALANCE)?),
                ("page_fault_user", c(counter::EV_FAULT)?),
            ]),
            errors: BTreeMap::from([("writeback_dirty_folio", c(counter::ERR_READ)?)]),
            drops: BTreeMap::from([
                (
                    "DIRTY_WORKLOADS".into(),
                    c(counter::DROP_WORKLOAD_MAP_FULL)?,
                ),
                ("DIRTY_FILES".into(), c(counter::DROP_FILE_MAP_FULL)?),
            ]),
        };
        Ok((section, counters))
    }
}

/// The kernel's internal dev_t (`MAJOR << 20 | MINOR`) as `major:minor`.
fn dev_name(dev: u32) -> String {
    format!("{}:{}", dev >> 20, dev & 0xf_ffff)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unnamed_devices_read_major_minor() {
        assert_eq!(dev_name(253 << 20 | 3), "253:3");
    }
}
