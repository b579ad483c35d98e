//! The files for running hostprobe elsewhere (`deploy/`), checked with the
//! validators this machine has: systemd-analyze for the unit, promtool for
//! the Prometheus configuration, a YAML parse and content checks for the
//! Kubernetes manifests (kubectl validates only against a live cluster).

use std::path::PathBuf;
use std::process::Command;

fn deploy() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../deploy")
}

#[test]
fn the_systemd_unit_verifies() {
    let unit = std::fs::read_to_string(deploy().join("hostprobe.service")).unwrap();
    for hardening in [
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
        "CapabilityBoundingSet=CAP_BPF CAP_PERFMON",
    ] {
        assert!(unit.contains(hardening), "{hardening} missing");
    }
    // Point ExecStart at the binary just built: verify checks it exists.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("hostprobe.service");
    std::fs::write(
        &path,
        unit.replace("/usr/local/bin/hostprobe", env!("CARGO_BIN_EXE_hostprobe")),
    )
    .unwrap();
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&path)
        .output()
        .expect("systemd-analyze (package systemd)");
    let text = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success() && text.trim().is_empty(), "{text}");
}

#[test]
fn the_prometheus_configuration_passes_promtool() {
    let out = Command::new("promtool")
        .args(["check", "config", "prometheus-scrape.yml"])
        .current_dir(deploy())
        .output()
        .expect("promtool (cargo xtask setup installs the prometheus package)");
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn the_daemonset_has_what_hostprobe_needs() {
    use serde::Deserialize;
    let text = std::fs::read_to_string(deploy().join("kubernetes/daemonset.yaml")).unwrap();
    let docs: Vec<serde_yaml::Value> = serde_yaml::Deserializer::from_str(&text)
        .map(|d| serde_yaml::Value::deserialize(d).expect("valid YAML"))
        .collect();
    let kinds: Vec<&str> = docs.iter().filter_map(|d| d["kind"].as_str()).collect();
    assert_eq!(kinds, ["Namespace", "DaemonSet", "Service"]);
    let ds = &docs[1];
    assert_eq!(ds["apiVersion"], "apps/v1");
    let pod = &ds["spec"]["template"]["spec"];
    assert_eq!(pod["hostPID"], true);
    let c = &pod["containers"][0];
    assert_eq!(c["args"][0], "serve");
    assert_eq!(c["securityContext"]["privileged"], true);
    let mounts: Vec<&str> = c["volumeMounts"]
        .as_sequence()
        .unwrap()
        .iter()
        .filter_map(|m| m["mountPath"].as_str())
        .collect();
    for needed in [
        "/sys/kernel/tracing",
        "/sys/kernel/btf",
        "/sys/fs/cgroup",
        "/sys/fs/bpf",
    ] {
        assert!(mounts.contains(&needed), "{needed} not mounted: {mounts:?}");
    }
    // Every mount has a volume, every selector matches the pod labels.
    let volumes: Vec<&str> = pod["volumes"]
        .as_sequence()
        .unwrap()
        .iter()
        .filter_map(|v| v["name"].as_str())
        .collect();
    for m in c["volumeMounts"].as_sequence().unwrap() {
        assert!(volumes.contains(&m["name"].as_str().unwrap()), "{m:?}");
    }
    let labels = &ds["spec"]["template"]["metadata"]["labels"];
    assert_eq!(ds["spec"]["selector"]["matchLabels"], *labels);
    assert_eq!(docs[2]["spec"]["selector"], *labels);
}
