//! Kernel symbols from `/proc/kallsyms`: names for stack frames and static
//! locks, and the text ranges of the locking code that callers are found
//! outside of (as `perf lock contention` does).
//!
//! The format is one `ADDR TYPE NAME [MODULE]` line per symbol; parsing it
//! is a few lines, so no symbolisation crate is pulled in for it.

use std::path::Path;

use crate::error::{Error, Result};

#[derive(Debug, Clone)]
struct Sym {
    addr: u64,
    kind: char,
    name: String,
}

#[derive(Debug, Clone, Default)]
pub struct Kallsyms {
    /// Sorted by address.
    syms: Vec<Sym>,
    /// `__sched_text_start..end`: mutex and rwsem slow paths live here.
    sched_text: Option<(u64, u64)>,
    /// `__lock_text_start..end`: spinlock functions live here.
    lock_text: Option<(u64, u64)>,
}

impl Kallsyms {
    pub fn load() -> Result<Self> {
        let path = Path::new("/proc/kallsyms");
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        Ok(Self::parse(&text))
    }

    pub fn parse(text: &str) -> Self {
        let mut syms: Vec<Sym> = text
            .lines()
            .filter_map(|l| {
                let mut f = l.split_whitespace();
                let addr = u64::from_str_radix(f.next()?, 16).ok()?;
                let kind = f.next()?.chars().next()?;
                let name = f.next()?.to_string();
                // Without privileges every address reads as 0.
                (addr != 0).then_some(Sym { addr, kind, name })
            })
            .collect();
        syms.sort_by_key(|s| s.addr);
        let addr_of = |name: &str| syms.iter().find(|s| s.name == name).map(|s| s.addr);
        let range = |a: &str, b: &str| Some((addr_of(a)?, addr_of(b)?));
        Self {
            sched_text: range("__sched_text_start", "__sched_text_end"),
            lock_text: range("__lock_text_start", "__lock_text_end"),
            syms,
        }
    }

    /// The address ranges of the locking code, `__lock_text` (spinlocks)
    /// and `__sched_text` (mutex and rwsem slow paths); zeros where unknown.
    pub fn locking_text(&self) -> [(u64, u64); 2] {
        [
            self.lock_text.unwrap_or_default(),
            self.sched_text.unwrap_or_default(),
        ]
    }

    pub fn is_empty(&self) -> bool {
        self.syms.is_empty()
    }

    /// The function (text symbol) containing `addr`, with the offset.
    pub fn function(&self, addr: u64) -> Option<(&str, u64)> {
        let i = self
            .syms
            .partition_point(|s| s.addr <= addr)
            .checked_sub(1)?;
        let s = &self.syms[i];
        matches!(s.kind, 't' | 'T' | 'w' | 'W').then(|| (s.name.as_str(), addr - s.addr))
    }

    /// `name+0xoff` for a code address, or the address in hex.
    pub fn describe(&self, addr: u64) -> String {
        match self.function(addr) {
            Some((name, off)) => format!("{name}+{off:#x}"),
            None => format!("{addr:#x}"),
        }
    }

    /// Name of a static lock: a data symbol starting exactly at `addr`.
    pub fn static_object(&self, addr: u64) -> Option<&str> {
        let i = self.syms.partition_point(|s| s.addr < addr);
        self.syms[i..]
            .iter()
            .take_while(|s| s.addr == addr)
            .find(|s| matches!(s.kind, 'd' | 'D' | 'b' | 'B' | 'r' | 'R'))
            .map(|s| s.name.as_str())
    }

    /// Whether `addr` is in the kernel's locking code, which the caller of a
    /// contended lock is not (perf's `machine__is_lock_function`).
    pub fn is_lock_function(&self, addr: u64) -> bool {
        [self.sched_text, self.lock_text]
            .into_iter()
            .flatten()
            .any(|(start, end)| start <= addr && addr < end)
    }

    /// The first frame of a waiter's stack outside the locking code: the
    /// function that took the lock.
    pub fn caller(&self, stack: &[u64]) -> Option<u64> {
        stack.iter().copied().find(|&ip| !self.is_lock_function(ip))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FIXTURE: &str = "\
ffffffff81000000 T _stext
ffffffff81100000 T __sched_text_start
ffffffff81100010 T __schedule
ffffffff81100400 T rwsem_down_write_slowpath
ffffffff81100800 T __sched_text_end
ffffffff81100900 T __lock_text_start
ffffffff81100910 T _raw_spin_lock
ffffffff81100a00 T __lock_text_end
ffffffff81200000 T do_mmap
ffffffff81200400 t vma_link
ffffffff82000000 D tasklist_lock
ffffffff82000040 d some_table
ffffffff82100000 B jiffies_lock [some_module]
";

    #[test]
    fn finds_functions_and_offsets() {
        let k = Kallsyms::parse(FIXTURE);
        assert_eq!(k.function(0xffffffff81200010), Some(("do_mmap", 0x10)));
        assert_eq!(k.function(0xffffffff81200400), Some(("vma_link", 0)));
        assert_eq!(k.describe(0xffffffff81100915), "_raw_spin_lock+0x5");
        // Data symbols are not functions.
        assert_eq!(k.function(0xffffffff82000008), None);
        assert_eq!(k.describe(0x10), "0x10");
    }

    #[test]
    fn names_static_locks_only_at_their_start() {
        let k = Kallsyms::parse(FIXTURE);
        assert_eq!(k.static_object(0xffffffff82000000), Some("tasklist_lock"));
        assert_eq!(k.static_object(0xffffffff82100000), Some("jiffies_lock"));
        assert_eq!(k.static_object(0xffffffff82000008), None);
        assert_eq!(
            k.static_object(0xffffffff81200000),
            None,
            "text is not a lock"
        );
    }

    #[test]
    fn callers_skip_lock_and_sched_text() {
        let k = Kallsyms::parse(FIXTURE);
        let stack = [
            0xffffffff81100915,
            0xffffffff81100410,
            0xffffffff81200420,
            0xffffffff81200010,
        ];
        assert!(k.is_lock_function(stack[0]) && k.is_lock_function(stack[1]));
        assert_eq!(k.caller(&stack), Some(0xffffffff81200420));
        assert_eq!(k.describe(k.caller(&stack).unwrap()), "vma_link+0x20");
        assert_eq!(k.caller(&stack[..2]), None);
    }

    #[test]
    fn unprivileged_kallsyms_is_empty() {
        let k = Kallsyms::parse("0000000000000000 T _stext\n0000000000000000 D tasklist_lock\n");
        assert!(k.is_empty());
        assert!(!k.is_lock_function(0x1234));
    }

    #[test]
    fn reads_this_kernel() {
        let k = Kallsyms::load().unwrap();
        assert!(!k.is_empty(), "kallsyms hides addresses: run as root");
        assert!(k.sched_text.is_some() && k.lock_text.is_some());
        let (start, _) = k.lock_text.unwrap();
        assert!(k.is_lock_function(start));
    }
}
