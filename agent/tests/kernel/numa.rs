//! NUMA on this one-node host: `mm_page_alloc` counts the pages the test
//! allocates, and can be turned off (the two-node checks run in the guest,
//! `cargo xtask vm numa`).

use super::common::*;

/// `mm_page_alloc` counts exactly the pages the test allocates when asked
/// to attach (on this one-node host they are all local), and
/// `--numa-page-alloc never` leaves it detached with the reason while the
/// rest goes on.
#[test]
fn numa_page_alloc_counts_the_pages_the_test_allocates_and_can_be_turned_off() {
    let _k = KernelTest::start();
    const PAGES: usize = 4096;
    let me = std::process::id().to_string();
    let window = |mode: &str| {
        let diag = start_diagnose(&[
            "--duration",
            "2s",
            "--pid",
            &me,
            "--no-vm-readiness",
            "--numa-page-alloc",
            mode,
        ]);
        let fresh = Anon::new(PAGES);
        for i in 0..PAGES {
            // SAFETY: inside the mapping.
            unsafe { fresh.page(i).write_volatile(1) };
        }
        let s = finish(diag);
        let probe = s["probes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["probe"] == "mm_page_alloc")
            .cloned()
            .expect("mm_page_alloc in the probe list");
        let sum = |field: &str| -> u64 {
            s["numa"]["workloads"]
                .as_array()
                .unwrap()
                .iter()
                .map(|w| w[field].as_u64().unwrap())
                .sum()
        };
        (probe, sum("local_pages"), sum("remote_pages"), s)
    };

    let (probe, local, remote, s) = window("always");
    assert_eq!(probe["attached"], true, "{probe}");
    eprintln!("touched {PAGES} new pages: mm_page_alloc saw {local} local, {remote} remote");
    // Page tables for the mapping and the harness's own allocations come on top.
    assert!(
        (PAGES as u64..PAGES as u64 + 512).contains(&(local + remote)),
        "touched {PAGES} new pages, hostprobe saw {local} local + {remote} remote allocations"
    );
    if s["topology"]["nodes"] == 1 {
        assert_eq!(remote, 0, "one node: nothing can be remote");
    }

    let (probe, local, remote, s) = window("never");
    assert_eq!(probe["attached"], false, "{probe}");
    assert!(
        probe["reason"]
            .as_str()
            .is_some_and(|r| r.contains("--numa-page-alloc never")),
        "{probe}"
    );
    assert_eq!(local + remote, 0);
    assert!(
        s["probes"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|p| p["probe"] != "mm_page_alloc")
            .all(|p| p["attached"] == true),
        "turning mm_page_alloc off must leave the others: {}",
        s["probes"]
    );
}
