//! hostprobe's kernel-side programs: one module per signal.
#![no_std]
#![no_main]
// `asm!` for the atomic adds of the gang counts.
#![feature(asm_experimental_arch)]

mod config;
mod dirty;
mod lock;
mod numa;
mod sched;
mod tables;
mod task;
mod ulock;
mod util;

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

/// The helpers used (bpf_probe_read_kernel, cgroup ids) are GPL-only.
#[link_section = "license"]
#[no_mangle]
static LICENSE: [u8; 4] = *b"GPL\0";
