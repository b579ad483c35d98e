//! The exact dirty-set measurement, for when the sampled estimate is not
//! enough: soft-dirty bits (`clear_refs` = 4, then pagemap bit 55) where the
//! kernel has CONFIG_MEM_SOFT_DIRTY, otherwise a content hash of every
//! resident page. Both cost far more than sampling (soft-dirty write-protects
//! every page of the target, so each first write after the reset faults),
//! so they run only on request, never more often than a minimum interval per
//! process, and never against a VM that looks like it is migrating.

use std::collections::hash_map::DefaultHasher;
use std::fs::File;
use std::hash::Hasher;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use crate::error::{Error, Result};
use crate::host::proc::{self, Mapping, PAGE, PM_PRESENT, PM_SOFT_DIRTY, PM_SWAP};
use crate::measure::sampling::{open_live, Measurement, Region};
use crate::model::precopy::DirtyPoint;
use crate::snapshot::SamplingMethod;

/// Largest single read of target memory.
const CHUNK_PAGES: u64 = 64;

/// Whether this kernel tracks soft-dirty bits: clear them for this process,
/// write a page, and see whether pagemap reports it dirty.
pub fn soft_dirty_supported() -> bool {
    let mut page = vec![0u8; 2 * PAGE as usize];
    let addr = (page.as_ptr() as u64).div_ceil(PAGE) * PAGE;
    let idx = (addr - page.as_ptr() as u64) as usize;
    page[idx] = 1;
    if std::fs::write("/proc/self/clear_refs", "4").is_err() {
        return false;
    }
    page[idx] = 2;
    std::hint::black_box(&page);
    let Ok(pm) = File::open("/proc/self/pagemap") else {
        return false;
    };
    let mut e = [0u8; 8];
    pm.read_exact_at(&mut e, addr / PAGE * 8).is_ok() && u64::from_le_bytes(e) & PM_SOFT_DIRTY != 0
}

/// Which exact method runs on this kernel.
pub fn method() -> &'static str {
    if soft_dirty_supported() {
        "soft-dirty (exact)"
    } else {
        "full content hash (exact)"
    }
}

/// Refuses to run the exact path more often than `min_interval` per
/// process: the time of the last run is kept in `state_dir`.
pub fn rate_limit(state_dir: &Path, pid: u32, min_interval: Duration) -> Result<()> {
    // pid + start time: a reused pid is another process.
    let start = proc::start_time(pid)?;
    let path = state_dir.join(format!("exact-{pid}-{start}"));
    let now = SystemTime::now();
    if let Ok(meta) = std::fs::metadata(&path) {
        let ago = meta
            .modified()
            .ok()
            .and_then(|m| now.duration_since(m).ok())
            .unwrap_or_default();
        if ago < min_interval {
            return Err(Error::ExactTooSoon {
                pid,
                ago,
                min_interval,
            });
        }
    }
    let state = |source| Error::ExactState {
        dir: state_dir.to_path_buf(),
        source,
    };
    std::fs::create_dir_all(state_dir).map_err(state)?;
    std::fs::write(&path, b"").map_err(state)
}

/// Every page of the regions, measured exactly.
pub struct Exact {
    regions: Vec<(u32, File, File, Vec<Mapping>)>,
    soft_dirty: bool,
    bytes: u64,
}

impl Exact {
    /// Every page of the regions of processes still running (it fails only
    /// when none is).
    pub fn new(regions: &[Region]) -> Result<Self> {
        let (live, mem) = open_live(regions, "mem")?;
        let mut open = Vec::new();
        for (r, m) in live.into_iter().zip(mem) {
            // Exited between the two opens: left out like the others.
            if let Ok((_, mut pagemap)) = open_live(std::slice::from_ref(r), "pagemap") {
                open.push((r.pid, m, pagemap.remove(0), r.mappings.clone()));
            }
        }
        if open.is_empty() {
            return Err(Error::NoSuchProcess {
                pid: regions.first().map_or(0, |r| r.pid),
            });
        }
        let regions = open;
        let bytes = regions
            .iter()
            .flat_map(|r| r.3.iter().map(|m| m.end - m.start))
            .sum();
        Ok(Self {
            regions,
            soft_dirty: soft_dirty_supported(),
            bytes,
        })
    }

    pub fn method(&self, pages: usize) -> SamplingMethod {
        SamplingMethod {
            method: if self.soft_dirty {
                "soft-dirty (exact)"
            } else {
                "full content hash (exact)"
            },
            samples: pages,
            sampled_bytes: self.bytes,
        }
    }

    /// Per page: `None` if not resident, else the hash of its content.
    fn hashes(&self) -> Vec<Option<u64>> {
        let mut out = Vec::new();
        let mut buf = vec![0u8; (CHUNK_PAGES * PAGE) as usize];
        for (_, mem, pm, maps) in &self.regions {
            for m in maps {
                let entries = proc::pagemap_entries(pm, m);
                let mut i = 0;
                while i < entries.len() {
                    if entries[i] & PM_PRESENT == 0 {
                        out.push(None);
                        i += 1;
                        continue;
                    }
                    // A run of resident pages, read at once.
                    let mut j = i;
                    while j < entries.len()
                        && j - i < CHUNK_PAGES as usize
                        && entries[j] & PM_PRESENT != 0
                    {
                        j += 1;
                    }
                    let b = &mut buf[..(j - i) * PAGE as usize];
                    let ok = mem.read_exact_at(b, m.start + i as u64 * PAGE).is_ok();
                    out.extend(b.chunks_exact(PAGE as usize).map(|page| {
                        ok.then(|| {
                            let mut h = DefaultHasher::new();
                            h.write(page);
                            h.finish()
                        })
                    }));
                    i = j;
                }
            }
        }
        out
    }

    /// Pages soft-dirty (written since the reset) now, resident or swapped.
    fn soft_dirty_count(&self) -> u64 {
        self.regions
            .iter()
            .flat_map(|(_, _, pm, maps)| maps.iter().map(move |m| proc::pagemap_entries(pm, m)))
            .flatten()
            .filter(|e| e & PM_SOFT_DIRTY != 0 && e & (PM_PRESENT | PM_SWAP) != 0)
            .count() as u64
    }

    /// d(w) at each window, exactly; the pages examined for the provenance.
    pub fn measure(&self, windows: &[Duration]) -> Result<(Measurement, usize)> {
        let mut windows = windows.to_vec();
        windows.sort();
        // Windows run from the start of the baseline pass to the start of
        // each later pass: both visit the pages in the same order at about
        // the same speed, so each page is watched for that long.
        let t0 = Instant::now();
        let base = if self.soft_dirty {
            for (pid, ..) in &self.regions {
                let path = PathBuf::from(format!("/proc/{pid}/clear_refs"));
                std::fs::write(&path, "4").map_err(|e| Error::io(&path, e))?;
            }
            Vec::new()
        } else {
            self.hashes()
        };
        let zero = {
            let mut h = DefaultHasher::new();
            h.write(&[0u8; PAGE as usize]);
            h.finish()
        };
        let resident = base.iter().filter(|h| h.is_some()).count();
        let zeros = base.iter().filter(|h| **h == Some(zero)).count();
        let mut points = Vec::new();
        for w in windows {
            if let Some(left) = w.checked_sub(t0.elapsed()) {
                std::thread::sleep(left);
            }
            let elapsed = t0.elapsed().as_secs_f64();
            let dirty_pages = if self.soft_dirty {
                self.soft_dirty_count()
            } else {
                let now = self.hashes();
                // Changed content; a page resident only now counts unless
                // it is still all zeros (read-faulted, never written).
                base.iter()
                    .zip(&now)
                    .filter(|(a, b)| match (a, b) {
                        (Some(a), Some(b)) => a != b,
                        (None, Some(b)) => *b != zero,
                        _ => false,
                    })
                    .count() as u64
            };
            points.push(DirtyPoint::exact(elapsed, (dirty_pages * PAGE) as f64));
        }
        if let Some((pid, ..)) = self.regions.first().filter(|_| {
            self.regions
                .iter()
                .all(|(pid, ..)| !Path::new(&format!("/proc/{pid}")).exists())
        }) {
            return Err(Error::NoSuchProcess { pid: *pid });
        }
        let total = (self.bytes / PAGE) as usize;
        let zero_share = if base.is_empty() {
            0.0
        } else {
            (zeros + (total - resident)) as f64 / total.max(1) as f64
        };
        Ok((Measurement { points, zero_share }, total))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_at_most_once_per_interval() {
        let dir = tempfile::tempdir().unwrap();
        let me = std::process::id();
        rate_limit(dir.path(), me, Duration::from_secs(3600)).unwrap();
        let err = rate_limit(dir.path(), me, Duration::from_secs(3600)).unwrap_err();
        assert!(matches!(err, Error::ExactTooSoon { .. }), "{err}");
        rate_limit(dir.path(), me, Duration::ZERO).unwrap();
    }

    #[test]
    fn hashes_every_resident_page_of_this_process() {
        let mut buf = vec![1u8; 64 * PAGE as usize];
        let start = (buf.as_ptr() as u64).div_ceil(PAGE) * PAGE;
        let region = Region {
            pid: std::process::id(),
            mappings: vec![Mapping {
                start,
                end: start + 32 * PAGE,
            }],
        };
        let exact = Exact {
            soft_dirty: false,
            ..Exact::new(&[region]).unwrap()
        };
        let before = exact.hashes();
        assert_eq!(before.len(), 32);
        assert!(before.iter().all(Option::is_some));
        let off = (start - buf.as_ptr() as u64) as usize;
        for p in [0usize, 5, 31] {
            buf[off + p * PAGE as usize] = 9;
        }
        std::hint::black_box(&buf);
        let after = exact.hashes();
        let changed = before.iter().zip(&after).filter(|(a, b)| a != b).count();
        assert_eq!(changed, 3);
    }
}
