//! The routes hook: HTTP routes an embedder (or the server crate) serves
//! next to `/health`, `/stats` and `/channels`, without touching warp.

use bytes::Bytes;
use std::future::Future;
use std::pin::Pin;

/// A route's answer, computed later.
pub type RouteFuture = Pin<Box<dyn Future<Output = http::Response<Bytes>> + Send>>;

/// Extra HTTP routes, in the ecosystem's own `http` types. The transport
/// tries its built-in routes first (the WebSocket upgrade on `/`,
/// `/health`, `/stats`, `/channels`), then each added [`Routes`] in the
/// order given; the first that returns `Some` answers. A request no route
/// takes gets the JSON 404.
///
/// Request bodies are read up to [`MAX_ROUTE_BODY`] bytes (a larger one is
/// answered 413 before any route sees it).
pub trait Routes: Send + Sync + 'static {
    /// Answers `request`, or `None` to let the next routes try.
    fn route(&self, request: &http::Request<Bytes>) -> Option<RouteFuture>;
}

/// Largest request body an added route is given.
pub const MAX_ROUTE_BODY: usize = 1 << 20;

impl std::fmt::Debug for dyn Routes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Routes")
    }
}
