//! Record types shared by hostprobe's eBPF programs and its agent.
//!
//! Every type is `#[repr(C)]` with explicit padding fields so that the kernel
//! side and user side agree byte for byte; `Pod` impls live behind the `user`
//! feature because only the agent needs them.
#![no_std]

pub mod dirty;
pub mod lock;
pub mod numa;
pub mod sched;
pub mod tables;
pub mod ulock;

pub use tables::*;
