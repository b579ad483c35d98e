//! The pre-copy model against real QEMU 10 migrations: each case's measured
//! inputs (memory, link, the d(w) points hostprobe's default sampling
//! measured on the source just before) and QEMU's outcome, from
//! `cargo xtask validate-migration` (which writes this table as
//! `target/validate-migration/replay.json`). What the model answers for,
//! given those inputs: no certain verdict wrong, the total time within 20%
//! where it is certain a migration over 5 s converges (but the cases at
//! `KNOWN_WRONG` and `KNOWN_OFF`, with why), and the real time
//! within the optimistic..pessimistic range (20% either side) wherever it
//! converged. How often the inputs leave it uncertain is the sampling's
//! part, checked by the live validation.

use serde::Deserialize;

use super::precopy::{forecast, DirtyPoint, Link, Memory, Outlook, QEMU_OVERHEADS};

#[derive(Deserialize)]
struct Case {
    case: String,
    memory: Memory,
    link: Link,
    dirty: Vec<DirtyPoint>,
    qemu: Qemu,
}

#[derive(Deserialize)]
struct Qemu {
    status: String,
    total_ms: f64,
}

/// Certain and wrong in the recorded run, and why (issue 13 is open on
/// them). Both are small hot sets swept faster than the link.
/// - `h64-r9830-l32-d1000` (64 MiB at 38.4 MiB/s over 32 MiB/s, a 1 s limit:
///   a threshold of half the hot set): the model takes the pending pages to
///   be the most recently dirtied, so the pending set grows by the
///   difference of the rates and never fits; QEMU converged (9.6, 16.0 and
///   12.1 s in three runs). A page-level simulation of QEMU's loop
///   reproduces that only with the guest's buffer in physical order (QEMU
///   scans in that order, and its scan and the sweep lock in phase), and
///   14 other cases with either order; the order cannot be seen from outside.
/// - `h32-r9830-l32-d300` (32 MiB at 38.4 MiB/s over 32 MiB/s): the knee of
///   d(w) (saturation at 0.83 s) lies between the 250 ms and 1 s windows;
///   linear between them, d(w) rises at 28 MiB/s where the writer does
///   38.4, and the intervals of the points do not cover that.
const KNOWN_WRONG: &[&str] = &["h64-r9830-l32-d1000", "h32-r9830-l32-d300"];

/// Certain to converge, converged, and the time more than 20% off:
/// `h128-r7373-l64-d100` (28.8 MiB/s over 64 MiB/s, a 100 ms limit: a 6.4
/// MiB threshold) predicted 7.6 s for 5.7 s. Near that threshold the
/// pending set is d(w) of about 200 ms, and d(250ms) was measured 9.0 MiB
/// (18 changed samples) for a true 7.2; the optimistic and pessimistic
/// times (6.9..10.2 s) were not far enough apart to measure it again.
const KNOWN_OFF: &[&str] = &["h128-r7373-l64-d100"];

fn cases() -> Vec<Case> {
    serde_json::from_str(include_str!("testdata/qemu-migrations.json")).unwrap()
}

#[test]
fn the_model_replays_real_qemu_migrations() {
    let cases = cases();
    let (mut wrong, mut off, mut outside, mut uncertain) = (vec![], vec![], vec![], 0);
    for c in &cases {
        let f = forecast(&c.memory, &c.dirty, &c.link, &QEMU_OVERHEADS);
        let converged = c.qemu.status == "completed";
        let seconds = c.qemu.total_ms / 1e3;
        println!(
            "{:<24} {:<17} {:>6.1} s ({:>5.1}..{:>5.1}) | QEMU {} {:>5.1} s",
            c.case,
            format!("{:?}", f.outlook),
            f.prediction.total_seconds,
            f.optimistic.total_seconds,
            f.pessimistic.total_seconds,
            if converged { "yes" } else { "no " },
            seconds
        );
        match f.outlook {
            Outlook::Uncertain => uncertain += 1,
            o if (o == Outlook::Converges) != converged => wrong.push(c.case.clone()),
            _ => {}
        }
        if f.outlook == Outlook::Converges && converged && seconds > 5.0 {
            let error = f.prediction.total_seconds / seconds - 1.0;
            if error.abs() > 0.2 && !KNOWN_OFF.contains(&c.case.as_str()) {
                off.push(format!("{} {:+.0}%", c.case, error * 100.0));
            }
        }
        if converged && f.optimistic.converges {
            let (low, high) = (f.optimistic.total_seconds, f.pessimistic.total_seconds);
            let high = if f.pessimistic.converges {
                high
            } else {
                f64::INFINITY
            };
            if !(low * 0.8..=high * 1.2).contains(&seconds) {
                outside.push(format!(
                    "{} {seconds:.1} s not in {low:.1}..{high:.1}",
                    c.case
                ));
            }
        }
    }
    println!("uncertain: {uncertain} of {}", cases.len());
    let unexplained: Vec<&String> = wrong
        .iter()
        .filter(|c| !KNOWN_WRONG.contains(&c.as_str()))
        .collect();
    assert!(unexplained.is_empty(), "certain and wrong: {unexplained:?}");
    assert!(off.is_empty(), "total time off by more than 20%: {off:?}");
    assert!(outside.is_empty(), "outside the range: {outside:?}");
}
