//! Scheduler affinity per workload: a score in 0..1 and at most one
//! recommendation with the numbers behind it. Pure code over plain data.
//!
//! The score is a product of three shares, each 1 when the workload is
//! treated well, so that any one bad factor pulls it down:
//! - the share of switch-ins on the CPU the task last ran on (a run that
//!   starts warm in L1/L2; moving within the LLC still loses those);
//! - 1 - remote memory share: the estimated remote-access share when known,
//!   else the remote allocation share, else 0 (one node);
//! - 1 - lock wait share: lock wait time / (on-CPU + lock wait), the part of
//!   its time spent waiting for others.
//!
//! A recommendation needs evidence (enough switch-ins) and a clear fix, and
//! never points at CPUs that are already busy. In order: memory on one
//! node and runs elsewhere (run it on that node); delayed mostly by one
//! neighbour (separate the two, each on its own CPUs); runs rarely start
//! on the CPU of the last (keep it on a few CPUs of one LLC).

use serde::Serialize;

/// Below this many switch-ins the shares say nothing.
pub const MIN_SWITCH_INS: u64 = 200;
/// CPUs busier than this are never recommended.
pub const BUSY: f64 = 0.8;
/// Nor CPUs where tasks already wait longer than this for their turn (p99
/// run-queue latency) while the CPU is at least `QUEUED_BUSY` busy: busy
/// share alone misses bursts, but on a mostly idle CPU a long p99 is
/// wake-up latency (idle states, a virtual CPU waiting for its host), not
/// a queue.
pub const QUEUED_SECONDS: f64 = 0.005;
pub const QUEUED_BUSY: f64 = 0.5;
/// A workload is delayed by its neighbours when it waits in run queues for
/// at least this share of the window (summed over its tasks)...
pub const NOISY_DELAY: f64 = 0.05;
/// ...and one neighbour held the CPU for at least this share of that wait.
pub const NOISY_SHARE: f64 = 0.5;

/// The workload that delayed another most: its cgroup and the run-queue
/// wait charged to it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Neighbour {
    pub workload: String,
    pub wait_seconds: f64,
}

/// What the model sees of one workload.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Input {
    pub workload: String,
    /// Switch-ins: same CPU, same LLC (other CPU), same node, other node.
    pub switch_ins: [u64; 4],
    /// Migrations crossing nodes, and all migrations.
    pub cross_node_migrations: u64,
    pub migrations: u64,
    pub oncpu_seconds: f64,
    pub lock_wait_seconds: f64,
    pub remote_access: Option<f64>,
    pub remote_allocations: Option<f64>,
    /// Resident bytes by node (empty if unknown).
    pub resident_by_node: Vec<u64>,
    /// Run-queue wait of its tasks, and of it what was charged to what
    /// held the CPU, with the neighbour charged most (another workload).
    pub runq_wait_seconds: f64,
    pub charged_wait_seconds: f64,
    pub top_neighbour: Option<Neighbour>,
    /// Seconds covered by the counters.
    pub window_seconds: f64,
}

/// The host: CPUs of each node and of each LLC, and how busy each CPU is.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Host {
    pub node_cpus: Vec<Vec<u32>>,
    pub llc_cpus: Vec<Vec<u32>>,
    /// Busy share of each CPU over the window (index = CPU).
    pub cpu_busy: Vec<f64>,
    /// p99 run-queue latency of each CPU over the window, if measured.
    pub cpu_runq_p99: Vec<Option<f64>>,
    /// Where the cgroup v2 hierarchy is mounted (`/sys/fs/cgroup`, or
    /// `/sys/fs/cgroup/unified` on hybrid hosts).
    pub cgroup_root: String,
    /// Whether that hierarchy offers the cpuset controller (on hybrid hosts
    /// cpuset usually stays in cgroup v1).
    pub cgroup_cpuset: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Affinity {
    pub workload: String,
    pub score: f64,
    /// Share of switch-ins keeping the cache of this level or closer:
    /// `cpu`, `llc`, `node`.
    pub cache_cpu: f64,
    pub cache_llc: f64,
    pub cache_node: f64,
    pub recommendation: Option<Recommendation>,
    /// Why there is no recommendation.
    pub no_recommendation: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Recommendation {
    pub cpus: Vec<u32>,
    /// One sentence with the evidence.
    pub text: String,
    /// The command that applies it.
    pub command: String,
}

fn share(part: u64, total: u64) -> f64 {
    if total == 0 {
        0.0
    } else {
        part as f64 / total as f64
    }
}

/// `0-3,8` style list.
pub fn cpu_list(cpus: &[u32]) -> String {
    let mut out: Vec<String> = Vec::new();
    let mut i = 0;
    while i < cpus.len() {
        let mut j = i;
        while j + 1 < cpus.len() && cpus[j + 1] == cpus[j] + 1 {
            j += 1;
        }
        out.push(if i == j {
            cpus[i].to_string()
        } else {
            format!("{}-{}", cpus[i], cpus[j])
        });
        i = j + 1;
    }
    out.join(",")
}

/// How to restrict a workload to `cpus`. With cgroup v2's cpuset: systemd
/// units by property, other cgroups by their cpuset. Without it (hybrid
/// hosts, where systemd's `AllowedCPUs` does nothing either): the affinity
/// of the cgroup's processes, which their children inherit. Names come from
/// cgroup directories, which may hold anything but `/` and NUL: quoted for
/// the shell where needed, so the command is safe to paste.
pub fn command(workload: &str, cpus: &[u32], host: &Host) -> String {
    let list = cpu_list(cpus);
    let unit = workload.rsplit('/').next().unwrap_or(workload);
    let dir = format!("{}{workload}", host.cgroup_root.trim_end_matches('/'));
    if !host.cgroup_cpuset {
        let procs = shell_quote(&format!("{dir}/cgroup.procs"));
        format!("for p in $(cat {procs}); do taskset -a -p -c {list} \"$p\"; done")
    } else if [".service", ".scope", ".slice"]
        .iter()
        .any(|s| unit.ends_with(s))
    {
        format!(
            "systemctl set-property {} AllowedCPUs={list}",
            shell_quote(unit)
        )
    } else {
        let file = format!("{dir}/cpuset.cpus");
        format!("echo {list} > {}", shell_quote(&file))
    }
}

/// `s` as one shell word: as it is when it has nothing the shell would
/// read, else in single quotes.
pub fn shell_quote(s: &str) -> String {
    let plain = |c: char| c.is_ascii_alphanumeric() || "_-./:@%+=,".contains(c);
    if !s.is_empty() && s.chars().all(plain) {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', "'\\''"))
    }
}

pub fn evaluate(w: &Input, host: &Host) -> Affinity {
    let total: u64 = w.switch_ins.iter().sum();
    let cache_cpu = share(w.switch_ins[0], total);
    let cache_llc = share(w.switch_ins[0] + w.switch_ins[1], total);
    let cache_node = share(w.switch_ins[0] + w.switch_ins[1] + w.switch_ins[2], total);
    let remote = w.remote_access.or(w.remote_allocations).unwrap_or(0.0);
    let busy_time = w.oncpu_seconds + w.lock_wait_seconds;
    let lock_share = if busy_time > 0.0 {
        w.lock_wait_seconds / busy_time
    } else {
        0.0
    };
    let score = cache_cpu * (1.0 - remote) * (1.0 - lock_share);
    let (recommendation, no_recommendation) = match recommend(w, host, total, cache_cpu) {
        Ok(r) => (Some(r), None),
        Err(why) => (None, Some(why)),
    };
    Affinity {
        workload: w.workload.clone(),
        score,
        cache_cpu,
        cache_llc,
        cache_node,
        recommendation,
        no_recommendation,
    }
}

fn pct(x: f64) -> String {
    format!("{:.0}%", 100.0 * x)
}

fn recommend(w: &Input, host: &Host, total: u64, cache_cpu: f64) -> Result<Recommendation, String> {
    if !w.workload.starts_with('/') || w.workload == "/" {
        return Err("not a single cgroup".into());
    }
    if total < MIN_SWITCH_INS {
        return Err(format!(
            "not enough evidence: {total} switch-ins (needs {MIN_SWITCH_INS})"
        ));
    }
    let busy = |c: &u32| host.cpu_busy.get(*c as usize).copied().unwrap_or(0.0);
    let queued = |c: &u32| {
        host.cpu_runq_p99
            .get(*c as usize)
            .copied()
            .flatten()
            .unwrap_or(0.0)
    };
    let saturated =
        |c: &u32| busy(c) >= BUSY || (busy(c) >= QUEUED_BUSY && queued(c) >= QUEUED_SECONDS);
    let idle_enough = |cpus: &[u32]| !cpus.iter().any(saturated);
    // CPUs the workload keeps busy: as many as it used on average, plus one.
    let needed = ((w.oncpu_seconds / w.window_seconds.max(1e-9)).ceil() as usize).max(1);

    // Two or more nodes: memory mostly on one node and the scheduler keeps
    // taking it elsewhere.
    let mem: u64 = w.resident_by_node.iter().sum();
    if host.node_cpus.len() > 1 && mem > 0 {
        let (node, &on_node) = w
            .resident_by_node
            .iter()
            .enumerate()
            .max_by_key(|(_, b)| **b)
            .expect("non-empty");
        let mem_share = share(on_node, mem);
        let cross = share(w.cross_node_migrations, w.migrations);
        let remote = w.remote_access.unwrap_or(0.0);
        if mem_share >= 0.6 && (cross >= 0.2 || remote >= 0.3) {
            let cpus = host.node_cpus.get(node).cloned().unwrap_or_default();
            if cpus.is_empty() || !idle_enough(&cpus) {
                return Err(format!(
                    "{} of its memory is on node {node}, whose CPUs are saturated (>= {} busy, or >= 50% with p99 run-queue latency >= 5ms)",
                    pct(mem_share),
                    pct(BUSY)
                ));
            }
            return Ok(Recommendation {
                text: format!(
                    "run {} on node {node}'s CPUs ({}): {} of its memory is there, {} of its migrations cross nodes, estimated remote access {}",
                    w.workload,
                    cpu_list(&cpus),
                    pct(mem_share),
                    pct(cross),
                    pct(remote)
                ),
                command: command(&w.workload, &cpus, host),
                cpus,
            });
        }
    }

    // Delayed mostly by one neighbour: each gets CPUs of its own, the
    // victim the least busy.
    if let Some(n) = &w.top_neighbour {
        let delayed = w.runq_wait_seconds / w.window_seconds.max(1e-9);
        let by_it = n.wait_seconds / w.charged_wait_seconds.max(1e-9);
        if delayed >= NOISY_DELAY && by_it >= NOISY_SHARE {
            let mut all: Vec<u32> = host.llc_cpus.iter().flatten().copied().collect();
            all.sort_by(|a, b| busy(a).total_cmp(&busy(b)).then(a.cmp(b)));
            let mut mine: Vec<u32> = all.iter().take(needed).copied().collect();
            let mut theirs: Vec<u32> = all.iter().skip(needed).copied().collect();
            if theirs.is_empty() {
                return Err(format!(
                    "{} of its run-queue wait is behind {}, but {needed} CPUs for it leave none for the other",
                    pct(by_it),
                    n.workload
                ));
            }
            mine.sort_unstable();
            theirs.sort_unstable();
            let load = mine.iter().map(busy).sum::<f64>() / mine.len() as f64;
            return Ok(Recommendation {
                text: format!(
                    "separate {} from {}: its tasks waited for a CPU {} of the time, {} of that behind {} ({:.2} s); give {} CPU {} ({} busy) and {} CPU {}",
                    w.workload,
                    n.workload,
                    pct(delayed),
                    pct(by_it),
                    n.workload,
                    n.wait_seconds,
                    w.workload,
                    cpu_list(&mine),
                    pct(load),
                    n.workload,
                    cpu_list(&theirs),
                ),
                command: format!(
                    "{} && {}",
                    command(&w.workload, &mine, host),
                    command(&n.workload, &theirs, host)
                ),
                cpus: mine,
            });
        }
    }

    // The same CPU is rarely kept: give it the least busy CPUs of one LLC.
    let per_switch = w.migrations as f64 / total as f64;
    if cache_cpu >= 0.7 && per_switch < 0.15 {
        return Err(format!(
            "placement is fine: {} of switch-ins on the same CPU, {:.2} migrations per switch-in",
            pct(cache_cpu),
            per_switch
        ));
    }
    let mut best: Option<(f64, Vec<u32>)> = None;
    for llc in &host.llc_cpus {
        let mut cpus = llc.clone();
        cpus.sort_by(|a, b| busy(a).total_cmp(&busy(b)).then(a.cmp(b)));
        cpus.truncate(needed);
        cpus.sort_unstable();
        if cpus.len() < needed || !idle_enough(&cpus) {
            continue;
        }
        let load = cpus.iter().map(busy).sum::<f64>() / cpus.len() as f64;
        if best.as_ref().is_none_or(|(b, _)| load < *b) {
            best = Some((load, cpus));
        }
    }
    let Some((load, cpus)) = best else {
        return Err(format!(
            "{} of switch-ins change CPU, but no {needed} CPUs of one LLC are below {} busy (and, above 50%, with p99 run-queue latency under 5ms)",
            pct(1.0 - cache_cpu),
            pct(BUSY)
        ));
    };
    Ok(Recommendation {
        text: format!(
            "keep {} on CPU {}: {} of its switch-ins land on another CPU than last time, {:.2} migrations per switch-in; {} {} busy",
            w.workload,
            cpu_list(&cpus),
            pct(1.0 - cache_cpu),
            per_switch,
            if cpus.len() == 1 { "that CPU is" } else { "those CPUs are" },
            pct(load)
        ),
        command: command(&w.workload, &cpus, host),
        cpus,
    })
}

/// Busy share of each CPU between two readings of per-CPU (busy, total)
/// jiffies.
pub fn busy_between(before: &[(u64, u64)], after: &[(u64, u64)]) -> Vec<f64> {
    after
        .iter()
        .enumerate()
        .map(|(i, &(b1, t1))| {
            let (b0, t0) = before.get(i).copied().unwrap_or((0, 0));
            let dt = t1.saturating_sub(t0);
            if dt == 0 {
                0.0
            } else {
                b1.saturating_sub(b0) as f64 / dt as f64
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one_node_host(busy: &[f64]) -> Host {
        let cpus: Vec<u32> = (0..busy.len() as u32).collect();
        Host {
            node_cpus: vec![cpus.clone()],
            llc_cpus: vec![cpus],
            cpu_busy: busy.to_vec(),
            cpu_runq_p99: Vec::new(),
            cgroup_root: "/sys/fs/cgroup".into(),
            cgroup_cpuset: true,
        }
    }

    fn input(name: &str, switch_ins: [u64; 4], migrations: u64) -> Input {
        Input {
            workload: name.into(),
            switch_ins,
            migrations,
            oncpu_seconds: 4.0,
            window_seconds: 10.0,
            ..Input::default()
        }
    }

    /// (input, score range, recommended CPUs or the start of the reason)
    type Row = (Input, (f64, f64), Result<&'static [u32], &'static str>);

    fn delayed(name: &str, wait: f64, by_top: f64) -> Input {
        Input {
            runq_wait_seconds: wait,
            charged_wait_seconds: wait,
            top_neighbour: Some(Neighbour {
                workload: "/batch.slice".into(),
                wait_seconds: by_top,
            }),
            ..input(name, [1000, 0, 0, 0], 0)
        }
    }

    #[test]
    fn a_workload_delayed_mostly_by_one_neighbour_is_separated_from_it() {
        let host = one_node_host(&[0.95, 0.3, 0.2, 0.6]);
        // (input, victim's CPUs or the start of the reason)
        let table: [(Input, Result<&[u32], &str>); 4] = [
            // Waits 20% of the window, 80% of it behind one neighbour: it
            // gets the least busy CPU (it keeps one busy), the rest go to
            // the neighbour.
            (delayed("/db.service", 2.0, 1.6), Ok(&[2])),
            // The same wait spread over several neighbours: not one to
            // move; its placement is fine.
            (delayed("/db.service", 2.0, 0.6), Err("placement is fine")),
            // Rarely delayed at all.
            (delayed("/db.service", 0.2, 0.2), Err("placement is fine")),
            // Four CPUs busy: none left for the neighbour.
            (
                Input {
                    oncpu_seconds: 35.0,
                    ..delayed("/db.service", 2.0, 1.6)
                },
                Err("80% of its run-queue wait is behind /batch.slice, but 4 CPUs"),
            ),
        ];
        for (w, want) in table {
            let a = evaluate(&w, &host);
            match (want, &a.recommendation) {
                (Ok(cpus), Some(r)) => {
                    assert_eq!(r.cpus, cpus, "{a:?}");
                    assert!(r.text.starts_with("separate /db.service from /batch.slice: its tasks waited for a CPU 20% of the time, 80% of that behind /batch.slice (1.60 s)"), "{}", r.text);
                    assert_eq!(
                        r.command,
                        "systemctl set-property db.service AllowedCPUs=2 && systemctl set-property batch.slice AllowedCPUs=0-1,3"
                    );
                }
                (Err(why), None) => assert!(
                    a.no_recommendation
                        .as_deref()
                        .unwrap_or("")
                        .starts_with(why),
                    "{a:?}"
                ),
                (want, got) => panic!("{}: wanted {want:?}, got {got:?}", w.workload),
            }
        }
    }

    #[test]
    fn scores_and_recommendations_on_one_node() {
        let host = one_node_host(&[0.9, 0.1]);
        let table: [Row; 5] = [
            // Pinned: every switch-in on the same CPU.
            (
                input("/pinned.service", [1000, 0, 0, 0], 0),
                (0.99, 1.0),
                Err("placement is fine"),
            ),
            // A quarter of its runs start on another CPU: worth fixing;
            // CPU 0 is saturated, so CPU 1.
            (
                input("/bouncy", [750, 250, 0, 0], 250),
                (0.74, 0.76),
                Ok(&[1]),
            ),
            // Bouncing more, and lock-bound (half its busy time waiting).
            (
                Input {
                    lock_wait_seconds: 4.0,
                    ..input("/bouncy-locks", [400, 600, 0, 0], 600)
                },
                (0.19, 0.21),
                Ok(&[1]),
            ),
            (
                input("/quiet", [10, 50, 0, 0], 40),
                (0.0, 1.0),
                Err("not enough evidence"),
            ),
            (
                input("other", [10, 5000, 0, 0], 4000),
                (0.0, 1.0),
                Err("not a single cgroup"),
            ),
        ];
        for (w, (lo, hi), want) in table {
            let a = evaluate(&w, &host);
            assert!(
                (lo..=hi).contains(&a.score),
                "{}: score {}",
                w.workload,
                a.score
            );
            match want {
                Ok(cpus) => {
                    let r = a
                        .recommendation
                        .unwrap_or_else(|| panic!("{}: {:?}", w.workload, a.no_recommendation));
                    assert_eq!(r.cpus, cpus, "{}", w.workload);
                }
                Err(why) => {
                    assert!(a.recommendation.is_none(), "{}", w.workload);
                    let got = a.no_recommendation.unwrap();
                    assert!(got.starts_with(why), "{}: {got}", w.workload);
                }
            }
        }
    }

    #[test]
    fn never_recommends_saturated_cpus() {
        let a = evaluate(
            &input("/bouncy", [100, 900, 0, 0], 800),
            &one_node_host(&[0.95, 0.85]),
        );
        assert!(a.recommendation.is_none());
        assert!(a.no_recommendation.unwrap().contains("below 80% busy"));
    }

    #[test]
    fn never_recommends_cpus_with_long_run_queues() {
        let host = Host {
            cpu_runq_p99: vec![None, Some(0.020)],
            ..one_node_host(&[0.9, 0.6])
        };
        // CPU 1 is below 80% busy, but tasks there wait 20 ms at p99.
        let a = evaluate(&input("/bouncy", [100, 900, 0, 0], 800), &host);
        assert!(a.recommendation.is_none());
        assert!(a.no_recommendation.unwrap().contains("run-queue latency"));
        // On a mostly idle CPU a long p99 is wake-up latency, not a queue.
        let idle = Host {
            cpu_runq_p99: vec![None, Some(0.020)],
            ..one_node_host(&[0.9, 0.05])
        };
        let a = evaluate(&input("/bouncy", [100, 900, 0, 0], 800), &idle);
        assert_eq!(
            a.recommendation.map(|r| r.cpus),
            Some(vec![1]),
            "{:?}",
            a.no_recommendation
        );
    }

    #[test]
    fn a_misplaced_task_is_sent_to_its_memory() {
        let host = Host {
            node_cpus: vec![vec![0, 1], vec![2, 3]],
            llc_cpus: vec![vec![0, 1], vec![2, 3]],
            cpu_busy: vec![0.5, 0.5, 0.1, 0.1],
            cpu_runq_p99: vec![Some(0.000_050); 4],
            cgroup_root: "/sys/fs/cgroup".into(),
            cgroup_cpuset: true,
        };
        let w = Input {
            cross_node_migrations: 40,
            remote_access: Some(0.95),
            remote_allocations: Some(0.99),
            resident_by_node: vec![5 << 20, 123 << 20],
            ..input("/system.slice/db.service", [500, 100, 0, 0], 100)
        };
        let a = evaluate(&w, &host);
        let r = a.recommendation.expect("move to node 1");
        assert_eq!(r.cpus, vec![2, 3]);
        assert_eq!(
            r.command,
            "systemctl set-property db.service AllowedCPUs=2-3"
        );
        assert!(r.text.contains("96% of its memory is there"), "{}", r.text);
        // 83% warm starts x 5% local accesses.
        assert!(a.score < 0.05, "{}", a.score);
        // The same with node 1 saturated: no recommendation, and why.
        let busy = Host {
            cpu_busy: vec![0.1, 0.1, 0.9, 0.9],
            ..host
        };
        let a = evaluate(&w, &busy);
        assert!(a.recommendation.is_none());
        assert!(a.no_recommendation.unwrap().contains("saturated"));
    }

    #[test]
    fn busy_shares_between_two_readings() {
        let before = [(10, 50), (10, 50)];
        let after = [(100, 150), (10, 150), (5, 5)];
        assert_eq!(busy_between(&before, &after), vec![0.9, 0.0, 1.0]);
        assert_eq!(busy_between(&after, &after), vec![0.0, 0.0, 0.0]);
    }

    #[test]
    fn formats_cpu_lists_and_commands() {
        assert_eq!(cpu_list(&[0, 1, 2, 3, 8, 10, 11]), "0-3,8,10-11");
        let unified = one_node_host(&[0.0]);
        let hybrid = Host {
            cgroup_root: "/sys/fs/cgroup/unified".into(),
            cgroup_cpuset: false,
            ..unified.clone()
        };
        assert_eq!(
            command("/bouncy", &[1], &unified),
            "echo 1 > /sys/fs/cgroup/bouncy/cpuset.cpus"
        );
        assert_eq!(
            command("/system.slice/db.service", &[0, 1], &hybrid),
            "for p in $(cat /sys/fs/cgroup/unified/system.slice/db.service/cgroup.procs); do taskset -a -p -c 0-1 \"$p\"; done"
        );
        // Names from cgroup directories are quoted where the shell would
        // read them.
        assert_eq!(
            command("/a b;rm -rf ~/x", &[0, 1], &unified),
            "echo 0-1 > '/sys/fs/cgroup/a b;rm -rf ~/x/cpuset.cpus'"
        );
        assert_eq!(
            command("/a'b", &[3], &hybrid),
            "for p in $(cat '/sys/fs/cgroup/unified/a'\\''b/cgroup.procs'); do taskset -a -p -c 3 \"$p\"; done"
        );
        assert_eq!(
            command("/system.slice/it's$(id).service", &[2], &unified),
            "systemctl set-property 'it'\\''s$(id).service' AllowedCPUs=2"
        );
        assert_eq!(shell_quote(""), "''");
    }
}
