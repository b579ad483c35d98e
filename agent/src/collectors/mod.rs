//! One collector per signal: each reads its kernel maps on an interval and
//! returns its part of the snapshot.

use aya::maps::{Map, MapError};
use aya::Ebpf;

use crate::error::{Error, Result};

pub mod dirty;
pub mod lock;
pub mod numa;
pub mod readiness;
pub mod sched;

/// Takes a map the collector will own out of the loaded object.
fn take(ebpf: &mut Ebpf, name: &'static str) -> Result<Map> {
    ebpf.take_map(name).ok_or(Error::Map {
        name,
        source: MapError::InvalidName { name: name.into() },
    })
}

/// Names the map in an aya map error.
fn map_err(name: &'static str) -> impl Fn(MapError) -> Error {
    move |source| Error::Map { name, source }
}
