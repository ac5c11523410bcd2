//! JSON responses, and the JSON body of every HTTP error.

use bytes::Bytes;
use sente_lite_protocol::http::HttpError;
use serde::Serialize;
use warp::http::StatusCode;
use warp::reply::Response;
use warp::Reply;

/// A JSON response.
pub(crate) fn json<T: Serialize>(status: StatusCode, body: &T) -> Response {
    warp::reply::with_status(warp::reply::json(body), status).into_response()
}

/// A JSON error body: `error` is the status in kebab-case, `reason` the
/// stable machine-readable cause.
pub(crate) fn error(status: StatusCode, reason: &str, message: impl Into<String>) -> Response {
    json(status, &error_body(status, reason, message))
}

pub(crate) fn error_body(
    status: StatusCode,
    reason: &str,
    message: impl Into<String>,
) -> HttpError {
    let name = status
        .canonical_reason()
        .unwrap_or("error")
        .to_ascii_lowercase()
        .replace(' ', "-");
    HttpError {
        error: name,
        reason: reason.to_owned(),
        message: message.into(),
    }
}

/// A whole HTTP/1.1 response with a JSON error body, for the accept loop to
/// write itself when a request cannot even be parsed (so hyper never sees
/// it). The connection closes after it.
pub(crate) fn raw_error(status: StatusCode, reason: &str, message: &str) -> Bytes {
    let body = serde_json::to_string(&error_body(status, reason, message)).unwrap_or_default();
    Bytes::from(format!(
        "HTTP/1.1 {} {}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        status.as_str(),
        status.canonical_reason().unwrap_or(""),
        body.len(),
    ))
}
