//! Lock types from `contention_begin` flags, named as `perf lock` names them.

use hostprobe_common::lock::{F_MUTEX, F_PERCPU, F_READ, F_RT, F_SPIN, F_WRITE};

/// (flags, name) as in perf's `lock_type_table`; a mutex that spins
/// optimistically reports `F_MUTEX | F_SPIN` and is still a mutex.
pub const TYPES: [(u32, &str); 13] = [
    (0, "semaphore"),
    (F_SPIN, "spinlock"),
    (F_SPIN | F_READ, "rwlock:R"),
    (F_SPIN | F_WRITE, "rwlock:W"),
    (F_READ, "rwsem:R"),
    (F_WRITE, "rwsem:W"),
    (F_RT, "rt-mutex"),
    (F_RT | F_READ, "rwlock-rt:R"),
    (F_RT | F_WRITE, "rwlock-rt:W"),
    (F_PERCPU | F_READ, "pcpu-sem:R"),
    (F_PERCPU | F_WRITE, "pcpu-sem:W"),
    (F_MUTEX, "mutex"),
    (F_MUTEX | F_SPIN, "mutex"),
];

pub fn name(flags: u32) -> &'static str {
    TYPES
        .iter()
        .find(|(f, _)| *f == flags)
        .map_or("unknown", |(_, n)| n)
}

/// Bit mask of the flag values named `name` (for the kernel-side filter),
/// `None` for an unknown name.
pub fn mask(name: &str) -> Option<u64> {
    let m = TYPES
        .iter()
        .filter(|(_, n)| *n == name)
        .fold(0u64, |m, (f, _)| m | 1 << f);
    (m != 0).then_some(m)
}

/// Distinct type names, for help and error messages.
pub fn names() -> Vec<&'static str> {
    let mut v: Vec<&str> = TYPES.iter().map(|(_, n)| *n).collect();
    v.dedup();
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_flags_like_perf() {
        assert_eq!(name(0), "semaphore");
        assert_eq!(name(F_SPIN), "spinlock");
        assert_eq!(name(F_SPIN | F_WRITE), "rwlock:W");
        assert_eq!(name(F_READ), "rwsem:R");
        assert_eq!(name(F_PERCPU | F_WRITE), "pcpu-sem:W");
        assert_eq!(name(F_MUTEX | F_SPIN), "mutex");
        assert_eq!(name(F_RT | F_READ), "rwlock-rt:R");
        assert_eq!(name(F_PERCPU), "unknown");
    }

    #[test]
    fn masks_cover_every_flag_value_of_a_name() {
        assert_eq!(mask("mutex"), Some(1 << F_MUTEX | 1 << (F_MUTEX | F_SPIN)));
        assert_eq!(mask("semaphore"), Some(1));
        assert_eq!(mask("rwsem:W"), Some(1 << F_WRITE));
        assert_eq!(mask("futex"), None);
        assert_eq!(names().len(), 12);
    }
}
