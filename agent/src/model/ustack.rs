//! Turning a user stack the kernel walked by frame pointers into frames a
//! developer can trust: frames that do not follow a call instruction end
//! the stack (a walk through code without frame pointers reads garbage),
//! the caller of a library without frame pointers (which the walk skips)
//! is put back when the kernel found it on the stack and it checks out,
//! and a stack that does not reach a thread's first function is marked
//! truncated, in the binary whose frame ended it. No I/O: the caller
//! resolves addresses.

/// What the caller knows of one address.
#[derive(Debug, Clone)]
pub struct Resolved<F> {
    pub frame: F,
    /// The file's name (`libc.so.6`), `[unknown]` outside any file.
    pub module: String,
    pub function: Option<String>,
    /// The bytes before the address are a call instruction.
    pub after_call: bool,
    /// ... a call into another file (through the PLT or the GOT) or to a
    /// function's start.
    pub after_call_out: bool,
    /// The file keeps frame pointers (its functions set them up).
    pub module_uses_frame_pointers: bool,
}

/// A named stack.
#[derive(Debug, Clone)]
pub struct Named<F> {
    pub tgid: u32,
    /// Innermost first; `true`: put back from the kernel's stack search.
    pub frames: Vec<(F, bool)>,
    /// The innermost application function: the first frame outside the C
    /// library and the runtimes' lock code.
    pub function: String,
    /// The binary whose frame ended a stack short of the thread's first
    /// function.
    pub truncated_in: Option<String>,
}

/// Files of the C library and the language runtimes' lock code, skipped to
/// find the application's function.
const LIBRARIES: [&str; 8] = [
    "libc.so",
    "libc-",
    "libpthread",
    "ld-linux",
    "libstdc++",
    "libc++",
    "libgcc_s",
    "libmusl",
];
/// Functions of lock code compiled into the application (by prefix; Rust
/// trait paths are looked at without their leading `<`), and the C
/// library's own when it is linked in statically.
const LOCK_CODE: [&str; 11] = [
    "std::sys::",
    "std::sync::",
    "std::thread::",
    "parking_lot",
    "lock_api::",
    "runtime.",
    "sync.",
    "__lll_",
    "pthread_",
    "__pthread_",
    "__futex",
];
const LOCK_FUNCTIONS: [&str; 3] = ["syscall", "futex_wait", "sem_wait"];
/// The C library's lock code among those: where a static binary's walk
/// skips the caller (Go's runtime, which keeps frame pointers but for a
/// few leaf functions, is not searched: a word found there was stale).
const C_LOCK_CODE: [&str; 4] = ["__lll_", "pthread_", "__pthread_", "__futex"];

fn is_c_lock_code(function: &str) -> bool {
    C_LOCK_CODE.iter().any(|p| function.starts_with(p)) || LOCK_FUNCTIONS.contains(&function)
}

fn is_lock_code(function: &str) -> bool {
    let f = function.trim_start_matches('<');
    LOCK_CODE.iter().any(|p| f.starts_with(p)) || LOCK_FUNCTIONS.contains(&f)
}
/// Functions a thread starts in: a stack that reaches one is whole.
const THREAD_ROOTS: [&str; 9] = [
    "start_thread",
    "clone",
    "clone3",
    "__clone",
    "__clone3",
    "_start",
    "__libc_start_main",
    "runtime.goexit",
    "runtime.mstart",
];

/// A thread root, also as Go's ABI wrappers name it (`runtime.goexit.abi0`).
fn is_thread_root(function: &str) -> bool {
    function.starts_with("__libc_start")
        || THREAD_ROOTS.iter().any(|r| {
            function == *r
                || function
                    .strip_prefix(r)
                    .is_some_and(|rest| rest.starts_with(".abi"))
        })
}

fn is_library(module: &str) -> bool {
    LIBRARIES.iter().any(|l| module.starts_with(l))
}

/// Names `frames` (the kernel's walk: the instruction pointer, then return
/// addresses) of process `tgid`; `caller`: the return address the kernel
/// found on the stack (0: none); `depth_limit`: the walk stopped at the
/// kernel's frame limit (not truncated by a missing frame pointer).
pub fn name<F: Clone>(
    tgid: u32,
    frames: &[u64],
    caller: u64,
    depth_limit: bool,
    resolve: &mut impl FnMut(u64) -> Resolved<F>,
) -> Named<F> {
    let mut out: Vec<(Resolved<F>, bool)> = Vec::new();
    let mut broken = false;
    for (i, &address) in frames.iter().enumerate() {
        let r = resolve(address);
        if i > 0 && !r.after_call {
            broken = true;
            break;
        }
        out.push((r, false));
    }
    if caller != 0 && !frames.contains(&caller) {
        if let Some((ip, _)) = out.first() {
            let c = resolve(caller);
            // Only a library without frame pointers hides its caller from
            // the walk; with them, a word found on the stack is stale. A
            // static binary holds its C library: there the instruction
            // pointer's function names it as lock code.
            let in_library =
                c.module != ip.module || ip.function.as_deref().is_some_and(is_c_lock_code);
            if !ip.module_uses_frame_pointers && c.after_call_out && in_library {
                out.insert(1, (c, true));
            }
        }
    }
    // Threads start in the C library (start_thread, clone3,
    // __libc_start_call_main: unnamed where it is stripped) or in a
    // program's own entry point.
    let whole = out.len() > 1
        && out.last().is_some_and(|(r, _)| {
            is_library(&r.module) || r.function.as_deref().is_some_and(is_thread_root)
        });
    let truncated_in = (!whole && (!depth_limit || broken))
        .then(|| out.last().map(|(r, _)| r.module.clone()))
        .flatten();
    let function = out
        .iter()
        .find(|(r, _)| {
            !is_library(&r.module)
                && r.module != "[unknown]"
                && !r
                    .function
                    .as_deref()
                    .is_some_and(|f| is_lock_code(f) || is_thread_root(f))
        })
        .map(|(r, _)| {
            r.function
                .clone()
                .unwrap_or_else(|| format!("{}+?", r.module))
        })
        .unwrap_or_else(|| "(unknown)".to_string());
    Named {
        tgid,
        frames: out.into_iter().map(|(r, rec)| (r.frame, rec)).collect(),
        function,
        truncated_in,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A toy address space: libc at 0x7f.., the application at 0x55..
    fn resolver(libc_fp: bool) -> impl FnMut(u64) -> Resolved<u64> {
        move |a| {
            let (module, function, after_call, out) = match a {
                0x7f00_0010 => ("libc.so.6", None, true, false),
                0x7f00_0100 => ("libc.so.6", Some("pthread_mutex_lock"), true, false),
                0x7f00_0200 => ("libc.so.6", Some("start_thread"), true, false),
                0x7f00_0300 => ("libc.so.6", Some("clone3"), true, false),
                0x5500_0100 => ("app", Some("worker"), true, true),
                0x5500_0200 => ("app", Some("main"), true, true),
                0x5500_0900 => ("app", Some("stale"), true, true),
                _ => ("[unknown]", None, false, false),
            };
            Resolved {
                frame: a,
                module: module.into(),
                function: function.map(str::to_string),
                after_call,
                after_call_out: out,
                module_uses_frame_pointers: module == "libc.so.6" && libc_fp,
            }
        }
    }

    #[test]
    fn in_a_static_binary_the_caller_of_its_own_lock_code_is_put_back() {
        let mut r = |a: u64| {
            let (function, after_call_out) = match a {
                0x40_0010 => ("__lll_lock_wait", false),
                0x40_0100 => ("update", true),
                0x40_0200 => ("start_thread", false),
                _ => ("?", false),
            };
            Resolved {
                frame: a,
                module: "static".to_string(),
                function: Some(function.to_string()),
                after_call: true,
                after_call_out,
                module_uses_frame_pointers: false,
            }
        };
        let n = name(9, &[0x40_0010, 0x40_0200], 0x40_0100, false, &mut r);
        assert_eq!(addresses(&n), [0x40_0010, 0x40_0100, 0x40_0200]);
        assert_eq!(n.function, "update");
        // Without the caller, the thread's first function is not named.
        let n = name(9, &[0x40_0010, 0x40_0200], 0, false, &mut r);
        assert_eq!(n.function, "(unknown)");
    }

    #[test]
    fn in_go_s_runtime_no_word_found_on_the_stack_is_trusted() {
        let mut r = |a: u64| Resolved {
            frame: a,
            module: "go_mutex".to_string(),
            function: Some(
                match a {
                    0x40_0010 => "runtime.futex.abi0",
                    0x40_0100 => "runtime.stealWork",
                    _ => "runtime.notesleep",
                }
                .to_string(),
            ),
            after_call: true,
            after_call_out: true,
            module_uses_frame_pointers: false,
        };
        let n = name(9, &[0x40_0010, 0x40_0200], 0x40_0100, false, &mut r);
        assert_eq!(addresses(&n), [0x40_0010, 0x40_0200]);
    }

    #[test]
    fn thread_roots_are_known_also_behind_go_abi_wrappers() {
        assert!(is_thread_root("runtime.goexit.abi0"));
        assert!(is_thread_root("start_thread"));
        assert!(is_thread_root("__libc_start_call_main"));
        assert!(!is_thread_root("runtime.goexitx"));
    }

    #[test]
    fn lock_code_is_skipped_by_prefix_and_rust_trait_paths_too() {
        assert!(is_lock_code("<std::thread::thread::Thread>::park_timeout"));
        assert!(is_lock_code(
            "std::sys::sync::mutex::futex::Mutex::lock_contended"
        ));
        assert!(is_lock_code("syscall"));
        assert!(is_lock_code("runtime.futexsleep"));
        assert!(!is_lock_code("syscall_wrapper_of_mine"));
        assert!(!is_lock_code("main.worker"));
    }

    fn addresses(n: &Named<u64>) -> Vec<u64> {
        n.frames.iter().map(|f| f.0).collect()
    }

    #[test]
    fn the_caller_skipped_by_a_libc_without_frame_pointers_is_put_back() {
        // Debian's glibc: the walk goes from __lll_lock_wait to the
        // caller's caller (start_thread).
        let n = name(
            9,
            &[0x7f00_0010, 0x7f00_0200, 0x7f00_0300],
            0x5500_0100,
            false,
            &mut resolver(false),
        );
        assert_eq!(
            addresses(&n),
            [0x7f00_0010, 0x5500_0100, 0x7f00_0200, 0x7f00_0300]
        );
        assert!(n.frames[1].1);
        assert_eq!(n.function, "worker");
        assert_eq!(n.truncated_in, None);
    }

    #[test]
    fn with_frame_pointers_in_libc_a_found_word_is_not_trusted() {
        let n = name(
            9,
            &[
                0x7f00_0010,
                0x7f00_0100,
                0x5500_0100,
                0x7f00_0200,
                0x7f00_0300,
            ],
            0x5500_0900,
            false,
            &mut resolver(true),
        );
        assert_eq!(
            addresses(&n),
            [
                0x7f00_0010,
                0x7f00_0100,
                0x5500_0100,
                0x7f00_0200,
                0x7f00_0300
            ]
        );
        assert_eq!(n.function, "worker");
    }

    #[test]
    fn a_frame_not_after_a_call_ends_the_stack_as_truncated() {
        // An application without frame pointers: the walk reads garbage
        // after the recovered caller.
        let n = name(
            9,
            &[0x7f00_0010, 0x1234_5678],
            0x5500_0100,
            false,
            &mut resolver(false),
        );
        assert_eq!(addresses(&n), [0x7f00_0010, 0x5500_0100]);
        assert_eq!(n.truncated_in.as_deref(), Some("app"));
        assert_eq!(n.function, "worker");
    }

    #[test]
    fn a_stack_that_ends_in_the_c_library_is_whole_even_where_it_is_stripped() {
        let n = name(
            9,
            &[0x7f00_0010, 0x7f00_0999],
            0x5500_0100,
            false,
            &mut |a| Resolved {
                after_call: true,
                ..resolver(false)(if a == 0x7f00_0999 { 0x7f00_0010 } else { a })
            },
        );
        assert_eq!(n.truncated_in, None);
        assert_eq!(n.function, "worker");
    }

    #[test]
    fn a_stack_of_libc_only_names_no_function_and_the_depth_limit_is_no_truncation() {
        let n = name(9, &[0x7f00_0010], 0, false, &mut resolver(false));
        assert_eq!(n.function, "(unknown)");
        assert_eq!(n.truncated_in.as_deref(), Some("libc.so.6"));
        let deep = name(
            9,
            &[0x7f00_0010, 0x5500_0100, 0x5500_0200],
            0,
            true,
            &mut resolver(false),
        );
        assert_eq!(deep.truncated_in, None);
        // A caller that is not after a call out is not put back.
        let n = name(
            9,
            &[0x7f00_0010, 0x7f00_0200, 0x7f00_0300],
            0x7f00_0100,
            false,
            &mut resolver(false),
        );
        assert_eq!(addresses(&n), [0x7f00_0010, 0x7f00_0200, 0x7f00_0300]);
    }
}
