//! The admin listener for operators: metrics, health and status over HTTP (axum, the version
//! rumqttd already brings, on hyper's HTTP/1 connection). Loopback by default (`admin.listen`);
//! beyond loopback it needs a token ([`config`]). Before any handler, [`guard`] refuses a
//! foreign `Host` (DNS rebinding) and a missing token. The accept loop holds at most
//! `admin.max_connections` connections (one more is answered 503 and closed), and a request's
//! headers must arrive within `admin.header_timeout_ms` (an idle keep-alive connection is closed
//! after it too): slow clients cannot hold the descriptors the devices need.
//!
//! - `GET /metrics`: Prometheus text format ([`crate::observe::metrics`]).
//! - `GET /livez`: 200 while the process serves requests.
//! - `GET /readyz`: 200 when the spool answers, the device listeners are bound, and the spool is
//!   not refusing events for lack of room; 503 otherwise. **Kafka is not part of it**: buffering
//!   through an outage is the job. `?verbose` lists every check, the forwarder's state included
//!   ("kafka: no delivery for 12 min, buffering").
//! - `GET /api/status`: the same state as JSON, plus what the status page draws: per-device
//!   activity, rates over the last 5 minutes, the last refusals ([`crate::observe::activity`]),
//!   and per device the commands waiting (`commands`: queued, and of them delivered but not
//!   answered).
//! - `GET /`: the status page, from files embedded in the binary (`assets/status/`). It makes no
//!   request beyond this gateway (Content-Security-Policy `default-src 'self'`): no CDN, no
//!   map tiles; the map is a canvas with a projection fitted to the vehicles.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::{Query, State};
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::observe::metrics::Metrics;
use crate::observe::stats::{Stats, TransportLabel};
use tributary_common::clock::now_ms;
use tributary_spool::{Gauges, Spool};

pub mod config;
mod guard;
pub use config::{AdminConfig, RawAdmin};

/// How long a health check waits for the spool's thread.
const SPOOL_CHECK: Duration = Duration::from_secs(2);

/// What the handlers read.
pub struct Admin {
    pub stats: Stats,
    pub spool: Spool,
    pub metrics: Metrics,
    pub started: Instant,
    /// Set once every device listener is bound.
    pub listening: AtomicBool,
    /// `kafka` or `file`.
    pub sink: &'static str,
}

/// How long a connection may take to finish its request once the listener stops.
const CLOSE_GRACE: Duration = Duration::from_secs(2);

/// Serves `listener` until `stop`, then closes every connection within [`CLOSE_GRACE`].
pub async fn serve(
    listener: TcpListener,
    admin: Arc<Admin>,
    config: AdminConfig,
    stop: CancellationToken,
) {
    let guard = Arc::new(guard::Guard {
        token: config.token.clone(),
        hosts: config.hosts.clone(),
        stats: admin.stats.clone(),
    });
    let app = Router::new()
        .route("/metrics", get(metrics))
        .route("/livez", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/api/status", get(status))
        .route("/", get(|| page(PAGE_HTML, "text/html; charset=utf-8")))
        .route(
            "/status.js",
            get(|| page(PAGE_JS, "text/javascript; charset=utf-8")),
        )
        .route(
            "/status.css",
            get(|| page(PAGE_CSS, "text/css; charset=utf-8")),
        )
        .layer(axum::middleware::from_fn_with_state(guard, guard::check))
        .with_state(admin.clone());
    let slots = Arc::new(tokio::sync::Semaphore::new(config.max_connections));
    let mut connections = tokio::task::JoinSet::new();
    loop {
        let (stream, peer) = tokio::select! {
            _ = stop.cancelled() => break,
            Some(_) = connections.join_next(), if !connections.is_empty() => continue,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(error) => {
                    // Out of descriptors, mostly: wait rather than spin.
                    tracing::warn!(message = "The admin listener could not accept a connection.", %error);
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            admin.stats.record_refusal(
                crate::transport::Transport::Admin,
                "busy",
                None,
                Some(peer),
            );
            connections.spawn(refuse_busy(stream, config.max_connections));
            continue;
        };
        let app = app.clone();
        let stop = stop.clone();
        let header_timeout = config.header_timeout;
        connections.spawn(async move {
            let _slot = slot;
            let service = hyper::service::service_fn(move |mut request| {
                request.extensions_mut().insert(guard::Peer(peer));
                let mut app = app.clone();
                async move { tower_service::Service::call(&mut app, request).await }
            });
            let connection = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(header_timeout)
                .serve_connection(TokioIo::new(stream), service);
            tokio::pin!(connection);
            tokio::select! {
                _ = connection.as_mut() => {}
                _ = stop.cancelled() => {
                    connection.as_mut().graceful_shutdown();
                    let _ = tokio::time::timeout(CLOSE_GRACE, connection).await;
                }
            }
        });
    }
    while tokio::time::timeout(CLOSE_GRACE, connections.join_next())
        .await
        .is_ok_and(|joined| joined.is_some())
    {}
    connections.abort_all();
}

/// Answers a connection beyond `admin.max_connections` with 503 and closes it, without waiting
/// on the peer for more than a moment.
async fn refuse_busy(mut stream: tokio::net::TcpStream, cap: usize) {
    let body =
        format!("refused: the admin listener has {cap} connections open (admin.max_connections)\n");
    let reply = format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: text/plain\r\ncontent-length: {}\r\nconnection: close\r\nretry-after: 1\r\n\r\n{body}",
        body.len()
    );
    let _ = tokio::time::timeout(Duration::from_millis(200), async {
        let _ = stream.write_all(reply.as_bytes()).await;
        let _ = stream.shutdown().await;
    })
    .await;
}

const PAGE_HTML: &str = include_str!("../../assets/status/index.html");
const PAGE_JS: &str = include_str!("../../assets/status/status.js");
const PAGE_CSS: &str = include_str!("../../assets/status/status.css");
/// Devices listed on the page (the most recently seen).
const PAGE_DEVICES: usize = 500;
/// 2024-01-01: a clock before this was never set (a Pi without a real-time clock, before NTP).
const PLAUSIBLE_MS: i64 = 1_704_067_200_000;

async fn page(body: &'static str, content_type: &'static str) -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (
                header::CONTENT_SECURITY_POLICY,
                "default-src 'self'; img-src 'self' data:",
            ),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
}

async fn gauges(spool: &Spool) -> Option<Gauges> {
    tokio::time::timeout(SPOOL_CHECK, spool.gauges())
        .await
        .ok()
        .and_then(Result::ok)
}

async fn metrics(State(admin): State<Arc<Admin>>) -> impl IntoResponse {
    let spool = gauges(&admin.spool).await;
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        admin.metrics.render(spool, now_ms()),
    )
}

/// One readiness check: its name, whether it passes, and what it saw.
struct Check {
    name: &'static str,
    ok: bool,
    detail: String,
}

/// The readiness checks, from the spool's gauges as the caller read them (`None`: no answer).
fn checks(admin: &Admin, spool: Option<Gauges>) -> Vec<Check> {
    let listening = admin.listening.load(Ordering::Relaxed);
    // Refusing for lack of room: the last append was refused, and the spool is still near its
    // bound (90 %) or the disk still short. Space freed by forwarding or expiry ends it.
    let full = admin.stats.spool_full()
        && spool.is_none_or(|g| {
            g.bytes.saturating_mul(10) >= g.max_bytes.saturating_mul(9)
                || g.disk_free_bytes <= g.min_free_bytes
        });
    let sync_failed = admin.spool.sync_failed();
    vec![
        Check {
            name: "spool",
            ok: spool.is_some(),
            detail: match spool {
                Some(g) => format!("{} rows, {} of {} bytes", g.rows, g.bytes, g.max_bytes),
                None => format!("no answer within {SPOOL_CHECK:?}"),
            },
        },
        Check {
            name: "listeners",
            ok: listening,
            detail: if listening { "bound" } else { "starting" }.into(),
        },
        Check {
            name: "spool_space",
            ok: !full,
            detail: if full {
                "full: refusing new events until rows are forwarded or expire".into()
            } else {
                "accepting".into()
            },
        },
        Check {
            name: "spool_sync",
            ok: sync_failed.is_none(),
            detail: match sync_failed {
                Some(error) => format!(
                    "an fdatasync of the WAL failed ({error}): nothing is acknowledged; restart once the disk is sound"
                ),
                None => "syncing".into(),
            },
        },
        Check {
            // Informational: never fails readiness.
            name: admin.sink,
            ok: true,
            detail: forward_detail(admin),
        },
    ]
}

fn forward_detail(admin: &Admin) -> String {
    let f = admin.stats.forward_state();
    let now = now_ms();
    let ago = |t: i64| {
        let s = now.saturating_sub(t).max(0) / 1000;
        if s >= 120 {
            format!("{} min", s / 60)
        } else {
            format!("{s} s")
        }
    };
    match (f.running, f.failing_since_ms, f.last_delivery_ms) {
        (false, _, _)
            if f.last_error
                .as_deref()
                .is_some_and(|e| e.starts_with("fenced")) =>
        {
            format!(
                "forwarder stopped, buffering in the spool: {}",
                f.last_error.unwrap_or_default()
            )
        }
        (false, _, _) => format!(
            "forwarder not running (restarting after: {})",
            f.last_error.unwrap_or_default()
        ),
        (true, Some(since), _) => format!(
            "failing for {}, buffering in the spool (last error: {})",
            ago(since),
            f.last_error.unwrap_or_default()
        ),
        (true, None, Some(t)) => format!("delivering (last confirmed {} ago)", ago(t)),
        (true, None, None) => "nothing delivered yet".into(),
    }
}

async fn readyz(
    State(admin): State<Arc<Admin>>,
    Query(query): Query<HashMap<String, String>>,
) -> impl IntoResponse {
    let checks = checks(&admin, gauges(&admin.spool).await);
    let ready = checks.iter().all(|c| c.ok);
    let code = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let mut body = String::new();
    if query.contains_key("verbose") {
        for c in &checks {
            let mark = if c.ok { '+' } else { '-' };
            body.push_str(&format!("[{mark}]{}: {}\n", c.name, c.detail));
        }
    }
    body.push_str(if ready { "ready\n" } else { "not ready\n" });
    (code, body)
}

async fn status(State(admin): State<Arc<Admin>>) -> impl IntoResponse {
    let spool = gauges(&admin.spool).await;
    let checks = checks(&admin, spool);
    let summary = admin.stats.snapshot();
    let connections: HashMap<&str, i64> = ["tcp", "mqtt"]
        .into_iter()
        .map(|transport| {
            let n = admin
                .stats
                .instruments
                .connections
                .get_or_create(&TransportLabel { transport })
                .get();
            (transport, n)
        })
        .collect();
    let now = now_ms();
    let (devices, rates, recent_refusals) = admin.stats.activity.snapshot(PAGE_DEVICES, now);
    // Commands waiting per device (queued, of which delivered and not yet answered).
    let commands: serde_json::Map<String, serde_json::Value> = admin
        .spool
        .command_counts()
        .await
        .unwrap_or_default()
        .into_iter()
        .map(|(device, queued, delivered)| {
            (
                device,
                serde_json::json!({ "queued": queued, "delivered": delivered }),
            )
        })
        .collect();
    axum::Json(serde_json::json!({
        "version": env!("CARGO_PKG_VERSION"),
        "uptime_s": admin.started.elapsed().as_secs(),
        "now_ms": now,
        "clock": { "plausible": now >= PLAUSIBLE_MS },
        "devices": devices,
        "rates": rates,
        "recent_refusals": recent_refusals,
        "commands": commands,
        "ready": checks.iter().all(|c| c.ok),
        "checks": checks.iter().map(|c| serde_json::json!({
            "name": c.name, "ok": c.ok, "detail": c.detail,
        })).collect::<Vec<_>>(),
        "sink": admin.sink,
        "forward": admin.stats.forward_state(),
        "spool": spool.map(|g| serde_json::json!({
            "rows": g.rows,
            "bytes": g.bytes,
            "max_bytes": g.max_bytes,
            "disk_free_bytes": g.disk_free_bytes,
            "oldest_age_s": g.oldest_received_ms.map(|t| now.saturating_sub(t).max(0) as f64 / 1000.0),
        })),
        "connections": connections,
        "topics": summary.topics,
        "refusals": summary.refusals,
    }))
}
