//! Anonymous-memory dirtying of a process, estimated by content sampling:
//! QEMU's page-sampling method (calc-dirty-rate) applied from outside. Pick
//! random pages of the target's writable mappings, hash them through
//! /proc/PID/mem, hash them again after each window, count the changed ones.
//! Works on every kernel (no soft-dirty needed) and for QEMU guests, whose
//! RAM is a mapping of the QEMU process. Precision grows with the number of
//! changed samples n (relative error about 1/sqrt(n)).

use std::collections::hash_map::DefaultHasher;
use std::fs::File;
use std::hash::Hasher;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use crate::error::{Error, Result};
use crate::host::proc::{self, Mapping, PAGE};
use crate::model::precopy::DirtyPoint;
use crate::snapshot::SamplingMethod;

const GIB: f64 = 1024.0 * 1024.0 * 1024.0;

/// Memory of one process to measure: its pid and the mappings that count.
#[derive(Debug, Clone)]
pub struct Region {
    pub pid: u32,
    pub mappings: Vec<Mapping>,
}

impl Region {
    /// All readable, writable mappings of a process.
    pub fn process(pid: u32) -> Result<Self> {
        Ok(Self {
            pid,
            mappings: proc::writable_mappings(&proc::maps(pid)?),
        })
    }

    pub fn bytes(&self) -> u64 {
        self.mappings.iter().map(Mapping::bytes).sum()
    }
}

/// d(w) at each window, plus how much of the sampled memory is zero pages
/// (which pre-copy sends as a flag, not as 4 KiB).
#[derive(Debug, Clone)]
pub struct Measurement {
    pub points: Vec<DirtyPoint>,
    pub zero_share: f64,
}

pub struct Sampler {
    regions: Vec<(u32, File)>,
    /// (index into `regions`, page address).
    pages: Vec<(usize, u64)>,
    sampled_bytes: u64,
}

impl Sampler {
    /// Picks `samples_per_gib` random pages per GiB of the regions' mappings
    /// (at least 64), in proportion to their size. Processes that exited
    /// since the regions were listed are left out; it fails only when none
    /// is left.
    pub fn new(regions: &[Region], samples_per_gib: u32, seed: u64) -> Result<Self> {
        let (live, files) = open_live(regions, "mem")?;
        let sampled_bytes: u64 = live.iter().map(|r| r.bytes()).sum();
        let n = ((sampled_bytes as f64 / GIB * f64::from(samples_per_gib)).ceil() as usize).max(64);
        let all: Vec<(usize, Mapping)> = live
            .iter()
            .enumerate()
            .flat_map(|(i, r)| r.mappings.iter().map(move |&m| (i, m)))
            .collect();
        let maps: Vec<Mapping> = all.iter().map(|&(_, m)| m).collect();
        let pages = pick_pages(&maps, n, seed)
            .into_iter()
            .map(|(m, addr)| (all[m].0, addr))
            .collect();
        Ok(Self {
            regions: live.iter().map(|r| r.pid).zip(files).collect(),
            pages,
            sampled_bytes,
        })
    }

    pub fn method(&self) -> SamplingMethod {
        SamplingMethod {
            method: "content sampling (estimate)",
            samples: self.pages.len(),
            sampled_bytes: self.sampled_bytes,
        }
    }

    /// Hashes of the sampled pages now (`None`: unreadable, e.g. unmapped
    /// meanwhile or its process exited) and how many are all zeros.
    fn snapshot(&self) -> Result<(Vec<Option<u64>>, usize)> {
        // A cgroup's processes come and go: fail only when all are gone.
        if let Some(&(pid, _)) = self.regions.first().filter(|_| {
            self.regions
                .iter()
                .all(|(pid, _)| !std::path::Path::new(&format!("/proc/{pid}")).exists())
        }) {
            return Err(Error::NoSuchProcess { pid });
        }
        let mut buf = vec![0u8; PAGE as usize];
        let mut zeros = 0;
        let hashes = self
            .pages
            .iter()
            .map(|&(i, addr)| {
                self.regions[i]
                    .1
                    .read_exact_at(&mut buf, addr)
                    .ok()
                    .map(|()| {
                        zeros += usize::from(buf.iter().all(|&b| b == 0));
                        let mut h = DefaultHasher::new();
                        h.write(&buf);
                        h.finish()
                    })
            })
            .collect();
        Ok((hashes, zeros))
    }

    /// d(w) for each window: one baseline, then a re-read at each window's
    /// end, so all windows are measured in one run of `max(windows)`.
    pub fn measure(&self, windows: &[Duration]) -> Result<Measurement> {
        let mut windows = windows.to_vec();
        windows.sort();
        // Windows from the start of the baseline pass to the start of each
        // later one (passes visit the pages in the same order).
        let t0 = Instant::now();
        let (base, zeros) = self.snapshot()?;
        let mut points = Vec::new();
        for w in windows {
            if let Some(left) = w.checked_sub(t0.elapsed()) {
                std::thread::sleep(left);
            }
            let elapsed = t0.elapsed().as_secs_f64();
            let (now, _) = self.snapshot()?;
            // A page unreadable now went away (its process exited or
            // unmapped it): not memory to migrate, not dirty. One readable
            // only now was mapped meanwhile: new memory, dirty.
            let changed = base
                .iter()
                .zip(&now)
                .filter(|(a, b)| b.is_some() && a != b)
                .count();
            points.push(DirtyPoint {
                window_seconds: elapsed,
                dirty_bytes: changed as f64 / base.len() as f64 * self.sampled_bytes as f64,
            });
        }
        Ok(Measurement {
            points,
            zero_share: zeros as f64 / base.len().max(1) as f64,
        })
    }
}

/// The regions whose `/proc/PID/<what>` opens, with the open file: a
/// process that exited meanwhile is left out; any other failure is an
/// error, and so is none left.
pub fn open_live<'a>(regions: &'a [Region], what: &str) -> Result<(Vec<&'a Region>, Vec<File>)> {
    let mut live = Vec::new();
    let mut files = Vec::new();
    let mut gone = None;
    for r in regions {
        let path = PathBuf::from(format!("/proc/{}/{what}", r.pid));
        match File::open(&path) {
            Ok(f) => {
                live.push(r);
                files.push(f);
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                gone.get_or_insert(r.pid);
            }
            Err(e) => {
                return Err(Error::Unreadable {
                    pid: r.pid,
                    source: e,
                })
            }
        }
    }
    if live.is_empty() {
        return Err(Error::NoSuchProcess {
            pid: gone.unwrap_or(0),
        });
    }
    Ok((live, files))
}

/// `n` pages, as (mapping index, address), spread over the mappings in
/// proportion to their size.
fn pick_pages(mappings: &[Mapping], n: usize, seed: u64) -> Vec<(usize, u64)> {
    let total_pages: u64 = mappings.iter().map(|m| (m.end - m.start) / PAGE).sum();
    if total_pages == 0 {
        return Vec::new();
    }
    let mut state = seed | 1;
    let mut next = || {
        // xorshift64*: cheap, and enough to scatter samples.
        state ^= state >> 12;
        state ^= state << 25;
        state ^= state >> 27;
        state.wrapping_mul(0x2545_f491_4f6c_dd1d)
    };
    (0..n)
        .map(|_| {
            let mut k = next() % total_pages;
            for (i, m) in mappings.iter().enumerate() {
                let pages = (m.end - m.start) / PAGE;
                if k < pages {
                    return (i, m.start + k * PAGE);
                }
                k -= pages;
            }
            unreachable!("k < total_pages")
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samples_spread_in_proportion_to_size() {
        let maps = [
            Mapping {
                start: 0,
                end: 100 * PAGE,
            },
            Mapping {
                start: 1 << 30,
                end: (1 << 30) + 900 * PAGE,
            },
        ];
        let pages = pick_pages(&maps, 10_000, 7);
        let in_small = pages.iter().filter(|&&(_, p)| p < 100 * PAGE).count();
        assert!((800..1200).contains(&in_small), "{in_small}");
        assert!(pages
            .iter()
            .all(|&(i, p)| p % PAGE == 0 && (maps[i].start..maps[i].end).contains(&p)));
        assert!(pick_pages(&[], 10, 1).is_empty());
    }
}
