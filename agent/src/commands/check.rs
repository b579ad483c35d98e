//! `hostprobe check`: what this kernel and this process allow, and whether
//! each probe loads (through the verifier) and attaches.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use crate::error::Error;
use crate::host::btf::VMLINUX_BTF;
use crate::host::cgroup::CgroupResolver;
use crate::host::privileges::require_privileges;
use crate::host::topology::{Topology, SYSFS_SYSTEM};
use crate::host::{proc, tracefs};
use crate::measure::exact;
use crate::output;
use crate::probes::spec::PROGRAMS;
use crate::probes::{kernel_btf, LoadOptions, PageAlloc, ProbeStatus, Probes};
use crate::snapshot::check::{CheckReport, Item};

pub fn run(json: bool, btf: Option<PathBuf>) -> Result<ExitCode, Error> {
    let r = report(btf)?;
    super::print_view(&r, json, output::check::render);
    Ok(if r.usable() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

fn item<T>(r: Result<T, Error>, ok: impl FnOnce(T) -> String) -> Item {
    match r {
        Ok(v) => Item {
            ok: true,
            detail: ok(v),
        },
        Err(e) => Item {
            ok: false,
            detail: e.to_string(),
        },
    }
}

/// What this host allows; an error only for a `--btf` file that cannot
/// be read.
pub fn report(btf: Option<PathBuf>) -> Result<CheckReport, Error> {
    let shown = btf.clone().unwrap_or_else(|| PathBuf::from(VMLINUX_BTF));
    let btf_item = item(kernel_btf(btf.as_deref())?, |b| {
        format!("{} present ({} types)", shown.display(), b.len())
    });
    let tracefs_item = item(tracefs::mount_point().ok_or(Error::NoTracefs), |p| {
        format!("mounted at {}", p.display())
    });
    let cgroup_item = item(
        proc::self_mountinfo()
            .and_then(|t| proc::cgroup2_mount(&t).ok_or(Error::NoCgroup2))
            .map(CgroupResolver::at),
        |r| format!("mounted at {}", r.root().display()),
    );
    let privileges = item(require_privileges(), |_| "can load eBPF programs".into());
    let topology = Topology::read(Path::new(SYSFS_SYSTEM)).ok();
    // Every program, so that check says whether each one loads here.
    let all = LoadOptions {
        page_alloc: PageAlloc::Always,
        btf,
        ..LoadOptions::default()
    };
    let probes = match Probes::load(&all) {
        Ok(p) => p.status,
        Err(e) => PROGRAMS
            .iter()
            .map(|s| ProbeStatus::unavailable(s, &e.to_string()))
            .collect(),
    };
    Ok(CheckReport {
        kernel: proc::kernel_release(),
        btf: btf_item,
        tracefs: tracefs_item,
        cgroup_v2: cgroup_item,
        privileges,
        exact_dirty_method: exact::method().to_string(),
        topology,
        probes,
    })
}
