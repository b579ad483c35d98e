//! Kernel-specific offsets the programs read, resolved at start from BTF
//! (struct members, tracepoint prototypes, enums) and tracefs (classic
//! tracepoint records), and handed over as load-time constants: Rust eBPF
//! has no CO-RE relocations.

use std::path::Path;

use hostprobe_common::numa;

use crate::error::{Error, Result};
use crate::host::btf::{Btf, TypeShape};
use crate::host::tracefs::Format;

/// `enum migrate_reason` names by value, lowercased without `MR_`.
pub fn migrate_reasons(btf: &Btf) -> Result<Vec<String>> {
    let mut v = btf.enum_values("migrate_reason")?;
    v.retain(|(_, val)| (0..i64::from(numa::MAX_REASONS)).contains(val));
    let mut names = vec![String::new(); v.iter().map(|(_, x)| *x as usize + 1).max().unwrap_or(0)];
    for (name, val) in v {
        names[val as usize] = name.trim_start_matches("MR_").to_ascii_lowercase();
    }
    Ok(names)
}

/// Offsets in `task_struct` read by the BTF tracepoints.
#[derive(Debug, Clone, Copy)]
pub struct TaskOffsets {
    pub pid: u32,
    pub tgid: u32,
    /// The task's CPU: `thread_info.cpu` (5.16+ with THREAD_INFO_IN_TASK),
    /// else `task_struct.cpu`.
    pub cpu: u32,
    /// `task_struct.comm`, the thread's name (16 bytes).
    pub comm: u32,
    /// `task_struct.signal` and `signal_struct.nr_threads`: whether a
    /// process has threads to co-schedule at all.
    pub signal: u32,
    pub nr_threads: u32,
}

/// Resolves the `task_struct` offsets every scheduler program reads.
pub fn task_offsets(btf: &Btf) -> Result<TaskOffsets> {
    let int4 = |member: &str| -> Result<u32> {
        match btf.member("task_struct", member)? {
            (off, 4) => Ok(off),
            (_, size) => Err(Error::BtfMissing {
                what: format!("4-byte task_struct.{member} (it has {size} bytes)"),
            }),
        }
    };
    let cpu = match (
        btf.member("task_struct", "thread_info"),
        btf.member("thread_info", "cpu"),
    ) {
        (Ok((ti, _)), Ok((off, 4))) => ti + off,
        _ => int4("cpu")?,
    };
    Ok(TaskOffsets {
        pid: int4("pid")?,
        tgid: int4("tgid")?,
        cpu,
        comm: match btf.array_len("task_struct", "comm")? {
            16 => btf.member("task_struct", "comm")?.0,
            n => {
                return Err(Error::BtfMissing {
                    what: format!("task_struct.comm of 16 bytes (it has {n})"),
                })
            }
        },
        signal: sized(btf, "task_struct", "signal", 8)?,
        nr_threads: sized(btf, "signal_struct", "nr_threads", 4)?,
    })
}

/// The links from a task to its cgroup v2 id:
/// `task->cgroups->dfl_cgrp->kn->id`.
#[derive(Debug, Clone, Copy, Default)]
pub struct CgroupOffsets {
    pub task_cgroups: u32,
    pub css_set_dfl_cgrp: u32,
    pub cgroup_kn: u32,
    pub kernfs_node_id: u32,
}

/// Resolves the chain `sched_switch` follows to name the workload of the
/// task it switches in (it can ask the kernel only about `current`).
pub fn cgroup_offsets(btf: &Btf) -> Result<CgroupOffsets> {
    Ok(CgroupOffsets {
        task_cgroups: sized(btf, "task_struct", "cgroups", 8)?,
        css_set_dfl_cgrp: sized(btf, "css_set", "dfl_cgrp", 8)?,
        cgroup_kn: sized(btf, "cgroup", "kn", 8)?,
        kernfs_node_id: sized(btf, "kernfs_node", "id", 8)?,
    })
}

/// What the lock program reads of a sleeping lock's owner; `u32::MAX`
/// for what this kernel's BTF lacks (that lock type's owner is not read).
#[derive(Debug, Clone, Copy)]
pub struct OwnerOffsets {
    pub mutex_owner: u32,
    pub rwsem_owner: u32,
    pub task_state: u32,
    pub task_on_cpu: u32,
}

/// Resolves the owner offsets, each on its own (PREEMPT_RT's mutexes have
/// no `owner` word: an `rt_mutex_base` instead).
pub fn owner_offsets(btf: &Btf) -> OwnerOffsets {
    let or_none = |r: Result<u32>| r.unwrap_or(u32::MAX);
    OwnerOffsets {
        mutex_owner: or_none(sized(btf, "mutex", "owner", 8)),
        rwsem_owner: or_none(sized(btf, "rw_semaphore", "owner", 8)),
        task_state: task_state_offset(btf).unwrap_or(u32::MAX),
        task_on_cpu: or_none(sized(btf, "task_struct", "on_cpu", 4)),
    }
}

/// `task_struct.__state` (5.14+) or `.state` (before), read as its low 32
/// bits (the states all fit).
fn task_state_offset(btf: &Btf) -> Option<u32> {
    ["__state", "state"]
        .iter()
        .find_map(|m| match btf.member("task_struct", m) {
            Ok((off, 4 | 8)) => Some(off),
            _ => None,
        })
}

/// Where `sched_switch` finds the state the outgoing task leaves in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PrevState {
    /// The tracepoint's `prev_state` argument (5.18+).
    Argument,
    /// `prev->__state` (5.14+) or `prev->state` (before) at this offset,
    /// read as its low 32 bits (the states all fit).
    TaskField(u32),
}

impl PrevState {
    /// The program's `TASK_STATE_OFFSET`: `u32::MAX` for the argument.
    pub fn load_time_constant(self) -> u32 {
        match self {
            PrevState::Argument => u32::MAX,
            PrevState::TaskField(offset) => offset,
        }
    }
}

/// Checks that the BTF tracepoint of a scheduler program passes what the
/// program reads; for `sched_switch`, also where the outgoing task's state
/// is. Each program is checked on its own, so one prototype that differs
/// takes down only its own program.
pub fn sched_args(btf: &Btf, tracepoint: &str) -> Result<Option<PrevState>> {
    let task = TypeShape::Pointer {
        to: Some("task_struct".into()),
    };
    let args = btf.tracepoint_args(tracepoint)?;
    let bad = |expected: &str| Error::BadTracepointArgs {
        tracepoint: format!("sched:{tracepoint}"),
        reason: format!("expected {expected}, found {args:?}"),
    };
    match tracepoint {
        "sched_switch" => {
            // (bool preempt, task_struct *prev, task_struct *next), and from
            // 5.18 unsigned int prev_state.
            if args.len() < 3 || args[1] != task || args[2] != task {
                return Err(bad("(preempt, prev, next[, prev_state])"));
            }
            if matches!(args.get(3), Some(TypeShape::Int { .. })) {
                return Ok(Some(PrevState::Argument));
            }
            let state = task_state_offset(btf).ok_or_else(|| Error::BtfMissing {
                    what: "task_struct.__state or task_struct.state (the outgoing task's state, which sched_switch passes only from 5.18)".into(),
                })?;
            Ok(Some(PrevState::TaskField(state)))
        }
        "sched_migrate_task" => {
            if args.len() != 2 || args[0] != task || !matches!(args[1], TypeShape::Int { .. }) {
                return Err(bad("(task_struct *p, int dest_cpu)"));
            }
            Ok(None)
        }
        _ => {
            if args.first() != Some(&task) {
                return Err(bad("(task_struct *p)"));
            }
            Ok(None)
        }
    }
}

/// From a dirtied page's `address_space` to its filesystem's device:
/// `mapping->host->i_sb->s_dev`.
#[derive(Debug, Clone, Copy, Default)]
pub struct MappingOffsets {
    pub mapping_host: u32,
    pub inode_sb: u32,
    pub sb_dev: u32,
}

/// How the dirtying program learns the size of what was dirtied.
#[derive(Debug, Clone, Copy, Default)]
pub struct FolioOffsets {
    pub flags: u32,
    pub pg_head: u32,
    pub nr_pages: u32,
}

fn sized(btf: &Btf, st: &str, member: &str, want: u32) -> Result<u32> {
    match btf.member(st, member)? {
        (off, size) if size == want => Ok(off),
        (_, size) => Err(Error::BtfMissing {
            what: format!("{want}-byte {st}.{member} (it has {size} bytes)"),
        }),
    }
}

pub fn mapping_offsets(btf: &Btf) -> Result<MappingOffsets> {
    Ok(MappingOffsets {
        mapping_host: sized(btf, "address_space", "host", 8)?,
        inode_sb: sized(btf, "inode", "i_sb", 8)?,
        sb_dev: sized(btf, "super_block", "s_dev", 4)?,
    })
}

/// Checks that a dirtying tracepoint passes (`what` *, address_space *):
/// `writeback_dirty_folio` (5.16+) a folio, `writeback_dirty_page` before
/// it a page.
pub fn dirty_args(btf: &Btf, tracepoint: &str, what: &str) -> Result<()> {
    let args = btf.tracepoint_args(tracepoint)?;
    let ptr = |to: &str| TypeShape::Pointer {
        to: Some(to.into()),
    };
    if args != [ptr(what), ptr("address_space")] {
        return Err(Error::BadTracepointArgs {
            tracepoint: format!("writeback:{tracepoint}"),
            reason: format!("expected ({what} *, address_space *), found {args:?}"),
        });
    }
    Ok(())
}

/// `struct folio`'s flags, its `PG_head` bit and its page count.
pub fn folio_offsets(btf: &Btf) -> Result<FolioOffsets> {
    // 6.18 calls it `_nr_pages`, 6.1 `_folio_nr_pages`.
    let nr_pages = sized(btf, "folio", "_nr_pages", 4)
        .or_else(|_| sized(btf, "folio", "_folio_nr_pages", 4))?;
    let pg_head = btf.enum_value("pageflags", "PG_head")?;
    dirty_args(btf, "writeback_dirty_folio", "folio")?;
    Ok(FolioOffsets {
        flags: sized(btf, "folio", "flags", 8)?,
        pg_head: u32::try_from(pg_head).map_err(|_| Error::BtfMissing {
            what: format!("a small PG_head bit (found {pg_head})"),
        })?,
        nr_pages,
    })
}

/// Where `mm_page_alloc` finds a page's node: `page->flags` at `flags`,
/// node = (flags >> shift) & mask.
#[derive(Debug, Clone, Copy, Default)]
pub struct PageNodeBits {
    pub flags: u32,
    pub shift: u32,
    pub mask: u64,
}

/// The node bits of `page->flags` on x86-64 with SPARSEMEM_VMEMMAP (no
/// section bits): the top NODES_SHIFT bits, where MAX_NUMNODES =
/// 2^NODES_SHIFT is read from BTF as `struct zonelist`'s
/// `_zonerefs[MAX_NUMNODES * MAX_NR_ZONES + 1]`.
pub fn page_node_bits(btf: &Btf) -> Result<PageNodeBits> {
    let args = btf.tracepoint_args("mm_page_alloc")?;
    let page = TypeShape::Pointer {
        to: Some("page".into()),
    };
    if args.first() != Some(&page) || args.get(1) != Some(&TypeShape::Int { size: 4 }) {
        return Err(Error::BadTracepointArgs {
            tracepoint: "kmem:mm_page_alloc".into(),
            reason: format!("expected (page *, unsigned int order, ...), found {args:?}"),
        });
    }
    let refs = u64::from(btf.array_len("zonelist", "_zonerefs")?);
    let zones = btf.enum_value("zone_type", "__MAX_NR_ZONES")?;
    let zones = u64::try_from(zones).ok().filter(|&z| z > 0);
    let nodes = zones
        .map(|z| (refs.saturating_sub(1)) / z)
        .filter(|n| n.is_power_of_two());
    let Some(nodes) = nodes else {
        return Err(Error::BtfMissing {
            what: format!("MAX_NUMNODES as a power of two (zonelist holds {refs} zonerefs)"),
        });
    };
    let bits = nodes.trailing_zeros();
    let (flags, size) = btf.member("page", "flags")?;
    if size != 8 {
        return Err(Error::BtfMissing {
            what: format!("8-byte page.flags (it has {size} bytes)"),
        });
    }
    Ok(PageNodeBits {
        flags,
        shift: 64 - bits,
        mask: nodes - 1,
    })
}

/// Offsets (succeeded, reason) in the `mm_migrate_pages` record.
pub fn migrate_pages_offsets(tracefs: &Path) -> Result<(u32, u32)> {
    let f = Format::read(tracefs, "migrate", "mm_migrate_pages")?;
    Ok((f.int_field("succeeded", 8)?, f.int_field("reason", 4)?))
}

/// Offsets in the `contention_begin` and `contention_end` records.
#[derive(Debug, Clone, Copy, Default)]
pub struct LockOffsets {
    pub begin_lock: u32,
    pub begin_flags: u32,
    pub end_lock: u32,
}

pub fn lock_offsets(tracefs: &Path) -> Result<LockOffsets> {
    let begin = Format::read(tracefs, "lock", "contention_begin")?;
    let end = Format::read(tracefs, "lock", "contention_end")?;
    Ok(LockOffsets {
        begin_lock: begin.int_field("lock_addr", 8)?,
        begin_flags: begin.int_field("flags", 4)?,
        end_lock: end.int_field("lock_addr", 8)?,
    })
}

/// Checks that the BTF tracepoints `contention_begin` and `contention_end`
/// pass `(void *lock, unsigned int flags)` and `(void *lock, int ret)`.
pub fn lock_args(btf: &Btf) -> Result<()> {
    for (tp, second) in [("contention_begin", "flags"), ("contention_end", "ret")] {
        let args = btf.tracepoint_args(tp)?;
        let ok = args.len() == 2
            && matches!(args[0], TypeShape::Pointer { .. })
            && args[1] == TypeShape::Int { size: 4 };
        if !ok {
            return Err(Error::BadTracepointArgs {
                tracepoint: format!("lock:{tp}"),
                reason: format!("expected (void *lock, {second}), found {args:?}"),
            });
        }
    }
    Ok(())
}

/// `balance_dirty_pages.pause` (jiffies).
pub fn balance_pause_offset(tracefs: &Path) -> Result<u32> {
    Format::read(tracefs, "writeback", "balance_dirty_pages")?.int_field("pause", 8)
}

/// Checks that `page_fault_user` passes (address, regs, error_code), the
/// third of which the program reads.
pub fn fault_args(btf: &Btf) -> Result<()> {
    if !cfg!(target_arch = "x86_64") {
        return Err(Error::X86Only {
            tracepoint: "exceptions:page_fault_user",
            arch: std::env::consts::ARCH,
            lost: "user write faults (new and present pages) are not counted; file dirtying and throttling are",
        });
    }
    let args = btf.tracepoint_args("page_fault_user")?;
    let ok = args.len() == 3
        && args[0] == TypeShape::Int { size: 8 }
        && args[1]
            == TypeShape::Pointer {
                to: Some("pt_regs".into()),
            }
        && args[2] == TypeShape::Int { size: 8 };
    if ok {
        Ok(())
    } else {
        Err(Error::BadTracepointArgs {
            tracepoint: "exceptions:page_fault_user".into(),
            reason: format!("expected (address, pt_regs *, error_code), found {args:?}"),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::host::btf::VMLINUX_BTF;
    use crate::host::tracefs;

    #[test]
    fn this_kernel_has_the_sched_layout_the_programs_expect() {
        let btf = Btf::from_file(Path::new(VMLINUX_BTF)).unwrap();
        let t = task_offsets(&btf).unwrap();
        assert_eq!(t.tgid, t.pid + 4);
        // 6.18 passes prev_state; the others only the task.
        assert_eq!(
            sched_args(&btf, "sched_switch").unwrap(),
            Some(PrevState::Argument)
        );
        for tp in ["sched_wakeup", "sched_wakeup_new", "sched_migrate_task"] {
            assert_eq!(sched_args(&btf, tp).unwrap(), None, "{tp}");
        }
        mapping_offsets(&btf).unwrap();
        let tracefs =
            tracefs::mount_point().expect("tracefs mounted (cargo xtask setup mounts it)");
        // 6.18: thread_info (with cpu) is the first member of task_struct.
        assert!(t.cpu < 64, "thread_info.cpu at {}", t.cpu);
        let l = lock_offsets(&tracefs).unwrap();
        assert!(l.begin_flags > l.begin_lock);
        lock_args(&btf).unwrap();
        let f = folio_offsets(&btf).unwrap();
        assert_eq!(f.flags, 0, "folio.flags is the first word of struct page");
        // 6.18 has folios only.
        assert!(dirty_args(&btf, "writeback_dirty_page", "page").is_err());
        assert!(
            f.nr_pages > 64 && f.nr_pages < 128,
            "_nr_pages in the second struct page"
        );
        assert!(balance_pause_offset(&tracefs).unwrap() >= 8);
        fault_args(&btf).unwrap();
        let bits = page_node_bits(&btf).unwrap();
        // The top NODES_SHIFT bits of the first word (6.18 and 6.1 here:
        // NODES_SHIFT 10, so (0, 54, 1023)); the 2-node guest checks the
        // node ids themselves.
        assert_eq!(bits.flags, 0);
        assert!((bits.mask + 1).is_power_of_two());
        assert_eq!(bits.shift + (bits.mask + 1).trailing_zeros(), 64);
        let (succeeded, reason) = migrate_pages_offsets(&tracefs).unwrap();
        assert!(reason > succeeded);
    }
}

/// What `sched_switch` reads of a sleeping thread's user registers to see
/// a futex wait and search its stack (see `ebpf-probes/probes/src/ulock.rs`).
#[derive(Debug, Clone, Copy)]
pub struct UlockOffsets {
    pub nr: u32,
    pub op: u32,
    pub ip: u32,
    pub sp: u32,
    pub fp: u32,
}

/// Resolves the `pt_regs` members of this architecture (x86-64 only: the
/// stack search knows its call encodings) and checks for the
/// `bpf_task_pt_regs` helper (5.15+).
pub fn ulock_offsets(btf: &Btf) -> Result<UlockOffsets> {
    if !cfg!(target_arch = "x86_64") {
        return Err(Error::NotThisArch {
            what: "user lock waits (they read x86-64 registers and call encodings)",
        });
    }
    if !btf.has_function("bpf_task_pt_regs") {
        return Err(Error::BtfMissing {
            what: "the bpf_task_pt_regs helper (Linux 5.15+)".into(),
        });
    }
    Ok(UlockOffsets {
        nr: sized(btf, "pt_regs", "orig_ax", 8)?,
        op: sized(btf, "pt_regs", "si", 8)?,
        ip: sized(btf, "pt_regs", "ip", 8)?,
        sp: sized(btf, "pt_regs", "sp", 8)?,
        fp: sized(btf, "pt_regs", "bp", 8)?,
    })
}
