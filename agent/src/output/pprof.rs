//! The user-space lock waits as a pprof profile (`profile.proto`,
//! gzipped), shaped like Go's mutex profile: sample types
//! `contentions/count` and `delay/nanoseconds`, one sample per (workload,
//! stack) with the workload and process as labels. `go tool pprof`,
//! Pyroscope and Grafana read it. The frames below the application's
//! function (the C library's lock code) are named in `drop_frames`, so
//! that `pprof -top` ranks the application's functions, as Go's own
//! profiles hide the runtime's.
//!
//! The messages are declared here for prost (the schema is small and
//! stable); prost encodes them.

use std::collections::HashMap;
use std::io::Write as _;

use flate2::{write::GzEncoder, Compression};
use prost::Message;

use crate::snapshot::{Snapshot, UserFrame};

#[derive(Clone, PartialEq, Message)]
struct Profile {
    #[prost(message, repeated, tag = "1")]
    sample_type: Vec<ValueType>,
    #[prost(message, repeated, tag = "2")]
    sample: Vec<Sample>,
    #[prost(message, repeated, tag = "3")]
    mapping: Vec<Mapping>,
    #[prost(message, repeated, tag = "4")]
    location: Vec<Location>,
    #[prost(message, repeated, tag = "5")]
    function: Vec<Function>,
    #[prost(string, repeated, tag = "6")]
    string_table: Vec<String>,
    #[prost(int64, tag = "7")]
    drop_frames: i64,
    #[prost(int64, tag = "9")]
    time_nanos: i64,
    #[prost(int64, tag = "10")]
    duration_nanos: i64,
    #[prost(message, optional, tag = "11")]
    period_type: Option<ValueType>,
    #[prost(int64, tag = "12")]
    period: i64,
}

#[derive(Clone, PartialEq, Message)]
struct ValueType {
    #[prost(int64, tag = "1")]
    r#type: i64,
    #[prost(int64, tag = "2")]
    unit: i64,
}

#[derive(Clone, PartialEq, Message)]
struct Sample {
    #[prost(uint64, repeated, tag = "1")]
    location_id: Vec<u64>,
    #[prost(int64, repeated, tag = "2")]
    value: Vec<i64>,
    #[prost(message, repeated, tag = "3")]
    label: Vec<Label>,
}

#[derive(Clone, PartialEq, Message)]
struct Label {
    #[prost(int64, tag = "1")]
    key: i64,
    #[prost(int64, tag = "2")]
    str: i64,
    #[prost(int64, tag = "3")]
    num: i64,
}

#[derive(Clone, PartialEq, Message)]
struct Mapping {
    #[prost(uint64, tag = "1")]
    id: u64,
    #[prost(uint64, tag = "2")]
    memory_start: u64,
    #[prost(uint64, tag = "3")]
    memory_limit: u64,
    #[prost(uint64, tag = "4")]
    file_offset: u64,
    #[prost(int64, tag = "5")]
    filename: i64,
    #[prost(int64, tag = "6")]
    build_id: i64,
    #[prost(bool, tag = "7")]
    has_functions: bool,
}

#[derive(Clone, PartialEq, Message)]
struct Location {
    #[prost(uint64, tag = "1")]
    id: u64,
    #[prost(uint64, tag = "2")]
    mapping_id: u64,
    #[prost(uint64, tag = "3")]
    address: u64,
    #[prost(message, repeated, tag = "4")]
    line: Vec<Line>,
}

#[derive(Clone, PartialEq, Message)]
struct Line {
    #[prost(uint64, tag = "1")]
    function_id: u64,
}

#[derive(Clone, PartialEq, Message)]
struct Function {
    #[prost(uint64, tag = "1")]
    id: u64,
    #[prost(int64, tag = "2")]
    name: i64,
    #[prost(int64, tag = "3")]
    system_name: i64,
    #[prost(int64, tag = "4")]
    filename: i64,
}

/// Interned strings: index 0 is the empty string.
#[derive(Default)]
struct Strings {
    table: Vec<String>,
    index: HashMap<String, i64>,
}

impl Strings {
    fn id(&mut self, s: &str) -> i64 {
        if self.table.is_empty() {
            self.table.push(String::new());
            self.index.insert(String::new(), 0);
        }
        if let Some(&i) = self.index.get(s) {
            return i;
        }
        let i = self.table.len() as i64;
        self.table.push(s.to_string());
        self.index.insert(s.to_string(), i);
        i
    }
}

/// Builds the profile's tables from the snapshot's stacks.
#[derive(Default)]
struct Builder {
    strings: Strings,
    mappings: Vec<Mapping>,
    mapping_ids: HashMap<(u32, u64, u64), u64>,
    locations: Vec<Location>,
    location_ids: HashMap<(u32, u64), u64>,
    functions: Vec<Function>,
    function_ids: HashMap<(String, String), u64>,
}

impl Builder {
    fn location(&mut self, pid: u32, f: &UserFrame) -> u64 {
        if let Some(&id) = self.location_ids.get(&(pid, f.address)) {
            return id;
        }
        let mapping_id = match f.mapping {
            Some((start, end, offset)) => {
                let next = self.mappings.len() as u64 + 1;
                let id = *self.mapping_ids.entry((pid, start, end)).or_insert(next);
                if id == next {
                    let filename = self.strings.id(f.path.as_deref().unwrap_or(&f.module));
                    let build_id = self.strings.id(f.build_id.as_deref().unwrap_or(""));
                    self.mappings.push(Mapping {
                        id,
                        memory_start: start,
                        memory_limit: end,
                        file_offset: offset,
                        filename,
                        build_id,
                        has_functions: true,
                    });
                }
                id
            }
            None => 0,
        };
        let function_id = {
            let key = (f.name.clone(), f.module.clone());
            let next = self.functions.len() as u64 + 1;
            let id = *self.function_ids.entry(key).or_insert(next);
            if id == next {
                let name = self.strings.id(&f.name);
                let filename = self.strings.id(f.path.as_deref().unwrap_or(&f.module));
                self.functions.push(Function {
                    id,
                    name,
                    system_name: name,
                    filename,
                });
            }
            id
        };
        let id = self.locations.len() as u64 + 1;
        self.locations.push(Location {
            id,
            mapping_id,
            address: f.address,
            line: vec![Line { function_id }],
        });
        self.location_ids.insert((pid, f.address), id);
        id
    }
}

/// Escapes a name for a Go regular expression.
fn regex_quote(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        if "\\.+*?()|[]{}^$".contains(c) {
            o.push('\\');
        }
        o.push(c);
    }
    o
}

/// The snapshot's user-space lock waits as a gzipped pprof profile.
pub fn user_locks(s: &Snapshot, time_nanos: i64) -> Vec<u8> {
    let mut b = Builder::default();
    let contentions = ValueType {
        r#type: b.strings.id("contentions"),
        unit: b.strings.id("count"),
    };
    let delay = ValueType {
        r#type: b.strings.id("delay"),
        unit: b.strings.id("nanoseconds"),
    };
    let (workload_key, pid_key) = (b.strings.id("workload"), b.strings.id("pid"));
    let mut beneath: Vec<String> = Vec::new();
    let mut samples = Vec::new();
    // pprof takes the first mapping for the main binary: the application
    // function's file goes first.
    for row in &s.user_lock.stacks {
        if let Some(f) = row.frames.iter().find(|f| f.name == row.function) {
            b.location(row.pid, f);
        }
    }
    for row in &s.user_lock.stacks {
        let location_id = row.frames.iter().map(|f| b.location(row.pid, f)).collect();
        // Frames inside the application function's callees (the library's
        // lock code) are what `drop_frames` names.
        if let Some(i) = row.frames.iter().position(|f| f.name == row.function) {
            for f in &row.frames[..i] {
                if !beneath.contains(&f.name) {
                    beneath.push(f.name.clone());
                }
            }
        }
        samples.push(Sample {
            location_id,
            value: vec![
                row.contentions as i64,
                (row.wait_seconds * 1e9).round() as i64,
            ],
            label: vec![
                Label {
                    key: workload_key,
                    str: b.strings.id(&row.workload),
                    num: 0,
                },
                Label {
                    key: pid_key,
                    str: 0,
                    num: i64::from(row.pid),
                },
            ],
        });
    }
    let drop: Vec<String> = beneath.iter().map(|n| regex_quote(n)).collect();
    let drop_frames = b.strings.id(&drop.join("|"));
    let profile = Profile {
        sample_type: vec![contentions.clone(), delay],
        sample: samples,
        mapping: b.mappings,
        location: b.locations,
        function: b.functions,
        string_table: b.strings.table,
        drop_frames,
        time_nanos,
        duration_nanos: (s.window_seconds * 1e9) as i64,
        period_type: Some(contentions),
        period: 1,
    };
    let mut gz = GzEncoder::new(Vec::new(), Compression::default());
    gz.write_all(&profile.encode_to_vec())
        .expect("writing to memory cannot fail");
    gz.finish().expect("writing to memory cannot fail")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::snapshot::sample::sample;
    use flate2::read::GzDecoder;
    use std::io::Read as _;

    #[test]
    fn the_profile_decodes_with_its_samples_and_names() {
        let s = sample();
        let gz = user_locks(&s, 1);
        let mut raw = Vec::new();
        GzDecoder::new(&gz[..]).read_to_end(&mut raw).unwrap();
        let p = Profile::decode(&raw[..]).unwrap();
        let name = |i: i64| p.string_table[i as usize].as_str();
        assert_eq!(p.string_table[0], "");
        assert_eq!(
            p.sample_type
                .iter()
                .map(|t| (name(t.r#type), name(t.unit)))
                .collect::<Vec<_>>(),
            [("contentions", "count"), ("delay", "nanoseconds")]
        );
        assert_eq!(p.sample.len(), 1);
        assert_eq!(p.sample[0].value, [5, 2_000_000]);
        let leaf = &p.location[p.sample[0].location_id[0] as usize - 1];
        let f = &p.function[leaf.line[0].function_id as usize - 1];
        assert_eq!(name(f.name), "__lll_lock_wait");
        // The library frame beneath the application's function is dropped
        // by pprof; the application's is not.
        assert_eq!(name(p.drop_frames), "__lll_lock_wait");
        assert_eq!(regex_quote("libc.so.6+0x1"), "libc\\.so\\.6\\+0x1");
    }
}
