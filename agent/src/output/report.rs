//! The human-readable diagnose report: a view of a [`Snapshot`].

use std::collections::BTreeMap;
use std::fmt::Write as _;

use crate::model::precopy::Outlook;
use crate::model::topk::OTHER;
use crate::snapshot::Snapshot;

/// Formats seconds with a unit that keeps 2-3 significant digits.
pub fn fmt_seconds(s: f64) -> String {
    let (v, unit) = if s < 1e-6 {
        (s * 1e9, "ns")
    } else if s < 1e-3 {
        (s * 1e6, "us")
    } else if s < 1.0 {
        (s * 1e3, "ms")
    } else {
        (s, "s")
    };
    if v >= 100.0 {
        format!("{v:.0}{unit}")
    } else {
        format!("{v:.1}{unit}")
    }
}

fn pct(part: u64, total: u64) -> String {
    if total == 0 {
        "-".into()
    } else {
        format!("{:.1}%", 100.0 * part as f64 / total as f64)
    }
}

fn opt_seconds(s: Option<f64>) -> String {
    s.map_or_else(|| "-".into(), fmt_seconds)
}

pub fn render(s: &Snapshot, stacks: bool) -> String {
    let mut o = String::new();
    let t = &s.topology;
    let plural =
        |n: usize, one: &str, many: &str| format!("{n} {}", if n == 1 { one } else { many });
    let _ = writeln!(
        o,
        "hostprobe {} — {} on kernel {} ({}, {}, {}, {})",
        s.hostprobe_version,
        fmt_seconds(s.window_seconds),
        s.kernel,
        plural(t.online_cpus, "CPU", "CPUs"),
        plural(t.cores, "core", "cores"),
        plural(t.llcs, "LLC", "LLCs"),
        plural(t.nodes, "NUMA node", "NUMA nodes"),
    );
    if let Some(f) = &s.filter {
        let _ = writeln!(o, "filter: {f} (applied in the kernel)");
    }
    render_summary(&mut o, s);

    let _ = writeln!(o, "\nProbes");
    for p in &s.probes {
        let state = if p.attached { "attached" } else { "DISABLED" };
        let _ = write!(
            o,
            "  {:<21} {:<10} {:<9} {:>12} events",
            p.probe, p.attach_type, state, p.events
        );
        if p.errors > 0 {
            let _ = write!(o, ", {} errors", p.errors);
        }
        if p.missed > 0 {
            let _ = write!(o, ", {} MISSED (skipped by the kernel)", p.missed);
        }
        if let Some(r) = &p.reason {
            let _ = write!(o, "  ({r})");
        }
        let _ = writeln!(o);
    }

    let h = &s.sched.host_migrations;
    let _ = writeln!(
        o,
        "\nMigrations, whole host ({} total, {}/s)",
        h.total(),
        rate(h.total(), s.window_seconds)
    );
    let _ = writeln!(
        o,
        "  {:>10} {:>10} {:>10} {:>10}",
        "same_core", "same_llc", "same_node", "other_node"
    );
    let _ = writeln!(
        o,
        "  {:>10} {:>10} {:>10} {:>10}",
        h.same_core, h.same_llc, h.same_node, h.other_node
    );
    let _ = writeln!(
        o,
        "  {} switch-ins after a move (what perf's cpu-migrations counts: a task moved twice before it runs counts once)",
        s.sched.host_migrated_switch_ins
    );

    let _ = writeln!(
        o,
        "\nWorkloads (cgroup; busiest first, the rest in `other`)"
    );
    let _ = writeln!(
        o,
        "  {:<40} {:>10} {:>8} {:>8} {:>8} {:>8} {:>8} {:>8} {:>8} {:>8} {:>9}",
        "workload",
        "switch-in",
        "same-cpu",
        "same-llc",
        "same-nod",
        "migr",
        "x-node",
        "rq-p50",
        "rq-p90",
        "rq-p99",
        "on-cpu"
    );
    if s.sched.workloads.is_empty() {
        let _ = writeln!(o, "  (no scheduler activity seen)");
    }
    for w in &s.sched.workloads {
        let p = &w.switch_ins;
        let total = p.total();
        let name = tail(&w.workload, 40);
        let r = &w.runqueue_latency;
        let _ = writeln!(
            o,
            "  {:<40} {:>10} {:>8} {:>8} {:>8} {:>8} {:>8} {:>8} {:>8} {:>8} {:>9}",
            name,
            total,
            pct(p.same_cpu, total),
            pct(p.same_llc, total),
            pct(p.same_node, total),
            w.migrations.total(),
            w.migrations.other_node,
            opt_seconds(r.p50_seconds),
            opt_seconds(r.p90_seconds),
            opt_seconds(r.p99_seconds),
            fmt_seconds(w.oncpu_seconds),
        );
    }
    let _ = writeln!(
        o,
        "  same-cpu/llc/nod: share of switch-ins on the CPU / another CPU of the LLC / of the node where the task last ran;\n  rq-pNN: run-queue latency percentiles (log2 histogram, exact to a factor of 2)."
    );

    render_delays(&mut o, s);
    render_locks(&mut o, s, stacks);
    render_user_locks(&mut o, s, stacks);
    render_dirty(&mut o, s);
    render_numa(&mut o, s);
    render_migration_readiness(&mut o, s);

    let drops: Vec<String> = s
        .map_drops
        .iter()
        .filter(|(_, n)| **n > 0)
        .map(|(m, n)| format!("{m}: {n}"))
        .collect();
    let _ = writeln!(
        o,
        "\nLost updates: {}",
        if drops.is_empty() {
            "none".into()
        } else {
            drops.join(", ")
        }
    );
    o
}

/// User-space lock waits, shaped like `pprof -top`: per workload, the
/// functions by flat wait (their own frame innermost among the
/// application's) and cumulative wait (anywhere on the stack).
fn render_user_locks(o: &mut String, s: &Snapshot, stacks: bool) {
    let u = &s.user_lock;
    let _ = writeln!(
        o,
        "\nUser-space lock waits (futex sleeps until the thread ran again; top workloads)"
    );
    if u.workloads.is_empty() {
        let _ = writeln!(o, "  (none seen)");
        return;
    }
    for w in u.workloads.iter().take(5) {
        let _ = writeln!(
            o,
            "  {}: {} in {} waits (p50 {}, p99 {})",
            w.workload,
            fmt_seconds(w.wait_seconds),
            w.contentions,
            opt_seconds(w.wait.p50_seconds),
            opt_seconds(w.wait.p99_seconds)
        );
        let rows: Vec<_> = u
            .stacks
            .iter()
            .filter(|r| r.workload == w.workload)
            .collect();
        let total: f64 = rows.iter().map(|r| r.wait_seconds).sum();
        let mut flat: BTreeMap<String, f64> = BTreeMap::new();
        let mut cum: BTreeMap<String, f64> = BTreeMap::new();
        for r in &rows {
            *flat.entry(r.function.clone()).or_default() += r.wait_seconds;
            let mut seen = std::collections::BTreeSet::new();
            for f in &r.frames {
                if seen.insert(f.name.clone()) {
                    *cum.entry(f.name.clone()).or_default() += r.wait_seconds;
                }
            }
        }
        let mut by_flat: Vec<(&String, &f64)> = flat.iter().collect();
        by_flat.sort_by(|a, b| b.1.total_cmp(a.1));
        let _ = writeln!(
            o,
            "    {:>10} {:>6} {:>10} {:>6}  function",
            "flat", "flat%", "cum", "cum%"
        );
        for (name, f) in by_flat.iter().take(10) {
            let c = cum.get(*name).copied().unwrap_or(0.0);
            let _ = writeln!(
                o,
                "    {:>10} {:>6} {:>10} {:>6}  {name}",
                fmt_seconds(**f),
                pct_f(**f, total),
                fmt_seconds(c),
                pct_f(c, total),
            );
        }
        if stacks {
            for r in rows.iter().take(5) {
                let _ = writeln!(
                    o,
                    "    {} in {} waits (max {}), pid {}{}:",
                    fmt_seconds(r.wait_seconds),
                    r.contentions,
                    fmt_seconds(r.max_wait_seconds),
                    r.pid,
                    if r.truncated { ", truncated" } else { "" }
                );
                for f in &r.frames {
                    let _ = writeln!(
                        o,
                        "      {:#018x} {} ({}){}",
                        f.address,
                        f.name,
                        f.module,
                        if f.recovered {
                            " [found on the stack]"
                        } else {
                            ""
                        }
                    );
                }
            }
        }
    }
    for t in &u.truncated {
        let _ = writeln!(o, "  note: {} ({} stacks)", t.hint, t.stacks);
    }
    let _ = writeln!(
        o,
        "  flat: waits whose innermost application frame is the function; cum: waits with the function anywhere on the stack."
    );
}

/// `part` as a percentage of `whole`.
fn pct_f(part: f64, whole: f64) -> String {
    if whole > 0.0 {
        format!("{:.1}%", 100.0 * part / whole)
    } else {
        "-".into()
    }
}

/// The `hostprobe readiness` answer.
pub fn render_readiness(r: &crate::snapshot::ReadinessReport) -> String {
    const MIB: f64 = 1024.0 * 1024.0;
    let mut o = String::new();
    let p = &r.forecast.prediction;
    let memory = match r.memory_method {
        crate::snapshot::MemoryMethod::Resident => "resident",
        crate::snapshot::MemoryMethod::GuestRamNonZero => "of non-zero guest RAM",
    };
    let pids = r.target.pids.iter().map(u32::to_string).collect::<Vec<_>>();
    let _ = writeln!(
        o,
        "{} {} (pid {}): {:.0} MiB {memory}; link {:.1} MiB/s, downtime limit {}",
        r.target.kind,
        r.target.name,
        pids.join(","),
        r.memory_bytes / MIB,
        r.link.bandwidth_bytes_per_second / MIB,
        fmt_seconds(r.link.downtime_limit_seconds)
    );
    let _ = writeln!(
        o,
        "dirtied ({}, {} samples over {:.0} MiB of writable memory; {} passes, {:.0} ms of CPU):",
        r.method.method,
        r.method.samples,
        r.method.sampled_bytes as f64 / MIB,
        r.cost.passes,
        r.cost.cpu_seconds * 1e3
    );
    for d in &r.dirty {
        let interval = match d.changed_samples {
            Some(n) => format!(
                "  {:.1}..{:.1} MiB, {n} changed samples in {} windows",
                d.dirty_bytes_low / MIB,
                d.dirty_bytes_high / MIB,
                d.windows
            ),
            None => String::new(),
        };
        let _ = writeln!(
            o,
            "  within {:>7}: {:>9.1} MiB  ({:.1} MiB/s){interval}",
            fmt_seconds(d.window_seconds),
            d.dirty_bytes / MIB,
            d.dirty_bytes / MIB / d.window_seconds
        );
    }
    let verdict = match (r.forecast.outlook, r.forecast.leans) {
        (Outlook::Converges, _) => "CONVERGES".to_string(),
        (Outlook::DoesNotConverge, _) => "DOES NOT CONVERGE".to_string(),
        (Outlook::Uncertain, Some(Outlook::Converges)) => "UNCERTAIN, leaning to converge".into(),
        (Outlook::Uncertain, _) => "UNCERTAIN, leaning not to converge".into(),
    };
    let _ = writeln!(
        o,
        "pre-copy {verdict} ({:?}; {} dirty-bitmap syncs)",
        p.verdict, p.syncs
    );
    if let Some(why) = &r.forecast.uncertain_because {
        let _ = writeln!(o, "  {why}");
    }
    let _ = writeln!(
        o,
        "  total time {} ({}..{} across the intervals), sent {:.0} MiB",
        fmt_seconds(p.total_seconds),
        fmt_seconds(r.forecast.optimistic.total_seconds),
        fmt_seconds(r.forecast.pessimistic.total_seconds),
        p.sent_bytes / MIB
    );
    if let Some(d) = p.downtime_seconds {
        let _ = writeln!(o, "  downtime up to {}", fmt_seconds(d));
    }
    match r.min_bandwidth_bytes_per_second {
        Some(b) => {
            let _ = writeln!(
                o,
                "  converges from {:.1} MiB/s for this downtime limit",
                b / MIB
            );
        }
        None => {
            let _ = writeln!(o, "  does not converge at any bandwidth up to 1 TB/s");
        }
    }
    o
}

/// The top problems first: workloads with a placement recommendation,
/// worst affinity first, each with its evidence and the command.
/// `name` cut to its last `width` characters (a cgroup path's end names it).
fn tail(name: &str, width: usize) -> String {
    if name.chars().count() <= width {
        return name.to_string();
    }
    let end: Vec<char> = name.chars().rev().take(width - 1).collect();
    format!("…{}", end.into_iter().rev().collect::<String>())
}

/// Preemptions and slices per workload, then who delayed whom.
fn render_delays(o: &mut String, s: &Snapshot) {
    let _ = writeln!(o, "\nPreemption and slices");
    let _ = writeln!(
        o,
        "  {:<40} {:>9} {:>10} {:>10} {:>7} {:>9} {:>9} {:>8}",
        "workload",
        "rq-wait",
        "preempted",
        "voluntary",
        "preempt",
        "slice-p50",
        "slice-p99",
        "co-sched"
    );
    for w in &s.sched.workloads {
        let outs = w.preemptions + w.voluntary_switches;
        let _ = writeln!(
            o,
            "  {:<40} {:>9} {:>10} {:>10} {:>7} {:>9} {:>9} {:>8}",
            tail(&w.workload, 40),
            fmt_seconds(w.runqueue_latency.sum_seconds),
            w.preemptions,
            w.voluntary_switches,
            pct(w.preemptions, outs),
            opt_seconds(w.slices.p50_seconds),
            opt_seconds(w.slices.p99_seconds),
            w.gang
                .coscheduled_ratio
                .map_or("-".to_string(), |r| format!("{:.0}%", 100.0 * r)),
        );
    }
    let _ = writeln!(
        o,
        "  rq-wait: total run-queue wait; preempted: switched out while runnable (nonvoluntary_ctxt_switches); preempt: their share;\n  co-sched: of the time two or more threads of a process were runnable and one ran, the share with all of them on CPUs (sampled)."
    );

    if !s.sched.vms.is_empty() {
        let _ = writeln!(o, "\n  VMs (their vCPU threads):");
        let _ = writeln!(
            o,
            "  {:<40} {:>9} {:>10} {:>8}",
            "vm", "vcpu-wait", "preempted", "co-sched"
        );
        for v in &s.sched.vms {
            let _ = writeln!(
                o,
                "  {:<40} {:>9} {:>10} {:>8}",
                tail(&v.vm, 40),
                fmt_seconds(v.vcpu_wait_seconds),
                v.vcpu_preemptions,
                v.gang
                    .coscheduled_ratio
                    .map_or("-".to_string(), |r| format!("{:.0}%", 100.0 * r)),
            );
        }
        let _ = writeln!(
            o,
            "  vcpu-wait: the vCPU threads' run-queue wait (steal, as a KVM guest sees it), since they started."
        );
    }

    let n = &s.sched.neighbours;
    let _ = writeln!(
        o,
        "\nWho delays whom (run-queue wait charged to what held the CPU meanwhile)"
    );
    if n.pairs.is_empty() {
        let _ = writeln!(o, "  (no waits charged)");
        return;
    }
    let _ = writeln!(
        o,
        "  {:<36} {:<36} {:>9} {:>8} {:>9}",
        "workload (waiting)", "neighbour (running)", "wait", "share", "waits"
    );
    for p in n.pairs.iter().take(NEIGHBOUR_ROWS) {
        let _ = writeln!(
            o,
            "  {:<36} {:<36} {:>9} {:>8} {:>9}",
            tail(&p.workload, 36),
            tail(&p.neighbour, 36),
            fmt_seconds(p.wait_seconds),
            p.share_of_wait
                .map_or("-".to_string(), |x| format!("{:.0}%", x * 100.0)),
            p.waits,
        );
    }
    let a = &s.sched.neighbour_attribution;
    let all = a.direct_seconds + a.moved_seconds + a.unknown_seconds;
    if all > 0.0 {
        let _ = writeln!(
            o,
            "  share: of the workload's charged wait. Charged from the CPU's own history: {:.1}%; after the task moved while waiting (approximate): {:.1}%; older than the per-CPU history, (unknown): {:.1}%.",
            100.0 * a.direct_seconds / all,
            100.0 * a.moved_seconds / all,
            100.0 * a.unknown_seconds / all
        );
    }
}

fn render_summary(o: &mut String, s: &Snapshot) {
    let problems: Vec<_> = s
        .affinity
        .iter()
        .filter_map(|a| a.recommendation.as_ref().map(|r| (a, r)))
        .take(3)
        .collect();
    let _ = writeln!(o, "\nSummary");
    if problems.is_empty() {
        let _ = writeln!(
            o,
            "  no placement problem with enough evidence ({} workloads scored; lowest affinity {})",
            s.affinity.len(),
            s.affinity
                .first()
                .map_or("-".into(), |a| format!("{:.2} for {}", a.score, a.workload))
        );
    }
    for (i, (a, r)) in problems.iter().enumerate() {
        let _ = writeln!(o, "  {}. affinity {:.2}: {}", i + 1, a.score, r.text);
        let _ = writeln!(o, "     {}", r.command);
    }
    for rs in s
        .readiness
        .targets
        .iter()
        .filter(|t| t.forecast.outlook != Outlook::Converges)
    {
        let _ = writeln!(
            o,
            "  - {} {} live-migrate at {:.0} MiB/s within {} (see Live-migration readiness)",
            rs.target.workload(),
            if rs.forecast.outlook == Outlook::Uncertain {
                "may not"
            } else {
                "would not"
            },
            rs.link.bandwidth_bytes_per_second / (1024.0 * 1024.0),
            fmt_seconds(rs.link.downtime_limit_seconds)
        );
    }
}

/// Where each top workload runs and where its memory is.
fn render_numa(o: &mut String, s: &Snapshot) {
    const MIB: f64 = 1024.0 * 1024.0;
    let n = &s.numa;
    if n.nodes <= 1 {
        let _ = writeln!(o, "\nNUMA: one node: nothing is remote on this host.");
        return;
    }
    let _ = writeln!(o, "\nNUMA ({} nodes)", n.nodes);
    let _ = writeln!(
        o,
        "  {:<32} {:>16} {:>16} {:>10} {:>10} {:>14}",
        "workload", "cpu s by node", "MiB by node", "remote al", "est remote", "balancing m/s/s"
    );
    let join = |v: Vec<String>| {
        if v.is_empty() {
            "-".into()
        } else {
            v.join("/")
        }
    };
    let ratio = |r: Option<f64>| r.map_or("-".into(), |r| format!("{:.1}%", 100.0 * r));
    for w in n.workloads.iter().take(10) {
        let b = &w.balancing;
        let _ = writeln!(
            o,
            "  {:<32} {:>16} {:>16} {:>10} {:>10} {:>14}",
            w.workload,
            join(
                w.oncpu_seconds_by_node
                    .iter()
                    .map(|c| format!("{c:.1}"))
                    .collect()
            ),
            join(
                w.resident_bytes_by_node
                    .iter()
                    .map(|b| format!("{:.0}", *b as f64 / MIB))
                    .collect()
            ),
            ratio(w.remote_allocation_ratio),
            ratio(w.estimated_remote_access_ratio),
            format!("{}/{}/{}", b.move_numa, b.swap_numa, b.stick_numa),
        );
    }
    let migrated: Vec<String> = n
        .pages_migrated
        .iter()
        .map(|(r, p)| format!("{r} {p}"))
        .collect();
    let _ = writeln!(o, "  pages migrated: {}", join(migrated));
    let _ = writeln!(
        o,
        "  remote al: share of page allocations on another node than the CPU's; est remote: sum over nodes of\n  on-CPU share x share of memory elsewhere (an estimate); balancing: NUMA moves/swaps/failed moves."
    );
}

/// Who dirties memory and files, and who is throttled for it.
fn render_dirty(o: &mut String, s: &Snapshot) {
    const MIB: f64 = 1024.0 * 1024.0;
    let d = &s.dirty;
    let _ = writeln!(o, "\nPage dirtying");
    if d.workloads.is_empty() {
        let _ = writeln!(
            o,
            "  none seen (or the dirty probes are disabled: see Probes)"
        );
        return;
    }
    let _ = writeln!(
        o,
        "  {:<40} {:>11} {:>11} {:>12} {:>12}",
        "workload", "file MiB/s", "new pg/s", "cow pg/s", "throttled"
    );
    let secs = s.window_seconds.max(1e-9);
    for w in d.workloads.iter().take(10) {
        let _ = writeln!(
            o,
            "  {:<40} {:>11.2} {:>11.0} {:>12.0} {:>12}",
            w.workload,
            w.file_dirtied_bytes as f64 / MIB / secs,
            w.write_faults_new as f64 / secs,
            w.write_faults_present as f64 / secs,
            if w.throttle_pauses == 0 {
                "-".into()
            } else {
                opt_seconds(w.throttle_seconds)
            }
        );
    }
    let devices: Vec<String> = d
        .devices
        .iter()
        .map(|x| format!("{} {:.1} MiB", x.device, x.file_dirtied_bytes as f64 / MIB))
        .collect();
    let _ = writeln!(
        o,
        "  file pages dirtied by device: {}",
        if devices.is_empty() {
            "none".into()
        } else {
            devices.join(", ")
        }
    );
    let _ = writeln!(
        o,
        "  new pg/s: write faults on unmapped pages (new memory); cow pg/s: on mapped write-protected pages."
    );
}

/// One line per assessed VM or target, most at risk first.
fn render_migration_readiness(o: &mut String, s: &Snapshot) {
    const MIB: f64 = 1024.0 * 1024.0;
    let r = &s.readiness;
    let Some(link) = &r.link else {
        return;
    };
    let _ = writeln!(
        o,
        "\nLive-migration readiness (pre-copy at {:.1} MiB/s, downtime limit {}; content-sampling estimate)",
        link.bandwidth_bytes_per_second / MIB,
        fmt_seconds(link.downtime_limit_seconds)
    );
    if r.targets.is_empty() {
        let _ = writeln!(
            o,
            "  no targets: no QEMU VM is running and none was named (--readiness-pid, --readiness-cgroup){}",
            if r.errors > 0 {
                format!("; {} assessments failed", r.errors)
            } else {
                String::new()
            }
        );
        return;
    }
    let mut targets: Vec<_> = r.targets.iter().collect();
    // Not converging first, then the longest.
    targets.sort_by(|a, b| {
        (
            a.forecast.prediction.converges,
            -a.forecast.prediction.total_seconds,
        )
            .partial_cmp(&(
                b.forecast.prediction.converges,
                -b.forecast.prediction.total_seconds,
            ))
            .unwrap_or(std::cmp::Ordering::Equal)
    });
    let _ = writeln!(
        o,
        "  {:<28} {:>9} {:>11} {:>9} {:>9} {:>9} {:>12}",
        "workload", "memory", "dirty/s", "converges", "time", "downtime", "min link"
    );
    for t in targets {
        let p = &t.forecast.prediction;
        let fastest = t
            .dirty
            .iter()
            .map(|d| d.dirty_bytes / d.window_seconds)
            .fold(0.0, f64::max);
        let _ = writeln!(
            o,
            "  {:<28} {:>6.0}MiB {:>6.1}MiB/s {:>9} {:>9} {:>9} {:>12}",
            t.target.workload(),
            t.memory_bytes / MIB,
            fastest / MIB,
            match t.forecast.outlook {
                Outlook::Converges => "yes",
                Outlook::DoesNotConverge => "NO",
                Outlook::Uncertain if p.converges => "likely",
                Outlook::Uncertain => "unlikely",
            },
            fmt_seconds(p.total_seconds),
            opt_seconds(p.downtime_seconds),
            t.min_bandwidth_bytes_per_second
                .map_or("none".into(), |b| format!("{:.1}MiB/s", b / MIB))
        );
    }
    let _ = writeln!(
        o,
        "  dirty/s: fastest d(w)/w over the measured windows; `hostprobe readiness --vm NAME` shows the evidence."
    );
}

/// Rows of the lock report shown (the snapshot keeps more).
const LOCK_ROWS: usize = 10;
/// (workload, neighbour) rows of "who delays whom".
const NEIGHBOUR_ROWS: usize = 15;

fn render_locks(o: &mut String, s: &Snapshot, stacks: bool) {
    let l = &s.lock;
    let _ = writeln!(
        o,
        "\nLock contention (kernel locks; like `perf lock contention`)"
    );
    match s.probes.iter().find(|p| p.probe == "contention_begin") {
        Some(p) if !p.attached => {
            let _ = writeln!(
                o,
                "  (not measured: {})",
                p.reason.as_deref().unwrap_or("the probe is disabled")
            );
            return;
        }
        Some(p) if p.attach_type == "fentry" => {
            let _ = writeln!(
                o,
                "  (this kernel has no lock:contention_* tracepoints (5.19+): sleeping locks only, mutexes and rwsems, from their slow paths)"
            );
        }
        _ => {}
    }
    if l.callers.is_empty() {
        let _ = writeln!(o, "  (no contended kernel locks seen)");
        return;
    }
    let _ = writeln!(
        o,
        "  {:>10} {:>12} {:>12} {:>12} {:>12}   caller",
        "contended", "total wait", "max wait", "avg wait", "type"
    );
    for c in l.callers.iter().take(LOCK_ROWS) {
        let _ = writeln!(
            o,
            "  {:>10} {:>12} {:>12} {:>12} {:>12}   {}",
            c.contentions,
            fmt_seconds(c.wait_seconds),
            fmt_seconds(c.max_wait_seconds),
            fmt_seconds(c.avg_wait_seconds),
            c.lock_type,
            c.caller
        );
        if stacks {
            for frame in &c.stack {
                let _ = writeln!(o, "  {:>62}   {frame}", "");
            }
        }
    }
    if l.spin_waits_without_stack > 0 {
        let _ = writeln!(
            o,
            "  ({} spinning waits were counted without a stack: the per-CPU budget --lock-stacks was spent)",
            l.spin_waits_without_stack
        );
    }
    let _ = writeln!(o, "\n  by type:");
    for t in &l.by_type {
        let _ = writeln!(
            o,
            "  {:>10} {:>12} {:>12} {:>12} {:>12}   (p99 {})",
            t.contentions,
            fmt_seconds(t.wait_seconds),
            fmt_seconds(t.max_wait_seconds),
            fmt_seconds(t.wait_seconds / t.contentions.max(1) as f64),
            t.lock_type,
            opt_seconds(t.wait.p99_seconds)
        );
    }
    let _ = writeln!(o, "\n  most waited-on locks:");
    for k in l.locks.iter().take(5) {
        let _ = writeln!(
            o,
            "  {:>10} {:>12} {:>12} {:>25} {:>12}   {}",
            k.contentions,
            fmt_seconds(k.wait_seconds),
            fmt_seconds(k.max_wait_seconds),
            k.lock,
            k.lock_type,
            k.address
        );
    }
    let _ = writeln!(o, "\n  by workload (cgroup of the waiter):");
    for w in &l.workloads {
        let _ = writeln!(
            o,
            "  {:>10} {:>12}   {}",
            w.contentions,
            fmt_seconds(w.wait_seconds),
            w.name
        );
    }
    if l.owners.is_empty() {
        return;
    }
    let _ = writeln!(
        o,
        "\n  by owner (mutexes, rwsems held for writing; what the owner did when the wait began):"
    );
    for w in &l.owners {
        let _ = writeln!(
            o,
            "  {:>10} {:>12}   waiters in {} behind an owner in {} that was {}",
            w.contentions,
            fmt_seconds(w.wait_seconds),
            w.workload,
            w.owner,
            w.owner_state
        );
    }
    let preempted = l
        .owners
        .iter()
        .filter(|w| w.owner_state == "preempted" && w.workload != OTHER)
        .max_by(|a, b| a.wait_seconds.total_cmp(&b.wait_seconds));
    if let Some(w) = preempted {
        let _ = writeln!(
            o,
            "  lock-holder preemption: waiters in {} waited {} behind a preempted owner in {} ({} waits): the owner was runnable but had no CPU",
            w.workload,
            fmt_seconds(w.wait_seconds),
            w.owner,
            w.contentions
        );
    }
}

fn rate(n: u64, secs: f64) -> String {
    if secs > 0.0 {
        format!("{:.1}", n as f64 / secs)
    } else {
        "-".into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::snapshot::sample::sample as sample_snapshot;

    #[test]
    fn formats_seconds_with_units() {
        assert_eq!(fmt_seconds(0.000_000_5), "500ns");
        assert_eq!(fmt_seconds(0.000_003_14), "3.1us");
        assert_eq!(fmt_seconds(0.25), "250ms");
        assert_eq!(fmt_seconds(2.0), "2.0s");
    }

    #[test]
    fn report_has_every_section() {
        let text = render(&sample_snapshot(), true);
        for needle in [
            "Probes",
            "sched_migrate_task",
            "DISABLED",
            "no such tracepoint",
            "Migrations, whole host",
            "/db.service",
            "other",
            "Lost updates: TASK_SLOTS: 2",
            "6 switch-ins after a move",
            "Lock contention",
            "do_mmap+0x10",
            "rwsem:W",
            "tasklist_lock",
            "_raw_spin_lock",
            "Live-migration readiness (pre-copy at 64.0 MiB/s",
            "vm:web1",
            "Page dirtying",
            "NUMA (2 nodes)",
            "Summary",
            "1. affinity 0.50: keep /db.service on CPU 1",
            "systemctl set-property db.service AllowedCPUs=1",
            "1.5/0.0",
            "pages migrated: numa_misplaced 7",
            "/dev/vda 0.0 MiB",
        ] {
            assert!(text.contains(needle), "missing {needle:?} in\n{text}");
        }
    }
}
