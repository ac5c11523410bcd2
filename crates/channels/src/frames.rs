//! Serializing delivery frames once, with their `type` tag.

use sente_lite_protocol::Data;
use serde::Serialize;

/// A `channel-message` by reference: what a publish serializes, once, for
/// all its recipients, without building an owned message first.
#[derive(Serialize)]
#[serde(rename_all = "kebab-case")]
pub(crate) struct ChannelMessageRef<'a> {
    pub(crate) channel_id: &'a str,
    pub(crate) message_id: &'a str,
    pub(crate) data: &'a Data,
    pub(crate) sender_conn_id: Option<&'a str>,
    pub(crate) published_at: i64,
    pub(crate) offset: u64,
    pub(crate) epoch: &'a str,
}

/// The fields of a `channel-message` before its stream position.
#[derive(Serialize)]
#[serde(rename_all = "kebab-case")]
struct HeadRef<'a> {
    channel_id: &'a str,
    message_id: &'a str,
    data: &'a Data,
    sender_conn_id: Option<&'a str>,
    published_at: i64,
}

/// A `channel-message` frame up to its stream position, for a broker that
/// learns the position only where the message is ordered (a script in
/// Redis, say): the frame is this text followed by
/// `"offset":<n>,"epoch":"<epoch>"}`, the same bytes as the frame a node
/// serializes itself. `data` is relayed byte for byte.
pub fn channel_message_head(
    channel_id: &str,
    message_id: &str,
    data: &Data,
    sender_conn_id: Option<&str>,
    published_at: i64,
) -> String {
    let mut head = typed(
        "channel-message",
        &HeadRef {
            channel_id,
            message_id,
            data,
            sender_conn_id,
            published_at,
        },
    );
    head.pop();
    head.push(',');
    head
}

/// The `channel-message` frame of `m`.
pub(crate) fn channel_message(m: &ChannelMessageRef<'_>) -> String {
    typed("channel-message", m)
}

/// `{"type":"<ty>", ...fields of value}` in one pass over `value`.
///
/// `value` must serialize to a JSON object (all our delivery structs do).
pub(crate) fn typed<T: Serialize>(ty: &str, value: &T) -> String {
    let body = serde_json::to_string(value).unwrap_or_else(|_| "{}".to_owned());
    let fields = body.strip_prefix('{').unwrap_or("}");
    let mut out = String::with_capacity(body.len() + ty.len() + 12);
    out.push_str("{\"type\":\"");
    out.push_str(ty);
    out.push('"');
    if fields != "}" {
        out.push(',');
    }
    out.push_str(fields);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use sente_lite_protocol::{ChannelMessage, ServerMessage};

    #[test]
    fn typed_frame_equals_the_tagged_enum_encoding() {
        let data = Data::from_json(r#"{"b":1.10,"a":[1,"x"]}"#.to_owned()).unwrap();
        let m = ChannelMessage {
            channel_id: "c".into(),
            message_id: "msg-1".into(),
            data: data.clone(),
            sender_conn_id: None,
            published_at: 7,
            offset: 3,
            epoch: "e1".into(),
        };
        let by_ref = channel_message(&ChannelMessageRef {
            channel_id: "c",
            message_id: "msg-1",
            data: &data,
            sender_conn_id: None,
            published_at: 7,
            offset: 3,
            epoch: "e1",
        });
        assert_eq!(by_ref, ServerMessage::ChannelMessage(m).to_json());
        assert!(
            by_ref.contains(r#""data":{"b":1.10,"a":[1,"x"]}"#),
            "{by_ref}"
        );
    }

    #[test]
    fn head_and_position_make_the_whole_frame() {
        let data = Data::from_json(r#"[1, 2.50]"#.to_owned()).unwrap();
        let whole = channel_message(&ChannelMessageRef {
            channel_id: "c",
            message_id: "m",
            data: &data,
            sender_conn_id: Some("conn-1-0"),
            published_at: 9,
            offset: 12,
            epoch: "ep",
        });
        let head = channel_message_head("c", "m", &data, Some("conn-1-0"), 9);
        assert_eq!(format!(r#"{head}"offset":12,"epoch":"ep"}}"#), whole);
    }

    #[test]
    fn empty_object_gets_only_the_tag() {
        #[derive(Serialize)]
        struct Empty {}
        assert_eq!(typed("x", &Empty {}), r#"{"type":"x"}"#);
    }
}
