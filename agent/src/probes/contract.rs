//! The map-to-record contract between the embedded object and the agent,
//! checked before anything is loaded.

use std::mem::size_of;

use hostprobe_common::{
    dirty, lock, numa,
    sched::{CpuTopo, GangSlot, NeighbourWait, RunRing, SchedStats, TaskSlot},
    ulock,
};

use super::spec::PROGRAMS;
use crate::error::{Error, Result};

/// Maps the collectors and the loader use, with the value size the agent
/// expects: the kernel and user sides must agree on every record type.
pub const MAP_CONTRACT: [(&str, usize); 34] = [
    ("TASK_SLOTS", size_of::<TaskSlot>()),
    ("CPU_TOPO", size_of::<CpuTopo>()),
    ("SCHED_WORKLOADS", size_of::<SchedStats>()),
    ("SCHED_COUNTERS", size_of::<u64>()),
    ("SCHED_RUN_RING", size_of::<RunRing>()),
    ("GANG_SLOTS", size_of::<GangSlot>()),
    ("SCHED_NEIGHBOURS", size_of::<NeighbourWait>()),
    ("DEAD_CGROUPS", size_of::<u8>()),
    ("DRAIN_GEN", size_of::<u32>()),
    ("DRAIN_GRACE_INNER", size_of::<u32>()),
    ("LOCK_BY_CALLER_0", size_of::<lock::CallerStat>()),
    ("LOCK_BY_CALLER_1", size_of::<lock::CallerStat>()),
    ("LOCK_BY_ADDR_0", size_of::<lock::Stat>()),
    ("LOCK_BY_ADDR_1", size_of::<lock::Stat>()),
    ("LOCK_WORKLOADS_0", size_of::<lock::Stat>()),
    ("LOCK_WORKLOADS_1", size_of::<lock::Stat>()),
    ("LOCK_OWNERS_0", size_of::<lock::Stat>()),
    ("LOCK_OWNERS_1", size_of::<lock::Stat>()),
    ("LOCK_HIST", size_of::<lock::Hist>()),
    ("LOCK_COUNTERS", size_of::<u64>()),
    ("LOCK_TASK_SLOTS", size_of::<lock::TaskSlot>()),
    ("ULOCK_STACKS_0", size_of::<ulock::UserStack>()),
    ("ULOCK_STACKS_1", size_of::<ulock::UserStack>()),
    ("ULOCK_WAITS_0", size_of::<lock::Stat>()),
    ("ULOCK_WAITS_1", size_of::<lock::Stat>()),
    ("ULOCK_WORKLOADS_0", size_of::<ulock::Workload>()),
    ("ULOCK_WORKLOADS_1", size_of::<ulock::Workload>()),
    ("ULOCK_COUNTERS", size_of::<u64>()),
    ("DIRTY_WORKLOADS", size_of::<dirty::Stats>()),
    ("DIRTY_FILES", size_of::<dirty::FileStats>()),
    ("DIRTY_COUNTERS", size_of::<u64>()),
    ("NUMA_WORKLOADS", size_of::<numa::Stats>()),
    ("NUMA_MIGRATED", size_of::<u64>()),
    ("NUMA_COUNTERS", size_of::<u64>()),
];

/// Checks the embedded object against what the agent expects of it, as
/// ebpf_exporter validates its map-to-metric contract at start: every
/// program in the section its hook needs, every map with the value size of
/// the shared record type. A mismatch is a build defect, caught before
/// anything is loaded.
pub fn check_object(data: &[u8]) -> Result<()> {
    use object::{Object, ObjectSection, ObjectSymbol};
    let bad = |reason: String| Error::Contract { reason };
    let file = object::File::parse(data).map_err(|e| bad(format!("not an ELF object: {e}")))?;
    let section_of = |name: &str| {
        file.symbols()
            .find(|s| s.name() == Ok(name))
            .and_then(|s| s.section_index())
            .and_then(|i| file.section_by_index(i).ok())
    };
    for (program, want) in PROGRAMS
        .iter()
        .flat_map(|s| s.ways)
        .flat_map(|w| w.programs())
    {
        let found = section_of(program).and_then(|s| s.name().ok().map(str::to_string));
        if found.as_deref() != Some(want.as_str()) {
            return Err(bad(format!(
                "program {program} is in section {found:?}, expected {want}"
            )));
        }
    }
    let maps = file
        .section_by_name("maps")
        .ok_or_else(|| bad("no maps section".into()))?;
    let maps_data = maps.data().map_err(|e| bad(format!("maps section: {e}")))?;
    for (name, value_size) in MAP_CONTRACT {
        let sym = file
            .symbols()
            .find(|s| s.name() == Ok(name) && s.section_index() == Some(maps.index()))
            .ok_or_else(|| bad(format!("map {name} missing")))?;
        // Legacy map definition: u32 type, key_size, value_size, ...
        let at = sym.address() as usize + 8;
        let size = maps_data
            .get(at..at + 4)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize)
            .ok_or_else(|| bad(format!("map {name}: definition out of bounds")))?;
        if size != value_size {
            return Err(bad(format!(
                "map {name} holds {size}-byte values, the agent reads {value_size}-byte records"
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::probes::PROBES_OBJECT;

    #[test]
    fn the_embedded_object_keeps_the_contract() {
        check_object(PROBES_OBJECT).unwrap();
    }

    #[test]
    fn contract_violations_are_reported() {
        assert!(matches!(
            check_object(b"not elf"),
            Err(Error::Contract { .. })
        ));
        // The same object with one map's value size changed.
        let mut data = PROBES_OBJECT.to_vec();
        let needle = (size_of::<SchedStats>() as u32).to_le_bytes();
        let file = object::File::parse(PROBES_OBJECT).unwrap();
        use object::{Object, ObjectSection, ObjectSymbol};
        let maps = file.section_by_name("maps").unwrap();
        let sym = file
            .symbols()
            .find(|s| s.name() == Ok("SCHED_WORKLOADS"))
            .unwrap();
        let at = maps.file_range().unwrap().0 as usize + sym.address() as usize + 8;
        assert_eq!(data[at..at + 4], needle);
        data[at] ^= 8;
        let err = check_object(&data).unwrap_err().to_string();
        assert!(err.contains("SCHED_WORKLOADS"), "{err}");
    }
}
