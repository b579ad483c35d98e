//! `hostprobe serve`: a round every `--interval` (reads the maps, moves the
//! top-K labels with the time since the last round, drains the drained
//! tables); every scrape reads the maps afresh (as ebpf_exporter does, so a
//! scrape is never stale) under the labels in force and changes nothing, so
//! what is served does not depend on how many scrapers come or how often.
//! Map reads, cgroup walks and rendering run on blocking threads: the async
//! runtime only accepts and answers, `/healthz` never waits for a
//! collection. Everything is detached on SIGINT/SIGTERM.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use tokio::signal::unix::{signal, SignalKind};
use tracing::{info, warn};

use crate::agent::{Agent, Filter};
use crate::cli::ServeArgs;
use crate::error::{Error, Result};
use crate::host::privileges;
use crate::output::prometheus;
use crate::snapshot::Snapshot;

mod http;

/// The agent, and the latest round's snapshot (served if a fresh read fails).
struct Shared {
    agent: Mutex<Agent>,
    latest: Mutex<Snapshot>,
}

fn locked<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Shared {
    fn round(&self) {
        let r = locked(&self.agent).round();
        match r {
            Ok(s) => *locked(&self.latest) = s,
            Err(e) => warn!("collection round failed: {e}"),
        }
    }

    /// The scrape's Prometheus text.
    fn scrape(&self) -> String {
        let fresh = locked(&self.agent).peek();
        match fresh {
            Ok(s) => prometheus::render(&s),
            Err(e) => {
                warn!("collection failed, serving the last round's snapshot: {e}");
                prometheus::render(&locked(&self.latest))
            }
        }
    }
}

pub async fn run(a: ServeArgs) -> Result<ExitCode> {
    let mut opts = super::agent_options(Filter::default(), &a.tuning, 0);
    opts.readiness = Some(super::readiness_options(&a.readiness, None, None)?);
    let listener = bind(a.listen).await?;
    let agent = Agent::start(&opts)?;
    // Attached: what loading needed is not needed any more.
    let dropped = privileges::drop_unneeded()?;
    info!(?dropped, "capabilities dropped after attaching");
    serve(agent, listener, a.interval).await?;
    Ok(ExitCode::SUCCESS)
}

/// Binds the listener; done before loading the probes so that a taken or
/// privileged port fails at once, while the process still has its
/// capabilities.
async fn bind(listen: SocketAddr) -> Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|source| Error::Listen {
            addr: listen,
            source,
        })
}

async fn serve(
    mut agent: Agent,
    listener: tokio::net::TcpListener,
    interval: Duration,
) -> Result<()> {
    let listen = listener
        .local_addr()
        .map_err(|e| Error::io("listener".as_ref(), e))?;
    let latest = agent.round()?;
    let state = Arc::new(Shared {
        agent: Mutex::new(agent),
        latest: Mutex::new(latest),
    });
    let app = Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/", get(index))
        .with_state(state.clone());
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let server = tokio::spawn(http::serve(listener, app, stop_rx.clone()));
    let rounds = tokio::spawn(rounds(state.clone(), interval, stop_rx));
    info!(%listen, ?interval, "serving /metrics");

    // Listeners made once, so that no signal falls between two of them.
    let mut term =
        signal(SignalKind::terminate()).map_err(|e| Error::io("SIGTERM handler".as_ref(), e))?;
    let mut interrupt =
        signal(SignalKind::interrupt()).map_err(|e| Error::io("SIGINT handler".as_ref(), e))?;
    tokio::select! {
        _ = interrupt.recv() => {}
        _ = term.recv() => {}
    }
    info!("shutting down");
    let _ = stop_tx.send(true);
    for (what, task) in [("HTTP server", server), ("collection rounds", rounds)] {
        if let Err(e) = task.await {
            warn!("{what}: {e}");
        }
    }
    // The server and the rounds are gone: this is the last reference, and
    // dropping the agent detaches and unloads every program.
    match Arc::try_unwrap(state) {
        Ok(shared) => drop(shared),
        Err(_) => warn!("a scrape still holds the agent; probes detach at exit"),
    }
    info!("all probes detached");
    Ok(())
}

/// A round every `interval`, and the naming of new user stacks every
/// second, on a blocking thread.
async fn rounds(
    state: Arc<Shared>,
    interval: Duration,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut naming = tokio::time::interval(NAMING_INTERVAL);
    naming.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    // The first round ran before serving.
    tick.tick().await;
    loop {
        tokio::select! {
            _ = stop.changed() => return,
            _ = tick.tick() => {
                let s = state.clone();
                if let Err(e) = tokio::task::spawn_blocking(move || s.round()).await {
                    warn!("collection round: {e}");
                }
            }
            _ = naming.tick() => {
                let s = state.clone();
                let named = tokio::task::spawn_blocking(move || locked(&s.agent).name_new_stacks()).await;
                if let Ok(Err(e)) = named {
                    warn!("naming user stacks: {e}");
                }
            }
        }
    }
}

/// How often user stacks recorded since are named (their processes' maps
/// read), so that short-lived processes are named before they exit.
const NAMING_INTERVAL: Duration = Duration::from_secs(1);

async fn metrics(State(state): State<Arc<Shared>>) -> impl IntoResponse {
    match tokio::task::spawn_blocking(move || state.scrape()).await {
        Ok(body) => (
            StatusCode::OK,
            [(
                header::CONTENT_TYPE,
                "text/plain; version=0.0.4; charset=utf-8",
            )],
            body,
        ),
        Err(e) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            format!("collection failed: {e}\n"),
        ),
    }
}

async fn index() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
        "<html><head><title>hostprobe</title></head><body><h1>hostprobe</h1>\
         <p><a href=\"/metrics\">/metrics</a> · <a href=\"/healthz\">/healthz</a></p></body></html>\n",
    )
}
