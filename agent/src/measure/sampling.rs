//! Anonymous-memory dirtying of a process, estimated by content sampling:
//! QEMU's page-sampling method (calc-dirty-rate) applied from outside. Pick
//! random pages of the target's writable mappings, hash them, hash them
//! again after each window, count the changed ones. Works on every kernel
//! (no soft-dirty needed) and for QEMU guests, whose RAM is a mapping of the
//! QEMU process.
//!
//! Precision grows with the number of changed samples, so each window
//! length is measured several times over (passes at multiples of each
//! window), every figure carries its interval, and the window a verdict
//! hangs on can be measured again and again (`Sampler::repeat`).

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use crate::error::{Error, Result};
use crate::host::proc::{self, Mapping, PAGE};
use crate::model::interval::{wilson, Z95};
use crate::model::precopy::DirtyPoint;
use crate::snapshot::{SamplingCost, SamplingMethod};

const GIB: f64 = 1024.0 * 1024.0 * 1024.0;
/// Windows of each length measured in the first schedule (the longest
/// once): passes at 1..=REPEATS times each window.
pub const REPEATS: u32 = 4;
/// Pages read per `process_vm_readv` call (the kernel's IOV_MAX).
const BATCH: usize = 1024;

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

/// Changed samples seen over windows of one length.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Tally {
    pub windows: u32,
    /// Sum of the windows' lengths.
    pub seconds: f64,
    /// For every sampled page (of every sample set): windows in which it
    /// changed, and windows it was readable at the end of.
    pages: Vec<(u32, u32)>,
}

impl Tally {
    /// The estimate of d(w) over `sampled_bytes`, with its 95% interval.
    /// Pages are the sampling units: a page of a hot set changes in every
    /// window, so the windows of one page are not independent trials. The
    /// variance of the ratio estimator over pages gives the effective
    /// number of trials, between the number of pages (every page changes
    /// in all windows or none) and that of page-windows (at most once each).
    pub fn point(&self, sampled_bytes: f64) -> DirtyPoint {
        let (changed, trials, effective) = self.trials();
        let share = if trials > 0.0 { changed / trials } else { 0.0 };
        let (lo, hi) = wilson(share * effective, effective, Z95);
        DirtyPoint {
            window_seconds: self.seconds / f64::from(self.windows.max(1)),
            dirty_bytes: share * sampled_bytes,
            dirty_bytes_low: lo * sampled_bytes,
            dirty_bytes_high: hi * sampled_bytes,
            changed_samples: Some(changed as u64),
            windows: self.windows,
        }
    }

    /// Changes, page-windows, and the effective number of trials.
    fn trials(&self) -> (f64, f64, f64) {
        let pages: Vec<(f64, f64)> = self
            .pages
            .iter()
            .filter(|p| p.1 > 0)
            .map(|&(c, t)| (f64::from(c), f64::from(t)))
            .collect();
        let (changed, trials) = pages
            .iter()
            .fold((0.0, 0.0), |(c, t), p| (c + p.0, t + p.1));
        let n = pages.len() as f64;
        let share = if trials > 0.0 { changed / trials } else { 0.0 };
        let variance = if n > 1.0 {
            let spread: f64 = pages.iter().map(|(c, t)| (c - share * t).powi(2)).sum();
            spread * n / (n - 1.0) / (trials * trials)
        } else {
            0.0
        };
        let effective = if variance > 0.0 {
            (share * (1.0 - share) / variance).clamp(n, trials)
        } else {
            n
        };
        (changed, trials, effective)
    }

    /// How many page-windows make one effective trial: 1 when windows of
    /// the same pages are as good as new pages, up to the windows per page
    /// when a page changes in all of them or none (a saturated hot set).
    pub fn design_effect(&self) -> f64 {
        let (_, trials, effective) = self.trials();
        if effective > 0.0 {
            trials / effective
        } else {
            1.0
        }
    }

    /// One window over the sample set whose pages start at `base`.
    fn add(&mut self, base: usize, seconds: f64, before: &[Option<u64>], after: &[Option<u64>]) {
        if self.pages.len() < base + after.len() {
            self.pages.resize(base + after.len(), (0, 0));
        }
        // A page unreadable now went away (its process exited or unmapped
        // it): not memory to migrate, not dirty. One readable only now was
        // mapped meanwhile: new memory, dirty.
        for (i, (a, b)) in before.iter().zip(after).enumerate() {
            if b.is_some() {
                let page = &mut self.pages[base + i];
                page.0 += u32::from(a != b);
                page.1 += 1;
            }
        }
        self.windows += 1;
        self.seconds += seconds;
    }

    /// Where a new sample set's pages start.
    fn next_set(&self) -> usize {
        self.pages.len()
    }
}

/// The passes of the first schedule, in multiples of the shortest window:
/// at 1..=REPEATS times each window (none beyond the longest), so that
/// every window but the longest is measured REPEATS times back to back.
/// Windows that are multiples of others cost few passes: the default
/// `100ms,250ms,500ms,1s,2s,4s,6s,8s,16s` takes 17.
pub fn schedule(windows: &[Duration]) -> Vec<Duration> {
    let longest = windows.iter().max().copied().unwrap_or_default();
    let mut at: Vec<Duration> = windows
        .iter()
        .flat_map(|&w| (0..=REPEATS).map(move |k| w * k))
        .filter(|&t| t <= longest)
        .collect();
    at.sort();
    at.dedup();
    at
}

/// One pass over the samples: when it started and each page's hash.
struct Pass {
    at: Duration,
    hashes: Vec<Option<u64>>,
}

pub struct Sampler {
    regions: Vec<(u32, File)>,
    /// Every mapping, with the index of its region in `regions`.
    mappings: Vec<(usize, Mapping)>,
    /// The current sample set: (index into `regions`, page address),
    /// grouped by region.
    pages: Vec<(usize, u64)>,
    /// Pages of the first sample set.
    samples: usize,
    seed: u64,
    sampled_bytes: u64,
    cost: SamplingCost,
    zero_hash: u64,
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
        let mappings: Vec<(usize, Mapping)> = live
            .iter()
            .enumerate()
            .flat_map(|(i, r)| r.mappings.iter().map(move |&m| (i, m)))
            .collect();
        let mut sampler = Self {
            regions: live.iter().map(|r| r.pid).zip(files).collect(),
            mappings,
            pages: Vec::new(),
            samples: n,
            seed,
            sampled_bytes,
            cost: SamplingCost::default(),
            zero_hash: xxhash_rust::xxh3::xxh3_64(&[0u8; PAGE as usize]),
        };
        sampler.pick(n);
        Ok(sampler)
    }

    /// A fresh sample set of `n` pages (the next seed).
    fn pick(&mut self, n: usize) {
        let maps: Vec<Mapping> = self.mappings.iter().map(|&(_, m)| m).collect();
        let mut pages: Vec<(usize, u64)> = pick_pages(&maps, n, self.seed)
            .into_iter()
            .map(|(m, addr)| (self.mappings[m].0, addr))
            .collect();
        pages.sort_unstable();
        self.pages = pages;
        self.seed = self
            .seed
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1);
    }

    pub fn method(&self) -> SamplingMethod {
        SamplingMethod {
            method: "content sampling (estimate)",
            samples: self.samples,
            sampled_bytes: self.sampled_bytes,
        }
    }

    /// What the passes so far cost.
    pub fn cost(&self) -> SamplingCost {
        self.cost
    }

    /// Hashes of the sampled pages now (`None`: unreadable, e.g. unmapped
    /// meanwhile or its process exited), read in batches with
    /// `process_vm_readv`.
    fn pass(&mut self, t0: Instant) -> Result<Pass> {
        // A cgroup's processes come and go: fail only when all are gone.
        if let Some(&(pid, _)) = self.regions.first().filter(|_| {
            self.regions
                .iter()
                .all(|(pid, _)| !std::path::Path::new(&format!("/proc/{pid}")).exists())
        }) {
            return Err(Error::NoSuchProcess { pid });
        }
        let cpu = thread_cpu_seconds();
        let at = t0.elapsed();
        let mut buf = vec![0u8; BATCH * PAGE as usize];
        let mut hashes = Vec::with_capacity(self.pages.len());
        for chunk in self.pages.chunk_by(|a, b| a.0 == b.0) {
            let region = chunk[0].0;
            for batch in chunk.chunks(BATCH) {
                let addrs: Vec<u64> = batch.iter().map(|&(_, a)| a).collect();
                let ok = self.read(region, &addrs, &mut buf)?;
                for (i, ok) in ok.iter().enumerate() {
                    hashes.push(ok.then(|| {
                        xxhash_rust::xxh3::xxh3_64(&buf[i * PAGE as usize..(i + 1) * PAGE as usize])
                    }));
                }
            }
        }
        self.cost.passes += 1;
        self.cost.pages_read += self.pages.len() as u64;
        self.cost.cpu_seconds += thread_cpu_seconds() - cpu;
        Ok(Pass { at, hashes })
    }

    /// Reads the pages at `addrs` of region `region` into `buf`; which ones
    /// could be read. A page that cannot (unmapped meanwhile) is skipped;
    /// the rest of the batch goes on after it.
    fn read(&self, region: usize, addrs: &[u64], buf: &mut [u8]) -> Result<Vec<bool>> {
        let (pid, file) = &self.regions[region];
        let mut ok = vec![false; addrs.len()];
        let mut next = 0;
        while next < addrs.len() {
            let local: Vec<libc::iovec> = (next..addrs.len())
                .map(|i| libc::iovec {
                    // SAFETY: i < addrs.len() <= BATCH: within `buf`.
                    iov_base: unsafe { buf.as_mut_ptr().add(i * PAGE as usize) }.cast(),
                    iov_len: PAGE as usize,
                })
                .collect();
            let remote: Vec<libc::iovec> = addrs[next..]
                .iter()
                .map(|&a| libc::iovec {
                    iov_base: a as *mut libc::c_void,
                    iov_len: PAGE as usize,
                })
                .collect();
            // SAFETY: every local iovec points into `buf`, one page each,
            // within its length; the remote ones are only read by the kernel.
            let n = unsafe {
                libc::process_vm_readv(
                    *pid as libc::pid_t,
                    local.as_ptr(),
                    local.len() as libc::c_ulong,
                    remote.as_ptr(),
                    remote.len() as libc::c_ulong,
                    0,
                )
            };
            if n < 0 {
                let e = std::io::Error::last_os_error();
                match e.raw_os_error() {
                    // The process is gone: none of its pages is memory now.
                    Some(libc::ESRCH) => return Ok(ok),
                    // The first page is not mapped any more.
                    Some(libc::EFAULT) => {
                        next += 1;
                        continue;
                    }
                    // Not allowed (e.g. a seccomp filter): /proc/PID/mem,
                    // page by page.
                    _ => {
                        for i in next..addrs.len() {
                            let page = &mut buf[i * PAGE as usize..(i + 1) * PAGE as usize];
                            ok[i] = file.read_exact_at(page, addrs[i]).is_ok();
                        }
                        return Ok(ok);
                    }
                }
            }
            let whole = n as usize / PAGE as usize;
            ok[next..next + whole].fill(true);
            // A short read stops at a page that failed: skip it.
            next += whole + 1;
        }
        Ok(ok)
    }

    /// d(w) for each window from the first schedule (see `schedule`), and
    /// the tallies behind them, to be refined with `repeat`.
    pub fn measure(&mut self, windows: &[Duration]) -> Result<(Measurement, Vec<Tally>)> {
        let mut windows = windows.to_vec();
        windows.sort();
        windows.dedup();
        let t0 = Instant::now();
        let mut passes: Vec<(Duration, Pass)> = Vec::new();
        for due in schedule(&windows) {
            if let Some(left) = due.checked_sub(t0.elapsed()) {
                std::thread::sleep(left);
            }
            let pass = self.pass(t0)?;
            passes.push((due, pass));
        }
        let base = &passes[0].1;
        let readable = base.hashes.iter().filter(|h| h.is_some()).count();
        if readable == 0 {
            return Err(Error::Unreadable {
                pid: self.regions[0].0,
                source: std::io::Error::new(
                    std::io::ErrorKind::PermissionDenied,
                    "none of the sampled pages could be read",
                ),
            });
        }
        let zeros = base
            .hashes
            .iter()
            .filter(|h| **h == Some(self.zero_hash))
            .count();
        let at = |due: Duration| passes.iter().find(|(d, _)| *d == due).map(|(_, p)| p);
        let tallies: Vec<Tally> = windows
            .iter()
            .map(|&w| {
                let mut tally = Tally::default();
                let mut start = Duration::ZERO;
                while let (Some(a), Some(b)) = (at(start), at(start + w)) {
                    tally.add(0, (b.at - a.at).as_secs_f64(), &a.hashes, &b.hashes);
                    start += w;
                }
                tally
            })
            .collect();
        Ok((
            Measurement {
                points: self.points(&tallies),
                zero_share: zeros as f64 / readable as f64,
            },
            tallies,
        ))
    }

    /// `count` more windows of `window`, back to back, over a fresh sample
    /// set of `samples` pages (new pages narrow what the choice of pages
    /// leaves open, which more windows of the same pages cannot), into
    /// `tally`.
    pub fn repeat(
        &mut self,
        window: Duration,
        count: u32,
        samples: usize,
        tally: &mut Tally,
    ) -> Result<()> {
        self.pick(samples);
        let base = tally.next_set();
        let t0 = Instant::now();
        let mut last = self.pass(t0)?;
        for k in 1..=count {
            if let Some(left) = (window * k).checked_sub(t0.elapsed()) {
                std::thread::sleep(left);
            }
            let now = self.pass(t0)?;
            tally.add(
                base,
                (now.at - last.at).as_secs_f64(),
                &last.hashes,
                &now.hashes,
            );
            last = now;
        }
        Ok(())
    }

    pub fn points(&self, tallies: &[Tally]) -> Vec<DirtyPoint> {
        tallies
            .iter()
            .map(|t| t.point(self.sampled_bytes as f64))
            .collect()
    }
}

/// CPU time this thread has used.
fn thread_cpu_seconds() -> f64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: writes into the timespec given.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    ts.tv_sec as f64 + ts.tv_nsec as f64 * 1e-9
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

    #[test]
    fn the_schedule_measures_each_window_four_times_but_the_longest() {
        let ms = |v: &[u64]| {
            v.iter()
                .map(|&m| Duration::from_millis(m))
                .collect::<Vec<_>>()
        };
        assert_eq!(
            schedule(&ms(&[250, 1000, 4000, 16000])),
            ms(&[0, 250, 500, 750, 1000, 2000, 3000, 4000, 8000, 12000, 16000])
        );
        assert_eq!(
            schedule(&ms(&[100, 3000])),
            ms(&[0, 100, 200, 300, 400, 3000])
        );
        assert_eq!(schedule(&ms(&[1000])), ms(&[0, 1000]));
        // The default: 500 ms adds a pass at 1.5 s, 2 s one at 6 s, 6 s
        // and 8 s none.
        assert_eq!(
            schedule(&ms(&[100, 250, 500, 1000, 2000, 4000, 6000, 8000, 16000])),
            ms(&[
                0, 100, 200, 250, 300, 400, 500, 750, 1000, 1500, 2000, 3000, 4000, 6000, 8000,
                12000, 16000
            ])
        );
    }

    #[test]
    fn a_tally_counts_changes_among_pages_readable_at_the_end() {
        let mut t = Tally::default();
        let before = [Some(1), Some(2), Some(3), None, Some(5)];
        let after = [Some(1), Some(9), None, Some(4), Some(5)];
        t.add(0, 0.25, &before, &after);
        t.add(0, 0.25, &after, &after);
        let p = t.point(8.0 * 4096.0);
        // 2 changes in 8 page-windows.
        assert_eq!((p.windows, p.changed_samples), (2, Some(2)));
        assert_eq!((p.window_seconds, p.dirty_bytes), (0.25, 2.0 * 4096.0));
        assert!(p.dirty_bytes_low < p.dirty_bytes && p.dirty_bytes < p.dirty_bytes_high);
    }

    /// Four windows over 1000 pages where 20 pages change: once each, or
    /// in every window (a hot set saturated within one window).
    fn four_windows(saturated: bool) -> DirtyPoint {
        let mut t = Tally::default();
        let mut state: Vec<Option<u64>> = (0..1000).map(Some).collect();
        for w in 0..4u64 {
            let before = state.clone();
            for (i, s) in state.iter_mut().enumerate().take(80) {
                let hot = if saturated {
                    i < 20
                } else {
                    i as u64 / 20 == w
                };
                if hot {
                    *s = Some(1_000_000 + w * 1000 + i as u64);
                }
            }
            t.add(0, 1.0, &before, &state);
        }
        t.point(1000.0)
    }

    #[test]
    fn windows_of_the_same_pages_are_not_independent_trials() {
        let (once, every) = (four_windows(false), four_windows(true));
        // The same estimate, 20 of 1000 per window...
        assert_eq!((once.dirty_bytes, every.dirty_bytes), (20.0, 20.0));
        // ...but pages changing in every window are 20 pages seen four
        // times, not 80 independent changes: a wider interval.
        let width = |p: &DirtyPoint| p.dirty_bytes_high - p.dirty_bytes_low;
        assert!(width(&every) > 1.8 * width(&once), "{once:?} {every:?}");
        let (lo, hi) = wilson(20.0, 1000.0, Z95);
        assert!((every.dirty_bytes_low - lo * 1000.0).abs() < 1e-6);
        assert!((every.dirty_bytes_high - hi * 1000.0).abs() < 1e-6);
        let (lo, hi) = wilson(80.0, 4000.0, Z95);
        assert!(
            (once.dirty_bytes_low - lo * 1000.0).abs() < 0.05,
            "{once:?}"
        );
        assert!(
            (once.dirty_bytes_high - hi * 1000.0).abs() < 0.05,
            "{once:?}"
        );
    }
}
