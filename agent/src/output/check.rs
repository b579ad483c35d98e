//! `hostprobe check`'s text: a view of a [`CheckReport`].

use crate::snapshot::check::CheckReport;

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
