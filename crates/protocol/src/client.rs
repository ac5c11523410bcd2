//! Client → server messages and their decoder.

use crate::Reason;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::fmt;

/// Every message a client may send. The JSON tag is the `type` field; field
/// names are kebab-case. Unknown extra fields (a `timestamp`, say) are
/// ignored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "kebab-case")]
pub enum ClientMessage {
    /// `{"type":"subscribe","channel-id":"chat"}`
    #[serde(rename_all = "kebab-case")]
    Subscribe { channel_id: String },
    /// `{"type":"unsubscribe","channel-id":"chat"}`
    #[serde(rename_all = "kebab-case")]
    Unsubscribe { channel_id: String },
    /// `{"type":"publish","channel-id":"chat","data":{...},"exclude-sender":false}`
    #[serde(rename_all = "kebab-case")]
    Publish {
        channel_id: String,
        data: Value,
        #[serde(default)]
        exclude_sender: bool,
    },
    /// `{"type":"rpc-request","channel-id":"api","data":{...},"timeout-ms":5000}`
    #[serde(rename_all = "kebab-case")]
    RpcRequest {
        channel_id: String,
        data: Value,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        timeout_ms: Option<u64>,
    },
    /// `{"type":"rpc-response","request-id":"req-1-1","data":{...},"error":false}`
    #[serde(rename_all = "kebab-case")]
    RpcResponse {
        request_id: String,
        data: Value,
        #[serde(default)]
        error: bool,
    },
    /// `{"type":"ping","timestamp":1729825712600}`; the timestamp is echoed
    /// back as `original-timestamp` whatever JSON value it is.
    #[serde(rename_all = "kebab-case")]
    Ping {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        timestamp: Option<Value>,
    },
    /// `{"type":"list-channels"}`
    ListChannels,
    /// `{"type":"get-subscriptions"}`
    GetSubscriptions,
}

impl ClientMessage {
    /// The wire `type` of this message.
    pub fn type_name(&self) -> &'static str {
        match self {
            ClientMessage::Subscribe { .. } => "subscribe",
            ClientMessage::Unsubscribe { .. } => "unsubscribe",
            ClientMessage::Publish { .. } => "publish",
            ClientMessage::RpcRequest { .. } => "rpc-request",
            ClientMessage::RpcResponse { .. } => "rpc-response",
            ClientMessage::Ping { .. } => "ping",
            ClientMessage::ListChannels => "list-channels",
            ClientMessage::GetSubscriptions => "get-subscriptions",
        }
    }
}

/// Why a text frame could not be decoded. `reason` is one of
/// [`Reason::InvalidJson`], [`Reason::InvalidMessage`] or
/// [`Reason::UnknownMessageType`]; `message` is a sentence for humans that
/// names the offending field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{reason}: {message}")]
pub struct DecodeError {
    pub reason: Reason,
    pub message: String,
}

impl DecodeError {
    fn invalid(message: impl Into<String>) -> Self {
        DecodeError {
            reason: Reason::InvalidMessage,
            message: message.into(),
        }
    }
}

/// Decodes one client text frame. Never panics, whatever the input.
///
/// Errors: `invalid-json` when the text is not JSON; `invalid-message` when it
/// is not an object, or `type` or another field is missing or of the wrong
/// type (the message names the field); `unknown-message-type` when `type`
/// names no known message.
pub fn decode_client(text: &str) -> Result<ClientMessage, DecodeError> {
    let value: Value = serde_json::from_str(text).map_err(|e| DecodeError {
        reason: Reason::InvalidJson,
        message: format!("frame is not valid JSON: {e}"),
    })?;
    let Value::Object(mut obj) = value else {
        return Err(DecodeError::invalid(format!(
            "frame must be a JSON object, got {}",
            kind(&value)
        )));
    };
    let ty = match obj.get("type") {
        Some(Value::String(s)) => s.as_str(),
        Some(other) => {
            return Err(DecodeError::invalid(format!(
                "field `type` must be a string, got {}",
                kind(other)
            )))
        }
        None => return Err(DecodeError::invalid("missing field `type`")),
    };
    let msg = match ty {
        "subscribe" => ClientMessage::Subscribe {
            channel_id: string(&mut obj, "channel-id")?,
        },
        "unsubscribe" => ClientMessage::Unsubscribe {
            channel_id: string(&mut obj, "channel-id")?,
        },
        "publish" => ClientMessage::Publish {
            channel_id: string(&mut obj, "channel-id")?,
            data: data(&mut obj)?,
            exclude_sender: opt_bool(&obj, "exclude-sender")?.unwrap_or(false),
        },
        "rpc-request" => ClientMessage::RpcRequest {
            channel_id: string(&mut obj, "channel-id")?,
            data: data(&mut obj)?,
            timeout_ms: opt_u64(&obj, "timeout-ms")?,
        },
        "rpc-response" => ClientMessage::RpcResponse {
            request_id: string(&mut obj, "request-id")?,
            data: data(&mut obj)?,
            error: opt_bool(&obj, "error")?.unwrap_or(false),
        },
        "ping" => ClientMessage::Ping {
            timestamp: obj.remove("timestamp").filter(|v| !v.is_null()),
        },
        "list-channels" => ClientMessage::ListChannels,
        "get-subscriptions" => ClientMessage::GetSubscriptions,
        other => {
            return Err(DecodeError {
                reason: Reason::UnknownMessageType,
                message: format!("unknown message type `{}`", truncate(other, 64)),
            })
        }
    };
    Ok(msg)
}

fn string(obj: &mut Map<String, Value>, field: &str) -> Result<String, DecodeError> {
    match obj.remove(field) {
        Some(Value::String(s)) => Ok(s),
        Some(other) => Err(DecodeError::invalid(format!(
            "field `{field}` must be a string, got {}",
            kind(&other)
        ))),
        None => Err(DecodeError::invalid(format!("missing field `{field}`"))),
    }
}

/// `data` is any JSON value but must be present (`null` is allowed).
fn data(obj: &mut Map<String, Value>) -> Result<Value, DecodeError> {
    obj.remove("data")
        .ok_or_else(|| DecodeError::invalid("missing field `data`"))
}

fn opt_bool(obj: &Map<String, Value>, field: &str) -> Result<Option<bool>, DecodeError> {
    match obj.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(*b)),
        Some(other) => Err(DecodeError::invalid(format!(
            "field `{field}` must be a boolean, got {}",
            kind(other)
        ))),
    }
}

fn opt_u64(obj: &Map<String, Value>, field: &str) -> Result<Option<u64>, DecodeError> {
    match obj.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => match n.as_u64() {
            Some(v) => Ok(Some(v)),
            None => Err(DecodeError::invalid(format!(
                "field `{field}` must be a non-negative integer, got {n}"
            ))),
        },
        Some(other) => Err(DecodeError::invalid(format!(
            "field `{field}` must be a non-negative integer, got {}",
            kind(other)
        ))),
    }
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

fn truncate(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

impl fmt::Display for ClientMessage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.type_name())
    }
}
