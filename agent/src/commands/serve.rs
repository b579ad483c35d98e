//! `hostprobe serve`: read the kernel maps on every scrape (as
//! ebpf_exporter does, so a scrape is never stale) and on an interval (so
//! top-K labels and self-metrics move when nobody scrapes); detach
//! everything on SIGINT/SIGTERM.

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

/// The agent and its latest snapshot (served if a fresh collection fails).
struct Collected {
    agent: Agent,
    latest: Snapshot,
}

impl Collected {
    fn refresh(&mut self) -> &Snapshot {
        match self.agent.snapshot() {
            Ok(s) => self.latest = s,
            Err(e) => warn!("collection failed, serving the previous snapshot: {e}"),
        }
        &self.latest
    }
}

type Shared = Arc<Mutex<Collected>>;

fn lock(state: &Shared) -> MutexGuard<'_, Collected> {
    state.lock().unwrap_or_else(|p| p.into_inner())
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
    let latest = agent.snapshot()?;
    let state: Shared = Arc::new(Mutex::new(Collected { agent, latest }));
    let app = Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/", get(index))
        .with_state(state.clone());
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(async {
                let _ = stop_rx.await;
            })
            .await
    });
    info!(%listen, ?interval, "serving /metrics");

    // Listeners made once, so that no signal falls between two of them.
    let mut term =
        signal(SignalKind::terminate()).map_err(|e| Error::io("SIGTERM handler".as_ref(), e))?;
    let mut interrupt =
        signal(SignalKind::interrupt()).map_err(|e| Error::io("SIGINT handler".as_ref(), e))?;
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        tokio::select! {
            _ = interrupt.recv() => break,
            _ = term.recv() => break,
            _ = tick.tick() => {
                lock(&state).refresh();
            }
        }
    }
    info!("shutting down");
    let _ = stop_tx.send(());
    match server.await {
        Ok(Err(e)) => warn!("HTTP server: {e}"),
        Err(e) => warn!("HTTP server task: {e}"),
        Ok(Ok(())) => {}
    }
    // With the server gone this is the last reference: dropping the agent
    // detaches and unloads every program before the process exits.
    match Arc::try_unwrap(state) {
        Ok(collected) => drop(collected),
        Err(_) => warn!("a connection still holds the agent; probes detach at exit"),
    }
    info!("all probes detached");
    Ok(())
}

async fn metrics(State(state): State<Shared>) -> impl IntoResponse {
    let body = prometheus::render(lock(&state).refresh());
    (
        StatusCode::OK,
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        body,
    )
}

async fn index() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
        "<html><head><title>hostprobe</title></head><body><h1>hostprobe</h1>\
         <p><a href=\"/metrics\">/metrics</a> · <a href=\"/healthz\">/healthz</a></p></body></html>\n",
    )
}
