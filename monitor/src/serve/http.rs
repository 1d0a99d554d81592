//! The HTTP connections: what one client may hold, and for how long.
//!
//! Consumes the bound listener, the routes and [`HttpLimits`]; produces served connections until
//! shutdown. Every connection has a header read timeout (a slowloris client is cut), a request
//! size limit, one request (no idle keep-alive connections to pile up) and a lifetime. At most
//! `max_connections` are served at once; beyond that a small reserve still answers the kubelet's
//! `/healthz` and `/readyz` (everything else gets 503), and beyond the reserve connections are
//! closed at once and counted — so a flood of idle sockets never makes a healthy monitor look
//! dead.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use prometheus::{IntCounter, IntGauge};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Bounds on HTTP clients.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HttpLimits {
    /// Time to send the request head.
    pub header_timeout: Duration,
    /// Longest a connection lives (request and response).
    pub lifetime: Duration,
    /// Connections served at once.
    pub max_connections: usize,
    /// Connections beyond `max_connections` that may still ask `/healthz` and `/readyz`.
    pub health_reserve: usize,
    /// Bytes of request head read (hyper's minimum is 8 KiB).
    pub max_request_bytes: usize,
}

impl Default for HttpLimits {
    fn default() -> Self {
        HttpLimits {
            header_timeout: Duration::from_secs(5),
            lifetime: Duration::from_secs(30),
            max_connections: 256,
            health_reserve: 16,
            max_request_bytes: 16 * 1024,
        }
    }
}

/// What one listener reports.
pub struct Counters {
    /// Connections closed at once (cap and reserve full); shared by the listeners.
    pub rejected: IntCounter,
    /// Connections served from the general pool.
    pub general: IntGauge,
    /// Connections served from the health reserve.
    pub reserve: IntGauge,
}

/// A served connection's place in its pool: counted while held, given back on drop.
struct Slot {
    _permit: OwnedSemaphorePermit,
    open: IntGauge,
}

impl Slot {
    fn take(pool: &Arc<Semaphore>, open: &IntGauge) -> Option<Slot> {
        let permit = pool.clone().try_acquire_owned().ok()?;
        open.inc();
        Some(Slot {
            _permit: permit,
            open: open.clone(),
        })
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.open.dec();
    }
}

/// Serves `app` on `listener` until `shutdown`; `health` answers connections over the cap.
pub async fn serve(
    listener: std::net::TcpListener,
    app: Router,
    health: Router,
    limits: HttpLimits,
    counters: Counters,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    listener.set_nonblocking(true)?;
    let listener = tokio::net::TcpListener::from_std(listener)?;
    let general = Arc::new(Semaphore::new(limits.max_connections));
    let reserve = Arc::new(Semaphore::new(limits.health_reserve));
    tokio::pin!(shutdown);
    loop {
        let stream = tokio::select! {
            () = &mut shutdown => return Ok(()),
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                // Out of descriptors or a connection reset before accept: wait, keep serving.
                Err(_) => {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    continue;
                }
            },
        };
        let (slot, routes) = match Slot::take(&general, &counters.general) {
            Some(s) => (s, app.clone()),
            None => match Slot::take(&reserve, &counters.reserve) {
                Some(s) => (s, health.clone()),
                None => {
                    counters.rejected.inc();
                    continue;
                }
            },
        };
        tokio::spawn(async move {
            let _ = stream.set_nodelay(true);
            let conn = http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(limits.header_timeout)
                .keep_alive(false)
                .max_buf_size(limits.max_request_bytes.max(8192))
                .serve_connection(TokioIo::new(stream), TowerToHyperService::new(routes));
            let _ = tokio::time::timeout(limits.lifetime, conn).await;
            drop(slot);
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_slot_is_counted_while_held_and_given_back_on_drop() {
        let pool = Arc::new(Semaphore::new(2));
        let open = IntGauge::new("open", "test").unwrap();
        let a = Slot::take(&pool, &open).expect("a free slot");
        let b = Slot::take(&pool, &open).expect("a free slot");
        assert_eq!(open.get(), 2);
        // A full pool gives no slot and counts nothing.
        assert!(Slot::take(&pool, &open).is_none());
        assert_eq!(open.get(), 2);
        drop(a);
        assert_eq!((open.get(), pool.available_permits()), (1, 1));
        let c = Slot::take(&pool, &open).expect("the slot given back");
        assert_eq!((open.get(), pool.available_permits()), (2, 0));
        drop((b, c));
        assert_eq!((open.get(), pool.available_permits()), (0, 2));
    }
}
