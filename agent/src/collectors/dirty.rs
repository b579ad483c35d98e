//! Page-dirtying collector: reads the maps of
//! `ebpf-probes/probes/src/dirty.rs` (file folios dirtied per workload and
//! device, dirty-throttling pauses and user write faults per workload).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::Duration;

use aya::maps::{MapData, PerCpuArray, PerCpuHashMap};
use aya::Ebpf;
use hostprobe_common::dirty::{counter, FileKey, FileStats, Stats};
use tracing::warn;

use super::{counter, fold_round, map_err, take, ProbeCounters};
use crate::error::Result;
use crate::host::cgroup::CgroupResolver;
use crate::model::topk::{Labels, Totals};
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
    last: HashMap<u64, DirtyTotals>,
    /// Removed cgroups already counted whose kernel entries await reuse
    /// (the agent hands them back through `DEAD_CGROUPS`, see `DeadRing`).
    retired: HashSet<u64>,
    /// Device totals of deleted file entries (folios, bytes).
    device_base: HashMap<u32, (u64, u64)>,
    labels: Labels<DirtyTotals>,
}

impl DirtyCollector {
    /// Removed cgroups whose entries are still in the kernel tables.
    pub fn retired(&self) -> &HashSet<u64> {
        &self.retired
    }

    pub fn new(ebpf: &mut Ebpf, top_k: usize) -> Result<Self> {
        let hz = kernel_hz();
        if hz.is_none() {
            warn!("kernel HZ unknown (/proc/timer_list unreadable): dirty-throttle time is not reported");
        }
        Ok(Self {
            workloads: PerCpuArray::try_from(take(ebpf, "DIRTY_WORKLOADS")?)
                .map_err(map_err("DIRTY_WORKLOADS"))?,
            files: PerCpuHashMap::try_from(take(ebpf, "DIRTY_FILES")?)
                .map_err(map_err("DIRTY_FILES"))?,
            counters: PerCpuArray::try_from(take(ebpf, "DIRTY_COUNTERS")?)
                .map_err(map_err("DIRTY_COUNTERS"))?,
            hz,
            devices: HashMap::new(),
            last: HashMap::new(),
            retired: HashSet::new(),
            device_base: HashMap::new(),
            labels: Labels::new(top_k),
        })
    }

    pub fn collect(
        &mut self,
        cgroups: &mut CgroupResolver,
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
                if self.retired.contains(&s.cgroup_id) {
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
            if !self.retired.contains(&key.cgroup) {
                let t = now.entry(key.cgroup).or_default();
                t.file_folios += folios;
                t.file_bytes += bytes;
            }
        }
        fold_round(
            &mut self.labels,
            cgroups,
            now,
            &mut self.last,
            &mut self.retired,
            &present,
        );
        for (dev, base) in &self.device_base {
            let d = by_device.entry(*dev).or_default();
            d.0 += base.0;
            d.1 += base.1;
        }
        // Counted: file entries of removed cgroups are deleted, their bytes
        // kept in the device totals from the next round on.
        for key in file_keys
            .iter()
            .filter(|k| self.retired.contains(&k.cgroup))
        {
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
            self.devices = device_names();
        }
        let hz = self.hz;
        let section = DirtySection {
            workloads: self
                .labels
                .view()
                .into_iter()
                .map(|(w, t)| WorkloadDirty {
                    workload: w.to_string(),
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

/// `major:minor` of each mounted filesystem -> its source (e.g. /dev/vda),
/// from /proc/self/mountinfo.
fn device_names() -> HashMap<u32, String> {
    let text = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    parse_mountinfo_devices(&text)
}

fn parse_mountinfo_devices(text: &str) -> HashMap<u32, String> {
    let mut out = HashMap::new();
    for line in text.lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        let Some(sep) = f.iter().position(|&x| x == "-") else {
            continue;
        };
        let (Some(devno), Some(source)) = (f.get(2), f.get(sep + 2)) else {
            continue;
        };
        let Some((major, minor)) = devno.split_once(':') else {
            continue;
        };
        let (Ok(major), Ok(minor)) = (major.parse::<u32>(), minor.parse::<u32>()) else {
            continue;
        };
        let fstype = f.get(sep + 1).copied().unwrap_or("");
        let name = if source.starts_with('/') {
            (*source).to_string()
        } else {
            format!("{fstype}:{devno}")
        };
        out.entry(major << 20 | minor).or_insert(name);
    }
    out
}

/// HZ, measured: jiffies advanced over a short sleep by the
/// `/proc/timer_list` clock, snapped to the configurable values.
fn kernel_hz() -> Option<f64> {
    let read = || -> Option<(u64, u64)> {
        let text = std::fs::read_to_string("/proc/timer_list").ok()?;
        parse_timer_list(&text)
    };
    let (ns0, j0) = read()?;
    std::thread::sleep(Duration::from_millis(60));
    let (ns1, j1) = read()?;
    let measured = (j1 - j0) as f64 / ((ns1 - ns0) as f64 / 1e9);
    snap_hz(measured)
}

/// (`now at N nsecs`, first `jiffies: N`) of /proc/timer_list.
fn parse_timer_list(text: &str) -> Option<(u64, u64)> {
    let now = text
        .lines()
        .find_map(|l| l.strip_prefix("now at "))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()?;
    let jiffies = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("jiffies: "))?
        .trim()
        .parse()
        .ok()?;
    Some((now, jiffies))
}

fn snap_hz(measured: f64) -> Option<f64> {
    [100.0, 250.0, 300.0, 1000.0]
        .into_iter()
        .min_by(|a: &f64, b: &f64| (a - measured).abs().total_cmp(&(b - measured).abs()))
        .filter(|hz| (hz - measured).abs() < 0.2 * hz)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_devices_from_mountinfo() {
        let text = "\
22 1 253:0 / / rw,relatime shared:1 - ext4 /dev/vda rw
30 22 0:26 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw
31 22 0:40 / /tmp rw - tmpfs tmpfs rw
";
        let d = parse_mountinfo_devices(text);
        assert_eq!(d[&(253 << 20)], "/dev/vda");
        assert_eq!(d[&40], "tmpfs:0:40");
        assert_eq!(dev_name(253 << 20 | 3), "253:3");
    }

    #[test]
    fn reads_timer_list_and_snaps_hz() {
        let text = "Timer List Version: v0.10\nHRTIMER_MAX_CLOCK_BASES: 8\nnow at 1234567 nsecs\n\
                    cpu: 0\n  .idle_jiffies   : 4297413804\njiffies: 4297413900\n";
        assert_eq!(parse_timer_list(text), Some((1_234_567, 4_297_413_900)));
        assert_eq!(snap_hz(1013.0), Some(1000.0));
        assert_eq!(snap_hz(262.0), Some(250.0));
        assert_eq!(snap_hz(290.0), Some(300.0));
        assert_eq!(snap_hz(96.0), Some(100.0));
        assert_eq!(snap_hz(600.0), None);
    }

    #[test]
    fn this_kernel_hz_is_measurable() {
        if std::fs::read_to_string("/proc/timer_list").is_ok() {
            assert!(kernel_hz().is_some());
        }
    }
}
