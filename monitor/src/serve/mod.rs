//! HTTP server of the live monitor: `/metrics`, `/healthz`, `/readyz`, `/api/state` and `/`.
//!
//! Consumes a [`Shared`] that the pipeline thread keeps up to date (a prometheus registry, a state
//! page swapped in whole behind a mutex, readiness flags); produces HTTP responses. Handlers only
//! read: a scrape never blocks the packet path (the pipeline holds the mutex for one pointer swap).
//!
//! axum (on hyper) for routing with little code; it runs on the tokio runtime of `trustwatch live`.

mod page;
pub mod state;
pub mod timeline;

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use prometheus::{Encoder as _, Registry, TextEncoder};

pub use state::StatePage;

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
}

impl Shared {
    pub fn new(registry: Registry, require_consistent: bool) -> Shared {
        Shared {
            registry,
            state: Mutex::new(Arc::new(StatePage::default())),
            capture_running: AtomicBool::new(false),
            ca_consistent: AtomicBool::new(true),
            require_consistent,
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

/// The routes.
pub fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/", get(index))
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/api/state", get(api_state))
        .with_state(shared)
}

/// Serves until `shutdown` completes. `listener` is already bound (bind errors are reported
/// before anything starts).
pub async fn serve(
    listener: std::net::TcpListener,
    shared: Arc<Shared>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    listener.set_nonblocking(true)?;
    let listener = tokio::net::TcpListener::from_std(listener)?;
    axum::serve(listener, router(shared))
        .with_graceful_shutdown(shutdown)
        .await
}

async fn index() -> Response {
    (
        [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
        page::HTML,
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

async fn healthz() -> &'static str {
    "ok\n"
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
