//! After the probes are attached, `serve` keeps only the capabilities it
//! still uses: CAP_BPF (every bpf() call, map reads included, needs it
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

/// Drops every capability of the calling thread but `KEPT`; returns the
/// ones dropped.
pub fn drop_unneeded() -> Result<Vec<String>> {
    let fail = |e: caps::errors::CapsError| Error::Capabilities {
        reason: e.to_string(),
    };
    let permitted = caps::read(None, CapSet::Permitted).map_err(fail)?;
    let keep: CapsHashSet = permitted
        .iter()
        .filter(|c| KEPT.contains(c))
        .copied()
        .collect();
    let mut dropped: Vec<String> = permitted.difference(&keep).map(|c| c.to_string()).collect();
    dropped.sort();
    caps::clear(None, CapSet::Ambient).map_err(fail)?;
    caps::set(None, CapSet::Inheritable, &CapsHashSet::new()).map_err(fail)?;
    caps::set(None, CapSet::Effective, &keep).map_err(fail)?;
    caps::set(None, CapSet::Permitted, &keep).map_err(fail)?;
    Ok(dropped)
}
