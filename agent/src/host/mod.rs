//! What the running system says, behind small typed readers.

pub mod btf;
pub mod cgroup;
pub mod kallsyms;
pub mod privileges;
pub mod proc;
pub mod qemu;
pub mod symbols;
pub mod topology;
pub mod tracefs;
