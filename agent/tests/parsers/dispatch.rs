//! One entry point to every parser of what the system hands hostprobe: the
//! first byte picks the parser, the rest is its input. Shared by the corpus
//! test (tests/parsers/main.rs) and the coverage-guided fuzzer
//! (agent/fuzz/fuzz_targets/parsers.rs).

use hostprobe::host::btf::Btf;
use hostprobe::host::kallsyms::Kallsyms;
use hostprobe::host::symbols::Module;
use hostprobe::host::tracefs::Format;
use hostprobe::host::{proc, qemu};
use hostprobe::model::workload;
use hostprobe::probes::offsets;

/// Parsers, in the order of the first byte (modulo their number).
pub const PARSERS: [&str; 13] = [
    "btf",
    "tracefs_format",
    "kallsyms",
    "qemu_cmdline",
    "numa_maps",
    "mountinfo",
    "net_tcp",
    "timer_list",
    "cgroup_path",
    "maps",
    "proc_stat",
    "status",
    "elf",
];

/// The corpus byte that selects `parser`.
pub fn selector(parser: &str) -> u8 {
    PARSERS.iter().position(|p| *p == parser).expect("a parser") as u8
}

pub fn run(data: &[u8]) {
    let Some((&which, input)) = data.split_first() else {
        return;
    };
    let text = String::from_utf8_lossy(input);
    match PARSERS[which as usize % PARSERS.len()] {
        "btf" => {
            if let Ok(btf) = Btf::parse(input.to_vec()) {
                let _ = offsets::task_offsets(&btf);
                for tp in ["sched_switch", "sched_wakeup", "sched_migrate_task"] {
                    let _ = offsets::sched_args(&btf, tp);
                }
                let _ = offsets::mapping_offsets(&btf);
                let _ = offsets::folio_offsets(&btf);
                let _ = offsets::dirty_args(&btf, "writeback_dirty_page", "page");
                let _ = offsets::page_node_bits(&btf);
                let _ = offsets::lock_args(&btf);
                let _ = offsets::fault_args(&btf);
                let _ = offsets::migrate_reasons(&btf);
                let _ = btf.array_len("zonelist", "_zonerefs");
            }
        }
        "tracefs_format" => {
            if let Ok(f) = Format::parse("fuzz:event", &text) {
                for field in &f.fields {
                    let _ = f.int_field(&field.name, field.size);
                }
            }
        }
        "kallsyms" => {
            let k = Kallsyms::parse(&text);
            for addr in [0, 1, u64::MAX, 0xffff_ffff_8100_0000] {
                let _ = k.describe(addr);
                let _ = k.static_object(addr);
                let _ = k.caller(&[addr, addr.wrapping_add(16)]);
            }
            let _ = k.locking_text();
        }
        "qemu_cmdline" => {
            let args: Vec<String> = text.split(['\0', ' ', '\n']).map(String::from).collect();
            let vm = qemu::from_args(1, &args);
            let _ = qemu::ram_mappings(&proc::parse_maps(&text), vm.ram_bytes);
        }
        "numa_maps" => {
            let _ = proc::parse_numa_maps(&text);
        }
        "mountinfo" => {
            let _ = proc::cgroup2_mount(&text);
            let _ = proc::mount_devices(&text);
        }
        "net_tcp" => {
            let _ = proc::parse_tcp(&text);
        }
        "timer_list" => {
            let _ = proc::parse_timer_list(&text);
        }
        "cgroup_path" => {
            let _ = workload::describe(&text);
        }
        "maps" => {
            let _ = proc::writable_mappings(&proc::parse_maps(&text));
        }
        "proc_stat" => {
            let _ = proc::parse_cpu_times(&text);
        }
        "elf" => elf(input),
        "status" => {
            let _ = proc::status_field(&text, "Tgid");
            let _ = proc::fdinfo_field(&text, "recursion_misses");
            let _ = proc::parse_schedstat(&text);
        }
        _ => unreachable!("every parser has an arm"),
    }
}

/// An ELF file as the symboliser reads it: symbols, segments, the checks of
/// call instructions, from a file (it reads through the file).
fn elf(input: &[u8]) {
    let path = std::env::temp_dir().join(format!("hostprobe-parsers-elf-{}", std::process::id()));
    if std::fs::write(&path, input).is_err() {
        return;
    }
    if let Ok(file) = std::fs::File::open(&path) {
        if let Some(m) = Module::parse(file, "input") {
            for a in [0u64, 0x1000, 0x401000, u64::MAX] {
                let _ = m.function(a);
                let _ = m.follows_call(a);
                let _ = m.follows_call_out(a);
            }
        }
    }
    let _ = std::fs::remove_file(&path);
}
