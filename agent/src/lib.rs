//! hostprobe: an eBPF host tracing agent.
//!
//! Where a number comes from, in one hop: kernel programs in
//! `ebpf-probes/probes/src/<signal>.rs`, their collector in
//! [`collectors`], the snapshot field in [`snapshot`], and its views in
//! [`output`].

pub mod agent;
pub mod cli;
pub mod collectors;
pub mod commands;
pub mod error;
pub mod host;
pub mod measure;
pub mod model;
pub mod output;
pub mod probes;
pub mod snapshot;
