//! Capabilities: whether this process may load eBPF programs, and, once
//! `serve` has attached its probes, dropping every capability it no longer
//! uses. What stays: CAP_BPF (every bpf() call, map reads included, needs it
//! while unprivileged BPF is disabled), CAP_SYS_PTRACE and
//! CAP_DAC_READ_SEARCH (other processes' /proc/PID/mem and numa_maps for
//! readiness and residency). Capabilities are per thread: each thread that
//! exists drops its own (the runtime is single-threaded; the readiness
//! thread drops when it starts).

use caps::{CapSet, Capability, CapsHashSet};

use crate::error::{Error, Result};

pub const KEPT: [Capability; 3] = [
    Capability::CAP_BPF,
    Capability::CAP_SYS_PTRACE,
    Capability::CAP_DAC_READ_SEARCH,
];

fn caps_error(e: caps::errors::CapsError) -> Error {
    Error::Capabilities {
        reason: e.to_string(),
    }
}

/// Fails with a clear message when the process cannot load eBPF programs.
pub fn require_privileges() -> Result<()> {
    let effective = caps::read(None, CapSet::Effective).map_err(caps_error)?;
    missing_capabilities(&effective).map_or(Ok(()), |missing| Err(Error::Privileges { missing }))
}

/// Which of the needed capabilities an effective set lacks, if any.
/// CAP_SYS_ADMIN covers both on kernels before 5.8 and still works after.
pub fn missing_capabilities(effective: &CapsHashSet) -> Option<String> {
    if effective.contains(&Capability::CAP_SYS_ADMIN) {
        return None;
    }
    let missing: Vec<String> = [Capability::CAP_BPF, Capability::CAP_PERFMON]
        .into_iter()
        .filter(|c| !effective.contains(c))
        .map(|c| c.to_string())
        .collect();
    (!missing.is_empty()).then(|| missing.join(" and "))
}

/// Drops every capability of the calling thread but `KEPT`; returns the
/// ones dropped.
pub fn drop_unneeded() -> Result<Vec<String>> {
    let permitted = caps::read(None, CapSet::Permitted).map_err(caps_error)?;
    let keep: CapsHashSet = permitted
        .iter()
        .filter(|c| KEPT.contains(c))
        .copied()
        .collect();
    let mut dropped: Vec<String> = permitted.difference(&keep).map(|c| c.to_string()).collect();
    dropped.sort();
    caps::clear(None, CapSet::Ambient).map_err(caps_error)?;
    caps::set(None, CapSet::Inheritable, &CapsHashSet::new()).map_err(caps_error)?;
    caps::set(None, CapSet::Effective, &keep).map_err(caps_error)?;
    caps::set(None, CapSet::Permitted, &keep).map_err(caps_error)?;
    Ok(dropped)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn capability_sets() {
        let set = |c: &[Capability]| c.iter().copied().collect::<CapsHashSet>();
        assert_eq!(missing_capabilities(&caps::all()), None);
        assert_eq!(
            missing_capabilities(&set(&[Capability::CAP_SYS_ADMIN])),
            None
        );
        assert_eq!(
            missing_capabilities(&set(&[Capability::CAP_BPF, Capability::CAP_PERFMON])),
            None
        );
        assert_eq!(
            missing_capabilities(&set(&[Capability::CAP_BPF])).as_deref(),
            Some("CAP_PERFMON")
        );
        assert_eq!(
            missing_capabilities(&CapsHashSet::new()).as_deref(),
            Some("CAP_BPF and CAP_PERFMON")
        );
    }
}
