//! Helpers shared by the fixture tests.

#![allow(dead_code)] // each test file uses a different subset

use sente_lite_protocol::{decode_client, ClientMessage, ServerMessage};
use serde::Serialize;
use serde_json::Value;
use std::path::PathBuf;

fn fixtures_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

/// The text of `tests/fixtures/<name>.json` and its parsed JSON.
pub fn fixture(name: &str) -> (String, Value) {
    let path = fixtures_dir().join(format!("{name}.json"));
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    let value =
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{name}.json is not JSON: {e}"));
    (text, value)
}

/// Decodes a client fixture with the server's decoder.
pub fn decode_fixture(name: &str, text: &str) -> ClientMessage {
    decode_client(text).unwrap_or_else(|e| panic!("{name}: decode_client failed: {e}"))
}

/// A server fixture's JSON and its serde decoding.
pub fn server_fixture(name: &str) -> (Value, ServerMessage) {
    let (text, value) = fixture(name);
    let msg =
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{name}: not a ServerMessage: {e}"));
    (value, msg)
}

/// A value serialized to JSON.
pub fn reencoded<T: Serialize>(v: &T) -> Value {
    serde_json::to_value(v).unwrap_or_else(|e| panic!("cannot serialize: {e}"))
}

/// The sorted names (without `.json`) of the fixtures in `tests/fixtures/<sub>`.
pub fn fixture_names(sub: &str) -> Vec<String> {
    let dir = fixtures_dir().join(sub);
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("cannot list {}: {e}", dir.display()))
        .filter_map(|entry| {
            let name = entry.ok()?.file_name().into_string().ok()?;
            name.strip_suffix(".json").map(str::to_owned)
        })
        .collect();
    names.sort();
    names
}
