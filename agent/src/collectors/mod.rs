//! One collector per signal: each reads its kernel maps on an interval and
//! returns its part of the snapshot.
pub mod lock;
pub mod sched;
