//! `hostprobe diagnose`: attach, collect for a while (a progress bar on a
//! terminal; Ctrl-C ends early), assess readiness, print one snapshot.

use std::io::{IsTerminal, Write};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use tokio::signal::unix::{signal, SignalKind};

use crate::agent::{Agent, Filter};
use crate::cli::DiagnoseArgs;
use crate::collectors::readiness::assess_top_dirtying;
use crate::error::{Error, Result};
use crate::measure::assess::Target;
use crate::output::{pprof, report};

pub async fn run(a: DiagnoseArgs) -> Result<ExitCode> {
    let extra = match (a.pid, &a.cgroup) {
        (Some(p), _) => Some(Target::Pid(p)),
        (None, Some(c)) => Some(Target::Cgroup(c.clone())),
        _ => None,
    };
    let readiness = super::readiness_options(&a.readiness, extra, Some(a.duration))?;
    // A target takes its longest window, and as long again when its
    // verdict hangs on one window.
    let pass_timeout = a.duration
        + readiness.windows.iter().max().copied().unwrap_or_default()
            * 2
            * readiness.max_targets as u32;
    let filter = Filter {
        pid: a.pid,
        cgroup: a.cgroup,
    };
    let mut opts = super::agent_options(filter, &a.tuning, a.lock_type.unwrap_or(0));
    opts.readiness = Some(readiness.clone());
    // Created before collecting, so that a path that cannot be written
    // fails at once rather than after the whole run.
    let pprof_file = a
        .pprof
        .as_ref()
        .map(|p| {
            std::fs::File::create(p).map_err(|source| Error::PprofFile {
                path: p.clone(),
                source,
            })
        })
        .transpose()?;
    let mut agent = Agent::start(&opts)?;
    collect_for(a.duration, || {
        // Stacks of processes that exit before the end keep their names.
        if let Err(e) = agent.name_new_stacks() {
            tracing::warn!("naming user stacks: {e}");
        }
    })
    .await?;
    if let Some(r) = agent.readiness() {
        r.first_pass(pass_timeout).await;
    }
    let mut snapshot = agent.round()?;
    assess_top_dirtying(&snapshot.dirty, &mut snapshot.readiness, &readiness, 3);
    drop(agent);
    if let (Some(path), Some(mut file)) = (&a.pprof, pprof_file) {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as i64);
        file.write_all(&pprof::user_locks(&snapshot, now))
            .map_err(|source| Error::PprofFile {
                path: path.clone(),
                source,
            })?;
    }
    super::print_view(&snapshot, a.json, |v| report::render(v, a.stacks));
    Ok(ExitCode::SUCCESS)
}

/// Waits for `duration` (or SIGINT, which ends collection early), drawing
/// a progress bar on stderr when it is a terminal and calling `each_second`
/// every second.
async fn collect_for(duration: Duration, mut each_second: impl FnMut()) -> Result<()> {
    // One listener for the whole wait, so that no SIGINT falls between two.
    let mut interrupt =
        signal(SignalKind::interrupt()).map_err(|e| Error::io("SIGINT handler".as_ref(), e))?;
    let start = Instant::now();
    let tty = std::io::stderr().is_terminal();
    let mut tick = tokio::time::interval(Duration::from_millis(250));
    let mut second = tokio::time::interval(Duration::from_secs(1));
    let deadline = tokio::time::sleep(duration);
    tokio::pin!(deadline);
    loop {
        tokio::select! {
            _ = &mut deadline => break,
            _ = interrupt.recv() => break,
            _ = second.tick() => each_second(),
            _ = tick.tick(), if tty => {
                let done = start.elapsed().as_secs_f64() / duration.as_secs_f64().max(1e-9);
                let filled = ((done.min(1.0)) * 30.0) as usize;
                eprint!("\rcollecting [{}{}] {:>5.1}/{:.1} s", "#".repeat(filled), " ".repeat(30 - filled), start.elapsed().as_secs_f64(), duration.as_secs_f64());
                let _ = std::io::stderr().flush();
            }
        }
    }
    if tty {
        eprint!("\r{}\r", " ".repeat(60));
    }
    Ok(())
}
