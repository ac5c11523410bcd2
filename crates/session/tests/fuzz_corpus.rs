//! The fuzz targets' committed inputs, replayed on stable: every file under
//! `fuzz/corpus/<target>/` (the seeds from docs/PROTOCOL.md and the corpus
//! kept from fuzzing runs) and `fuzz/regressions/<target>/` (every crash
//! found so far, minimized) goes through the same check function as the
//! fuzz target (`sente_lite_session::fuzzing`), so a regression fails CI
//! even where no nightly toolchain is installed to fuzz.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use sente_lite_session::fuzzing;
use std::path::{Path, PathBuf};

/// The fuzz crate's directory at the workspace root.
fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz")
}

/// Every input file of `target`, seeds and regressions.
fn inputs(target: &str) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for kind in ["corpus", "regressions"] {
        let dir = fuzz_dir().join(kind).join(target);
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries {
            let path = entry.unwrap().path();
            if path.is_file() && path.file_name().is_some_and(|n| n != ".gitkeep") {
                files.push(path);
            }
        }
    }
    files.sort();
    files
}

/// Runs `check` on every input of `target`, naming the file that fails.
fn replay(target: &str, check: fn(&[u8])) -> usize {
    let files = inputs(target);
    for path in &files {
        let bytes = std::fs::read(path).unwrap();
        let outcome = std::panic::catch_unwind(|| check(&bytes));
        assert!(
            outcome.is_ok(),
            "{} fails the {target} check (run it alone: `cargo +nightly fuzz run {target} {}`, \
             in fuzz/)",
            path.display(),
            path.display()
        );
    }
    files.len()
}

/// How many seeds `cargo xtask fuzz seed` writes from docs/PROTOCOL.md at
/// least: a replay of fewer means the corpus is missing, not that it passed.
const MIN_SEEDS: usize = 30;

#[test]
fn decode_client_corpus_and_regressions_pass() {
    let n = replay("decode_client", fuzzing::decode_client);
    assert!(n >= MIN_SEEDS, "only {n} decode_client inputs found");
}

#[test]
fn session_corpus_and_regressions_pass() {
    let n = replay("session", fuzzing::session);
    assert!(n >= MIN_SEEDS, "only {n} session inputs found");
}

/// The checks themselves can fail: a sequence the engine handles wrongly
/// would be caught. Here, the properties are shown to hold on a sequence
/// that reaches every limit of the small engine (channels, subscribers,
/// retention, pending requests, the sink's queue, reconnects).
#[test]
fn a_sequence_reaching_every_limit_passes() {
    let mut input = Vec::new();
    let mut frame = |bytes: &[u8]| {
        input.extend_from_slice(bytes);
        input.push(fuzzing::SEPARATOR);
    };
    for c in ["a", "b", "c", "d", "e"] {
        frame(format!(r#"{{"type":"subscribe","channel-id":"{c}"}}"#).as_bytes());
    }
    frame(&[fuzzing::NEXT_CONNECTION]);
    frame(br#"{"type":"subscribe","channel-id":"a"}"#);
    frame(&[fuzzing::NEXT_CONNECTION]);
    frame(br#"{"type":"subscribe","channel-id":"a"}"#);
    for i in 0..5 {
        frame(format!(r#"{{"type":"publish","channel-id":"a","data":{i}}}"#).as_bytes());
        frame(format!(r#"{{"type":"rpc-request","channel-id":"a","data":{i}}}"#).as_bytes());
    }
    frame(&[fuzzing::NEXT_CONNECTION]);
    frame(br#"{"type":"rpc-response","request-id":"$REQ","data":1}"#);
    frame(&[fuzzing::EXPIRE_RPC]);
    frame(&[fuzzing::BINARY]);
    for _ in 0..40 {
        frame(br#"{"type":"ping"}"#);
    }
    frame(&[fuzzing::RECONNECT]);
    frame(br#"{"type":"list-channels"}"#);
    frame(&[fuzzing::DRAIN]);
    frame(br#"{"type":"get-subscriptions"}"#);
    fuzzing::session(&input);
}

/// The decoder check on an accepted frame (re-encoded and decoded again)
/// and on a refused one (invalid UTF-8, cut off).
#[test]
fn the_decoder_check_passes_valid_and_garbage_frames() {
    fuzzing::decode_client(br#"{"type":"publish","channel-id":"c","data":{"b":1.10}}"#);
    fuzzing::decode_client(b"\xff{\"type\":");
}
