//! Every flag given a malformed value: exit 2 and one line that names the
//! flag and what it expected (or, for what only the system can judge, the
//! value and what is wrong with it). Table-driven over the flags clap
//! defines, so a new flag without a row fails here.

use std::collections::BTreeMap;
use std::process::Command;

use clap::CommandFactory;
use hostprobe::cli::Cli;

const BIN: &str = env!("CARGO_BIN_EXE_hostprobe");

/// A malformed value per flag, and what the error line must say besides
/// the flag (`None`: the flag's own name is enough).
const BAD: [(&str, &str, &str); 33] = [
    ("listen", "localhost", "expected IP:PORT"),
    ("interval", "0s", "greater than zero"),
    ("duration", "ten seconds", "expected a duration"),
    ("pid", "12x", "expected a whole number"),
    ("cgroup", "/no/such/cgroup", "not found"),
    ("lock-type", "futex", "unknown lock type"),
    ("vm", "no-such-vm", "no QEMU VM named"),
    ("bandwidth", "fast", "expected e.g. 1Gbit/s"),
    ("downtime", "300", "expected a duration"),
    ("windows", "1s,,4s", "expected a duration"),
    ("samples-per-gib", "0", "expected a whole number from 1"),
    ("refine-passes", "many", "expected a whole number"),
    ("switchover-bandwidth", "1Xbit/s", "unknown unit"),
    ("max-time", "forever", "expected a duration"),
    ("exact-min-interval", "1x", "expected a duration"),
    (
        "exact-state-dir",
        "/proc/version/state",
        "--exact-state-dir",
    ),
    ("top-k", "ten", "expected a whole number"),
    (
        "max-workloads",
        "3",
        "expected a whole number from 4 to 65536",
    ),
    ("lock-stacks", "5k", "expected a whole number"),
    ("btf", "/no/such/vmlinux.btf", "cannot read it"),
    ("pprof", "/no/such/dir/locks.pb.gz", "cannot write it"),
    (
        "numa-page-alloc",
        "sometimes",
        "one of: auto, always, never",
    ),
    ("task-slots", "1", "expected a whole number from 2"),
    ("migration-bandwidth", "1Xbit/s", "unknown unit"),
    ("migration-downtime", "soon", "expected a duration"),
    (
        "migration-switchover-bandwidth",
        "fast",
        "expected e.g. 1Gbit/s",
    ),
    ("readiness-pid", "abc", "expected a whole number"),
    ("readiness-cgroup", "/no/such/cgroup", "not found"),
    ("readiness-windows", "1s,x", "expected a duration"),
    (
        "readiness-samples-per-gib",
        "lots",
        "expected a whole number",
    ),
    ("readiness-refine-passes", "ten", "expected a whole number"),
    ("readiness-interval", "0ms", "greater than zero"),
    (
        "readiness-max-targets",
        "0",
        "expected a whole number from 1",
    ),
];

/// Flags that take a value, by subcommand (the global --log-level apart).
fn value_flags() -> BTreeMap<String, Vec<String>> {
    let cli = Cli::command();
    cli.get_subcommands()
        .map(|sub| {
            let flags = sub
                .get_arguments()
                .filter(|a| a.get_action().takes_values() && !a.is_global_set())
                .filter_map(|a| a.get_long().map(str::to_string))
                .collect();
            (sub.get_name().to_string(), flags)
        })
        .collect()
}

#[test]
fn every_flag_with_a_malformed_value_gets_one_line_and_exit_2() {
    let table: BTreeMap<&str, (&str, &str)> = BAD.iter().map(|&(f, v, w)| (f, (v, w))).collect();
    for (sub, flags) in value_flags() {
        for flag in flags {
            let Some(&(value, want)) = table.get(flag.as_str()) else {
                panic!("--{flag} of {sub} has no malformed value in the table");
            };
            let mut args = vec![sub.clone(), format!("--{flag}"), value.to_string()];
            // readiness needs one target; --exact-state-dir matters with --exact.
            if sub == "readiness" && !["pid", "cgroup", "vm"].contains(&flag.as_str()) {
                args.extend(["--pid".into(), std::process::id().to_string()]);
            }
            if flag == "exact-state-dir" {
                args.push("--exact".into());
            }
            if sub == "diagnose" {
                args.extend(["--duration".into(), "1s".into()]);
            }
            let out = Command::new(BIN).args(&args).output().unwrap();
            let err = String::from_utf8_lossy(&out.stderr);
            let lines: Vec<&str> = err.lines().collect();
            assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
            assert_eq!(lines.len(), 1, "{args:?}: not one line: {err}");
            let named = lines[0].contains(&format!("--{flag}")) || lines[0].contains(value);
            assert!(named && lines[0].contains(want), "{args:?}: {err}");
        }
    }
}

#[test]
fn a_bad_log_filter_and_unknown_flags_get_one_line_and_exit_2() {
    for args in [
        &["check", "--log-level", "warn,[[["][..],
        &["check", "--no-such-flag"],
        &["no-such-command"],
        &["readiness"],
    ] {
        let out = Command::new(BIN).args(args).output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert_eq!(err.lines().count(), 1, "{args:?}: {err}");
    }
}
