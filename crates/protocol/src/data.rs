//! [`Data`]: a message's `data`, kept as the exact JSON text the client sent.

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::value::RawValue;
use serde_json::Value;
use std::fmt;

/// The `data` of a publish, an RPC request or an RPC response: one JSON value
/// held as the text it arrived in, so the server relays it byte for byte
/// (key order, number spelling such as `1.10` or
/// `123456789012345678901234567890`, escapes) and never parses it into a tree
/// or serializes it again.
///
/// Equality is JSON equality (`{"a":1}` equals `{ "a" : 1 }`): the same text
/// is compared first, and only different texts are parsed. To check that a
/// value was relayed byte for byte, compare [`Data::as_json`].
#[derive(Clone)]
pub struct Data(Box<RawValue>);

impl Data {
    /// Takes a JSON text as it is. Fails when it is not exactly one JSON
    /// value (surrounding white space is allowed and kept).
    pub fn from_json(json: String) -> Result<Data, serde_json::Error> {
        RawValue::from_string(json).map(Data)
    }

    /// The JSON text, exactly as received.
    pub fn as_json(&self) -> &str {
        self.0.get()
    }

    /// The `null` value.
    pub fn null() -> Data {
        Data::from(Value::Null)
    }

    /// Parses the text into a [`Value`] (for code that wants to look inside;
    /// the server itself never does).
    pub fn to_value(&self) -> Value {
        serde_json::from_str(self.0.get()).unwrap_or(Value::Null)
    }

    /// Wraps an already validated raw value.
    pub fn from_raw(raw: Box<RawValue>) -> Data {
        Data(raw)
    }

    /// Length of the JSON text in bytes.
    pub fn len(&self) -> usize {
        self.0.get().len()
    }

    /// Never true for a valid JSON value; here for the `len` convention.
    pub fn is_empty(&self) -> bool {
        self.0.get().is_empty()
    }
}

impl From<Value> for Data {
    fn from(v: Value) -> Data {
        From::from(&v)
    }
}

impl From<&Value> for Data {
    fn from(v: &Value) -> Data {
        // A `Value` always serializes (its map keys are strings).
        match serde_json::value::to_raw_value(v) {
            Ok(raw) => Data(raw),
            Err(_) => Data(null_raw()),
        }
    }
}

fn null_raw() -> Box<RawValue> {
    // A constant that is valid JSON: this cannot fail.
    #[allow(clippy::expect_used)]
    RawValue::from_string("null".to_owned()).expect("`null` is valid JSON")
}

impl PartialEq for Data {
    fn eq(&self, other: &Data) -> bool {
        self.0.get() == other.0.get() || self.to_value() == other.to_value()
    }
}

impl PartialEq<Value> for Data {
    /// Compares the meaning, not the spelling: for tests and callers that
    /// built the expected value with `json!`.
    fn eq(&self, other: &Value) -> bool {
        serde_json::from_str::<Value>(self.0.get()).is_ok_and(|v| v == *other)
    }
}

impl fmt::Debug for Data {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Data({})", self.0.get())
    }
}

impl fmt::Display for Data {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0.get())
    }
}

impl Serialize for Data {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.0.serialize(serializer)
    }
}

/// Deserializing through serde (a Rust client decoding a [`ServerMessage`](crate::ServerMessage),
/// whose `type` tag makes serde buffer the frame) goes through a
/// [`Value`], so the text is re-spelled canonically there. The server's own
/// decoder, [`decode_client`](crate::decode_client), keeps the exact text.
impl<'de> Deserialize<'de> for Data {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Data, D::Error> {
        Value::deserialize(deserializer).map(Data::from)
    }
}

/// Reads a JSON text the way a parser that builds a tree would (every
/// string's escapes decoded, every number in range), without building one:
/// so the server relays only what its clients' JSON libraries can read.
pub(crate) fn validate(json: &str) -> Result<(), serde_json::Error> {
    let mut de = serde_json::Deserializer::from_str(json);
    Validate::deserialize(&mut de)?;
    de.end()
}

/// A value read and dropped (strings borrowed where they have no escapes).
struct Validate;

impl<'de> Deserialize<'de> for Validate {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Validate, D::Error> {
        d.deserialize_any(ValidateVisitor)
    }
}

struct ValidateVisitor;

impl<'de> serde::de::Visitor<'de> for ValidateVisitor {
    type Value = Validate;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_bool<E>(self, _: bool) -> Result<Validate, E> {
        Ok(Validate)
    }
    fn visit_i64<E>(self, _: i64) -> Result<Validate, E> {
        Ok(Validate)
    }
    fn visit_u64<E>(self, _: u64) -> Result<Validate, E> {
        Ok(Validate)
    }
    fn visit_f64<E>(self, _: f64) -> Result<Validate, E> {
        Ok(Validate)
    }
    fn visit_str<E>(self, _: &str) -> Result<Validate, E> {
        Ok(Validate)
    }
    fn visit_unit<E>(self) -> Result<Validate, E> {
        Ok(Validate)
    }
    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Validate, A::Error> {
        while seq.next_element::<Validate>()?.is_some() {}
        Ok(Validate)
    }
    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Validate, A::Error> {
        while map.next_entry::<Validate, Validate>()?.is_some() {}
        Ok(Validate)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_text_through_a_round_trip() {
        let text = r#"{"z":1,"a":1.10,"big":123456789012345678901234567890,"s":"\u00e9"}"#;
        let d = Data::from_json(text.to_owned()).unwrap();
        assert_eq!(d.as_json(), text);
        let wrapped = serde_json::to_string(&serde_json::json!({"k": 1})).unwrap();
        assert_eq!(wrapped, r#"{"k":1}"#);
        #[derive(Serialize, Deserialize)]
        struct W {
            data: Data,
        }
        let out = serde_json::to_string(&W { data: d.clone() }).unwrap();
        assert_eq!(out, format!(r#"{{"data":{text}}}"#));
        let back: W = serde_json::from_str(&out).unwrap();
        assert!(back.data == serde_json::from_str::<Value>(text).unwrap());
    }

    #[test]
    fn validate_refuses_what_tree_parsers_refuse() {
        assert!(validate(r#"{"a":[1,2.5,"x\u00e9",null,true],"b":{}}"#).is_ok());
        assert!(validate(r#""\ud800""#).is_err(), "a lone surrogate");
        assert!(validate("1e400").is_err(), "a number out of range");
        assert!(validate(r#"{"\ud800":1}"#).is_err(), "in a key too");
    }

    #[test]
    fn null_and_values() {
        assert_eq!(Data::null().as_json(), "null");
        assert_eq!(
            Data::from(serde_json::json!([1, "x"])).as_json(),
            r#"[1,"x"]"#
        );
        assert!(Data::from_json("{".to_owned()).is_err());
        let spaced = Data::from_json(r#"{ "a" : 1 }"#.to_owned()).unwrap();
        assert!(spaced == serde_json::json!({"a": 1}));
        assert_eq!(spaced, Data::from(serde_json::json!({"a": 1})));
        assert_ne!(spaced.as_json(), r#"{"a":1}"#);
    }
}
