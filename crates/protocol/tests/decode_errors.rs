//! Each way `decode_client` refuses a frame: the reason, and a message that
//! names the offending field.

use sente_lite_protocol::{decode_client, ClientMessage, DecodeError, Reason, ServerMessage};
use serde_json::json;

fn refused(text: &str) -> DecodeError {
    match decode_client(text) {
        Ok(msg) => panic!("{text} decoded to {msg:?}, expected an error"),
        Err(e) => e,
    }
}

/// Refused as `invalid-message`, with a message containing every `needle`.
fn assert_invalid(text: &str, needles: &[&str]) {
    let e = refused(text);
    assert_eq!(e.reason, Reason::InvalidMessage, "{text}: {e}");
    for needle in needles {
        assert!(
            e.message.contains(needle),
            "{text}: {:?} lacks {needle:?}",
            e.message
        );
    }
}

#[test]
fn not_json() {
    for text in [
        "",
        " ",
        "{",
        "{\"type\":",
        "subscribe",
        "{'type':'ping'}",
        "[1,]",
        "\u{0}",
    ] {
        let e = refused(text);
        assert_eq!(e.reason, Reason::InvalidJson, "{text:?}: {e}");
        assert!(e.message.contains("not valid JSON"), "{}", e.message);
    }
}

#[test]
fn trailing_garbage_is_not_json() {
    assert_eq!(
        refused(r#"{"type":"ping"} {"type":"ping"}"#).reason,
        Reason::InvalidJson
    );
}

#[test]
fn non_object_frames() {
    for (text, kind) in [
        ("null", "null"),
        ("true", "a boolean"),
        ("42", "a number"),
        (r#""ping""#, "a string"),
        (r#"[{"type":"ping"}]"#, "an array"),
    ] {
        assert_invalid(text, &["JSON object", kind]);
    }
}

#[test]
fn missing_type() {
    assert_invalid(r#"{"channel-id":"chat"}"#, &["missing field `type`"]);
    assert_invalid("{}", &["missing field `type`"]);
}

#[test]
fn ill_typed_type() {
    assert_invalid(r#"{"type":1}"#, &["`type`", "string", "a number"]);
    assert_invalid(r#"{"type":null}"#, &["`type`", "string", "null"]);
    assert_invalid(r#"{"type":["ping"]}"#, &["`type`", "an array"]);
}

#[test]
fn unknown_type() {
    let e = refused(r#"{"type":"shout","channel-id":"chat"}"#);
    assert_eq!(e.reason, Reason::UnknownMessageType);
    assert!(e.message.contains("`shout`"), "{}", e.message);
}

/// Types are case-sensitive and exact: no snake_case or camelCase aliases,
/// and server-only types are unknown to the decoder.
#[test]
fn near_miss_types_are_unknown() {
    for ty in [
        "Subscribe",
        "list_channels",
        "listChannels",
        " ping",
        "welcome",
        "channel-message",
        "pong",
    ] {
        let text = json!({"type": ty}).to_string();
        assert_eq!(refused(&text).reason, Reason::UnknownMessageType, "{ty}");
    }
}

/// A very long unknown type is cut in the message (never mid-character).
#[test]
fn unknown_type_message_is_bounded() {
    let ty = "é".repeat(1000);
    let e = refused(&json!({"type": ty}).to_string());
    assert_eq!(e.reason, Reason::UnknownMessageType);
    assert!(e.message.len() < 200, "{} bytes", e.message.len());
}

#[test]
fn missing_channel_id() {
    for ty in ["subscribe", "unsubscribe", "publish", "rpc-request"] {
        let text = json!({"type": ty, "data": null}).to_string();
        assert_invalid(&text, &["missing field `channel-id`"]);
    }
}

#[test]
fn ill_typed_channel_id() {
    assert_invalid(
        r#"{"type":"subscribe","channel-id":7}"#,
        &["`channel-id`", "string", "a number"],
    );
    assert_invalid(
        r#"{"type":"publish","channel-id":{"id":"x"},"data":1}"#,
        &["`channel-id`", "an object"],
    );
    assert_invalid(
        r#"{"type":"unsubscribe","channel-id":null}"#,
        &["`channel-id`", "null"],
    );
}

#[test]
fn missing_data() {
    assert_invalid(
        r#"{"type":"publish","channel-id":"chat"}"#,
        &["missing field `data`"],
    );
    assert_invalid(
        r#"{"type":"rpc-request","channel-id":"api"}"#,
        &["missing field `data`"],
    );
    assert_invalid(
        r#"{"type":"rpc-response","request-id":"req-1"}"#,
        &["missing field `data`"],
    );
}

/// `data` must be present but may be `null` or any other JSON value.
#[test]
fn data_may_be_null() {
    let msg = decode_client(r#"{"type":"publish","channel-id":"c","data":null}"#).expect("ok");
    assert_eq!(
        msg,
        ClientMessage::Publish {
            channel_id: "c".into(),
            data: serde_json::Value::Null.into(),
            exclude_sender: false
        }
    );
    let msg =
        decode_client(r#"{"type":"rpc-response","request-id":"r","data":[1,"x"]}"#).expect("ok");
    assert_eq!(
        msg,
        ClientMessage::RpcResponse {
            request_id: "r".into(),
            data: json!([1, "x"]).into(),
            error: false
        }
    );
}

#[test]
fn missing_request_id() {
    assert_invalid(
        r#"{"type":"rpc-response","data":{}}"#,
        &["missing field `request-id`"],
    );
}

#[test]
fn ill_typed_request_id() {
    assert_invalid(
        r#"{"type":"rpc-response","request-id":1234,"data":{}}"#,
        &["`request-id`", "string", "a number"],
    );
}

#[test]
fn ill_typed_timeout_ms() {
    for (value, needle) in [
        (r#""5000""#, "a string"),
        ("-1", "-1"),
        ("1.5", "1.5"),
        ("true", "a boolean"),
        ("[5000]", "an array"),
    ] {
        let text =
            format!(r#"{{"type":"rpc-request","channel-id":"api","data":1,"timeout-ms":{value}}}"#);
        assert_invalid(&text, &["`timeout-ms`", "non-negative integer", needle]);
    }
}

#[test]
fn timeout_ms_absent_or_null_is_none() {
    for text in [
        r#"{"type":"rpc-request","channel-id":"api","data":1}"#,
        r#"{"type":"rpc-request","channel-id":"api","data":1,"timeout-ms":null}"#,
    ] {
        assert_eq!(
            decode_client(text).expect("ok"),
            ClientMessage::RpcRequest {
                channel_id: "api".into(),
                data: json!(1).into(),
                timeout_ms: None
            }
        );
    }
}

#[test]
fn ill_typed_exclude_sender() {
    assert_invalid(
        r#"{"type":"publish","channel-id":"c","data":1,"exclude-sender":"yes"}"#,
        &["`exclude-sender`", "boolean", "a string"],
    );
    assert_invalid(
        r#"{"type":"publish","channel-id":"c","data":1,"exclude-sender":1}"#,
        &["`exclude-sender`", "boolean", "a number"],
    );
}

#[test]
fn exclude_sender_null_is_false() {
    assert_eq!(
        decode_client(r#"{"type":"publish","channel-id":"c","data":1,"exclude-sender":null}"#)
            .expect("ok"),
        ClientMessage::Publish {
            channel_id: "c".into(),
            data: json!(1).into(),
            exclude_sender: false
        }
    );
}

#[test]
fn ill_typed_error_flag() {
    assert_invalid(
        r#"{"type":"rpc-response","request-id":"r","data":1,"error":"boom"}"#,
        &["`error`", "boolean", "a string"],
    );
}

/// Ping echoes any JSON value as its timestamp; `null` counts as absent.
#[test]
fn ping_timestamp_is_any_value() {
    for ts in [json!(1), json!("now"), json!({"t": [1, 2]}), json!(-3.5)] {
        let text = json!({"type": "ping", "timestamp": ts}).to_string();
        assert_eq!(
            decode_client(&text).expect("ok"),
            ClientMessage::Ping {
                timestamp: Some(ts)
            }
        );
    }
    for text in [r#"{"type":"ping"}"#, r#"{"type":"ping","timestamp":null}"#] {
        assert_eq!(
            decode_client(text).expect("ok"),
            ClientMessage::Ping { timestamp: None }
        );
    }
}

/// The first problem found is reported: `type` before the other fields,
/// then the fields in the order of the message's definition.
#[test]
fn first_problem_wins() {
    assert_invalid(r#"{"channel-id":5}"#, &["`type`"]);
    assert_invalid(r#"{"type":"publish"}"#, &["`channel-id`"]);
}

#[test]
fn nesting_too_deep_is_invalid_json_not_a_crash() {
    let deep = format!(
        r#"{{"type":"publish","channel-id":"c","data":{}{}}}"#,
        "[".repeat(100_000),
        "]".repeat(100_000)
    );
    assert_eq!(refused(&deep).reason, Reason::InvalidJson);
}

#[test]
fn decode_error_display_starts_with_reason() {
    let e = refused("{}");
    assert_eq!(e.to_string(), format!("invalid-message: {}", e.message));
}

/// `From<DecodeError>` gives the error frame the server sends back.
#[test]
fn decode_error_becomes_error_frame() {
    let e = refused(r#"{"type":"subscribe"}"#);
    let frame: serde_json::Value =
        serde_json::from_str(&ServerMessage::from(e).to_json()).expect("JSON");
    assert_eq!(frame["type"], "error");
    assert_eq!(frame["reason"], "invalid-message");
    assert_eq!(frame["message"], "missing field `channel-id`");
    assert!(frame["timestamp"].is_i64());
    assert!(frame.get("request-id").is_none());
}

/// A relay does not change what it relays: `data` keeps its key order, the
/// spelling of its numbers and its escapes, in every message that has one.
#[test]
fn data_is_kept_byte_for_byte() {
    let data =
        r#"{"z":1,"a":1.10,"big":123456789012345678901234567890,"s":"caf\u00e9","n":[ 1 , 2 ]}"#;
    for frame in [
        format!(r#"{{"type":"publish","channel-id":"c","data":{data}}}"#),
        format!(r#"{{"type":"rpc-request","channel-id":"c","data":{data}}}"#),
        format!(r#"{{"type":"rpc-response","request-id":"r","data":{data}}}"#),
    ] {
        let got = match decode_client(&frame).expect("valid") {
            ClientMessage::Publish { data, .. }
            | ClientMessage::RpcRequest { data, .. }
            | ClientMessage::RpcResponse { data, .. } => data,
            other => panic!("unexpected {other:?}"),
        };
        assert_eq!(got.as_json(), data, "{frame}");
    }
}

/// A field given twice is refused rather than silently taking one of them.
#[test]
fn repeated_field_is_invalid_message() {
    let e = refused(r#"{"type":"subscribe","channel-id":"a","channel-id":"b"}"#);
    assert_eq!(e.reason, Reason::InvalidMessage);
    assert!(e.message.contains("duplicate field"), "{}", e.message);
}

/// `data` is kept as text, but only text a tree-building JSON parser reads:
/// a lone surrogate escape or a number out of range is refused, as it was
/// when the decoder built a tree, so no subscriber is sent a frame its own
/// JSON library refuses.
#[test]
fn data_that_parsers_refuse_is_invalid_json() {
    for data in [
        r#""\ud800""#,
        "1e400",
        r#"{"\udc00":1}"#,
        r#"["ok","\ud83d"]"#,
    ] {
        let e = refused(&format!(
            r#"{{"type":"publish","channel-id":"c","data":{data}}}"#
        ));
        assert_eq!(e.reason, Reason::InvalidJson, "{data}: {e:?}");
        assert!(e.message.contains("`data`"), "{}", e.message);
    }
    // A proper pair of surrogates (an emoji) is fine.
    assert!(decode_client(r#"{"type":"publish","channel-id":"c","data":"\ud83d\ude00"}"#).is_ok());
}

/// `recover` and `since` are `{"offset": n, "epoch": "e"}` objects; a
/// malformed one is refused naming the field, `null` is the same as absent.
#[test]
fn stream_positions_name_their_field() {
    use sente_lite_protocol::Position;
    let at = |offset, epoch: &str| {
        Some(Position {
            offset,
            epoch: epoch.to_owned(),
        })
    };
    assert_eq!(
        decode_client(
            r#"{"type":"subscribe","channel-id":"c","recover":{"offset":41,"epoch":"e1"}}"#
        )
        .expect("decodes"),
        ClientMessage::Subscribe {
            channel_id: "c".into(),
            recover: at(41, "e1"),
        }
    );
    assert_eq!(
        decode_client(r#"{"type":"subscribe","channel-id":"c","recover":null}"#).expect("decodes"),
        ClientMessage::Subscribe {
            channel_id: "c".into(),
            recover: None,
        }
    );
    assert_eq!(
        decode_client(
            r#"{"type":"history","channel-id":"c","since":{"offset":0,"epoch":"x"},"limit":5}"#
        )
        .expect("decodes"),
        ClientMessage::History {
            channel_id: "c".into(),
            since: at(0, "x"),
            limit: Some(5),
        }
    );
    assert_eq!(
        decode_client(r#"{"type":"history","channel-id":"c"}"#).expect("decodes"),
        ClientMessage::History {
            channel_id: "c".into(),
            since: None,
            limit: None,
        }
    );
    for (text, needles) in [
        (
            r#"{"type":"subscribe","channel-id":"c","recover":41}"#,
            &["`recover`", "a number"][..],
        ),
        (
            r#"{"type":"subscribe","channel-id":"c","recover":{"epoch":"e"}}"#,
            &["`recover.offset`"][..],
        ),
        (
            r#"{"type":"subscribe","channel-id":"c","recover":{"offset":-1,"epoch":"e"}}"#,
            &["`recover.offset`", "non-negative"][..],
        ),
        (
            r#"{"type":"subscribe","channel-id":"c","recover":{"offset":1}}"#,
            &["`recover.epoch`"][..],
        ),
        (
            r#"{"type":"subscribe","channel-id":"c","recover":{"offset":1,"epoch":7}}"#,
            &["`recover.epoch`", "a number"][..],
        ),
        (
            r#"{"type":"history","channel-id":"c","since":"1"}"#,
            &["`since`", "a string"][..],
        ),
        (
            r#"{"type":"history","channel-id":"c","limit":"1"}"#,
            &["`limit`"][..],
        ),
        (r#"{"type":"history"}"#, &["`channel-id`"][..]),
    ] {
        assert_invalid(text, needles);
    }
}

/// A stored `channel-message` frame read back keeps `data` as it was
/// spelled, and serializes to the same frame.
#[test]
fn a_channel_message_frame_reads_back_byte_for_byte() {
    let frame = r#"{"type":"channel-message","channel-id":"c","message-id":"m-1","data":{"b" : 1.50,"a":["\u00e9"]},"sender-conn-id":null,"published-at":7,"offset":3,"epoch":"e"}"#;
    let m = sente_lite_protocol::ChannelMessage::from_frame(frame).expect("a frame");
    assert_eq!(m.data.as_json(), r#"{"b" : 1.50,"a":["\u00e9"]}"#);
    assert_eq!((m.offset, m.epoch.as_str()), (3, "e"));
    let again = ServerMessage::ChannelMessage(m).to_json();
    assert_eq!(again, frame);
    assert!(sente_lite_protocol::ChannelMessage::from_frame("{}").is_err());
}
