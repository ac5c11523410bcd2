//! The HTTP side: `/health`, `/stats`, `/channels`, the WebSocket route on
//! `/`, and JSON bodies for every error.

use crate::{upgrade, Shared};
use sente_lite_protocol::http::{Channels, HandlerStats, Health, HttpError, Stats};
use serde::Serialize;
use std::convert::Infallible;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use warp::http::StatusCode;
use warp::reply::Response;
use warp::{Filter, Rejection, Reply};

/// Every route, each answering JSON.
pub(crate) fn routes(
    shared: Arc<Shared>,
) -> impl Filter<Extract = (Response,), Error = Infallible> + Clone + Send + Sync + 'static {
    let with = warp::any().map(move || Arc::clone(&shared));
    let health = warp::path!("health")
        .and(warp::get())
        .and(with.clone())
        .map(|s: Arc<Shared>| {
            let body = health(&s);
            let status = if body.status == "healthy" {
                StatusCode::OK
            } else {
                StatusCode::SERVICE_UNAVAILABLE
            };
            json(status, &body)
        });
    let stats = warp::path!("stats")
        .and(warp::get())
        .and(with.clone())
        .map(|s: Arc<Shared>| json(StatusCode::OK, &stats(&s)));
    let channels = warp::path!("channels")
        .and(warp::get())
        .and(with.clone())
        .map(|s: Arc<Shared>| {
            let body = Channels {
                channels: s.engine.list_channels(),
            };
            json(StatusCode::OK, &body)
        });
    let ws = warp::path::end()
        .and(warp::get())
        .and(warp::header::headers_cloned())
        .and(warp::ext::optional::<warp::hyper::upgrade::OnUpgrade>())
        .and(with)
        .map(upgrade::handle);
    health
        .or(stats)
        .unify()
        .or(channels)
        .unify()
        .or(ws)
        .unify()
        .recover(|r: Rejection| async move { Ok::<_, Infallible>(rejection(&r)) })
        .unify()
}

/// A JSON response.
pub(crate) fn json<T: Serialize>(status: StatusCode, body: &T) -> Response {
    warp::reply::with_status(warp::reply::json(body), status).into_response()
}

/// A JSON error body: `error` is the status in kebab-case, `reason` the
/// stable machine-readable cause.
pub(crate) fn error(status: StatusCode, reason: &str, message: impl Into<String>) -> Response {
    let name = status
        .canonical_reason()
        .unwrap_or("error")
        .to_ascii_lowercase()
        .replace(' ', "-");
    json(
        status,
        &HttpError {
            error: name,
            reason: reason.to_owned(),
            message: message.into(),
        },
    )
}

/// Anything but the served GETs is a JSON 404 (the issue's "JSON 404 for
/// anything else", docs/PROTOCOL.md): a wrong method on a known path too.
fn rejection(r: &Rejection) -> Response {
    if r.is_not_found() || r.find::<warp::reject::MethodNotAllowed>().is_some() {
        error(
            StatusCode::NOT_FOUND,
            "not-found",
            "no such endpoint; the server answers GET /health, GET /stats, GET /channels and a WebSocket upgrade on GET /",
        )
    } else {
        error(StatusCode::BAD_REQUEST, "bad-request", format!("{r:?}"))
    }
}

pub(crate) fn health(s: &Shared) -> Health {
    let system = s.engine.system_health();
    let healthy = system.healthy && !s.shutting_down.load(Ordering::Relaxed);
    Health {
        status: if healthy { "healthy" } else { "unhealthy" }.to_owned(),
        connections: s.engine.connection_count(),
        channels: system.total_channels,
        system_health: system,
        uptime_ms: u64::try_from(s.started.elapsed().as_millis()).unwrap_or(u64::MAX),
    }
}

pub(crate) fn stats(s: &Shared) -> Stats {
    let counters = s.transport_stats();
    Stats {
        active_connections: s.engine.connection_count(),
        total_messages: counters.frames_received,
        server_config: s.server_config.clone(),
        channel_stats: s.engine.channel_stats(),
        telemetry_stats: s
            .telemetry
            .handler_stats()
            .into_iter()
            .map(|(id, h)| {
                let stats = HandlerStats {
                    processed: h.processed,
                    queued: h.queued,
                    dropped: h.dropped,
                    errors: h.errors,
                };
                (id, stats)
            })
            .collect(),
        transport: Some(counters),
    }
}
