//! HTTP server of the live monitor: `/metrics`, `/healthz`, `/readyz`, `/api/state`, `/` (the
//! status page) and `/runbook` (the runbook its "what to do" panels link to).
//!
//! Consumes a [`Shared`] that the pipeline thread keeps up to date (a prometheus registry, a state
//! page swapped in whole behind a mutex, readiness and liveness facts); produces HTTP responses.
//! Handlers only read: a scrape never blocks the packet path (the pipeline holds the mutex for one
//! pointer swap). The connections themselves are bounded in [`http`].
//!
//! The status page and `/api/state` list client addresses (the failing edges): they can be served
//! with the metrics, on another address (e.g. loopback only), or not at all ([`StatusPage`]).
//!
//! axum (on hyper) for routing with little code; it runs on the tokio runtime of `trustwatch live`.

pub mod http;
mod page;
pub mod state;
pub mod timeline;

use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use prometheus::{Encoder as _, IntCounter, IntGaugeVec, Opts, Registry, TextEncoder};

pub use http::HttpLimits;
pub use state::StatePage;

/// Where the status page and `/api/state` are served.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StatusPage {
    /// With `/metrics` (the default).
    WithMetrics,
    /// On their own address.
    At(std::net::SocketAddr),
    /// Not at all.
    Off,
}

impl std::str::FromStr for StatusPage {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "on" => Ok(StatusPage::WithMetrics),
            "off" => Ok(StatusPage::Off),
            addr => addr
                .parse()
                .map(StatusPage::At)
                .map_err(|_| format!("'{s}' is not on, off or an address like 127.0.0.1:9878")),
        }
    }
}

/// When liveness fails.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Liveness {
    /// The pipeline thread has not published for this long: it is stuck.
    pub stalled_after: Duration,
    /// A capture source has been down (failing and retrying) for this long.
    pub source_down_after: Duration,
}

impl Default for Liveness {
    fn default() -> Self {
        Liveness {
            stalled_after: Duration::from_secs(10),
            source_down_after: Duration::from_secs(60),
        }
    }
}

/// What the HTTP handlers read.
pub struct Shared {
    pub registry: Registry,
    state: Mutex<Arc<StatePage>>,
    /// Every capture thread is reading.
    pub capture_running: AtomicBool,
    /// No CA inconsistency or divergence is reported right now.
    pub ca_consistent: AtomicBool,
    /// `--ready-requires-consistent-ca`.
    pub require_consistent: bool,
    /// Wall time of the pipeline's last publish, ms since the epoch (0: not yet).
    heartbeat_ms: AtomicU64,
    /// Why the monitor is not alive (a source down for too long), if so.
    down: Mutex<Option<String>>,
    liveness: Liveness,
    /// Connections refused because the connection cap and its health reserve were full.
    pub http_rejected: IntCounter,
    /// Connections being served, by listener and pool.
    http_open: IntGaugeVec,
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

impl Shared {
    pub fn new(registry: Registry, require_consistent: bool, liveness: Liveness) -> Shared {
        let http_rejected = IntCounter::new(
            "trustwatch_http_connections_rejected_total",
            "HTTP connections closed at once because the connection cap and its health reserve were full.",
        )
        .expect("a valid metric name");
        let _ = registry.register(Box::new(http_rejected.clone()));
        let http_open = IntGaugeVec::new(
            Opts::new(
                "trustwatch_http_connections_open",
                "HTTP connections being served, by listener and pool (general, or the health reserve).",
            ),
            &["listener", "pool"],
        )
        .expect("a valid metric name");
        let _ = registry.register(Box::new(http_open.clone()));
        Shared {
            registry,
            state: Mutex::new(Arc::new(StatePage::default())),
            capture_running: AtomicBool::new(false),
            ca_consistent: AtomicBool::new(true),
            require_consistent,
            heartbeat_ms: AtomicU64::new(0),
            down: Mutex::new(None),
            liveness,
            http_rejected,
            http_open,
        }
    }

    /// The pipeline published; `down` is the longest a source has been down, with its name.
    pub fn heartbeat(&self, down: Option<(&str, Duration)>) {
        self.heartbeat_ms.store(now_ms(), Ordering::SeqCst);
        let why = down
            .filter(|(_, d)| *d >= self.liveness.source_down_after)
            .map(|(name, d)| format!("capture source {name} down for {}s", d.as_secs()));
        *self.down.lock().unwrap_or_else(PoisonError::into_inner) = why;
    }

    /// `Ok` while alive, else why not: the pipeline stopped publishing, or a source stays down.
    pub fn liveness(&self) -> Result<(), String> {
        let last = self.heartbeat_ms.load(Ordering::SeqCst);
        let stalled = self.liveness.stalled_after.as_millis() as u64;
        if last > 0 && now_ms().saturating_sub(last) > stalled {
            return Err(format!(
                "the pipeline has not published for {}s",
                now_ms().saturating_sub(last) / 1000
            ));
        }
        match self
            .down
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
        {
            Some(why) => Err(why),
            None => Ok(()),
        }
    }

    pub fn set_capture_running(&self, running: bool) {
        self.capture_running.store(running, Ordering::SeqCst);
    }

    pub fn set_ca_consistent(&self, consistent: bool) {
        self.ca_consistent.store(consistent, Ordering::SeqCst);
    }

    /// Replaces the state page (called by the pipeline thread).
    pub fn publish(&self, page: StatePage) {
        let page = Arc::new(page);
        *self.state.lock().unwrap_or_else(PoisonError::into_inner) = page;
    }

    pub fn state(&self) -> Arc<StatePage> {
        self.state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// The connection counters of one listener (`metrics` or `status`).
    fn http_counters(&self, listener: &str) -> http::Counters {
        http::Counters {
            rejected: self.http_rejected.clone(),
            general: self.http_open.with_label_values(&[listener, "general"]),
            reserve: self
                .http_open
                .with_label_values(&[listener, "health_reserve"]),
        }
    }

    /// `Ok` when ready, else why not.
    pub fn readiness(&self) -> Result<(), &'static str> {
        if !self.capture_running.load(Ordering::SeqCst) {
            return Err("capture is not running");
        }
        if self.require_consistent && !self.ca_consistent.load(Ordering::SeqCst) {
            return Err("CA inconsistent or diverging (--ready-requires-consistent-ca)");
        }
        Ok(())
    }
}

/// Health endpoints: served on every listener, and alone to connections over the cap.
fn health_routes(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .with_state(shared)
}

/// The status page and `/api/state` (they list client addresses).
fn status_routes(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/", get(index))
        .route("/runbook", get(runbook))
        .route("/api/state", get(api_state))
        .with_state(shared)
}

/// The routes of the main listener.
pub fn router(shared: Arc<Shared>, status: StatusPage) -> Router {
    let main = health_routes(shared.clone()).merge(
        Router::new()
            .route("/metrics", get(metrics))
            .with_state(shared.clone()),
    );
    if status == StatusPage::WithMetrics {
        main.merge(status_routes(shared))
    } else {
        main
    }
}

/// Serves the main listener (and `status_listener` for [`StatusPage::At`]) until `shutdown`.
/// Listeners are already bound (bind errors are reported before anything starts).
pub async fn serve(
    listener: std::net::TcpListener,
    status_listener: Option<std::net::TcpListener>,
    shared: Arc<Shared>,
    status: StatusPage,
    limits: HttpLimits,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let busy = health_routes(shared.clone()).fallback(busy);
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let wait = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|s| *s).await;
    };
    let extra = status_listener.map(|l| {
        let routes = health_routes(shared.clone()).merge(status_routes(shared.clone()));
        tokio::spawn(http::serve(
            l,
            routes,
            busy.clone(),
            limits,
            shared.http_counters("status"),
            wait(stopped.clone()),
        ))
    });
    let main = http::serve(
        listener,
        router(shared.clone(), status),
        busy,
        limits,
        shared.http_counters("metrics"),
        wait(stopped),
    );
    tokio::pin!(main);
    tokio::pin!(shutdown);
    let result = tokio::select! {
        r = &mut main => r,
        () = &mut shutdown => {
            let _ = stop.send(true);
            main.await
        }
    };
    if let Some(extra) = extra {
        let _ = stop.send(true);
        let _ = extra.await;
    }
    result
}

async fn busy() -> Response {
    (
        StatusCode::SERVICE_UNAVAILABLE,
        "busy: too many connections\n",
    )
        .into_response()
}

async fn index() -> Response {
    (
        [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
        page::HTML,
    )
        .into_response()
}

async fn runbook() -> Response {
    (
        [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
        page::runbook_html(),
    )
        .into_response()
}

async fn metrics(State(shared): State<Arc<Shared>>) -> Response {
    let encoder = TextEncoder::new();
    let mut buf = Vec::with_capacity(16 * 1024);
    match encoder.encode(&shared.registry.gather(), &mut buf) {
        Ok(()) => ([(header::CONTENT_TYPE, prometheus::TEXT_FORMAT)], buf).into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}

async fn healthz(State(shared): State<Arc<Shared>>) -> Response {
    match shared.liveness() {
        Ok(()) => (StatusCode::OK, "ok\n").into_response(),
        Err(why) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not alive: {why}\n"),
        )
            .into_response(),
    }
}

async fn readyz(State(shared): State<Arc<Shared>>) -> Response {
    match shared.readiness() {
        Ok(()) => (StatusCode::OK, "ready\n").into_response(),
        Err(why) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: {why}\n"),
        )
            .into_response(),
    }
}

async fn api_state(State(shared): State<Arc<Shared>>) -> Response {
    let page = shared.state();
    match serde_json::to_vec(&*page) {
        Ok(body) => ([(header::CONTENT_TYPE, "application/json")], body).into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}
