//! The running agent: probes attached, collectors reading them, one
//! [`Snapshot`] per collection.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use aya_log::EbpfLogger;
use tokio::io::unix::AsyncFd;
use tracing::warn;

use crate::collectors::dirty::DirtyCollector;
use crate::collectors::lock::LockCollector;
use crate::collectors::numa::NumaCollector;
use crate::collectors::readiness::{ReadinessCollector, ReadinessOptions};
use crate::collectors::sched::SchedCollector;
use crate::collectors::ulock::UlockCollector;
use crate::collectors::{DeadSet, Drain, Pass};
use crate::error::{Error, Result};
use crate::host::cgroup::CgroupResolver;
use crate::host::kallsyms::Kallsyms;
use crate::host::proc;
use crate::model::affinity::busy_between;
use crate::probes::{LoadOptions, PageAlloc, Probes};
use crate::snapshot::{derive, NumaSection, Snapshot};

/// What the kernel programs watch: the whole host, one process or one
/// cgroup (filtered in the kernel).
#[derive(Debug, Clone, Default)]
pub struct Filter {
    pub pid: Option<u32>,
    pub cgroup: Option<String>,
}

#[derive(Debug, Clone)]
pub struct AgentOptions {
    pub filter: Filter,
    pub top_k: usize,
    pub task_slots: u32,
    pub max_workloads: u32,
    /// Lock types to trace, as a `lock_types::mask`; 0 traces all.
    pub lock_types: u64,
    /// Stack walks per second per CPU for spinning lock waits; 0: all.
    pub spin_stacks_per_sec: u32,
    /// When `mm_page_alloc` attaches.
    pub page_alloc: PageAlloc,
    /// Kernel BTF from a file (`--btf`) instead of sysfs.
    pub btf: Option<std::path::PathBuf>,
    /// Migration readiness of VMs and named targets; `None`: off.
    pub readiness: Option<ReadinessOptions>,
}

pub struct Agent {
    probes: Probes,
    cgroups: CgroupResolver,
    sched: SchedCollector,
    lock: LockCollector,
    ulock: UlockCollector,
    dirty: DirtyCollector,
    numa: NumaCollector,
    dead: DeadSet,
    drain: Drain,
    readiness: Option<ReadinessCollector>,
    /// /proc/stat per-CPU times at the last busy reading, when it was
    /// taken, and the busy shares it gave.
    cpu_times: (Vec<(u64, u64)>, Instant),
    cpu_busy: Vec<f64>,
    started: Instant,
    last_round: Instant,
    kernel: String,
    filter: Option<String>,
}

impl Agent {
    /// Loads and attaches the probes. Must run inside a tokio runtime: the
    /// kernel-side log records (aya-log) are forwarded by a task.
    pub fn start(opts: &AgentOptions) -> Result<Self> {
        // Reading /proc/kallsyms (~45 ms of kernel time here) and measuring
        // HZ (a 60 ms sleep) run meanwhile.
        let kallsyms = std::thread::spawn(Kallsyms::load);
        let hz = std::thread::spawn(proc::kernel_hz);
        let cgroups = CgroupResolver::system()?;
        if let Some(pid) = opts.filter.pid {
            // /proc/TID exists for every thread too, but the kernel filters
            // on the process id.
            let tgid = proc::tgid(pid)?;
            if tgid != pid {
                return Err(Error::ThreadNotProcess { tid: pid, tgid });
            }
        }
        let cgroup_id = opts
            .filter
            .cgroup
            .as_deref()
            .map(|c| cgroups.id_of(c))
            .transpose()?;
        // The programs name lock callers from the locking code's ranges.
        let kallsyms = match kallsyms.join() {
            Ok(Ok(k)) => k,
            Ok(Err(e)) => {
                warn!("lock callers and static locks stay unnamed: {e}");
                Kallsyms::default()
            }
            Err(_) => Kallsyms::default(),
        };
        let load = LoadOptions {
            locking_text: kallsyms.locking_text(),
            pid: opts.filter.pid,
            cgroup_id,
            task_slots: opts.task_slots,
            max_workloads: opts.max_workloads,
            lock_types: opts.lock_types,
            spin_stacks_per_sec: opts.spin_stacks_per_sec,
            page_alloc: opts.page_alloc,
            btf: opts.btf.clone(),
        };
        let mut probes = Probes::load(&load)?;
        // Loading parsed the kernel's BTF twice (ours and aya's): 24 MiB of
        // heap here, all freed; give it back rather than carry it for months.
        // SAFETY: malloc_trim only releases free memory.
        unsafe { libc::malloc_trim(0) };
        forward_kernel_logs(&mut probes);
        let cpu_node = probes
            .topology
            .cpus
            .iter()
            .map(|c| c.node as usize)
            .collect();
        let sched = SchedCollector::new(&mut probes.ebpf, opts.top_k, cpu_node)?;
        let dead = DeadSet::new(&mut probes.ebpf)?;
        let drain = Drain::new(&mut probes.ebpf)?;
        let hz = hz.join().ok().flatten();
        if hz.is_none() {
            warn!("kernel HZ unknown (/proc/timer_list unreadable): dirty-throttle time is not reported");
        }
        let lock = LockCollector::new(&mut probes.ebpf, opts.top_k, kallsyms)?;
        let ulock = UlockCollector::new(&mut probes.ebpf, opts.top_k)?;
        let dirty = DirtyCollector::new(&mut probes.ebpf, opts.top_k, hz)?;
        let numa = NumaCollector::new(
            &mut probes.ebpf,
            opts.top_k,
            probes.topology.nodes,
            probes.migrate_reasons.clone(),
        )?;
        let filter = match (&opts.filter.pid, &opts.filter.cgroup) {
            (Some(pid), _) => Some(format!("pid {pid}")),
            (None, Some(c)) => Some(format!("cgroup {c}")),
            _ => None,
        };
        Ok(Self {
            probes,
            cgroups,
            sched,
            lock,
            ulock,
            dirty,
            numa,
            dead,
            drain,
            readiness: opts.readiness.clone().map(ReadinessCollector::start),
            cpu_times: (proc::cpu_times(), Instant::now()),
            cpu_busy: Vec::new(),
            started: Instant::now(),
            last_round: Instant::now(),
            kernel: proc::kernel_release(),
            filter,
        })
    }

    /// The readiness collector, if readiness is on.
    pub fn readiness(&self) -> Option<&ReadinessCollector> {
        self.readiness.as_ref()
    }

    /// The interval's round: reads every collector, folds what it read into
    /// the label state (which moves with the time since the last round) and
    /// drains the drained tables. Returns the snapshot since start.
    pub fn round(&mut self) -> Result<Snapshot> {
        let now = Instant::now();
        let pass = Pass::Round {
            elapsed: now - self.last_round,
            drain: self.drain.flip()?,
        };
        self.last_round = now;
        let snapshot = self.collect(pass)?;
        // Every table has read its last values of these: the kernel may
        // reuse their entries.
        let retired: BTreeSet<u64> = self
            .sched
            .retired()
            .iter()
            .chain(self.dirty.retired())
            .chain(self.numa.retired())
            .copied()
            .collect();
        self.dead.publish(&retired)?;
        Ok(snapshot)
    }

    /// Names the user stacks recorded since the last call (see
    /// [`UlockCollector::name_new_stacks`]).
    pub fn name_new_stacks(&mut self) -> Result<()> {
        self.ulock.name_new_stacks()
    }

    /// A scrape's view: every counter read fresh, under the labels in
    /// force; moves no label and drains nothing.
    pub fn peek(&mut self) -> Result<Snapshot> {
        self.collect(Pass::Peek)
    }

    fn collect(&mut self, pass: Pass) -> Result<Snapshot> {
        let t0 = Instant::now();
        self.cgroups.begin_round();
        let (sched, counters) = self.sched.collect(&mut self.cgroups, pass)?;
        let (lock, lock_counters) = self.lock.collect(&mut self.cgroups, pass)?;
        let (user_lock, ulock_counters) = self.ulock.collect(&mut self.cgroups, pass)?;
        let (dirty, dirty_counters) = self.dirty.collect(&mut self.cgroups, pass)?;
        let busiest: Vec<String> = sched.workloads.iter().map(|w| w.workload.clone()).collect();
        let (numa_workloads, pages_migrated, numa_counters) =
            self.numa.collect(&mut self.cgroups, &busiest, pass)?;
        let mut numa = NumaSection {
            nodes: self.probes.topology.nodes,
            workloads: numa_workloads,
            pages_migrated,
        };
        derive::join_numa(&mut numa, &sched);
        let mut events: BTreeMap<&str, u64> = counters.events.clone();
        events.extend(&lock_counters.events);
        events.extend(&ulock_counters.events);
        events.extend(&dirty_counters.events);
        events.extend(&numa_counters.events);
        let mut errors: BTreeMap<&str, u64> = counters.errors.clone();
        errors.extend(&lock_counters.errors);
        errors.extend(&dirty_counters.errors);
        errors.extend(&numa_counters.errors);
        let mut probes = self.probes.status.clone();
        for p in &mut probes {
            p.events = events.get(p.probe.as_str()).copied().unwrap_or(0);
            p.errors = errors.get(p.probe.as_str()).copied().unwrap_or(0);
            if p.attached {
                p.missed = self.probes.missed(&p.probe).unwrap_or(0);
            }
        }
        let mut map_drops = counters.drops;
        map_drops.extend(lock_counters.drops);
        map_drops.extend(ulock_counters.drops);
        map_drops.extend(dirty_counters.drops);
        map_drops.extend(numa_counters.drops);
        let mut snapshot = Snapshot {
            hostprobe_version: env!("CARGO_PKG_VERSION"),
            kernel: self.kernel.clone(),
            window_seconds: self.started.elapsed().as_secs_f64(),
            topology: self.probes.topology.clone(),
            filter: self.filter.clone(),
            cgroup_root: self.cgroups.root().display().to_string(),
            cgroup_cpuset: self.cgroups.offers("cpuset"),
            probes,
            sched,
            lock,
            user_lock,
            dirty,
            numa,
            readiness: self
                .readiness
                .as_ref()
                .map(ReadinessCollector::collect)
                .unwrap_or_default(),
            map_drops,
            cpu_busy: self.cpu_busy(pass),
            affinity: Vec::new(),
            collection_seconds: 0.0,
            cgroup_tree_walks: self.cgroups.walks,
        };
        snapshot.affinity = derive::affinity(&snapshot);
        snapshot.collection_seconds = t0.elapsed().as_secs_f64();
        Ok(snapshot)
    }

    /// Busy share of each CPU over the last second or more: a round takes a
    /// fresh reading once at least a second has passed since the previous.
    fn cpu_busy(&mut self, pass: Pass) -> Vec<f64> {
        let due = self.cpu_busy.is_empty() || self.cpu_times.1.elapsed() >= Duration::from_secs(1);
        if due && matches!(pass, Pass::Round { .. }) {
            let now = proc::cpu_times();
            self.cpu_busy = busy_between(&self.cpu_times.0, &now);
            self.cpu_times = (now, Instant::now());
        }
        self.cpu_busy.clone()
    }
}

/// Forwards aya-log records of the kernel programs to the agent's log.
fn forward_kernel_logs(probes: &mut Probes) {
    let logger = match EbpfLogger::init(&mut probes.ebpf) {
        Ok(l) => l,
        Err(e) => {
            warn!("kernel-side logging unavailable: {e}");
            return;
        }
    };
    // SAFETY: the logger owns its ring buffer fd for as long as it lives,
    // and the AsyncFd owns the logger.
    let registered =
        unsafe { AsyncFd::register_with_interest(logger, tokio::io::Interest::READABLE) };
    let mut fd = match registered {
        Ok(fd) => fd,
        Err(e) => {
            warn!("kernel-side logging unavailable: {e}");
            return;
        }
    };
    tokio::spawn(async move {
        while let Ok(mut guard) = fd.readable_mut().await {
            guard.get_inner_mut().flush();
            guard.clear_ready();
        }
    });
}
