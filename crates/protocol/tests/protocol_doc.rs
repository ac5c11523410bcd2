//! `docs/PROTOCOL.md` is the contract for client authors: every ```json
//! block in it must be valid JSON and, where it shows a typed frame, decode
//! to that type. This keeps the document true to the code.

use sente_lite_protocol::http::{Channels, Health, HttpError, Stats};
use sente_lite_protocol::{decode_client, Reason, ServerMessage};
use serde_json::Value;

const DOC: &str = include_str!("../../../docs/PROTOCOL.md");

/// Client frame types, as the decoder knows them.
const CLIENT_TYPES: [&str; 12] = [
    "authenticate",
    "subscribe",
    "unsubscribe",
    "publish",
    "rpc-request",
    "rpc-response",
    "ping",
    "list-channels",
    "get-subscriptions",
    "history",
    "presence",
    "presence-stats",
];

/// Free-form `type`s of the broadcast examples (the application's own).
const FREE_FORM_TYPES: [&str; 3] = ["announcement", "price", "notice"];

/// The contents of every fenced block tagged `json`, with its line number.
fn json_blocks(doc: &str) -> Vec<(usize, String)> {
    let mut blocks = Vec::new();
    let mut current: Option<(usize, String)> = None;
    for (i, line) in doc.lines().enumerate() {
        let fence = line.trim_start();
        match current.take() {
            None => {
                if fence == "```json" {
                    current = Some((i + 1, String::new()));
                }
            }
            Some((start, mut text)) => {
                if fence == "```" {
                    blocks.push((start, text));
                } else {
                    text.push_str(line);
                    text.push('\n');
                    current = Some((start, text));
                }
            }
        }
    }
    assert!(current.is_none(), "unterminated ```json block");
    blocks
}

fn is_server_frame(text: &str) -> bool {
    serde_json::from_str::<ServerMessage>(text).is_ok()
}

fn is_http_body(text: &str) -> bool {
    serde_json::from_str::<Health>(text).is_ok()
        || serde_json::from_str::<Stats>(text).is_ok()
        || serde_json::from_str::<Channels>(text).is_ok()
        || serde_json::from_str::<HttpError>(text).is_ok()
}

#[test]
fn every_json_example_is_valid_and_typed() {
    let blocks = json_blocks(DOC);
    assert!(
        blocks.len() >= 30,
        "only {} json blocks found",
        blocks.len()
    );
    for (line, text) in blocks {
        let value: Value = serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("PROTOCOL.md line {line}: not JSON: {e}\n{text}"));
        let obj = value
            .as_object()
            .unwrap_or_else(|| panic!("PROTOCOL.md line {line}: not an object"));
        match obj.get("type").and_then(Value::as_str) {
            None => assert!(
                is_http_body(&text),
                "PROTOCOL.md line {line}: untyped block is no HTTP body\n{text}"
            ),
            Some(ty) if FREE_FORM_TYPES.contains(&ty) => {}
            Some(ty) => {
                let as_client = CLIENT_TYPES.contains(&ty) && decode_client(&text).is_ok();
                assert!(
                    as_client || is_server_frame(&text),
                    "PROTOCOL.md line {line}: `{ty}` decodes neither as client nor server frame\n{text}"
                );
            }
        }
    }
}

/// The reasons table lists every reason exactly once (a row that starts
/// with the reason).
#[test]
fn every_reason_is_documented() {
    for reason in Reason::ALL {
        let row = format!("| `{}` |", reason.as_str());
        assert_eq!(
            DOC.lines().filter(|l| l.starts_with(&row)).count(),
            1,
            "PROTOCOL.md: reason `{reason}` must have exactly one table row"
        );
    }
}

/// Every client and server frame type has a section or example.
#[test]
fn every_frame_type_is_documented() {
    let server_types = [
        "welcome",
        "authenticate-result",
        "subscription-result",
        "unsubscription-result",
        "publish-result",
        "rpc-request-result",
        "rpc-response-result",
        "pong",
        "channel-list",
        "subscription-list",
        "history-result",
        "presence-result",
        "presence-stats-result",
        "join",
        "leave",
        "channel-message",
        "rpc-request",
        "rpc-response",
        "error",
    ];
    for ty in CLIENT_TYPES.iter().chain(server_types.iter()) {
        let tag = format!("\"type\": \"{ty}\"");
        assert!(DOC.contains(&tag), "PROTOCOL.md has no example of `{ty}`");
    }
}
