//! What a workload's cgroup path says about it: a systemd unit, a
//! Kubernetes pod and container (systemd or cgroupfs driver; containerd,
//! CRI-O or Docker), or a plain container. Exported as
//! `hostprobe_workload_info`, joinable on `workload`.

use serde::Serialize;

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct WorkloadInfo {
    /// `systemd`, `pod`, `container` or `cgroup`.
    pub kind: &'static str,
    /// The systemd unit (e.g. `nginx.service`), if any.
    pub unit: String,
    /// Kubernetes pod UID (with dashes) and QoS class.
    pub pod_uid: String,
    pub qos: String,
    /// Container id and the runtime that named it (`containerd`, `crio`,
    /// `docker`).
    pub container_id: String,
    pub runtime: &'static str,
}

/// A pod UID from `pod<uid>` (cgroupfs driver) or `...-pod<uid_with_underscores>.slice`.
fn pod_uid(segment: &str) -> Option<String> {
    let s = segment.strip_suffix(".slice").unwrap_or(segment);
    let uid = s.rsplit_once("pod").map(|(_, u)| u)?;
    let uid = uid.replace('_', "-");
    (uid.len() == 36 && uid.chars().all(|c| c.is_ascii_hexdigit() || c == '-')).then_some(uid)
}

/// A container id and runtime from `cri-containerd-<id>.scope`,
/// `crio-<id>.scope`, `docker-<id>.scope` or a bare 64-hex segment.
fn container(segment: &str) -> Option<(String, &'static str)> {
    let s = segment.strip_suffix(".scope").unwrap_or(segment);
    let (id, runtime) = if let Some(id) = s.strip_prefix("cri-containerd-") {
        (id, "containerd")
    } else if let Some(id) = s.strip_prefix("crio-") {
        (id, "crio")
    } else if let Some(id) = s.strip_prefix("docker-") {
        (id, "docker")
    } else {
        (s, "")
    };
    (id.len() == 64 && id.chars().all(|c| c.is_ascii_hexdigit())).then(|| (id.to_string(), runtime))
}

pub fn describe(path: &str) -> WorkloadInfo {
    let segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    let mut info = WorkloadInfo {
        kind: "cgroup",
        ..Default::default()
    };
    if segments.first().is_some_and(|s| s.starts_with("kubepods")) {
        for seg in &segments {
            for qos in ["burstable", "besteffort"] {
                if seg.contains(qos) {
                    info.qos = qos.into();
                }
            }
            if let Some(uid) = pod_uid(seg) {
                info.pod_uid = uid;
                info.kind = "pod";
                if info.qos.is_empty() {
                    info.qos = "guaranteed".into();
                }
            }
        }
    }
    if let Some((id, runtime)) = segments.last().and_then(|s| container(s)) {
        info.container_id = id;
        // A bare id (cgroupfs driver) does not name its runtime.
        info.runtime = if runtime.is_empty() {
            "unknown"
        } else {
            runtime
        };
        if info.kind != "pod" {
            info.kind = "container";
        }
        return info;
    }
    if info.kind == "pod" {
        return info;
    }
    if let Some(unit) = segments
        .iter()
        .rev()
        .find(|s| s.ends_with(".service") || s.ends_with(".scope") || s.ends_with(".slice"))
    {
        info.kind = "systemd";
        info.unit = (*unit).to_string();
    }
    info
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    #[test]
    fn understands_the_usual_cgroup_layouts() {
        let uid = "1d2c3b4a-0000-4111-8222-933344445555";
        let uid_ = uid.replace('-', "_");
        let table: Vec<(String, WorkloadInfo)> = vec![
            (
                "/system.slice/nginx.service".into(),
                WorkloadInfo { kind: "systemd", unit: "nginx.service".into(), ..Default::default() },
            ),
            (
                "/user.slice/user-1000.slice/session-3.scope".into(),
                WorkloadInfo { kind: "systemd", unit: "session-3.scope".into(), ..Default::default() },
            ),
            (
                format!("/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{uid_}.slice/cri-containerd-{ID}.scope"),
                WorkloadInfo {
                    kind: "pod",
                    pod_uid: uid.into(),
                    qos: "burstable".into(),
                    container_id: ID.into(),
                    runtime: "containerd",
                    ..Default::default()
                },
            ),
            (
                format!("/kubepods.slice/kubepods-pod{uid_}.slice/crio-{ID}.scope"),
                WorkloadInfo {
                    kind: "pod",
                    pod_uid: uid.into(),
                    qos: "guaranteed".into(),
                    container_id: ID.into(),
                    runtime: "crio",
                    ..Default::default()
                },
            ),
            (
                format!("/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{uid_}.slice"),
                WorkloadInfo { kind: "pod", pod_uid: uid.into(), qos: "besteffort".into(), ..Default::default() },
            ),
            (
                format!("/kubepods/burstable/pod{uid}/{ID}"),
                WorkloadInfo {
                    kind: "pod",
                    pod_uid: uid.into(),
                    qos: "burstable".into(),
                    container_id: ID.into(),
                    runtime: "unknown",
                    ..Default::default()
                },
            ),
            (
                format!("/system.slice/docker-{ID}.scope"),
                WorkloadInfo { kind: "container", container_id: ID.into(), runtime: "docker", ..Default::default() },
            ),
            ("/".into(), WorkloadInfo { kind: "cgroup", ..Default::default() }),
            ("/my/batch".into(), WorkloadInfo { kind: "cgroup", ..Default::default() }),
        ];
        for (path, want) in table {
            assert_eq!(describe(&path), want, "{path}");
        }
    }
}
