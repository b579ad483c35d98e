//! Names of user-space addresses: a process's address goes to the file
//! mapped there (`/proc/PID/maps`, the file itself opened through
//! `/proc/PID/map_files`, which also reaches deleted and replaced files
//! and files in other mount namespaces), then to the function of that
//! file's ELF symbol table (`.symtab`, else `.dynsym`) that contains it.
//! Files are parsed once and shared by every process that maps them (by
//! inode and path, and one copy per build id); only the symbol tables and
//! section headers are read. Processes that exit keep the maps last read.
//!
//! The `object` crate reads ELF. blazesym (libbpf's symboliser) would also
//! read DWARF and Go's own tables, but pulls in far more than the symbol
//! tables this needs; function names are what the metrics and profiles
//! show.

use std::collections::HashMap;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::sync::Arc;

use object::read::ReadCache;
use object::{Object, ObjectSection, ObjectSegment, ObjectSymbol, SymbolKind};

use crate::host::proc::{self, MapsLine};

/// Processes whose maps are kept (least recently used go first).
const MAX_PROCESSES: usize = 512;
/// Files kept parsed (least recently used go first).
const MAX_MODULES: usize = 256;

/// One frame, named.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    pub address: u64,
    /// The file's name (`libc.so.6`), `[unknown]` outside any file.
    pub module: String,
    /// The function containing the address, if its file names it.
    pub function: Option<String>,
    /// The address in the file's own (ELF virtual) addresses.
    pub file_address: u64,
    /// The mapping the address is in, for profiles: start, end, file offset.
    pub mapping: Option<(u64, u64, u64)>,
    /// The file's build id (hex), for profiles.
    pub build_id: Option<String>,
    pub path: Option<String>,
}

impl Frame {
    /// `function` or `module+0xoffset`.
    pub fn name(&self) -> String {
        match &self.function {
            Some(f) => f.clone(),
            None => format!("{}+{:#x}", self.module, self.file_address),
        }
    }
}

/// A parsed file: its functions and where its segments load.
pub struct Module {
    pub name: String,
    pub path: String,
    pub build_id: Option<String>,
    /// (start, end, name) in ELF virtual addresses, sorted by start.
    functions: Vec<(u64, u64, String)>,
    /// (file offset, file size, virtual address) of each loaded segment.
    segments: Vec<(u64, u64, u64)>,
    /// Virtual address ranges of the PLT sections and of the GOT.
    plt: Vec<(u64, u64)>,
    got: Vec<(u64, u64)>,
    /// The file, kept open to check call instructions (also when deleted).
    file: File,
    /// Whether its functions set up frame pointers.
    pub uses_frame_pointers: bool,
}

impl Module {
    /// Parses the ELF file `file` (`name` for display). `None` when it is
    /// not an ELF file this can read.
    pub fn parse(file: File, path: &str) -> Option<Self> {
        let cache = ReadCache::new(file.try_clone().ok()?);
        let elf = object::File::parse(&cache).ok()?;
        let mut functions: Vec<(u64, u64, String)> = Vec::new();
        let table: Vec<_> = if elf.symbols().next().is_some() {
            elf.symbols().collect()
        } else {
            elf.dynamic_symbols().collect()
        };
        for s in table {
            if s.kind() != SymbolKind::Text || s.address() == 0 || !s.is_definition() {
                continue;
            }
            let Ok(name) = s.name() else { continue };
            functions.push((s.address(), s.size(), demangle(name)));
        }
        // Of aliases (`__getpid`, `getpid`), the public name: fewest
        // leading underscores, then shortest.
        functions.sort_by_key(|f| {
            let underscores = f.2.len() - f.2.trim_start_matches('_').len();
            (f.0, std::cmp::Reverse(f.1), underscores, f.2.len())
        });
        functions.dedup_by_key(|f| f.0);
        // Symbols without a size reach the next symbol.
        let starts: Vec<u64> = functions.iter().map(|f| f.0).collect();
        for (i, f) in functions.iter_mut().enumerate() {
            if f.1 == 0 {
                f.1 = starts.get(i + 1).map_or(0, |next| next.saturating_sub(f.0));
            }
        }
        let functions = functions
            .into_iter()
            .map(|(start, size, name)| (start, start.saturating_add(size), name))
            .collect();
        let segments = elf
            .segments()
            .map(|s| {
                let (off, size) = s.file_range();
                (off, size, s.address())
            })
            .collect();
        let ranges = |names: &[&str]| -> Vec<(u64, u64)> {
            elf.sections()
                .filter(|s| s.name().is_ok_and(|n| names.contains(&n)))
                .map(|s| (s.address(), s.address().saturating_add(s.size())))
                .collect()
        };
        let plt = ranges(&[".plt", ".plt.sec", ".plt.got"]);
        let got = ranges(&[".got", ".got.plt"]);
        let build_id = elf
            .build_id()
            .ok()
            .flatten()
            .map(|b| b.iter().map(|x| format!("{x:02x}")).collect());
        let name = path
            .trim_end_matches(" (deleted)")
            .rsplit('/')
            .next()
            .unwrap_or(path)
            .to_string();
        let mut module = Self {
            name,
            path: path.to_string(),
            build_id,
            functions,
            segments,
            plt,
            got,
            file,
            uses_frame_pointers: false,
        };
        module.uses_frame_pointers = module.sample_prologues();
        Some(module)
    }

    /// Whether most of (up to 64 of) its larger functions start with
    /// `push %rbp; mov %rsp,%rbp` (after an `endbr64`): built with frame
    /// pointers. Small leaf functions go without them even then.
    fn sample_prologues(&self) -> bool {
        let (mut with, mut seen) = (0, 0);
        for (start, _, _) in self.functions.iter().filter(|f| f.1 - f.0 >= 64).take(64) {
            let mut b = [0u8; 8];
            if !self.read(*start, &mut b) {
                continue;
            }
            seen += 1;
            let body = if b[..4] == [0xf3, 0x0f, 0x1e, 0xfa] {
                &b[4..]
            } else {
                &b[..4]
            };
            if body[..4] == [0x55, 0x48, 0x89, 0xe5] {
                with += 1;
            }
        }
        seen > 0 && with * 2 > seen
    }

    /// Whether the bytes before `ret` are a call instruction: `call rel32`,
    /// or `call` through a register or memory (opcode FF, ModRM reg 2) of
    /// any length.
    pub fn follows_call(&self, ret: u64) -> bool {
        let mut b = [0u8; 7];
        if ret < 7 || !self.read(ret - 7, &mut b) {
            return false;
        }
        if b[2] == 0xe8 {
            return true;
        }
        // FF /2 with the ModRM byte right after: 2 (register), 3 (disp8
        // or SIB), 4 (SIB + disp8), 6 (disp32 or RIP-relative) or 7 (SIB
        // + disp32) bytes before the return address.
        [5usize, 4, 3, 1, 0].iter().any(|&i| {
            b[i] == 0xff && (b[i + 1] >> 3) & 7 == 2 && {
                let modrm = b[i + 1];
                let (md, rm) = (modrm >> 6, modrm & 7);
                let len = 7 - i;
                match (md, rm == 4) {
                    (3, _) => len == 2,
                    (1, false) => len == 3,
                    (1, true) => len == 4,
                    (0, false) if rm == 5 => len == 6,
                    (0, false) => len == 2,
                    (0, true) => len == 3 || len == 7,
                    (2, false) => len == 6,
                    (2, true) => len == 7,
                    _ => false,
                }
            }
        })
    }

    /// The ELF virtual address of file offset `offset`.
    fn file_address(&self, offset: u64) -> Option<u64> {
        self.segments
            .iter()
            .find(|(off, size, _)| (*off..off.saturating_add(*size)).contains(&offset))
            .map(|(off, _, vaddr)| offset - off + vaddr)
    }

    fn file_offset(&self, vaddr: u64) -> Option<u64> {
        self.segments
            .iter()
            .find(|(_, size, va)| (*va..va.saturating_add(*size)).contains(&vaddr))
            .map(|(off, _, va)| vaddr - va + off)
    }

    /// The function containing `vaddr`: never a neighbour's name for an
    /// address past a function's end.
    pub fn function(&self, vaddr: u64) -> Option<&str> {
        let i = self.functions.partition_point(|f| f.0 <= vaddr);
        let (start, end, name) = self.functions.get(i.checked_sub(1)?)?;
        (*start <= vaddr && vaddr < *end).then_some(name.as_str())
    }

    fn read(&self, vaddr: u64, buf: &mut [u8]) -> bool {
        self.file_offset(vaddr)
            .is_some_and(|off| self.file.read_exact_at(buf, off).is_ok())
    }

    /// Whether `ret` (a virtual address of this file) follows a call into
    /// another file: `call rel32` to a PLT entry, or `call *disp32(%rip)`
    /// through a GOT slot (`-fno-plt`), or a direct `call rel32` to the
    /// start of a function (static binaries).
    pub fn follows_call_out(&self, ret: u64) -> bool {
        let mut b = [0u8; 6];
        if ret < 6 || !self.read(ret - 6, &mut b) {
            return false;
        }
        let in_any = |ranges: &[(u64, u64)], a: u64| ranges.iter().any(|r| (r.0..r.1).contains(&a));
        if b[1] == 0xe8 {
            let rel = i32::from_le_bytes([b[2], b[3], b[4], b[5]]);
            let target = ret.wrapping_add_signed(i64::from(rel));
            return in_any(&self.plt, target)
                || self
                    .functions
                    .binary_search_by_key(&target, |f| f.0)
                    .is_ok();
        }
        if b[0] == 0xff && b[1] == 0x15 {
            let disp = i32::from_le_bytes([b[2], b[3], b[4], b[5]]);
            return in_any(&self.got, ret.wrapping_add_signed(i64::from(disp)));
        }
        false
    }
}

/// Rust symbols demangled (without their hash), C++ ones (Itanium ABI)
/// too; others as they are.
fn demangle(name: &str) -> String {
    if let Ok(d) = rustc_demangle::try_demangle(name) {
        return format!("{d:#}");
    }
    let options = cpp_demangle::DemangleOptions::new().no_params();
    name.starts_with("_Z")
        .then(|| {
            cpp_demangle::Symbol::new(name)
                .ok()?
                .demangle(&options)
                .ok()
        })
        .flatten()
        .unwrap_or_else(|| name.to_string())
}

/// An executable mapping of a process and its parsed file.
struct ExecMap {
    line: MapsLine,
    module: Option<Arc<Module>>,
}

struct Process {
    maps: Vec<ExecMap>,
    used: u64,
    /// The round the maps were last read in.
    read: u64,
}

/// Processes' maps and parsed files, both bounded.
#[derive(Default)]
pub struct Symbolizer {
    processes: HashMap<u32, Process>,
    modules: HashMap<(u64, String), (Arc<Module>, u64)>,
    clock: u64,
    round: u64,
}

impl Symbolizer {
    /// A new round: a process's maps may be read again once per round
    /// (for a library loaded since).
    pub fn begin_round(&mut self) {
        self.round += 1;
    }

    /// Names `address` in process `tgid`; with the parsed file it lies in
    /// when its own (ELF virtual) address is known, for the checks of call
    /// instructions there.
    pub fn resolve(&mut self, tgid: u32, address: u64) -> (Frame, Option<Arc<Module>>) {
        self.clock += 1;
        let unknown = Frame {
            address,
            module: "[unknown]".into(),
            function: None,
            file_address: address,
            mapping: None,
            build_id: None,
            path: None,
        };
        let covered = |p: &Process| {
            p.maps
                .iter()
                .any(|m| (m.line.mapping.start..m.line.mapping.end).contains(&address))
        };
        let stale = match self.processes.get(&tgid) {
            None => true,
            Some(p) => !covered(p) && p.read != self.round,
        };
        if stale {
            if let Some(maps) = self.read_maps(tgid) {
                self.evict_processes();
                self.processes.insert(
                    tgid,
                    Process {
                        maps,
                        used: self.clock,
                        read: self.round,
                    },
                );
            }
        }
        let clock = self.clock;
        let Some(p) = self.processes.get_mut(&tgid) else {
            return (unknown, None);
        };
        p.used = clock;
        let Some(m) = p
            .maps
            .iter()
            .find(|m| (m.line.mapping.start..m.line.mapping.end).contains(&address))
        else {
            return (unknown, None);
        };
        let offset = address - m.line.mapping.start + m.line.offset;
        let Some(module) = &m.module else {
            let frame = Frame {
                module: m.line.name.rsplit('/').next().unwrap_or("").to_string(),
                file_address: offset,
                mapping: Some((m.line.mapping.start, m.line.mapping.end, m.line.offset)),
                ..unknown
            };
            return (frame, None);
        };
        let vaddr = module.file_address(offset);
        let file_address = vaddr.unwrap_or(offset);
        let frame = Frame {
            address,
            module: module.name.clone(),
            function: module.function(file_address).map(str::to_string),
            file_address,
            mapping: Some((m.line.mapping.start, m.line.mapping.end, m.line.offset)),
            build_id: module.build_id.clone(),
            path: Some(module.path.clone()),
        };
        (frame, vaddr.map(|_| module.clone()))
    }

    fn read_maps(&mut self, tgid: u32) -> Option<Vec<ExecMap>> {
        let lines = proc::maps(tgid).ok()?;
        let mut out = Vec::new();
        for line in lines.into_iter().filter(MapsLine::executable) {
            let module = (line.inode != 0)
                .then(|| self.module(tgid, &line))
                .flatten();
            out.push(ExecMap { line, module });
        }
        Some(out)
    }

    fn module(&mut self, tgid: u32, line: &MapsLine) -> Option<Arc<Module>> {
        self.clock += 1;
        let key = (line.inode, line.name.clone());
        if let Some((m, used)) = self.modules.get_mut(&key) {
            *used = self.clock;
            return Some(m.clone());
        }
        let link = format!(
            "/proc/{tgid}/map_files/{:x}-{:x}",
            line.mapping.start, line.mapping.end
        );
        // Only through map_files: the path may name another file in this
        // mount namespace (a container's), or none (deleted).
        let file = File::open(&link).ok()?;
        let parsed = Module::parse(file, &line.name)?;
        // The same build in another container or under another path: one
        // copy.
        let same_build = parsed.build_id.as_ref().and_then(|id| {
            self.modules
                .values()
                .find(|(m, _)| m.build_id.as_ref() == Some(id))
                .map(|(m, _)| m.clone())
        });
        let module = same_build.unwrap_or_else(|| Arc::new(parsed));
        if self.modules.len() >= MAX_MODULES {
            if let Some(oldest) = self
                .modules
                .iter()
                .min_by_key(|(_, (_, used))| *used)
                .map(|(k, _)| k.clone())
            {
                self.modules.remove(&oldest);
            }
        }
        self.modules.insert(key, (module.clone(), self.clock));
        Some(module)
    }

    fn evict_processes(&mut self) {
        while self.processes.len() >= MAX_PROCESSES {
            let Some(oldest) = self
                .processes
                .iter()
                .min_by_key(|(_, p)| p.used)
                .map(|(t, _)| *t)
            else {
                return;
            };
            self.processes.remove(&oldest);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_a_function_of_this_test_binary_and_not_past_its_end() {
        let mut s = Symbolizer::default();
        let pid = std::process::id();
        let (f, _) = s.resolve(
            pid,
            names_a_function_of_this_test_binary_and_not_past_its_end as *const () as u64,
        );
        assert!(
            f.function
                .as_deref()
                .is_some_and(|n| n.contains("names_a_function_of_this_test_binary")),
            "{f:?}"
        );
        assert!(f.build_id.is_some(), "{f:?}");
        let (libc, _) = s.resolve(pid, libc::getpid as *const () as u64);
        assert!(libc.module.starts_with("libc"), "{libc:?}");
        assert_eq!(libc.function.as_deref(), Some("getpid"), "{libc:?}");
        // Outside any mapping.
        assert_eq!(s.resolve(pid, 0x10).0.module, "[unknown]");
        // A process that does not exist.
        assert_eq!(s.resolve(u32::MAX, 0x1000).0.module, "[unknown]");
    }

    #[test]
    fn rust_and_cpp_names_are_demangled_and_others_kept() {
        assert_eq!(
            demangle("_ZN3std4sync5mutex14Mutex$LT$T$GT$4lock17h0123456789abcdefE"),
            "std::sync::mutex::Mutex<T>::lock"
        );
        assert_eq!(demangle("_ZN5Cache6insertERKSsi"), "Cache::insert");
        assert_eq!(demangle("pthread_mutex_lock"), "pthread_mutex_lock");
        assert_eq!(demangle("_Zbroken"), "_Zbroken");
    }

    #[test]
    fn a_deleted_binary_is_still_read_through_map_files() {
        let dir = tempfile::tempdir().unwrap();
        let copy = dir.path().join("sleeper");
        std::fs::copy("/bin/sleep", &copy).unwrap();
        let mut child = std::process::Command::new(&copy).arg("30").spawn().unwrap();
        // Until it has mapped its binary.
        let text = (0..100)
            .find_map(|_| {
                std::thread::sleep(std::time::Duration::from_millis(10));
                proc::maps(child.id())
                    .ok()?
                    .into_iter()
                    .find(|l| l.executable() && l.name.ends_with("sleeper"))
            })
            .expect("the child maps its binary");
        std::fs::remove_file(&copy).unwrap();
        let mut s = Symbolizer::default();
        let (f, _) = s.resolve(child.id(), text.mapping.start + 16);
        let _ = child.kill();
        let _ = child.wait();
        assert_eq!(f.module, "sleeper", "{f:?}");
        assert!(f.build_id.is_some(), "read from the deleted file: {f:?}");
        assert!(f.path.is_some_and(|p| p.ends_with("(deleted)")));
    }
}
