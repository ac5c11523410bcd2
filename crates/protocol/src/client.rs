//! Client → server messages and their decoder.

use crate::{Data, Reason};
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::value::RawValue;
use serde_json::Value;
use std::fmt;

/// Every message a client may send. The JSON tag is the `type` field; field
/// names are kebab-case. Unknown extra fields (a `timestamp`, say) are
/// ignored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "kebab-case")]
pub enum ClientMessage {
    /// `{"type":"subscribe","channel-id":"chat"}`; with
    /// `"recover":{"offset":41,"epoch":"e1"}` the server also sends the
    /// messages published after that position, when its history still
    /// holds every one of them.
    #[serde(rename_all = "kebab-case")]
    Subscribe {
        channel_id: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        recover: Option<Position>,
    },
    /// `{"type":"unsubscribe","channel-id":"chat"}`
    #[serde(rename_all = "kebab-case")]
    Unsubscribe { channel_id: String },
    /// `{"type":"publish","channel-id":"chat","data":{...},"exclude-sender":false}`
    #[serde(rename_all = "kebab-case")]
    Publish {
        channel_id: String,
        data: Data,
        #[serde(default)]
        exclude_sender: bool,
    },
    /// `{"type":"rpc-request","channel-id":"api","data":{...},"timeout-ms":5000}`
    #[serde(rename_all = "kebab-case")]
    RpcRequest {
        channel_id: String,
        data: Data,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        timeout_ms: Option<u64>,
    },
    /// `{"type":"rpc-response","request-id":"req-1-1","data":{...},"error":false}`
    #[serde(rename_all = "kebab-case")]
    RpcResponse {
        request_id: String,
        data: Data,
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
    /// `{"type":"list-channels","limit":100,"cursor":"chat"}`: one page of
    /// the channels the connection may subscribe to, in id order, starting
    /// after `cursor` (both fields optional).
    #[serde(rename_all = "kebab-case")]
    ListChannels {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        limit: Option<u64>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        cursor: Option<String>,
    },
    /// `{"type":"authenticate","token":"eyJ..."}`: presents a token after
    /// the welcome (for browsers that keep tokens out of URLs), or a fresh
    /// one before the current one expires.
    Authenticate { token: String },
    /// `{"type":"get-subscriptions"}`
    GetSubscriptions,
    /// `{"type":"presence","channel-id":"chat"}`: who is subscribed, across
    /// every node.
    #[serde(rename_all = "kebab-case")]
    Presence { channel_id: String },
    /// `{"type":"presence-stats","channel-id":"chat"}`: how many
    /// connections and users are subscribed.
    #[serde(rename_all = "kebab-case")]
    PresenceStats { channel_id: String },
    /// `{"type":"history","channel-id":"chat","since":{"offset":3,"epoch":"e1"},"limit":100}`:
    /// the channel's history (both `since` and `limit` optional).
    #[serde(rename_all = "kebab-case")]
    History {
        channel_id: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        since: Option<Position>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        limit: Option<u64>,
    },
}

/// A place in a channel's stream, as a client names it (`recover`,
/// `since`): the `offset` of the last message it has, in `epoch`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Position {
    /// The offset of the last message the client has (0: none yet).
    pub offset: u64,
    /// The stream's epoch that offset is of.
    pub epoch: String,
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
            ClientMessage::ListChannels { .. } => "list-channels",
            ClientMessage::Authenticate { .. } => "authenticate",
            ClientMessage::GetSubscriptions => "get-subscriptions",
            ClientMessage::History { .. } => "history",
            ClientMessage::Presence { .. } => "presence",
            ClientMessage::PresenceStats { .. } => "presence-stats",
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

/// The fields any client message may have, each borrowed as raw JSON text
/// from the frame, so `data` is never parsed into a tree. Unknown fields are
/// skipped without being parsed into values.
#[derive(Deserialize)]
struct Fields<'a> {
    #[serde(borrow, rename = "type", default, deserialize_with = "present")]
    ty: Option<&'a RawValue>,
    #[serde(borrow, rename = "channel-id", default, deserialize_with = "present")]
    channel_id: Option<&'a RawValue>,
    #[serde(borrow, rename = "request-id", default, deserialize_with = "present")]
    request_id: Option<&'a RawValue>,
    #[serde(borrow, default, deserialize_with = "present")]
    data: Option<&'a RawValue>,
    #[serde(
        borrow,
        rename = "exclude-sender",
        default,
        deserialize_with = "present"
    )]
    exclude_sender: Option<&'a RawValue>,
    #[serde(borrow, rename = "timeout-ms", default, deserialize_with = "present")]
    timeout_ms: Option<&'a RawValue>,
    #[serde(borrow, default, deserialize_with = "present")]
    error: Option<&'a RawValue>,
    #[serde(borrow, default, deserialize_with = "present")]
    timestamp: Option<&'a RawValue>,
    #[serde(borrow, default, deserialize_with = "present")]
    token: Option<&'a RawValue>,
    #[serde(borrow, default, deserialize_with = "present")]
    limit: Option<&'a RawValue>,
    #[serde(borrow, default, deserialize_with = "present")]
    cursor: Option<&'a RawValue>,
    #[serde(borrow, default, deserialize_with = "present")]
    recover: Option<&'a RawValue>,
    #[serde(borrow, default, deserialize_with = "present")]
    since: Option<&'a RawValue>,
}

/// A field that is present is `Some`, even when its value is `null`
/// (`Option`'s own impl would turn `null` into `None`).
fn present<'de, D: Deserializer<'de>>(d: D) -> Result<Option<&'de RawValue>, D::Error> {
    <&RawValue>::deserialize(d).map(Some)
}

/// Decodes one client text frame. Never panics, whatever the input.
///
/// Errors: `invalid-json` when the text is not JSON; `invalid-message` when it
/// is not an object, or `type` or another field is missing or of the wrong
/// type (the message names the field), or a field appears twice;
/// `unknown-message-type` when `type` names no known message.
///
/// `data` is kept as the exact text the client sent ([`Data`]).
pub fn decode_client(text: &str) -> Result<ClientMessage, DecodeError> {
    // `data` is kept as text, so no tree is built for it; still refuse what
    // a parser with the usual recursion limit could not read, so that no
    // subscriber is sent a frame its own JSON library refuses.
    if !nesting_within(text, MAX_NESTING) {
        return Err(DecodeError {
            reason: Reason::InvalidJson,
            message: format!("frame is nested more than {MAX_NESTING} levels deep"),
        });
    }
    let whole: &RawValue = serde_json::from_str(text).map_err(|e| DecodeError {
        reason: Reason::InvalidJson,
        message: format!("frame is not valid JSON: {e}"),
    })?;
    if !whole.get().trim_start().starts_with('{') {
        return Err(DecodeError::invalid(format!(
            "frame must be a JSON object, got {}",
            raw_kind(whole)
        )));
    }
    let f: Fields<'_> = serde_json::from_str(whole.get()).map_err(|e| {
        // Valid JSON and an object: only a repeated field is left.
        let m = e.to_string();
        DecodeError::invalid(m.split(" at line").next().unwrap_or(&m).to_owned())
    })?;
    let ty = match f.ty {
        Some(raw) => match serde_json::from_str::<std::borrow::Cow<'_, str>>(raw.get()) {
            Ok(s) => s,
            Err(_) => {
                return Err(DecodeError::invalid(format!(
                    "field `type` must be a string, got {}",
                    raw_kind(raw)
                )))
            }
        },
        None => return Err(DecodeError::invalid("missing field `type`")),
    };
    let msg = match &*ty {
        "subscribe" => ClientMessage::Subscribe {
            channel_id: string(f.channel_id, "channel-id")?,
            recover: opt_position(f.recover, "recover")?,
        },
        "unsubscribe" => ClientMessage::Unsubscribe {
            channel_id: string(f.channel_id, "channel-id")?,
        },
        "publish" => ClientMessage::Publish {
            channel_id: string(f.channel_id, "channel-id")?,
            data: data(f.data)?,
            exclude_sender: opt_bool(f.exclude_sender, "exclude-sender")?.unwrap_or(false),
        },
        "rpc-request" => ClientMessage::RpcRequest {
            channel_id: string(f.channel_id, "channel-id")?,
            data: data(f.data)?,
            timeout_ms: opt_u64(f.timeout_ms, "timeout-ms")?,
        },
        "rpc-response" => ClientMessage::RpcResponse {
            request_id: string(f.request_id, "request-id")?,
            data: data(f.data)?,
            error: opt_bool(f.error, "error")?.unwrap_or(false),
        },
        "ping" => ClientMessage::Ping {
            timestamp: f
                .timestamp
                .and_then(|raw| serde_json::from_str::<Value>(raw.get()).ok())
                .filter(|v| !v.is_null()),
        },
        "list-channels" => ClientMessage::ListChannels {
            limit: opt_u64(f.limit, "limit")?,
            cursor: opt_string(f.cursor, "cursor")?,
        },
        "authenticate" => ClientMessage::Authenticate {
            token: string(f.token, "token")?,
        },
        "get-subscriptions" => ClientMessage::GetSubscriptions,
        "presence" => ClientMessage::Presence {
            channel_id: string(f.channel_id, "channel-id")?,
        },
        "presence-stats" => ClientMessage::PresenceStats {
            channel_id: string(f.channel_id, "channel-id")?,
        },
        "history" => ClientMessage::History {
            channel_id: string(f.channel_id, "channel-id")?,
            since: opt_position(f.since, "since")?,
            limit: opt_u64(f.limit, "limit")?,
        },
        other => {
            return Err(DecodeError {
                reason: Reason::UnknownMessageType,
                message: format!("unknown message type `{}`", truncate(other, 64)),
            })
        }
    };
    Ok(msg)
}

fn string(raw: Option<&RawValue>, field: &str) -> Result<String, DecodeError> {
    let Some(raw) = raw else {
        return Err(DecodeError::invalid(format!("missing field `{field}`")));
    };
    serde_json::from_str::<String>(raw.get()).map_err(|_| {
        DecodeError::invalid(format!(
            "field `{field}` must be a string, got {}",
            raw_kind(raw)
        ))
    })
}

fn opt_string(raw: Option<&RawValue>, field: &str) -> Result<Option<String>, DecodeError> {
    match raw {
        None => Ok(None),
        Some(r) if r.get() == "null" => Ok(None),
        Some(r) => string(Some(r), field).map(Some),
    }
}

/// `data` is any JSON value but must be present (`null` is allowed). It is
/// copied as text, never parsed into a tree.
fn data(raw: Option<&RawValue>) -> Result<Data, DecodeError> {
    let raw = raw.ok_or_else(|| DecodeError::invalid("missing field `data`"))?;
    crate::data::validate(raw.get()).map_err(|e| DecodeError {
        reason: Reason::InvalidJson,
        message: format!(
            "field `data` is not JSON every client can read: {}",
            e.to_string().split(" at line").next().unwrap_or_default()
        ),
    })?;
    Ok(Data::from_raw(raw.to_owned()))
}

/// A `{"offset": n, "epoch": "e"}` object (`null` or absent: none). Other
/// fields of the object are ignored.
fn opt_position(raw: Option<&RawValue>, field: &str) -> Result<Option<Position>, DecodeError> {
    #[derive(Deserialize)]
    struct Parts<'a> {
        #[serde(borrow, default, deserialize_with = "present")]
        offset: Option<&'a RawValue>,
        #[serde(borrow, default, deserialize_with = "present")]
        epoch: Option<&'a RawValue>,
    }
    let Some(raw) = raw else { return Ok(None) };
    if raw.get() == "null" {
        return Ok(None);
    }
    let must = || {
        DecodeError::invalid(format!(
            "field `{field}` must be an object with `offset` and `epoch`, got {}",
            raw_kind(raw)
        ))
    };
    if !raw.get().trim_start().starts_with('{') {
        return Err(must());
    }
    let parts: Parts<'_> = serde_json::from_str(raw.get()).map_err(|_| must())?;
    let offset = opt_u64(parts.offset, &format!("{field}.offset"))?
        .ok_or_else(|| DecodeError::invalid(format!("missing field `{field}.offset`")))?;
    let epoch = string(parts.epoch, &format!("{field}.epoch"))?;
    Ok(Some(Position { offset, epoch }))
}

fn opt_bool(raw: Option<&RawValue>, field: &str) -> Result<Option<bool>, DecodeError> {
    match raw.map(RawValue::get) {
        None | Some("null") => Ok(None),
        Some("true") => Ok(Some(true)),
        Some("false") => Ok(Some(false)),
        Some(_) => Err(DecodeError::invalid(format!(
            "field `{field}` must be a boolean, got {}",
            raw.map_or("null", raw_kind)
        ))),
    }
}

fn opt_u64(raw: Option<&RawValue>, field: &str) -> Result<Option<u64>, DecodeError> {
    let Some(raw) = raw else { return Ok(None) };
    match serde_json::from_str::<Value>(raw.get()) {
        Ok(Value::Null) => Ok(None),
        Ok(Value::Number(n)) => match n.as_u64() {
            Some(v) => Ok(Some(v)),
            None => Err(DecodeError::invalid(format!(
                "field `{field}` must be a non-negative integer, got {n}"
            ))),
        },
        Ok(other) => Err(DecodeError::invalid(format!(
            "field `{field}` must be a non-negative integer, got {}",
            kind(&other)
        ))),
        Err(_) => Err(DecodeError::invalid(format!(
            "field `{field}` must be a non-negative integer"
        ))),
    }
}

/// serde_json's own recursion limit, and that of most JSON parsers.
const MAX_NESTING: usize = 128;

/// Whether no array or object in `text` is nested deeper than `max` (a
/// byte scan that skips strings; `text` need not be valid JSON).
fn nesting_within(text: &str, max: usize) -> bool {
    let mut depth = 0usize;
    let mut in_string = false;
    let mut escaped = false;
    for b in text.bytes() {
        if in_string {
            match b {
                _ if escaped => escaped = false,
                b'\\' => escaped = true,
                b'"' => in_string = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'[' | b'{' => {
                depth += 1;
                if depth > max {
                    return false;
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    true
}

/// The kind of a raw JSON value, from its first character.
fn raw_kind(raw: &RawValue) -> &'static str {
    match raw.get().trim_start().as_bytes().first() {
        Some(b'n') => "null",
        Some(b't' | b'f') => "a boolean",
        Some(b'"') => "a string",
        Some(b'[') => "an array",
        Some(b'{') => "an object",
        _ => "a number",
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
