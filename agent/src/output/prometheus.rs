//! Prometheus text exposition of a [`Snapshot`]: const metrics built from
//! the snapshot on each scrape, as ebpf_exporter does, so what `/metrics`
//! says and what `diagnose --json` says can never disagree.

use prometheus::proto::{
    Bucket, Counter, Gauge, Histogram, LabelPair, Metric, MetricFamily, MetricType,
};
use prometheus::{Encoder, TextEncoder};

use crate::model::precopy::Outlook;
use crate::snapshot::{LatencySummary, Snapshot};

/// Histogram upper bounds as powers of two nanoseconds: 2^10 ns (~1 us) to
/// 2^34 ns (~17 s), every factor of 4. Each is a kernel bucket edge, so the
/// cumulative counts are exact.
pub const RUNQ_BOUNDS_LOG2: [u32; 13] = [10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30, 32, 34];

struct Family(MetricFamily);

impl Family {
    fn new(name: &str, help: &str, kind: MetricType) -> Self {
        let mut f = MetricFamily::default();
        f.set_name(name.to_string());
        f.set_help(help.to_string());
        f.set_field_type(kind);
        Self(f)
    }

    fn push(&mut self, labels: &[(&str, &str)], fill: impl FnOnce(&mut Metric)) {
        let mut m = Metric::from_label(
            labels
                .iter()
                .map(|(k, v)| {
                    let mut l = LabelPair::default();
                    l.set_name(k.to_string());
                    l.set_value(v.to_string());
                    l
                })
                .collect(),
        );
        fill(&mut m);
        self.0.mut_metric().push(m);
    }

    fn counter(&mut self, labels: &[(&str, &str)], v: f64) {
        self.push(labels, |m| {
            let mut c = Counter::default();
            c.set_value(v);
            m.set_counter(c);
        });
    }

    fn gauge(&mut self, labels: &[(&str, &str)], v: f64) {
        self.push(labels, |m| {
            let mut g = Gauge::default();
            g.set_value(v);
            m.set_gauge(g);
        });
    }
}

/// Adds a histogram with the log2 buckets of `summary` at `RUNQ_BOUNDS_LOG2`.
fn histogram(f: &mut Family, labels: &[(&str, &str)], summary: &LatencySummary) {
    let hist = summary.hist();
    let cumulative = hist.cumulative_at(&RUNQ_BOUNDS_LOG2);
    f.push(labels, |m| {
        let mut h = Histogram::default();
        h.set_sample_count(hist.count());
        h.set_sample_sum(summary.sum_seconds);
        h.set_bucket(
            RUNQ_BOUNDS_LOG2
                .iter()
                .zip(cumulative)
                .map(|(k, n)| {
                    let mut b = Bucket::default();
                    b.set_upper_bound((1u64 << k) as f64 / 1e9);
                    b.set_cumulative_count(n);
                    b
                })
                .collect(),
        );
        m.set_histogram(h);
    });
}

/// Renders the snapshot in the Prometheus text format.
pub fn render(s: &Snapshot) -> String {
    use MetricType::{COUNTER, GAUGE, HISTOGRAM};
    let mut out = Vec::new();

    let mut f = Family::new(
        "hostprobe_build_info",
        "hostprobe version and the kernel it runs on.",
        GAUGE,
    );
    f.gauge(
        &[("version", s.hostprobe_version), ("kernel", &s.kernel)],
        1.0,
    );
    out.push(f);

    let mut attached = Family::new(
        "hostprobe_probe_attached",
        "1 if the kernel program is attached, 0 if it is disabled (see `hostprobe check` for why).",
        GAUGE,
    );
    let mut info = Family::new(
        "hostprobe_probe_info",
        "How each kernel program attaches (the preferred way when it does not): attach_type tp_btf, tracepoint, or fentry/fexit (lock contention before 5.19: sleeping locks only, from their slow paths), and what it hooks.",
        GAUGE,
    );
    let mut enabled = Family::new(
        "hostprobe_probe_enabled",
        "0 if the kernel program is off by design (mm_page_alloc on one NUMA node or with --numa-page-alloc never), 1 if hostprobe tries to attach it.",
        GAUGE,
    );
    let mut events = Family::new(
        "hostprobe_probe_events_total",
        "Times each kernel program ran.",
        COUNTER,
    );
    let mut errors = Family::new(
        "hostprobe_probe_errors_total",
        "Events a kernel program could not handle (e.g. a CPU outside the topology table).",
        COUNTER,
    );
    let mut missed = Family::new(
        "hostprobe_probe_missed_total",
        "Runs of a kernel program the kernel skipped because it, or for a classic tracepoint any tracing program, was already running on that CPU; their events are lost.",
        COUNTER,
    );
    for p in &s.probes {
        let l = [("probe", p.probe.as_str())];
        attached.gauge(&l, if p.attached { 1.0 } else { 0.0 });
        info.gauge(
            &[
                ("probe", p.probe.as_str()),
                ("attach_type", p.attach_type.as_str()),
                ("hook", p.tracepoint.as_str()),
            ],
            1.0,
        );
        enabled.gauge(&l, if p.enabled { 1.0 } else { 0.0 });
        events.counter(&l, p.events as f64);
        errors.counter(&l, p.errors as f64);
        missed.counter(&l, p.missed as f64);
    }
    out.extend([attached, info, enabled, events, errors, missed]);

    let mut drops = Family::new("hostprobe_map_drops_total", "Updates lost because a bounded kernel map was full or a task slot was taken by another thread.", COUNTER);
    for (map, n) in &s.map_drops {
        drops.counter(&[("map", map)], *n as f64);
    }
    out.push(drops);

    let mut f = Family::new(
        "hostprobe_collection_duration_seconds",
        "Time the last collection of kernel maps took.",
        GAUGE,
    );
    f.gauge(&[], s.collection_seconds);
    out.push(f);

    let mut f = Family::new(
        "hostprobe_cgroup_tree_walks_total",
        "Walks of the whole cgroup tree to name new cgroups (only where they cannot be opened by handle; at most one per round).",
        COUNTER,
    );
    f.counter(&[], s.cgroup_tree_walks as f64);
    out.push(f);

    let mut host = Family::new("hostprobe_sched_host_migrations_total", "Task migrations between CPUs on the whole host, by topology distance (counted when they happen, before workload attribution).", COUNTER);
    for (d, n) in s.sched.host_migrations.labeled() {
        host.counter(&[("distance", d)], n as f64);
    }
    out.push(host);

    let mut f = Family::new("hostprobe_sched_host_migrated_switch_ins_total", "Switch-ins of a task that moved to another CPU since it last ran (perf's cpu-migrations event counts the same).", COUNTER);
    f.counter(&[], s.sched.host_migrated_switch_ins as f64);
    out.push(f);

    let mut mig = Family::new(
        "hostprobe_sched_migrations_total",
        "Task migrations between CPUs by workload (cgroup, top-K + other) and topology distance.",
        COUNTER,
    );
    let mut sw = Family::new(
        "hostprobe_sched_switch_ins_total",
        "Switch-ins by workload and where the task runs relative to where it last ran.",
        COUNTER,
    );
    let mut oncpu = Family::new(
        "hostprobe_sched_oncpu_seconds_total",
        "Time tasks of the workload spent on a CPU.",
        COUNTER,
    );
    let mut runq = Family::new(
        "hostprobe_runqueue_latency_seconds",
        "Time from becoming runnable (wakeup or preemption) to running, by workload.",
        HISTOGRAM,
    );
    let mut switches = Family::new(
        "hostprobe_sched_context_switches_total",
        "Switch-outs of the workload's tasks: involuntary (preempted while runnable) or voluntary (to sleep or wait), as nonvoluntary_ctxt_switches and voluntary_ctxt_switches in /proc/PID/status.",
        COUNTER,
    );
    let mut slices = Family::new(
        "hostprobe_sched_slice_seconds",
        "On-CPU run lengths (switch-in to switch-out) of the workload's tasks.",
        HISTOGRAM,
    );
    let mut gang = Family::new(
        "hostprobe_sched_gang_seconds_total",
        "Sampled time during which two or more threads of one of the workload's processes (or a VM's vCPU threads) were runnable and one or more ran: all of them on CPUs (together) or some waiting while a sibling ran (split). Co-scheduling ratio: together / (together + split).",
        COUNTER,
    );
    for w in &s.sched.workloads {
        let wl = w.workload.as_str();
        switches.counter(
            &[("workload", wl), ("type", "involuntary")],
            w.preemptions as f64,
        );
        switches.counter(
            &[("workload", wl), ("type", "voluntary")],
            w.voluntary_switches as f64,
        );
        histogram(&mut slices, &[("workload", wl)], &w.slices);
        gang.counter(
            &[("workload", wl), ("state", "together")],
            w.gang.together_seconds,
        );
        gang.counter(
            &[("workload", wl), ("state", "split")],
            w.gang.split_seconds,
        );
        for (d, n) in w.migrations.labeled() {
            mig.counter(&[("workload", wl), ("distance", d)], n as f64);
        }
        for (p, n) in w.switch_ins.labeled() {
            sw.counter(&[("workload", wl), ("placement", p)], n as f64);
        }
        oncpu.counter(&[("workload", wl)], w.oncpu_seconds);
        histogram(&mut runq, &[("workload", wl)], &w.runqueue_latency);
    }
    let mut info = Family::new("hostprobe_workload_info", "What the workload's cgroup path says: kind (systemd, pod, container, cgroup), systemd unit, pod UID and QoS, container id and runtime. Always 1; join on workload.", GAUGE);
    for w in s
        .sched
        .workloads
        .iter()
        .filter(|w| w.workload.starts_with('/'))
    {
        let d = crate::model::workload::describe(&w.workload);
        info.gauge(
            &[
                ("workload", w.workload.as_str()),
                ("kind", d.kind),
                ("unit", &d.unit),
                ("pod_uid", &d.pod_uid),
                ("qos", &d.qos),
                ("container_id", &d.container_id),
                ("runtime", d.runtime),
            ],
            1.0,
        );
    }
    out.extend([mig, sw, oncpu, runq, switches, slices, gang, info]);

    let mut by_neighbour = Family::new(
        "hostprobe_runqueue_wait_by_neighbour_seconds_total",
        "Run-queue wait of the workload's tasks charged to the workload that held the CPU meanwhile (neighbour: a cgroup path, (idle) while the CPU woke from idle, (unknown) beyond the per-CPU history); top-K (workload, neighbour) pairs + other.",
        COUNTER,
    );
    for p in &s.sched.neighbours.pairs {
        by_neighbour.counter(
            &[
                ("workload", p.workload.as_str()),
                ("neighbour", p.neighbour.as_str()),
            ],
            p.wait_seconds,
        );
    }
    let mut charged = Family::new(
        "hostprobe_runqueue_wait_charged_seconds_total",
        "Run-queue wait charged to neighbours, by how exactly: from the history of the CPU it was spent on (direct), of the CPU the task ran on after it moved while waiting (moved, an approximation), or older than that history (unknown).",
        COUNTER,
    );
    let a = &s.sched.neighbour_attribution;
    for (how, v) in [
        ("direct", a.direct_seconds),
        ("moved", a.moved_seconds),
        ("unknown", a.unknown_seconds),
    ] {
        charged.counter(&[("how", how)], v);
    }
    out.extend([by_neighbour, charged]);

    let mut steal = Family::new(
        "hostprobe_vm_vcpu_runqueue_wait_seconds_total",
        "Run-queue wait of the VM's vCPU threads (their schedstat): the steal time the guest sees under KVM; top-K VMs + other.",
        COUNTER,
    );
    let mut preempt = Family::new(
        "hostprobe_vm_vcpu_preemptions_total",
        "Involuntary switch-outs of the VM's vCPU threads.",
        COUNTER,
    );
    let mut vgang = Family::new(
        "hostprobe_vm_vcpu_gang_seconds_total",
        "Sampled time during which two or more of the VM's vCPU threads were runnable and one or more ran: all on CPUs (together) or some waiting while a sibling ran (split).",
        COUNTER,
    );
    for v in &s.sched.vms {
        let l = [("vm", v.vm.as_str())];
        steal.counter(&l, v.vcpu_wait_seconds);
        preempt.counter(&l, v.vcpu_preemptions as f64);
        vgang.counter(
            &[("vm", &v.vm), ("state", "together")],
            v.gang.together_seconds,
        );
        vgang.counter(&[("vm", &v.vm), ("state", "split")], v.gang.split_seconds);
    }
    out.extend([steal, preempt, vgang]);

    let mut contentions = Family::new(
        "hostprobe_lock_contentions_total",
        "Contended acquisitions of kernel locks, by lock type (perf lock's names).",
        COUNTER,
    );
    let mut wait = Family::new(
        "hostprobe_lock_wait_seconds",
        "Time waiters spent on contended kernel locks, by lock type.",
        HISTOGRAM,
    );
    for t in &s.lock.by_type {
        let l = [("type", t.lock_type.as_str())];
        contentions.counter(&l, t.contentions as f64);
        histogram(&mut wait, &l, &t.wait);
    }
    let mut by_caller = Family::new(
        "hostprobe_lock_wait_seconds_total",
        "Time waited on contended kernel locks by lock type and calling function (top-K + other).",
        COUNTER,
    );
    for c in &s.lock.caller_totals {
        by_caller.counter(
            &[("type", c.lock_type.as_str()), ("caller", c.name.as_str())],
            c.wait_seconds,
        );
    }
    let mut by_workload = Family::new(
        "hostprobe_workload_lock_wait_seconds_total",
        "Time the workload's tasks waited on contended kernel locks (top-K + other).",
        COUNTER,
    );
    for w in &s.lock.workloads {
        by_workload.counter(&[("workload", w.name.as_str())], w.wait_seconds);
    }
    let mut by_owner = Family::new(
        "hostprobe_lock_wait_by_owner_seconds_total",
        "Time waited on contended mutexes and rwsems held for writing, by the waiter's workload, the owner's workload and what the owner was doing when the wait began (running, preempted: runnable without a CPU, sleeping); top-K + other.",
        COUNTER,
    );
    let mut by_owner_n = Family::new(
        "hostprobe_lock_contentions_by_owner_total",
        "Contended acquisitions of mutexes and rwsems held for writing, by the waiter's workload, the owner's workload and the owner's state; top-K + other.",
        COUNTER,
    );
    for w in &s.lock.owners {
        let l = [
            ("workload", w.workload.as_str()),
            ("owner", w.owner.as_str()),
            ("owner_state", w.owner_state.as_str()),
        ];
        by_owner.counter(&l, w.wait_seconds);
        by_owner_n.counter(&l, w.contentions as f64);
    }
    out.extend([by_owner, by_owner_n]);
    let mut unsampled = Family::new("hostprobe_lock_spin_waits_without_stack_total", "Spinning lock waits counted without their stack because the per-CPU stack budget (--lock-stacks) was spent; their caller label is \"(stack not sampled)\".", COUNTER);
    unsampled.counter(&[], s.lock.spin_waits_without_stack as f64);
    out.extend([contentions, wait, by_caller, by_workload, unsampled]);
    user_lock(s, &mut out);
    dirty(s, &mut out);
    numa(s, &mut out);
    affinity(s, &mut out);
    readiness(s, &mut out);

    let families: Vec<MetricFamily> = out
        .into_iter()
        .map(|f| f.0)
        .filter(|f| !f.get_metric().is_empty())
        .collect();
    let mut buf = Vec::new();
    TextEncoder::new()
        .encode(&families, &mut buf)
        .expect("text encoding of well-formed families cannot fail");
    String::from_utf8(buf).expect("the text encoder writes UTF-8")
}

/// User-space lock waits (futex sleeps) per workload and per (workload,
/// function), top-K + other.
fn user_lock(s: &Snapshot, out: &mut Vec<Family>) {
    use MetricType::{COUNTER, HISTOGRAM};
    let mut wait = Family::new(
        "hostprobe_workload_user_lock_wait_seconds_total",
        "Time the workload's threads slept in futex waits (user-space locks, condition variables, semaphores) until they ran again; top-K + other.",
        COUNTER,
    );
    let mut count = Family::new(
        "hostprobe_workload_user_lock_contentions_total",
        "Futex sleeps of the workload's threads (a lock or condition found taken or unmet); top-K + other.",
        COUNTER,
    );
    let mut hist = Family::new(
        "hostprobe_user_lock_wait_seconds",
        "Futex sleeps of the workload's threads by duration (sleep and run-queue wait until they ran again); top-K + other.",
        HISTOGRAM,
    );
    for w in &s.user_lock.workloads {
        let l = [("workload", w.workload.as_str())];
        wait.counter(&l, w.wait_seconds);
        count.counter(&l, w.contentions as f64);
        histogram(&mut hist, &l, &w.wait);
    }
    let mut by_function = Family::new(
        "hostprobe_user_lock_wait_seconds_total",
        "Time slept in futex waits by workload and innermost application function (the first frame outside the C library and the runtimes' lock code); top-K + other.",
        COUNTER,
    );
    for f in &s.user_lock.functions {
        by_function.counter(
            &[("workload", &f.workload), ("function", &f.function)],
            f.wait_seconds,
        );
    }
    out.extend([wait, count, hist, by_function]);
}

/// Page dirtying per workload (top-K + other) and device.
fn dirty(s: &Snapshot, out: &mut Vec<Family>) {
    use MetricType::COUNTER;
    let mut file = Family::new(
        "hostprobe_file_dirtied_bytes_total",
        "File pages the workload dirtied (folios going from clean to dirty, at their size).",
        COUNTER,
    );
    let mut throttle = Family::new(
        "hostprobe_dirty_throttle_seconds_total",
        "Time the workload's tasks were paused by dirty-page throttling (balance_dirty_pages).",
        COUNTER,
    );
    let mut faults = Family::new("hostprobe_write_faults_total", "User write page faults: kind=new (page not mapped: new memory), kind=present (mapped, write-protected: copy-on-write).", COUNTER);
    for w in &s.dirty.workloads {
        let wl = [("workload", w.workload.as_str())];
        file.counter(&wl, w.file_dirtied_bytes as f64);
        if let Some(t) = w.throttle_seconds {
            throttle.counter(&wl, t);
        }
        for (kind, n) in [
            ("new", w.write_faults_new),
            ("present", w.write_faults_present),
        ] {
            faults.counter(
                &[("workload", w.workload.as_str()), ("kind", kind)],
                n as f64,
            );
        }
    }
    let mut device = Family::new(
        "hostprobe_device_file_dirtied_bytes_total",
        "File pages dirtied on each filesystem device.",
        COUNTER,
    );
    for d in &s.dirty.devices {
        device.counter(
            &[("device", d.device.as_str())],
            d.file_dirtied_bytes as f64,
        );
    }
    out.extend([file, throttle, faults, device]);
}

/// NUMA per workload (top-K + other) and pages migrated by reason.
fn numa(s: &Snapshot, out: &mut Vec<Family>) {
    use MetricType::{COUNTER, GAUGE};
    let mut alloc = Family::new("hostprobe_numa_page_allocations_total", "Pages (4 KiB units) the workload allocated on its CPU's node (locality=local) or another (remote).", COUNTER);
    let mut balancing = Family::new("hostprobe_numa_balancing_events_total", "NUMA-balancing decisions about the workload's tasks: kind=move (to another node's CPU), swap (with a task there), stick (wanted to move, could not).", COUNTER);
    let mut resident = Family::new("hostprobe_workload_resident_bytes", "Resident memory by node of the processes directly in the workload's cgroup (numa_maps; the NUMA-labelled workloads and, with two or more nodes, the scheduler's top-K; refreshed at most every 10 s).", GAUGE);
    let mut cpu = Family::new(
        "hostprobe_workload_cpu_seconds_total",
        "On-CPU time of the workload by the NUMA node of the CPU.",
        COUNTER,
    );
    let mut ratio = Family::new("hostprobe_workload_numa_remote_ratio", "Remote share: method=allocations (remote / all page allocations), method=estimated_access (sum over nodes of on-CPU share x share of memory elsewhere; an estimate).", GAUGE);
    for w in &s.numa.workloads {
        let wl = w.workload.as_str();
        for (loc, n) in [("local", w.local_pages), ("remote", w.remote_pages)] {
            alloc.counter(&[("workload", wl), ("locality", loc)], n as f64);
        }
        let b = &w.balancing;
        for (kind, n) in [
            ("move", b.move_numa),
            ("swap", b.swap_numa),
            ("stick", b.stick_numa),
        ] {
            balancing.counter(&[("workload", wl), ("kind", kind)], n as f64);
        }
        for (node, bytes) in w.resident_bytes_by_node.iter().enumerate() {
            resident.gauge(
                &[("workload", wl), ("node", &node.to_string())],
                *bytes as f64,
            );
        }
        if let Some(r) = w.remote_allocation_ratio {
            ratio.gauge(&[("workload", wl), ("method", "allocations")], r);
        }
        if let Some(r) = w.estimated_remote_access_ratio {
            ratio.gauge(&[("workload", wl), ("method", "estimated_access")], r);
        }
    }
    for w in &s.sched.workloads {
        for (node, secs) in w.oncpu_seconds_by_node.iter().enumerate() {
            let labels = [
                ("workload", w.workload.as_str()),
                ("node", &node.to_string()),
            ];
            cpu.counter(&labels, *secs);
        }
    }
    let mut migrated = Family::new(
        "hostprobe_numa_pages_migrated_total",
        "Pages the kernel migrated between nodes, by reason (e.g. numa_misplaced: NUMA balancing).",
        COUNTER,
    );
    for (reason, n) in &s.numa.pages_migrated {
        migrated.counter(&[("reason", reason.as_str())], *n as f64);
    }
    out.extend([alloc, balancing, resident, cpu, ratio, migrated]);
}

/// The affinity model's verdicts (see `crate::model::affinity` for the score).
fn affinity(s: &Snapshot, out: &mut Vec<Family>) {
    use MetricType::GAUGE;
    let mut score = Family::new("hostprobe_workload_affinity_score", "Scheduler affinity in 0..1: same-CPU share of switch-ins x (1 - remote memory share) x (1 - lock wait share).", GAUGE);
    let mut cache = Family::new(
        "hostprobe_workload_cache_affinity_ratio",
        "Share of switch-ins that kept the cache of this level or closer (level=cpu|llc|node).",
        GAUGE,
    );
    let mut rec = Family::new(
        "hostprobe_workload_affinity_recommendation_info",
        "The active placement recommendation of the workload (value 1), with its CPUs and command.",
        GAUGE,
    );
    for a in &s.affinity {
        let wl = a.workload.as_str();
        score.gauge(&[("workload", wl)], a.score);
        for (level, r) in [
            ("cpu", a.cache_cpu),
            ("llc", a.cache_llc),
            ("node", a.cache_node),
        ] {
            cache.gauge(&[("workload", wl), ("level", level)], r);
        }
        if let Some(r) = &a.recommendation {
            let cpus = crate::model::affinity::cpu_list(&r.cpus);
            rec.gauge(
                &[("workload", wl), ("cpus", &cpus), ("command", &r.command)],
                1.0,
            );
        }
    }
    out.extend([score, cache, rec]);
}

/// The latest readiness assessments, one series per target.
fn readiness(s: &Snapshot, out: &mut Vec<Family>) {
    use MetricType::{COUNTER, GAUGE};
    let r = &s.readiness;
    if let Some(link) = &r.link {
        let mut f = Family::new(
            "hostprobe_migration_link_bandwidth_bytes_per_second",
            "Link bandwidth the migration predictions assume (--migration-bandwidth).",
            GAUGE,
        );
        f.gauge(&[], link.bandwidth_bytes_per_second);
        out.push(f);
        let mut f = Family::new(
            "hostprobe_migration_downtime_limit_seconds",
            "Downtime limit the migration predictions assume (--migration-downtime).",
            GAUGE,
        );
        f.gauge(&[], link.downtime_limit_seconds);
        out.push(f);
        let mut f = Family::new(
            "hostprobe_readiness_errors_total",
            "Readiness assessments that failed (target gone, memory unreadable).",
            COUNTER,
        );
        f.counter(&[], r.errors as f64);
        out.push(f);
        let mut f = Family::new(
            "hostprobe_readiness_skipped_targets",
            "Targets not assessed in the last pass because of --readiness-max-targets.",
            GAUGE,
        );
        f.gauge(&[], r.skipped as f64);
        out.push(f);
        let mut f = Family::new(
            "hostprobe_readiness_pages_read_total",
            "Sampled pages read to measure dirtying, in all readiness passes.",
            COUNTER,
        );
        f.counter(&[], r.cost.pages_read as f64);
        out.push(f);
        let mut f = Family::new(
            "hostprobe_readiness_cpu_seconds_total",
            "CPU time spent reading and hashing sampled pages, in all readiness passes.",
            COUNTER,
        );
        f.counter(&[], r.cost.cpu_seconds);
        out.push(f);
        let mut f = Family::new(
            "hostprobe_readiness_last_pass_cpu_seconds",
            "CPU time the last readiness pass over the targets spent reading and hashing pages.",
            GAUGE,
        );
        f.gauge(&[], r.last_pass_cost.cpu_seconds);
        out.push(f);
    }
    let mut rate = Family::new("hostprobe_dirty_bytes_per_second", "Distinct bytes the workload dirtied within a window, divided by the window (content-sampling estimate; method label).", GAUGE);
    let mut memory = Family::new(
        "hostprobe_migration_memory_bytes",
        "Memory a pre-copy migration of the workload would send in its first pass (method label).",
        GAUGE,
    );
    let mut converges = Family::new(
        "hostprobe_migration_converges",
        "1 if pre-copy would converge at the configured bandwidth and downtime limit, 0 if not, NaN when uncertain (the measured intervals of d(w) allow both).",
        GAUGE,
    );
    let mut uncertain = Family::new(
        "hostprobe_migration_uncertain",
        "1 when the verdict is uncertain: it converges at one end of the measured intervals and not at the other.",
        GAUGE,
    );
    let mut duration = Family::new(
        "hostprobe_migration_predicted_duration_seconds",
        "Predicted total migration time (until it converges or the model gives up).",
        GAUGE,
    );
    let mut downtime = Family::new(
        "hostprobe_migration_predicted_downtime_seconds",
        "Predicted stop-and-copy downtime (only for migrations that converge).",
        GAUGE,
    );
    let mut min_bw = Family::new("hostprobe_migration_min_bandwidth_bytes_per_second", "Lowest link bandwidth at which pre-copy would converge within the downtime limit (absent if none up to 1 TB/s).", GAUGE);
    for t in &r.targets {
        let wl = t.target.workload();
        let wl = wl.as_str();
        for d in &t.dirty {
            let window = format!("{}s", two_digits(d.window_seconds));
            rate.gauge(
                &[
                    ("workload", wl),
                    ("window", &window),
                    ("method", "sampling"),
                ],
                d.dirty_bytes / d.window_seconds,
            );
        }
        let method = match t.memory_method {
            crate::snapshot::MemoryMethod::Resident => "resident",
            crate::snapshot::MemoryMethod::GuestRamNonZero => "guest_ram_nonzero",
        };
        memory.gauge(&[("workload", wl), ("method", method)], t.memory_bytes);
        let p = &t.forecast.prediction;
        converges.gauge(
            &[("workload", wl)],
            match t.forecast.outlook {
                Outlook::Converges => 1.0,
                Outlook::DoesNotConverge => 0.0,
                Outlook::Uncertain => f64::NAN,
            },
        );
        uncertain.gauge(
            &[("workload", wl)],
            f64::from(u8::from(t.forecast.outlook == Outlook::Uncertain)),
        );
        duration.gauge(&[("workload", wl)], p.total_seconds);
        if let Some(d) = p.downtime_seconds {
            downtime.gauge(&[("workload", wl)], d);
        }
        if let Some(b) = t.min_bandwidth_bytes_per_second {
            min_bw.gauge(&[("workload", wl)], b);
        }
    }
    out.extend([
        rate, memory, converges, uncertain, duration, downtime, min_bw,
    ]);
}

/// `x` to two significant digits: a measured window (0.2513 s, 16.02 s)
/// labelled as configured (0.25, 16), so that jitter makes no new series.
fn two_digits(x: f64) -> f64 {
    if x <= 0.0 || !x.is_finite() {
        return 0.0;
    }
    let unit = 10f64.powf(x.log10().floor() - 1.0);
    let r = (x / unit).round() * unit;
    // Printed without binary noise: 0.25, not 0.25000000000000006.
    format!("{r:.*}", (-(unit.log10().round())).max(0.0) as usize)
        .parse()
        .unwrap_or(r)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::snapshot::sample::sample as sample_snapshot;

    #[test]
    fn renders_the_contract_metrics() {
        let text = render(&sample_snapshot());
        for needle in [
            "hostprobe_build_info{version=\"",
            "hostprobe_probe_attached{probe=\"sched_switch\"} 1",
            "hostprobe_probe_attached{probe=\"sched_migrate_task\"} 0",
            "hostprobe_probe_info{probe=\"sched_switch\",attach_type=\"tp_btf\",hook=\"sched:sched_switch\"} 1",
            "hostprobe_probe_events_total{probe=\"sched_switch\"} 1000",
            "hostprobe_map_drops_total{map=\"TASK_SLOTS\"} 2",
            "hostprobe_sched_migrations_total{workload=\"/db.service\",distance=\"other_node\"} 3",
            "hostprobe_sched_switch_ins_total{workload=\"other\",placement=\"same_cpu\"} 7",
            "hostprobe_sched_context_switches_total{workload=\"/db.service\",type=\"involuntary\"} 4",
            "hostprobe_sched_context_switches_total{workload=\"/db.service\",type=\"voluntary\"} 1",
            "hostprobe_sched_slice_seconds_count{workload=\"/db.service\"} 5",
            "hostprobe_sched_gang_seconds_total{workload=\"/db.service\",state=\"split\"} 0.1",
            "hostprobe_vm_vcpu_runqueue_wait_seconds_total{vm=\"vm:web1\"} 0.25",
            "hostprobe_vm_vcpu_gang_seconds_total{vm=\"vm:web1\",state=\"split\"} 3",
            "hostprobe_runqueue_wait_by_neighbour_seconds_total{workload=\"/db.service\",neighbour=\"/batch.slice\"} 0.0012",
            "hostprobe_runqueue_wait_charged_seconds_total{how=\"direct\"} 0.0015",
            "hostprobe_lock_wait_by_owner_seconds_total{workload=\"/db.service\",owner=\"/batch.slice\",owner_state=\"preempted\"} 0.0012",
            "hostprobe_runqueue_latency_seconds_bucket{workload=\"/db.service\",le=\"0.000001024\"} 0",
            "hostprobe_runqueue_latency_seconds_bucket{workload=\"/db.service\",le=\"0.000004096\"} 4",
            "hostprobe_runqueue_latency_seconds_bucket{workload=\"/db.service\",le=\"+Inf\"} 5",
            "hostprobe_runqueue_latency_seconds_count{workload=\"/db.service\"} 5",
            "# TYPE hostprobe_runqueue_latency_seconds histogram",
            "# TYPE hostprobe_sched_host_migrations_total counter",
            "hostprobe_lock_contentions_total{type=\"rwsem:W\"} 5",
            "hostprobe_workload_info{workload=\"/db.service\",kind=\"systemd\",unit=\"db.service\",pod_uid=\"\",qos=\"\",container_id=\"\",runtime=\"\"} 1",
            "hostprobe_lock_wait_seconds_count{type=\"rwsem:W\"} 5",
            "hostprobe_lock_wait_seconds_total{type=\"rwsem:W\",caller=\"do_mmap\"} 0.002",
            "hostprobe_workload_lock_wait_seconds_total{workload=\"/db.service\"} 0.002",
            "hostprobe_dirty_bytes_per_second{workload=\"vm:web1\",window=\"4s\",method=\"sampling\"} 16252928",
            "hostprobe_migration_memory_bytes{workload=\"vm:web1\",method=\"guest_ram_nonzero\"} 629145600",
            "hostprobe_migration_converges{workload=\"vm:web1\"} 1",
            "hostprobe_migration_predicted_duration_seconds{workload=\"vm:web1\"} 12.5",
            "hostprobe_migration_predicted_downtime_seconds{workload=\"vm:web1\"} 0.16",
            "hostprobe_migration_min_bandwidth_bytes_per_second{workload=\"vm:web1\"} 20971520",
            "hostprobe_migration_link_bandwidth_bytes_per_second 67108864",
            "hostprobe_readiness_errors_total 1",
            "hostprobe_file_dirtied_bytes_total{workload=\"/db.service\"} 8192",
            "hostprobe_dirty_throttle_seconds_total{workload=\"/db.service\"} 0.5",
            "hostprobe_write_faults_total{workload=\"/db.service\",kind=\"new\"} 100",
            "hostprobe_device_file_dirtied_bytes_total{device=\"/dev/vda\"} 8192",
            "hostprobe_numa_page_allocations_total{workload=\"/db.service\",locality=\"remote\"} 30",
            "hostprobe_numa_balancing_events_total{workload=\"/db.service\",kind=\"move\"} 2",
            "hostprobe_workload_resident_bytes{workload=\"/db.service\",node=\"1\"} 3000",
            "hostprobe_workload_cpu_seconds_total{workload=\"/db.service\",node=\"0\"} 1.5",
            "hostprobe_workload_numa_remote_ratio{workload=\"/db.service\",method=\"allocations\"} 0.75",
            "hostprobe_numa_pages_migrated_total{reason=\"numa_misplaced\"} 7",
            "hostprobe_workload_affinity_score{workload=\"/db.service\"} 0.5",
            "hostprobe_workload_cache_affinity_ratio{workload=\"/db.service\",level=\"llc\"} 1",
            "hostprobe_workload_affinity_recommendation_info{workload=\"/db.service\",cpus=\"1\",command=\"systemctl set-property db.service AllowedCPUs=1\"} 1",
        ] {
            assert!(text.contains(needle), "missing {needle:?} in\n{text}");
        }
    }
}
