//! Tests that load the real probes into the running kernel (they need root,
//! as CI has) and compare what hostprobe reports with counts the test
//! controls exactly or with `perf`. They share the kernel, so they run one at
//! a time, and each checks that no hostprobe program stays loaded after it.
//!
//! One test binary with a module per signal, so that one lock
//! ([`common::KernelTest`]) serialises every kernel test whatever runs them.

mod affinity;
mod cli;
mod common;
mod dirty;
mod faults;
mod lock;
mod numa;
mod sched;
mod serve;
mod ulock;
