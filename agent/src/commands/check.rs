//! `hostprobe check`: what this kernel and this process allow, and whether
//! each probe loads (through the verifier) and attaches.

use std::path::Path;

use serde::Serialize;

use crate::agent::kernel_release;
use crate::error::Error;
use crate::host::cgroup::{cgroup2_mount, CgroupResolver};
use crate::host::topology::{Topology, SYSFS_SYSTEM};
use crate::host::tracefs;
use crate::probes::{require_privileges, LoadOptions, PageAlloc, Probes, PROGRAMS, VMLINUX_BTF};
use crate::snapshot::ProbeStatus;

#[derive(Debug, Serialize)]
pub struct CheckReport {
    pub kernel: String,
    pub btf: Item,
    pub tracefs: Item,
    pub cgroup_v2: Item,
    pub privileges: Item,
    /// Which exact dirty-page method `readiness --exact` uses (information:
    /// the hash fallback works everywhere).
    pub exact_dirty_method: String,
    pub topology: Option<Topology>,
    pub probes: Vec<ProbeStatus>,
}

#[derive(Debug, Serialize)]
pub struct Item {
    pub ok: bool,
    pub detail: String,
}

impl Item {
    fn from<T>(r: Result<T, Error>, ok: impl FnOnce(T) -> String) -> Self {
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
}

impl CheckReport {
    /// True when at least one probe can run: the exit status of `check`.
    pub fn usable(&self) -> bool {
        self.probes.iter().any(|p| p.attached)
    }
}

pub fn run() -> CheckReport {
    let btf = Path::new(VMLINUX_BTF);
    let btf_item = if btf.exists() {
        Item {
            ok: true,
            detail: format!("{} present", btf.display()),
        }
    } else {
        Item::from::<()>(
            Err(Error::NoKernelBtf {
                path: btf.to_path_buf(),
            }),
            |_| String::new(),
        )
    };
    let tracefs_item = Item::from(tracefs::mount_point().ok_or(Error::NoTracefs), |p| {
        format!("mounted at {}", p.display())
    });
    let cgroup_item = Item::from(
        std::fs::read_to_string("/proc/self/mountinfo")
            .map_err(|e| Error::io(Path::new("/proc/self/mountinfo"), e))
            .and_then(|t| cgroup2_mount(&t).ok_or(Error::NoCgroup2))
            .map(CgroupResolver::at),
        |r| format!("mounted at {}", r.root().display()),
    );
    let privileges = Item::from(require_privileges(), |_| "can load eBPF programs".into());
    let topology = Topology::read(Path::new(SYSFS_SYSTEM)).ok();
    // Every program, so that check says whether each one loads here.
    let all = LoadOptions {
        page_alloc: PageAlloc::Always,
        ..LoadOptions::default()
    };
    let probes = match Probes::load(&all) {
        Ok(p) => p.status,
        Err(e) => unavailable(&e.to_string()),
    };
    CheckReport {
        kernel: kernel_release(),
        btf: btf_item,
        tracefs: tracefs_item,
        cgroup_v2: cgroup_item,
        privileges,
        exact_dirty_method: crate::measure::exact::method().to_string(),
        topology,
        probes,
    }
}

fn unavailable(reason: &str) -> Vec<ProbeStatus> {
    PROGRAMS
        .iter()
        .map(|s| ProbeStatus {
            probe: s.program.to_string(),
            tracepoint: s.hook.tracepoint(),
            attach_type: s.hook.attach_type().to_string(),
            attached: false,
            enabled: true,
            reason: Some(reason.to_string()),
            events: 0,
            errors: 0,
            missed: 0,
        })
        .collect()
}

pub fn render(r: &CheckReport) -> String {
    let mark = |ok: bool| if ok { "ok  " } else { "FAIL" };
    let mut o = format!("kernel      {}\n", r.kernel);
    for (name, item) in [
        ("BTF", &r.btf),
        ("tracefs", &r.tracefs),
        ("cgroup v2", &r.cgroup_v2),
        ("privileges", &r.privileges),
    ] {
        o += &format!("{name:<11} {} {}\n", mark(item.ok), item.detail);
    }
    o += &format!(
        "exact dirty {} (readiness --exact; soft-dirty needs CONFIG_MEM_SOFT_DIRTY)\n",
        r.exact_dirty_method
    );
    if let Some(t) = &r.topology {
        o += &format!(
            "topology    {} CPUs, {} cores, {} LLCs, {} NUMA nodes\n",
            t.online_cpus, t.cores, t.llcs, t.nodes
        );
    }
    o += "probes\n";
    for p in &r.probes {
        o += &format!(
            "  {:<21} {:<10} {:<32} {}",
            p.probe,
            p.attach_type,
            p.tracepoint,
            if p.attached { "ok" } else { "UNAVAILABLE" }
        );
        if let Some(reason) = &p.reason {
            o += &format!(": {reason}");
        }
        let one_node = r.topology.as_ref().is_some_and(|t| t.nodes <= 1);
        if p.probe == "mm_page_alloc" && p.attached && one_node {
            o += " (loads; serve and diagnose attach it on one node only with --numa-page-alloc always)";
        }
        o += "\n";
    }
    o += if r.usable() {
        "hostprobe can run here.\n"
    } else {
        "hostprobe cannot run here: no probe loads.\n"
    };
    o
}
