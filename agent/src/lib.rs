//! hostprobe: an eBPF host tracing agent.
//!
//! Where a number comes from, in one hop: kernel programs in
//! `ebpf-probes/probes/src/<signal>.rs`, their collector in
//! [`collectors`], the snapshot field in [`snapshot`], and its views in
//! [`output`].

pub mod affinity;
pub mod agent;
pub mod assess;
pub mod btf;
pub mod cgroup;
pub mod check;
pub mod collectors;
pub mod dirty;
pub mod error;
pub mod exact;
pub mod hist;
pub mod kallsyms;
pub mod lock_types;
pub mod output;
pub mod privileges;
pub mod probes;
pub mod qemu;
pub mod readiness;
pub mod serve;
pub mod snapshot;
pub mod topk;
pub mod topology;
pub mod tracefs;
pub mod workload;
