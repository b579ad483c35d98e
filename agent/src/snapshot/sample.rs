//! A snapshot to test the views and derivations with.

use std::collections::BTreeMap;

use hostprobe_common::sched::CpuTopo;

use super::*;
use crate::host::topology::Topology;
use crate::model::affinity::{Affinity, Recommendation};
use crate::model::hist::Log2Hist;
use crate::model::precopy::{DirtyPoint, Forecast, Link, Outlook, Prediction, Verdict};

/// A snapshot with one named workload, `other`, and a disabled probe.
pub(crate) fn sample() -> Snapshot {
    let mut hist = Log2Hist::default();
    hist.buckets[10] = 1; // [1024, 2048) ns
    hist.buckets[11] = 3;
    hist.buckets[20] = 1;
    hist.sum_ns = 1_500 + 3 * 3_000 + 1_500_000;
    let db = WorkloadSched {
        workload: "/db.service".into(),
        migrations: Distances {
            same_core: 0,
            same_llc: 5,
            same_node: 0,
            other_node: 3,
        },
        switch_ins: Placements {
            same_cpu: 3,
            same_llc: 2,
            same_node: 0,
            other_node: 0,
        },
        placement_ratios: None,
        runqueue_latency: LatencySummary::from_hist(&hist),
        oncpu_seconds: 1.5,
        oncpu_seconds_by_node: vec![1.5, 0.0],
        preemptions: 4,
        voluntary_switches: 1,
        slices: LatencySummary::from_hist(&hist),
        gang: Gang::new(900_000_000, 100_000_000),
    };
    let other = WorkloadSched {
        workload: "other".into(),
        migrations: Distances::default(),
        switch_ins: Placements {
            same_cpu: 7,
            ..Default::default()
        },
        placement_ratios: None,
        runqueue_latency: LatencySummary::from_hist(&Log2Hist::default()),
        oncpu_seconds: 0.0,
        oncpu_seconds_by_node: vec![],
        preemptions: 0,
        voluntary_switches: 0,
        slices: LatencySummary::from_hist(&Log2Hist::default()),
        gang: Gang::default(),
    };
    let probe = |name: &str, attached: bool| ProbeStatus {
        probe: name.into(),
        tracepoint: format!("sched:{name}"),
        attach_type: "tp_btf".into(),
        attached,
        enabled: true,
        reason: (!attached).then(|| "no such tracepoint".into()),
        events: if attached { 1000 } else { 0 },
        errors: 0,
        missed: 0,
    };
    Snapshot {
        hostprobe_version: "0.0.0-test",
        kernel: "6.18.0-test".into(),
        window_seconds: 5.0,
        topology: Topology {
            cpus: vec![CpuTopo {
                core: 0,
                llc: 0,
                node: 0,
                present: 1,
            }],
            online_cpus: 1,
            cores: 1,
            llcs: 1,
            nodes: 1,
        },
        filter: None,
        cgroup_root: "/sys/fs/cgroup".into(),
        cgroup_cpuset: true,
        probes: vec![
            probe("sched_switch", true),
            probe("sched_migrate_task", false),
        ],
        sched: SchedSection {
            host_migrations: Distances {
                same_core: 0,
                same_llc: 8,
                same_node: 0,
                other_node: 0,
            },
            host_migrated_switch_ins: 6,
            workloads: vec![db, other],
            cpu_runqueue_p99_seconds: vec![Some(0.001), None],
            neighbours: NeighbourWaits::new(
                vec![
                    ("/db.service".into(), "/batch.slice".into(), 1_200_000, 40),
                    ("/db.service".into(), "(idle)".into(), 300_000, 9),
                ],
                vec![("/db.service".into(), 1_500_000)],
            ),
            vms: vec![VmSched {
                vm: "vm:web1".into(),
                vcpu_wait_seconds: 0.25,
                vcpu_preemptions: 40,
                gang: Gang::new(1_000_000_000, 3_000_000_000),
            }],
            neighbour_attribution: NeighbourAttribution {
                direct_seconds: 0.0015,
                moved_seconds: 0.0,
                unknown_seconds: 0.0,
            },
        },
        lock: LockSection {
            by_type: vec![LockTypeStats {
                lock_type: "rwsem:W".into(),
                contentions: 5,
                wait_seconds: 0.002,
                max_wait_seconds: 0.001,
                wait: LatencySummary::from_hist(&hist),
            }],
            callers: vec![LockCaller {
                lock_type: "rwsem:W".into(),
                caller: "do_mmap+0x10".into(),
                contentions: 5,
                wait_seconds: 0.002,
                max_wait_seconds: 0.001,
                avg_wait_seconds: 0.0004,
                stack: vec!["_raw_spin_lock+0x5".into(), "do_mmap+0x10".into()],
            }],
            caller_totals: vec![LockTotal {
                lock_type: "rwsem:W".into(),
                name: "do_mmap".into(),
                contentions: 5,
                wait_seconds: 0.002,
            }],
            locks: vec![LockObject {
                lock: "tasklist_lock".into(),
                address: "0xffffffff82000000".into(),
                lock_type: "rwlock:W".into(),
                contentions: 2,
                wait_seconds: 0.001,
                max_wait_seconds: 0.001,
            }],
            workloads: vec![LockTotal {
                lock_type: String::new(),
                name: "/db.service".into(),
                contentions: 5,
                wait_seconds: 0.002,
            }],
            owners: vec![LockOwnerWaits {
                workload: "/db.service".into(),
                owner: "/batch.slice".into(),
                owner_state: "preempted".into(),
                contentions: 3,
                wait_seconds: 0.0012,
            }],
            spin_waits_without_stack: 7,
        },
        user_lock: UserLockSection {
            workloads: vec![UserLockWorkload {
                workload: "/db.service".into(),
                contentions: 5,
                wait_seconds: 0.002,
                wait: LatencySummary::from_hist(&hist),
            }],
            functions: vec![UserLockFunction {
                workload: "/db.service".into(),
                function: "flush_log".into(),
                contentions: 5,
                wait_seconds: 0.002,
            }],
            stacks: vec![UserLockStack {
                workload: "/db.service".into(),
                pid: 42,
                contentions: 5,
                wait_seconds: 0.002,
                max_wait_seconds: 0.001,
                function: "flush_log".into(),
                frames: ["__lll_lock_wait", "flush_log", "main"]
                    .iter()
                    .enumerate()
                    .map(|(i, name)| UserFrame {
                        address: 0x7f00_0000 + i as u64 * 0x10,
                        name: name.to_string(),
                        module: if i == 0 { "libc.so.6" } else { "db" }.into(),
                        file_address: 0x1000 + i as u64 * 0x10,
                        build_id: Some("abcd".into()),
                        path: Some(
                            if i == 0 {
                                "/lib/libc.so.6"
                            } else {
                                "/usr/bin/db"
                            }
                            .into(),
                        ),
                        mapping: Some((0x7f00_0000, 0x7f10_0000, 0)),
                        recovered: i == 1,
                    })
                    .collect(),
                truncated: false,
            }],
            truncated: vec![],
        },
        dirty: DirtySection {
            workloads: vec![WorkloadDirty {
                workload: "/db.service".into(),
                file_dirtied_bytes: 8192,
                file_dirtied_folios: 2,
                write_faults_new: 100,
                write_faults_present: 3,
                throttle_seconds: Some(0.5),
                throttle_pauses: 4,
            }],
            devices: vec![DeviceDirty {
                device: "/dev/vda".into(),
                file_dirtied_bytes: 8192,
                file_dirtied_folios: 2,
            }],
        },
        numa: NumaSection {
            nodes: 2,
            workloads: vec![WorkloadNuma {
                workload: "/db.service".into(),
                local_pages: 10,
                remote_pages: 30,
                balancing: NumaBalancing {
                    move_numa: 2,
                    swap_numa: 0,
                    stick_numa: 1,
                },
                resident_bytes_by_node: vec![1000, 3000],
                oncpu_seconds_by_node: vec![1.5, 0.0],
                remote_allocation_ratio: Some(0.75),
                estimated_remote_access_ratio: Some(0.75),
            }],
            pages_migrated: BTreeMap::from([("numa_misplaced".into(), 7)]),
        },
        cpu_busy: vec![0.9, 0.1],
        affinity: vec![Affinity {
            workload: "/db.service".into(),
            score: 0.5,
            cache_cpu: 0.6,
            cache_llc: 1.0,
            cache_node: 1.0,
            recommendation: Some(Recommendation {
                cpus: vec![1],
                text: "keep /db.service on CPU 1: 40% of its switch-ins land on another CPU".into(),
                command: "systemctl set-property db.service AllowedCPUs=1".into(),
            }),
            no_recommendation: None,
        }],
        readiness: sample_readiness(),
        map_drops: BTreeMap::from([("SCHED_WORKLOADS".into(), 0), ("TASK_SLOTS".into(), 2)]),
        collection_seconds: 0.001,
        cgroup_tree_walks: 1,
    }
}

fn sample_readiness() -> ReadinessSection {
    const MIB: f64 = 1024.0 * 1024.0;
    let link = Link {
        bandwidth_bytes_per_second: 64.0 * MIB,
        downtime_limit_seconds: 0.3,
        switchover_bandwidth_bytes_per_second: None,
        time_cap_seconds: None,
    };
    let point = |w: f64, d: f64, changed: u64| DirtyPoint {
        window_seconds: w,
        dirty_bytes: d * MIB,
        dirty_bytes_low: d * 0.8 * MIB,
        dirty_bytes_high: d * 1.25 * MIB,
        changed_samples: Some(changed),
        windows: 4,
    };
    let prediction = |total: f64| Prediction {
        converges: true,
        verdict: Verdict::Converges,
        syncs: 9,
        total_seconds: total,
        downtime_seconds: Some(0.16),
        sent_bytes: 800.0 * MIB,
    };
    let cost = SamplingCost {
        passes: 11,
        pages_read: 5632,
        cpu_seconds: 0.012,
    };
    let web = ReadinessReport {
        target: TargetInfo {
            kind: "vm",
            name: "web1".into(),
            pids: vec![4242],
        },
        memory_bytes: 600.0 * MIB,
        pages_bytes: 1024.0 * MIB,
        memory_method: MemoryMethod::GuestRamNonZero,
        method: SamplingMethod {
            method: "content sampling (estimate)",
            samples: 512,
            sampled_bytes: 1024 * 1024 * 1024,
        },
        cost,
        dirty: vec![point(1.0, 16.0, 31), point(4.0, 62.0, 124)],
        link,
        forecast: Forecast {
            outlook: Outlook::Converges,
            leans: None,
            uncertain_because: None,
            prediction: prediction(12.5),
            optimistic: prediction(11.9),
            pessimistic: prediction(13.4),
            decisive: None,
        },
        min_bandwidth_bytes_per_second: Some(20.0 * MIB),
    };
    ReadinessSection {
        link: Some(link),
        targets: vec![web],
        errors: 1,
        skipped: 0,
        passes: 2,
        cost,
        last_pass_cost: cost,
    }
}
