//! Just enough of a BTF reader to find struct member offsets, enum values
//! and the argument list of a BTF tracepoint in `/sys/kernel/btf/vmlinux`.
//!
//! Rust eBPF has no CO-RE relocations, so the agent resolves every kernel
//! struct offset at start and hands it to the programs as a load-time
//! constant. aya's own BTF parser keeps member offsets private, and the one
//! crate that exposes them (btf-rs) is LGPL, so this reads the format
//! (documented in the kernel's Documentation/bpf/btf.rst) directly.

use std::collections::HashMap;
use std::path::Path;

use crate::error::{Error, Result};

/// Where the running kernel exposes its BTF.
pub const VMLINUX_BTF: &str = "/sys/kernel/btf/vmlinux";

const BTF_MAGIC: u16 = 0xeb9f;

const KIND_INT: u32 = 1;
const KIND_PTR: u32 = 2;
const KIND_ARRAY: u32 = 3;
const KIND_STRUCT: u32 = 4;
const KIND_UNION: u32 = 5;
const KIND_ENUM: u32 = 6;
const KIND_TYPEDEF: u32 = 8;
const KIND_FUNC: u32 = 12;
const KIND_VOLATILE: u32 = 9;
const KIND_CONST: u32 = 10;
const KIND_RESTRICT: u32 = 11;
const KIND_FUNC_PROTO: u32 = 13;
const KIND_VAR: u32 = 14;
const KIND_DATASEC: u32 = 15;
const KIND_DECL_TAG: u32 = 17;
const KIND_TYPE_TAG: u32 = 18;
const KIND_ENUM64: u32 = 19;

/// Parsed BTF: type records indexed by type id (id 0 is `void`).
pub struct Btf {
    data: Vec<u8>,
    strings: usize,
    strings_len: usize,
    /// Byte offset of each type record; index = type id.
    types: Vec<usize>,
    /// (kind, hash of the name) -> first type id, for the kinds looked up
    /// by name: one pass at parse time instead of a scan of every type per
    /// lookup, without a string allocated per type.
    by_name: HashMap<(u32, u64), u32>,
}

/// What a type id resolves to once typedefs and qualifiers are peeled off.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TypeShape {
    Void,
    Int { size: u32 },
    Pointer { to: Option<String> },
    Struct { name: String, size: u32 },
    Other { kind: u32 },
}

impl Btf {
    pub fn from_file(path: &Path) -> Result<Self> {
        let data = std::fs::read(path).map_err(|e| Error::io(path, e))?;
        Self::parse(data).map_err(|reason| Error::Btf {
            path: path.to_path_buf(),
            reason,
        })
    }

    /// Types, `void` included.
    pub fn len(&self) -> usize {
        self.types.len()
    }

    pub fn is_empty(&self) -> bool {
        self.types.len() <= 1
    }

    /// The raw BTF, for other parsers (aya's, for attaching BTF tracepoints).
    pub fn data(&self) -> &[u8] {
        &self.data
    }

    pub fn parse(data: Vec<u8>) -> std::result::Result<Self, String> {
        let u16_at = |o: usize| data.get(o..o + 2).map(|b| u16::from_le_bytes([b[0], b[1]]));
        if u16_at(0) != Some(BTF_MAGIC) {
            return Err("not little-endian BTF (bad magic)".into());
        }
        let rd = |o: usize| read_u32(&data, o).ok_or_else(|| "truncated header".to_string());
        let hdr_len = rd(4)? as usize;
        let type_off = rd(8)? as usize;
        let type_len = rd(12)? as usize;
        let str_off = rd(16)? as usize;
        let str_len = rd(20)? as usize;
        let types_start = hdr_len + type_off;
        let types_end = types_start + type_len;
        let strings = hdr_len + str_off;
        if types_end > data.len() || strings + str_len > data.len() {
            return Err("section beyond end of data".into());
        }
        let mut types = vec![0usize];
        let mut pos = types_start;
        while pos < types_end {
            types.push(pos);
            let info = read_u32(&data, pos + 4).ok_or("truncated type")?;
            let vlen = (info & 0xffff) as usize;
            let kind = (info >> 24) & 0x1f;
            let extra = match kind {
                KIND_INT | KIND_VAR | KIND_DECL_TAG => 4,
                KIND_ARRAY => 12,
                KIND_STRUCT | KIND_UNION | KIND_DATASEC | KIND_ENUM64 => 12 * vlen,
                KIND_ENUM | KIND_FUNC_PROTO => 8 * vlen,
                0..=19 => 0,
                _ => return Err(format!("unknown BTF kind {kind} at byte {pos}")),
            };
            pos += 12 + extra;
        }
        let mut btf = Self {
            data,
            strings,
            strings_len: str_len,
            types,
            by_name: HashMap::new(),
        };
        let mut by_name = HashMap::new();
        for id in 1..btf.types.len() as u32 {
            let kind = btf.kind(id);
            if matches!(kind, KIND_STRUCT | KIND_ENUM | KIND_TYPEDEF | KIND_FUNC) {
                let name = btf.name(btf.u32_at(btf.types[id as usize]));
                if !name.is_empty() {
                    by_name.entry((kind, fnv1a(name))).or_insert(id);
                }
            }
        }
        btf.by_name = by_name;
        Ok(btf)
    }

    fn u32_at(&self, o: usize) -> u32 {
        read_u32(&self.data, o).unwrap_or(0)
    }

    fn name(&self, name_off: u32) -> &str {
        let start = self.strings + name_off as usize;
        let end = self.strings + self.strings_len;
        let bytes = self.data.get(start..end).unwrap_or_default();
        let len = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
        std::str::from_utf8(&bytes[..len]).unwrap_or("")
    }

    fn kind(&self, id: u32) -> u32 {
        self.types
            .get(id as usize)
            .map_or(0, |&p| (self.u32_at(p + 4) >> 24) & 0x1f)
    }

    /// The first type of `kind` (struct, enum or typedef) named `name`.
    fn find(&self, kind: u32, name: &str) -> Option<u32> {
        let named = |id: &u32| self.name(self.u32_at(self.types[*id as usize])) == name;
        match self.by_name.get(&(kind, fnv1a(name))) {
            Some(id) if named(id) => Some(*id),
            // Another name with the same hash: look the slow way.
            Some(_) => (1..self.types.len() as u32).find(|id| self.kind(*id) == kind && named(id)),
            None => None,
        }
    }

    /// Follows typedefs and qualifiers to the underlying type id.
    fn peel(&self, mut id: u32) -> u32 {
        for _ in 0..32 {
            match self.kind(id) {
                KIND_TYPEDEF | KIND_VOLATILE | KIND_CONST | KIND_RESTRICT | KIND_TYPE_TAG => {
                    id = self.u32_at(self.types[id as usize] + 8)
                }
                _ => break,
            }
        }
        id
    }

    fn shape(&self, id: u32) -> TypeShape {
        let id = self.peel(id);
        if id == 0 {
            return TypeShape::Void;
        }
        let Some(&p) = self.types.get(id as usize) else {
            return TypeShape::Other { kind: 0 };
        };
        let kind = self.kind(id);
        match kind {
            KIND_INT | KIND_ENUM => TypeShape::Int {
                size: self.u32_at(p + 8),
            },
            KIND_PTR => {
                let to = self.peel(self.u32_at(p + 8));
                let to = (to != 0 && matches!(self.kind(to), KIND_STRUCT | KIND_UNION))
                    .then(|| self.name(self.u32_at(self.types[to as usize])).to_string());
                TypeShape::Pointer { to }
            }
            KIND_STRUCT | KIND_UNION => TypeShape::Struct {
                name: self.name(self.u32_at(p)).to_string(),
                size: self.u32_at(p + 8),
            },
            kind => TypeShape::Other { kind },
        }
    }

    /// Whether the kernel has a function `name` (helpers included: each
    /// `BPF_CALL` defines one of the helper's name).
    pub fn has_function(&self, name: &str) -> bool {
        self.find(KIND_FUNC, name).is_some()
    }

    /// Byte offset and size of `member` in `struct name`, looking through
    /// anonymous struct and union members as C does.
    pub fn member(&self, name: &str, member: &str) -> Result<(u32, u32)> {
        let id = self
            .find(KIND_STRUCT, name)
            .ok_or_else(|| Error::BtfMissing {
                what: format!("struct {name}"),
            })?;
        self.member_in(id, member, 0, 0)
            .ok_or_else(|| Error::BtfMissing {
                what: format!("member {name}.{member}"),
            })
    }

    /// `depth`: anonymous members entered; bounded, since BTF that is not
    /// the kernel's could nest a struct in itself.
    fn member_in(&self, id: u32, member: &str, base_bits: u32, depth: u32) -> Option<(u32, u32)> {
        if depth > 8 {
            return None;
        }
        let p = self.types[id as usize];
        let info = self.u32_at(p + 4);
        let kind_flag = info >> 31 == 1;
        for i in 0..(info & 0xffff) as usize {
            let m = p + 12 + 12 * i;
            let (name_off, ty, off) = (self.u32_at(m), self.u32_at(m + 4), self.u32_at(m + 8));
            let bits = base_bits.saturating_add(if kind_flag { off & 0xff_ffff } else { off });
            let inner = self.peel(ty);
            if name_off == 0 && matches!(self.kind(inner), KIND_STRUCT | KIND_UNION) {
                if let Some(found) = self.member_in(inner, member, bits, depth + 1) {
                    return Some(found);
                }
            } else if self.name(name_off) == member {
                let size = match self.shape(ty) {
                    TypeShape::Int { size } | TypeShape::Struct { size, .. } => size,
                    TypeShape::Pointer { .. } => 8,
                    _ => 0,
                };
                return bits.is_multiple_of(8).then_some((bits / 8, size));
            }
        }
        None
    }

    /// Element count of array member `member` of `struct name` (a direct
    /// member, not one inside an anonymous struct).
    pub fn array_len(&self, name: &str, member: &str) -> Result<u32> {
        let missing = || Error::BtfMissing {
            what: format!("array member {name}.{member}"),
        };
        let id = self.find(KIND_STRUCT, name).ok_or_else(missing)?;
        let p = self.types[id as usize];
        (0..(self.u32_at(p + 4) & 0xffff) as usize)
            .map(|i| p + 12 + 12 * i)
            .find(|&m| self.name(self.u32_at(m)) == member)
            .map(|m| self.peel(self.u32_at(m + 4)))
            .filter(|&t| self.kind(t) == KIND_ARRAY)
            // struct btf_array { type, index_type, nelems } after the header.
            .map(|t| self.u32_at(self.types[t as usize] + 12 + 8))
            .ok_or_else(missing)
    }

    /// Every enumerator of `enum en` with its value.
    pub fn enum_values(&self, en: &str) -> Result<Vec<(String, i64)>> {
        let id = self.find(KIND_ENUM, en).ok_or_else(|| Error::BtfMissing {
            what: format!("enum {en}"),
        })?;
        let p = self.types[id as usize];
        Ok((0..(self.u32_at(p + 4) & 0xffff) as usize)
            .map(|i| p + 12 + 8 * i)
            .map(|m| {
                (
                    self.name(self.u32_at(m)).to_string(),
                    i64::from(self.u32_at(m + 4) as i32),
                )
            })
            .collect())
    }

    /// The value of enumerator `name` of `enum en`.
    pub fn enum_value(&self, en: &str, name: &str) -> Result<i64> {
        let missing = |what: String| Error::BtfMissing { what };
        let id = self
            .find(KIND_ENUM, en)
            .ok_or_else(|| missing(format!("enum {en}")))?;
        let p = self.types[id as usize];
        (0..(self.u32_at(p + 4) & 0xffff) as usize)
            .map(|i| p + 12 + 8 * i)
            .find(|&m| self.name(self.u32_at(m)) == name)
            .map(|m| i64::from(self.u32_at(m + 4) as i32))
            .ok_or_else(|| missing(format!("enumerator {en}::{name}")))
    }

    /// The arguments a BTF tracepoint program sees for `tracepoint`, from the
    /// kernel's `btf_trace_<tracepoint>` typedef (its first parameter, the
    /// tracepoint's private data pointer, is not passed to programs).
    pub fn tracepoint_args(&self, tracepoint: &str) -> Result<Vec<TypeShape>> {
        let missing = || Error::BtfMissing {
            what: format!("tracepoint btf_trace_{tracepoint}"),
        };
        let td = self
            .find(KIND_TYPEDEF, &format!("btf_trace_{tracepoint}"))
            .ok_or_else(missing)?;
        let ptr = self.peel(td);
        if self.kind(ptr) != KIND_PTR {
            return Err(missing());
        }
        let proto = self.peel(self.u32_at(self.types[ptr as usize] + 8));
        if self.kind(proto) != KIND_FUNC_PROTO {
            return Err(missing());
        }
        let p = self.types[proto as usize];
        let vlen = (self.u32_at(p + 4) & 0xffff) as usize;
        Ok((1..vlen)
            .map(|i| self.shape(self.u32_at(p + 12 + 8 * i + 4)))
            .collect())
    }
}

/// FNV-1a: a fast hash of short names, enough to index them.
fn fnv1a(s: &str) -> u64 {
    s.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

fn read_u32(data: &[u8], o: usize) -> Option<u32> {
    data.get(o..o + 4)
        .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Builds a BTF blob from (kind, name, info-vlen, size_or_type, extra words).
    pub(crate) struct Builder {
        types: Vec<u8>,
        strings: Vec<u8>,
    }

    impl Builder {
        pub(crate) fn new() -> Self {
            Self {
                types: Vec::new(),
                strings: vec![0],
            }
        }
        fn s(&mut self, name: &str) -> u32 {
            if name.is_empty() {
                return 0;
            }
            let off = self.strings.len() as u32;
            self.strings.extend_from_slice(name.as_bytes());
            self.strings.push(0);
            off
        }
        pub(crate) fn ty(&mut self, kind: u32, name: &str, vlen: u32, sot: u32, extra: &[u32]) {
            let n = self.s(name);
            for w in [n, (kind << 24) | vlen, sot].iter().chain(extra) {
                self.types.extend_from_slice(&w.to_le_bytes());
            }
        }
        pub(crate) fn member(&mut self, name: &str, ty: u32, bit_off: u32) -> [u32; 3] {
            [self.s(name), ty, bit_off]
        }
        pub(crate) fn build(self) -> Vec<u8> {
            let mut out = Vec::new();
            out.extend_from_slice(&BTF_MAGIC.to_le_bytes());
            out.extend_from_slice(&[1, 0]);
            for w in [
                24u32,
                0,
                self.types.len() as u32,
                self.types.len() as u32,
                self.strings.len() as u32,
            ] {
                out.extend_from_slice(&w.to_le_bytes());
            }
            out.extend_from_slice(&self.types);
            out.extend_from_slice(&self.strings);
            out
        }
    }

    /// A miniature vmlinux: `struct task_struct { long state; union { int
    /// a; }; ... pid at byte 1264 ... }` and `btf_trace_sched_switch`.
    fn fixture() -> Vec<u8> {
        let mut b = Builder::new();
        b.ty(KIND_INT, "int", 0, 4, &[32]); // 1
        b.ty(KIND_TYPEDEF, "pid_t", 0, 1, &[]); // 2
        let m = b.member("inner", 1, 0);
        b.ty(KIND_STRUCT, "", 1, 4, &m); // 3: anonymous struct { int inner; }
        let m1 = b.member("state", 1, 0);
        let m2 = b.member("", 3, 64);
        let m3 = b.member("pid", 2, 1264 * 8);
        let m4 = b.member("tgid", 2, 1268 * 8);
        let all: Vec<u32> = [m1, m2, m3, m4].concat();
        b.ty(KIND_STRUCT, "task_struct", 4, 4096, &all); // 4
        b.ty(KIND_PTR, "", 0, 4, &[]); // 5: task_struct *
        b.ty(KIND_INT, "_Bool", 0, 1, &[8]); // 6
        b.ty(KIND_PTR, "", 0, 0, &[]); // 7: void *
        let params = [0, 7, 0, 6, 0, 5, 0, 5, 0, 1];
        b.ty(KIND_FUNC_PROTO, "", 5, 0, &params); // 8
        b.ty(KIND_PTR, "", 0, 8, &[]); // 9
        b.ty(KIND_TYPEDEF, "btf_trace_sched_switch", 0, 9, &[]); // 10
        let (locked, head) = (b.s("PG_locked"), b.s("PG_head"));
        b.ty(KIND_ENUM, "pageflags", 2, 4, &[locked, 0, head, 6]); // 11
        b.ty(KIND_ARRAY, "", 0, 0, &[1, 1, 5121]); // 12: int[5121]
        let m = b.member("_zonerefs", 12, 0);
        b.ty(KIND_STRUCT, "zonelist", 1, 4 * 5121, &m); // 13
        b.ty(KIND_FUNC, "bpf_task_pt_regs", 0, 8, &[]); // 14
        b.build()
    }

    #[test]
    fn finds_functions_by_name() {
        let btf = Btf::parse(fixture()).unwrap();
        assert!(btf.has_function("bpf_task_pt_regs"));
        assert!(!btf.has_function("bpf_find_vma"));
        // A struct of that name is not a function.
        assert!(!btf.has_function("task_struct"));
    }

    #[test]
    fn finds_members_including_anonymous_ones() {
        let btf = Btf::parse(fixture()).unwrap();
        assert_eq!(btf.member("task_struct", "pid").unwrap(), (1264, 4));
        assert_eq!(btf.member("task_struct", "tgid").unwrap(), (1268, 4));
        assert_eq!(btf.member("task_struct", "inner").unwrap(), (8, 4));
        assert!(matches!(
            btf.member("task_struct", "nope"),
            Err(Error::BtfMissing { .. })
        ));
        assert!(btf.member("rq", "cpu").is_err());
    }

    #[test]
    fn finds_enum_values() {
        let btf = Btf::parse(fixture()).unwrap();
        assert_eq!(btf.enum_value("pageflags", "PG_head").unwrap(), 6);
        assert_eq!(btf.enum_value("pageflags", "PG_locked").unwrap(), 0);
        assert!(btf.enum_value("pageflags", "PG_nope").is_err());
        assert!(btf.enum_value("nope", "PG_head").is_err());
        assert_eq!(
            btf.enum_values("pageflags").unwrap(),
            vec![("PG_locked".into(), 0), ("PG_head".into(), 6)]
        );
    }

    #[test]
    fn finds_array_lengths() {
        let btf = Btf::parse(fixture()).unwrap();
        assert_eq!(btf.array_len("zonelist", "_zonerefs").unwrap(), 5121);
        assert!(btf.array_len("task_struct", "pid").is_err());
        assert!(btf.array_len("zonelist", "nope").is_err());
    }

    #[test]
    fn reads_tracepoint_arguments() {
        let btf = Btf::parse(fixture()).unwrap();
        let args = btf.tracepoint_args("sched_switch").unwrap();
        let task = TypeShape::Pointer {
            to: Some("task_struct".into()),
        };
        assert_eq!(
            args,
            vec![
                TypeShape::Int { size: 1 },
                task.clone(),
                task,
                TypeShape::Int { size: 4 }
            ]
        );
        assert!(btf.tracepoint_args("sched_wakeup").is_err());
    }

    #[test]
    fn rejects_garbage() {
        assert!(Btf::parse(vec![0; 8]).is_err());
        let mut bad = fixture();
        bad.truncate(30);
        assert!(Btf::parse(bad).is_err());
    }

    #[test]
    fn reads_the_running_kernel_when_present() {
        let path = Path::new(VMLINUX_BTF);
        if !path.exists() {
            return;
        }
        let btf = Btf::from_file(path).unwrap();
        let (pid, size) = btf.member("task_struct", "pid").unwrap();
        let (tgid, _) = btf.member("task_struct", "tgid").unwrap();
        assert_eq!(size, 4);
        assert_eq!(tgid, pid + 4, "pid and tgid are adjacent in task_struct");
    }
}
