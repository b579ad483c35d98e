//! Reading other tasks than `current`: the task a BTF tracepoint hands
//! over (trusted, direct loads the verifier checks against BTF), or one a
//! lock names (untrusted, `bpf_probe_read_kernel`). Offsets are load-time
//! constants from BTF; `u32::MAX` marks a link this kernel lacks.

use aya_ebpf::{helpers::bpf_probe_read_kernel, Global};

/// A task's cgroup v2 id is `task->cgroups->dfl_cgrp->kn->id`, what
/// `bpf_get_current_cgroup_id` reads of `current`.
#[no_mangle]
static TASK_CGROUPS_OFFSET: Global<u32> = Global::new(u32::MAX);
#[no_mangle]
static CSS_SET_DFL_CGRP_OFFSET: Global<u32> = Global::new(0);
#[no_mangle]
static CGROUP_KN_OFFSET: Global<u32> = Global::new(0);
#[no_mangle]
static KERNFS_NODE_ID_OFFSET: Global<u32> = Global::new(0);
/// `task_struct.__state` (or `.state` before 5.14), low 32 bits.
#[no_mangle]
static TASK_STATE_FIELD_OFFSET: Global<u32> = Global::new(u32::MAX);
/// `task_struct.on_cpu`: 1 from the switch that puts the task on a CPU to
/// the one that takes it off.
#[no_mangle]
static TASK_ON_CPU_OFFSET: Global<u32> = Global::new(u32::MAX);

/// The cgroup v2 id of a task a BTF tracepoint handed over: a chain of
/// direct loads, each offset checked by the verifier against the kernel's
/// types (a NULL link reads 0). `None` without the offsets.
#[inline(always)]
pub fn cgroup_of(task: *const u8) -> Option<u64> {
    let cgroups = TASK_CGROUPS_OFFSET.load();
    if cgroups == u32::MAX {
        return None;
    }
    let link = |p: *const u8, offset: u32| -> *const u8 {
        // SAFETY: `p` is a BTF pointer and `offset` names a pointer member
        // of its type; the verifier rejects the program otherwise.
        unsafe { core::ptr::read_volatile(p.add(offset as usize).cast::<*const u8>()) }
    };
    let css_set = link(task, cgroups);
    let cgroup = link(css_set, CSS_SET_DFL_CGRP_OFFSET.load());
    let kn = link(cgroup, CGROUP_KN_OFFSET.load());
    // SAFETY: as above; `kernfs_node.id` is a u64.
    let id = unsafe {
        core::ptr::read_volatile(kn.add(KERNFS_NODE_ID_OFFSET.load() as usize).cast::<u64>())
    };
    (id != 0).then_some(id)
}

/// Reads a `T` at `addr + offset` of kernel memory the verifier knows
/// nothing about (a fault reads `None`).
#[inline(always)]
pub fn read<T>(addr: u64, offset: u32) -> Option<T> {
    // SAFETY: bpf_probe_read_kernel checks the address.
    unsafe { bpf_probe_read_kernel((addr + u64::from(offset)) as *const T).ok() }
}

/// The cgroup v2 id of a task pointer read from kernel memory.
#[inline(always)]
pub fn cgroup_of_untrusted(task: u64) -> Option<u64> {
    let cgroups = TASK_CGROUPS_OFFSET.load();
    if cgroups == u32::MAX {
        return None;
    }
    let css_set: u64 = read(task, cgroups)?;
    let cgroup: u64 = read(css_set, CSS_SET_DFL_CGRP_OFFSET.load())?;
    let kn: u64 = read(cgroup, CGROUP_KN_OFFSET.load())?;
    read(kn, KERNFS_NODE_ID_OFFSET.load())
}

/// Whether a task pointer read from kernel memory is on a CPU, and its
/// state (0: runnable).
#[inline(always)]
pub fn state_untrusted(task: u64) -> Option<(bool, u32)> {
    let (state, on_cpu) = (TASK_STATE_FIELD_OFFSET.load(), TASK_ON_CPU_OFFSET.load());
    if state == u32::MAX || on_cpu == u32::MAX {
        return None;
    }
    Some((read::<u32>(task, on_cpu)? != 0, read::<u32>(task, state)?))
}
