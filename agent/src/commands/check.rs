//! `hostprobe check`: what this kernel and this process allow, and whether
//! each probe loads (through the verifier) and attaches.

use std::path::Path;
use std::process::ExitCode;

use crate::error::Error;
use crate::host::btf::{Btf, VMLINUX_BTF};
use crate::host::cgroup::CgroupResolver;
use crate::host::privileges::require_privileges;
use crate::host::topology::{Topology, SYSFS_SYSTEM};
use crate::host::{proc, tracefs};
use crate::measure::exact;
use crate::output;
use crate::probes::spec::PROGRAMS;
use crate::probes::{LoadOptions, PageAlloc, ProbeStatus, Probes};
use crate::snapshot::check::{CheckReport, Item};

pub fn run(json: bool) -> ExitCode {
    let r = report();
    super::print_view(&r, json, output::check::render);
    if r.usable() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
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

pub fn report() -> CheckReport {
    let btf = Path::new(VMLINUX_BTF);
    let btf_item = if btf.exists() {
        item(Btf::from_file(btf), |b| {
            format!("{} present ({} types)", btf.display(), b.len())
        })
    } else {
        item::<()>(
            Err(Error::NoKernelBtf {
                path: btf.to_path_buf(),
            }),
            |_| String::new(),
        )
    };
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
        ..LoadOptions::default()
    };
    let probes = match Probes::load(&all) {
        Ok(p) => p.status,
        Err(e) => PROGRAMS
            .iter()
            .map(|s| ProbeStatus::unavailable(s, &e.to_string()))
            .collect(),
    };
    CheckReport {
        kernel: proc::kernel_release(),
        btf: btf_item,
        tracefs: tracefs_item,
        cgroup_v2: cgroup_item,
        privileges,
        exact_dirty_method: exact::method().to_string(),
        topology,
        probes,
    }
}
