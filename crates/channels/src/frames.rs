//! Serializing delivery frames once, with their `type` tag.

use serde::Serialize;

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
    use serde_json::json;

    #[test]
    fn typed_frame_equals_the_tagged_enum_encoding() {
        let m = ChannelMessage {
            channel_id: "c".into(),
            message_id: "msg-1".into(),
            data: json!({"a": [1, "x"]}),
            sender_conn_id: None,
            published_at: 7,
        };
        let ours: serde_json::Value = serde_json::from_str(&typed("channel-message", &m)).unwrap();
        let theirs: serde_json::Value =
            serde_json::from_str(&ServerMessage::ChannelMessage(m).to_json()).unwrap();
        assert_eq!(ours, theirs);
    }

    #[test]
    fn empty_object_gets_only_the_tag() {
        #[derive(Serialize)]
        struct Empty {}
        assert_eq!(typed("x", &Empty {}), r#"{"type":"x"}"#);
    }
}
