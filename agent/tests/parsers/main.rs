//! Every parser of what the system hands hostprobe (BTF, tracefs formats,
//! kallsyms, QEMU command lines, numa_maps, mountinfo, /proc/net/tcp,
//! timer_list, cgroup paths, maps, /proc/stat, status, ELF files) never
//! panics: on the
//! checked-in corpus (real samples, and what the coverage-guided fuzzer,
//! `cargo xtask fuzz`, found), and on a bounded, repeatable run of
//! mutations of it.

mod dispatch;

use std::path::{Path, PathBuf};

fn corpus() -> Vec<(PathBuf, Vec<u8>)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/parsers/corpus");
    let mut files: Vec<(PathBuf, Vec<u8>)> = std::fs::read_dir(&dir)
        .unwrap()
        .flatten()
        .map(|e| (e.path(), std::fs::read(e.path()).unwrap()))
        .collect();
    files.sort();
    files
}

/// Runs `input`; a panic is kept with its input (in hex) for the report.
fn survives(input: &[u8], failures: &mut Vec<String>, what: &str) {
    if std::panic::catch_unwind(|| dispatch::run(input)).is_err() {
        let hex: String = input.iter().take(256).map(|b| format!("{b:02x}")).collect();
        failures.push(format!(
            "{what} ({} bytes): {hex}{}",
            input.len(),
            if input.len() > 256 { "..." } else { "" }
        ));
    }
}

#[test]
fn the_corpus_parses_without_panicking() {
    let files = corpus();
    assert!(
        files.len() >= dispatch::PARSERS.len(),
        "a seed for every parser"
    );
    for p in dispatch::PARSERS {
        let s = dispatch::selector(p);
        assert!(
            files.iter().any(|(_, d)| d.first() == Some(&s)),
            "no seed for {p}"
        );
    }
    let mut failures = Vec::new();
    for (path, data) in &files {
        survives(data, &mut failures, &path.display().to_string());
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// xorshift64*: repeatable mutations.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

/// One mutation of `seed` (its selector byte kept): flipped bits, bytes
/// replaced by interesting ones, inserted, deleted, a cut, or a splice of
/// another seed.
fn mutate(seed: &[u8], other: &[u8], rng: &mut Rng) -> Vec<u8> {
    let mut d = seed[1..].to_vec();
    for _ in 0..=rng.below(4) {
        let at = rng.below(d.len());
        match rng.below(7) {
            0 if !d.is_empty() => d[at] ^= 1 << rng.below(8),
            1 if !d.is_empty() => {
                d[at] = [0, 0xff, b'\n', b' ', b'-', b'=', b':', b'[', b'0', 0x7f][rng.below(10)]
            }
            2 => d.insert(at, rng.next() as u8),
            3 if !d.is_empty() => {
                d.remove(at);
            }
            4 => d.truncate(at),
            5 if other.len() > 1 => {
                let from = 1 + rng.below(other.len() - 1);
                let len = rng.below(other.len() - from);
                d.splice(at..at, other[from..from + len].iter().copied());
            }
            _ if d.len() >= 8 => {
                // A little-endian number made extreme (BTF offsets, counts).
                let at = at.min(d.len() - 8) & !3;
                let v = [0u32, 1, 0x7fff_ffff, 0xffff_ffff, 0x0100_0000][rng.below(5)];
                d[at..at + 4].copy_from_slice(&v.to_le_bytes());
            }
            _ => {}
        }
    }
    let mut out = vec![seed[0]];
    out.extend(d);
    out
}

#[test]
fn mutations_of_the_corpus_parse_without_panicking() {
    let mut seeds: Vec<Vec<u8>> = corpus().into_iter().map(|(_, d)| d).collect();
    // This kernel's BTF too (not checked in: megabytes).
    if let Ok(vmlinux) = std::fs::read("/sys/kernel/btf/vmlinux") {
        let mut s = vec![dispatch::selector("btf")];
        s.extend(vmlinux);
        seeds.push(s);
    }
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut failures = Vec::new();
    let mut runs = 0;
    for i in 0..seeds.len() {
        // Big inputs take longer to parse: fewer of their mutants.
        let n = if seeds[i].len() > 1 << 20 { 30 } else { 600 };
        for _ in 0..n {
            let other = &seeds[rng.below(seeds.len())];
            let input = mutate(&seeds[i], other, &mut rng);
            survives(&input, &mut failures, "mutant");
            runs += 1;
        }
    }
    eprintln!("{runs} mutants of {} seeds", seeds.len());
    failures.truncate(5);
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
