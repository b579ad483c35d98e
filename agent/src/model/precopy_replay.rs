//! The pre-copy model against real QEMU 10 migrations: each case's measured
//! inputs (memory, link, the d(w) points hostprobe's default sampling
//! measured on the source just before) and QEMU's outcome, from
//! `cargo xtask validate-migration` (which writes this table as
//! `target/validate-migration/replay.json`). What the model answers for,
//! given those inputs: no certain verdict wrong, the total time within 20%
//! where it is certain a migration over 5 s converges, and the real time
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
        if f.outlook == Outlook::Converges && seconds > 5.0 {
            let error = f.prediction.total_seconds / seconds - 1.0;
            if error.abs() > 0.2 {
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
    assert!(wrong.is_empty(), "certain and wrong: {wrong:?}");
    assert!(off.is_empty(), "total time off by more than 20%: {off:?}");
    assert!(outside.is_empty(), "outside the range: {outside:?}");
}
