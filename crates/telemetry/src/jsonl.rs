//! The hand-written JSON-lines writer of the file and console handlers.
//!
//! It writes exactly what `serde_json::to_writer(signal)` writes (same keys,
//! same order, same escaping — a test compares the two byte for byte), but
//! straight into a reused byte buffer: keys and punctuation are static byte
//! strings, strings that need no escaping (module paths, file names, ids,
//! most messages) are copied after one scan, and integers are formatted by
//! [`write_u64`] instead of `core::fmt`.
//!
//! It depends on `signal` (what it formats), never the other way round:
//! [`Signal::write_json_line`] is defined here.

use crate::signal::{Data, Kind, Signal};
use crate::timestamp::rfc3339_bytes;

impl Signal {
    /// Writes the signal as one line of JSON followed by `\n`.
    /// (The same text as `serde_json::to_writer(self)` plus `\n`, written
    /// by a hand-written formatter in one `write_all`.)
    pub fn write_json_line<W: std::io::Write>(&self, mut w: W) -> std::io::Result<()> {
        let mut line = Vec::with_capacity(256);
        write_line(self, &mut line);
        w.write_all(&line)
    }
}

/// Appends `signal` as one JSON object followed by `\n`.
pub(crate) fn write_line(signal: &Signal, out: &mut Vec<u8>) {
    out.extend_from_slice(b"{\"time\":\"");
    let mut ts = [0u8; 32];
    let n = rfc3339_bytes(&mut ts, signal.time);
    out.extend_from_slice(&ts[..n]);
    out.extend_from_slice(b"\",\"level\":\"");
    out.extend_from_slice(signal.level.as_str().as_bytes());
    out.extend_from_slice(match signal.kind {
        Kind::Event => b"\",\"kind\":\"event\"",
        Kind::Log => b"\",\"kind\":\"log\"",
    });
    if let Some(id) = &signal.id {
        out.extend_from_slice(b",\"id\":");
        write_str(out, id);
    }
    if let Some(msg) = &signal.message {
        out.extend_from_slice(b",\"msg\":");
        write_str(out, msg);
    }
    if let Some(d) = &signal.data {
        out.extend_from_slice(b",\"data\":");
        write_data(out, d);
    }
    if let Some(e) = &signal.error {
        out.extend_from_slice(b",\"error\":{\"message\":");
        write_str(out, &e.message);
        if !e.sources.is_empty() {
            out.extend_from_slice(b",\"sources\":[");
            for (i, s) in e.sources.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_str(out, s);
            }
            out.push(b']');
        }
        out.push(b'}');
    }
    out.extend_from_slice(b",\"module\":");
    write_str(out, &signal.module);
    if let Some(f) = &signal.file {
        out.extend_from_slice(b",\"file\":");
        write_str(out, f);
    }
    if let Some(l) = signal.line {
        out.extend_from_slice(b",\"line\":");
        write_u64(out, u64::from(l));
    }
    out.extend_from_slice(b",\"thread\":{\"id\":");
    write_u64(out, signal.thread.id);
    if let Some(name) = signal.thread.name {
        out.extend_from_slice(b",\"name\":");
        write_str(out, name);
    }
    out.push(b'}');
    if let Some(c) = signal.correlation {
        out.extend_from_slice(b",\"correlation\":");
        write_u64(out, c.0);
    }
    out.extend_from_slice(b"}\n");
}

fn write_data(out: &mut Vec<u8>, d: &Data) {
    match d {
        Data::Json(raw) => out.extend_from_slice(raw.get().as_bytes()),
        // Serialization into a Vec cannot fail on I/O; a value that fails
        // to serialize is written the way `Data`'s `Serialize` writes it.
        _ => {
            let start = out.len();
            if serde_json::to_writer(&mut *out, d).is_err() {
                out.truncate(start);
                out.extend_from_slice(b"null");
            }
        }
    }
}

/// `\uXXXX` escapes use these (serde_json writes lowercase hex).
const HEX: &[u8; 16] = b"0123456789abcdef";

/// 0: copied as is; otherwise the character after the backslash (`u`:
/// `\u00XX`). The same table as serde_json's.
static ESCAPE: [u8; 256] = {
    let mut t = [0u8; 256];
    let mut i = 0;
    while i < 0x20 {
        t[i] = b'u';
        i += 1;
    }
    t[0x08] = b'b';
    t[0x09] = b't';
    t[0x0a] = b'n';
    t[0x0c] = b'f';
    t[0x0d] = b'r';
    t[b'"' as usize] = b'"';
    t[b'\\' as usize] = b'\\';
    t
};

/// Appends `s` as a JSON string (quoted, escaped like serde_json).
pub(crate) fn write_str(out: &mut Vec<u8>, s: &str) {
    let bytes = s.as_bytes();
    out.reserve(bytes.len() + 2);
    out.push(b'"');
    let mut start = 0;
    for (i, &b) in bytes.iter().enumerate() {
        let esc = ESCAPE[b as usize];
        if esc == 0 {
            continue;
        }
        out.extend_from_slice(&bytes[start..i]);
        if esc == b'u' {
            out.extend_from_slice(b"\\u00");
            out.push(HEX[(b >> 4) as usize]);
            out.push(HEX[(b & 0xf) as usize]);
        } else {
            out.push(b'\\');
            out.push(esc);
        }
        start = i + 1;
    }
    out.extend_from_slice(&bytes[start..]);
    out.push(b'"');
}

/// Two-digit pairs "00".."99" for [`write_u64`].
static PAIRS: [u8; 200] = {
    let mut t = [0u8; 200];
    let mut i = 0;
    while i < 100 {
        t[2 * i] = b'0' + (i / 10) as u8;
        t[2 * i + 1] = b'0' + (i % 10) as u8;
        i += 1;
    }
    t
};

/// Appends `v` in decimal (two digits per step, no `core::fmt`).
pub(crate) fn write_u64(out: &mut Vec<u8>, mut v: u64) {
    let mut buf = [0u8; 20];
    let mut at = buf.len();
    while v >= 100 {
        let p = (v % 100) as usize * 2;
        v /= 100;
        at -= 2;
        buf[at] = PAIRS[p];
        buf[at + 1] = PAIRS[p + 1];
    }
    if v >= 10 {
        let p = v as usize * 2;
        at -= 2;
        buf[at] = PAIRS[p];
        buf[at + 1] = PAIRS[p + 1];
    } else {
        at -= 1;
        buf[at] = b'0' + v as u8;
    }
    out.extend_from_slice(&buf[at..]);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::signal::{ErrorInfo, ThreadInfo};
    use crate::{CorrelationId, Lazy, Level};
    use std::borrow::Cow;

    fn line(s: &Signal) -> String {
        let mut v = Vec::new();
        write_line(s, &mut v);
        String::from_utf8(v).unwrap_or_default()
    }

    fn serde_line(s: &Signal) -> String {
        let mut v = serde_json::to_string(s).unwrap_or_default();
        v.push('\n');
        v
    }

    #[test]
    fn integers() {
        for v in [
            0u64,
            1,
            9,
            10,
            99,
            100,
            101,
            999,
            1000,
            12345,
            u64::from(u32::MAX),
            u64::MAX,
        ] {
            let mut out = Vec::new();
            write_u64(&mut out, v);
            assert_eq!(out, v.to_string().as_bytes());
        }
    }

    #[test]
    fn strings_are_escaped_like_serde_json() {
        let mut all = String::new();
        for c in 0u8..0x80 {
            all.push(c as char);
        }
        all.push_str("é€😀\u{2028}");
        for s in ["", "plain", "q\"b\\", &all] {
            let mut out = Vec::new();
            write_str(&mut out, s);
            assert_eq!(
                String::from_utf8(out).unwrap_or_default(),
                serde_json::to_string(s).unwrap_or_default()
            );
        }
    }

    #[test]
    fn lines_match_serde_json() {
        let mut sig = Signal::new(Kind::Log, Level::Warn, None, "m::n".into());
        assert_eq!(line(&sig), serde_line(&sig));
        sig.id = Some(Cow::Borrowed("a/b\"c"));
        sig.message = Some("quote \" and\nnewline\t\u{1}".into());
        sig.data = Some(Data::from_serialize(&serde_json::json!({"k": [1, "x\n"]})));
        sig.error = Some(Box::new(ErrorInfo {
            message: "bad \"thing\"".into(),
            sources: vec!["inner".into(), "root\\cause".into()],
        }));
        sig.file = Some("src/f.rs".into());
        sig.line = Some(1234);
        sig.thread = ThreadInfo {
            id: 77,
            name: Some("worker \"7\""),
        };
        sig.correlation = Some(CorrelationId(u64::MAX));
        assert_eq!(line(&sig), serde_line(&sig));
        for kind in [Kind::Event, Kind::Log] {
            for level in Level::ALL {
                sig.kind = kind;
                sig.level = level;
                assert_eq!(line(&sig), serde_line(&sig));
            }
        }
        sig.error = Some(Box::new(ErrorInfo::from_display(&"no sources")));
        sig.data = Some(Data::Value(serde_json::json!([1.5, null, {"a": "b"}])));
        sig.thread.name = None;
        assert_eq!(line(&sig), serde_line(&sig));
        sig.data = Some(Data::Lazy(crate::LazyValue::new(Lazy(7u8).0)));
        assert_eq!(line(&sig), serde_line(&sig));
        let mut bad = std::collections::HashMap::new();
        bad.insert(vec![1u8], 1);
        sig.data = Some(Data::Lazy(crate::LazyValue::new(bad)));
        assert_eq!(line(&sig), serde_line(&sig));
    }
}
