//! The HTTP endpoints: `/health`, `/stats`, `/channels`, the WebSocket route on
//! `/`, the added routes, and JSON bodies for every error.

use crate::accept::Peer;
use crate::reply::{error, json};
use crate::routes::MAX_ROUTE_BODY;
use crate::shared::Shared;
use crate::stats::Counters;
use crate::upgrade;
use bytes::{Buf, Bytes, BytesMut};
use futures::{Stream, StreamExt};
use sente_lite_channels::{ChannelStats, EngineHealth};
use sente_lite_protocol::http::{
    self as body, BrokerStatus, Channels, HandlerStats, Health, Stats, SystemHealth,
};
use sente_lite_protocol::Reason;
use sente_lite_session::{DEFAULT_LIST_LIMIT, MAX_LIST_LIMIT};
use std::convert::Infallible;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use warp::http::{HeaderMap, StatusCode};
use warp::reply::Response;
use warp::{Filter, Rejection, Reply};

/// Every route, each answering JSON.
pub(crate) fn routes(
    shared: Arc<Shared>,
) -> impl Filter<Extract = (Response,), Error = Infallible> + Clone + Send + Sync + 'static {
    let with = warp::any().map(move || Arc::clone(&shared));
    // HEAD as well as GET: health checkers use it.
    let health = warp::path!("health")
        .and(warp::get().or(warp::head()).unify())
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
    // Admin routes: each checks `http.admin-token` first.
    let stats = warp::path!("stats")
        .and(warp::get())
        .and(warp::header::headers_cloned())
        .and(with.clone())
        .then(|headers: HeaderMap, s: Arc<Shared>| async move {
            if let Some(refused) = admin_refusal(&s, &headers) {
                return refused;
            }
            match stats(&s).await {
                Ok(body) => json(StatusCode::OK, &body),
                Err(e) => unavailable(&e),
            }
        });
    let channels = warp::path!("channels")
        .and(warp::get())
        .and(warp::header::headers_cloned())
        .and(raw_query())
        .and(with.clone())
        .then(
            |headers: HeaderMap, query: String, s: Arc<Shared>| async move {
                if let Some(refused) = admin_refusal(&s, &headers) {
                    return refused;
                }
                let (limit, cursor) = match page_query(&query) {
                    Ok(page) => page,
                    Err(message) => {
                        return error(
                            StatusCode::BAD_REQUEST,
                            sente_lite_protocol::Reason::InvalidMessage.as_str(),
                            message,
                        )
                    }
                };
                match s
                    .engine
                    .list_channels_page(cursor.as_deref(), limit, &|_| true)
                    .await
                {
                    Ok((channels, next_cursor)) => json(
                        StatusCode::OK,
                        &Channels {
                            channels,
                            next_cursor,
                        },
                    ),
                    Err(e) => unavailable(&e),
                }
            },
        );
    let ws = warp::path::end()
        .and(warp::get())
        .and(warp::path::full())
        .and(raw_query())
        .and(warp::header::headers_cloned())
        .and(warp::ext::optional::<Peer>())
        .and(warp::ext::optional::<warp::hyper::upgrade::OnUpgrade>())
        .and(with.clone())
        .map(upgrade::handle);
    let added = warp::method()
        .and(warp::path::full())
        .and(raw_query())
        .and(warp::header::headers_cloned())
        .and(warp::body::stream())
        .and(with)
        .and_then(added_route);
    health
        .or(stats)
        .unify()
        .or(channels)
        .unify()
        .or(ws)
        .unify()
        .or(added)
        .unify()
        .recover(|r: Rejection| async move { Ok::<_, Infallible>(rejection(&r)) })
        .unify()
}

/// The answer to a request that may not use an admin route (`/stats`,
/// `/channels`, and every admin route added later: call this first), or
/// `None` when it may: when no `http.admin-token` is set, or when it
/// carries `Authorization: Bearer <token>` (compared in constant time).
/// The refusal is a 401 with reason `unauthorized` and
/// `WWW-Authenticate: Bearer realm="sente-lite admin"`, counted in
/// `transport.rejected-unauthorized`.
pub(crate) fn admin_refusal(s: &Shared, headers: &HeaderMap) -> Option<Response> {
    let token = s.config.admin_token.as_ref()?;
    let presented = headers
        .get(http::header::AUTHORIZATION)
        .and_then(|v| bearer(v.as_bytes()));
    if presented.is_some_and(|p| token.matches(p)) {
        return None;
    }
    Counters::bump(&s.counters.rejected_unauthorized);
    let mut refused = error(
        StatusCode::UNAUTHORIZED,
        Reason::Unauthorized.as_str(),
        "this endpoint needs the header Authorization: Bearer <http.admin-token>",
    );
    refused.headers_mut().insert(
        http::header::WWW_AUTHENTICATE,
        http::HeaderValue::from_static("Bearer realm=\"sente-lite admin\""),
    );
    Some(refused)
}

/// The token of an `Authorization: Bearer <token>` value (the scheme in any
/// case, RFC 9110 §11.1).
fn bearer(value: &[u8]) -> Option<&[u8]> {
    let scheme = value.get(..7)?;
    if !scheme.eq_ignore_ascii_case(b"bearer ") {
        return None;
    }
    let token = value[7..].trim_ascii();
    (!token.is_empty()).then_some(token)
}

/// The raw query string, empty when there is none.
/// `limit` (default [`DEFAULT_LIST_LIMIT`], at most [`MAX_LIST_LIMIT`])
/// and `cursor` (percent-encoded) of `GET /channels?limit=N&cursor=ID`.
fn page_query(query: &str) -> Result<(usize, Option<String>), String> {
    let mut limit = DEFAULT_LIST_LIMIT;
    let mut cursor = None;
    for (k, v) in form_urlencoded::parse(query.as_bytes()) {
        match &*k {
            "limit" => {
                limit = v
                    .parse::<u64>()
                    .map_err(|_| format!("`limit` must be a non-negative integer, got {v:.64}"))?
                    .min(MAX_LIST_LIMIT as u64) as usize;
            }
            "cursor" => cursor = Some(v.into_owned()),
            _ => {}
        }
    }
    Ok((limit, cursor))
}

fn raw_query() -> impl Filter<Extract = (String,), Error = Infallible> + Clone {
    warp::query::raw().or(warp::any().map(String::new)).unify()
}

/// Hands the request to the embedder's routes, in order.
async fn added_route(
    method: warp::http::Method,
    path: warp::path::FullPath,
    query: String,
    headers: warp::http::HeaderMap,
    stream: impl Stream<Item = Result<impl Buf, warp::Error>> + Send + Unpin,
    s: Arc<Shared>,
) -> Result<Response, Rejection> {
    if s.routes.is_empty() {
        return Err(warp::reject::not_found());
    }
    let body = match tokio::time::timeout(s.config.message_timeout, read_body(stream)).await {
        Ok(Body::Complete(body)) => body,
        Ok(Body::TooLarge) => {
            return Ok(error(
                StatusCode::PAYLOAD_TOO_LARGE,
                "request-too-large",
                format!("request bodies are limited to {MAX_ROUTE_BODY} bytes"),
            ))
        }
        Ok(Body::Broken) => {
            return Ok(error(
                StatusCode::BAD_REQUEST,
                "bad-request",
                "the request body ended before it was complete",
            ))
        }
        Err(_) => {
            return Ok(error(
                StatusCode::REQUEST_TIMEOUT,
                "request-timeout",
                "the request body did not arrive within websocket.message-timeout-ms",
            ))
        }
    };
    let uri = if query.is_empty() {
        path.as_str().to_owned()
    } else {
        format!("{}?{query}", path.as_str())
    };
    let mut request = http::Request::new(body);
    *request.method_mut() = method;
    *request.headers_mut() = headers;
    *request.uri_mut() = uri.parse().map_err(|_| warp::reject::not_found())?;
    for route in &s.routes {
        if let Some(answer) = route.route(&request) {
            return Ok(answer
                .await
                .map(warp::hyper::body::Bytes::from)
                .into_response());
        }
    }
    Err(warp::reject::not_found())
}

/// A request body as read.
enum Body {
    Complete(Bytes),
    /// Larger than [`MAX_ROUTE_BODY`].
    TooLarge,
    /// The stream failed (the client went away, bad chunked encoding).
    Broken,
}

async fn read_body(mut stream: impl Stream<Item = Result<impl Buf, warp::Error>> + Unpin) -> Body {
    let mut out = BytesMut::new();
    while let Some(chunk) = stream.next().await {
        let Ok(mut chunk) = chunk else {
            return Body::Broken;
        };
        if out.len() + chunk.remaining() > MAX_ROUTE_BODY {
            return Body::TooLarge;
        }
        while chunk.has_remaining() {
            let part = chunk.chunk();
            out.extend_from_slice(part);
            let n = part.len();
            chunk.advance(n);
        }
    }
    Body::Complete(out.freeze())
}

/// Anything no route takes is a JSON 404 (docs/PROTOCOL.md): a wrong
/// method on a known path too.
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
    let engine = s.engine.health();
    let healthy = engine.healthy && !s.shutting_down.load(Ordering::Relaxed);
    Health {
        status: if healthy { "healthy" } else { "unhealthy" }.to_owned(),
        connections: s.engine.connection_count(),
        channels: engine.total_channels,
        system_health: system_health(&engine),
        uptime_ms: u64::try_from(s.started.elapsed().as_millis()).unwrap_or(u64::MAX),
        broker: Some(broker_status(s, engine.broker)),
    }
}

fn broker_status(s: &Shared, b: sente_lite_channels::BrokerHealth) -> BrokerStatus {
    BrokerStatus {
        kind: b.kind.to_owned(),
        healthy: b.healthy,
        state: b.state.to_owned(),
        node_id: s.engine.broker().node().map(|n| n.to_string()),
        nodes: b.nodes,
        // A broker's error may name its URL, password and all: /health is
        // open to anyone.
        error: b
            .error
            .map(|e| sente_lite_protocol::redact_credentials(&e).into_owned()),
        counters: b
            .counters
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v))
            .collect(),
    }
}

fn system_health(h: &EngineHealth) -> SystemHealth {
    SystemHealth {
        healthy: h.healthy,
        total_channels: h.total_channels,
        total_subscriptions: h.total_subscriptions,
        pending_rpc_requests: h.pending_rpc_requests,
        old_rpc_requests: h.old_rpc_requests,
    }
}

fn channel_stats(c: ChannelStats) -> body::ChannelStats {
    body::ChannelStats {
        channels: c
            .channels
            .into_iter()
            .map(|(id, e)| {
                let entry = body::ChannelStatsEntry {
                    subscriber_count: e.subscriber_count,
                    message_count: e.message_count,
                    created_at: e.created_at,
                    retention_count: e.retention_count,
                };
                (id, entry)
            })
            .collect(),
        total_channels: c.total_channels,
        total_subscriptions: c.total_subscriptions,
        pending_rpc_requests: c.pending_rpc_requests,
        active_connections: Some(c.active_connections),
        rejected: c.rejected,
        retained_bytes: c.limits.retained_bytes,
        retained_evicted: c.limits.retained_evicted,
        retained_omitted: c.limits.retained_omitted,
        idle_channels_removed: c.limits.idle_channels_removed,
        recovered: c.limits.recovered,
        recoveries_missed: c.limits.recoveries_missed,
        rpc_redispatched: c.limits.rpc_redispatched,
    }
}

/// A 503 for an endpoint whose broker cannot be read now.
fn unavailable(e: &sente_lite_channels::EngineError) -> Response {
    error(
        StatusCode::SERVICE_UNAVAILABLE,
        e.reason().as_str(),
        e.to_string(),
    )
}

pub(crate) async fn stats(s: &Shared) -> Result<Stats, sente_lite_channels::EngineError> {
    let counters = s.transport_stats();
    let channel_stats = channel_stats(s.engine.channel_stats().await?);
    Ok(Stats {
        active_connections: s.engine.connection_count(),
        total_messages: counters.frames_received,
        server_config: s.server_config.clone(),
        channel_stats,
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
                    throttled: h.throttled,
                    queued_bytes: h.queued_bytes,
                };
                (id, stats)
            })
            .collect(),
        transport: Some(counters),
        broker: Some(broker_status(s, s.engine.health().broker)),
    })
}
