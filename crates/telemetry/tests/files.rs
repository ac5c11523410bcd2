//! The JSON-lines file handler.
#![allow(clippy::unwrap_used)] // test helpers

use std::path::PathBuf;
use std::time::Duration;

use telemere_lite::{event, info, FileOptions, HandlerOptions, Mode, Telemetry};

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("telemere-test-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[test]
fn writes_one_json_object_per_line() {
    let dir = temp_dir("lines");
    let path = dir.join("app.log");
    let tel = Telemetry::new();
    tel.add_file_handler("file", &path).unwrap();
    for i in 0..100u32 {
        event!(tel: &tel, "app/n", serde_json::json!({"i": i}));
    }
    info!(tel: &tel, "quote \" and\nnewline");
    tel.flush(Duration::from_secs(10)).unwrap();
    let text = std::fs::read_to_string(&path).unwrap();
    let lines: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 101);
    assert_eq!(lines[42]["data"]["i"], 42);
    assert_eq!(lines[42]["id"], "app/n");
    assert_eq!(lines[100]["msg"], "quote \" and\nnewline");
    tel.shutdown(Duration::from_secs(10)).unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn rotates_by_size() {
    let dir = temp_dir("rotate");
    let path = dir.join("app.log");
    let tel = Telemetry::new();
    tel.add_file_handler_with(
        "file",
        &path,
        FileOptions::rotate(2_000, 2),
        HandlerOptions::async_().mode(Mode::Blocking),
    )
    .unwrap();
    for i in 0..200u32 {
        event!(tel: &tel, "app/n", i);
    }
    tel.shutdown(Duration::from_secs(10)).unwrap();
    let mut total = 0;
    for p in [path.clone(), dir.join("app.log.1"), dir.join("app.log.2")] {
        let len = std::fs::metadata(&p).unwrap().len();
        assert!(len <= 2_000, "{p:?} is {len} bytes");
        total += std::fs::read_to_string(&p).unwrap().lines().count();
    }
    assert!(!dir.join("app.log.3").exists());
    assert!(total < 200, "older files beyond `keep` are deleted");
    let last = std::fs::read_to_string(&path).unwrap();
    let last_line: serde_json::Value = serde_json::from_str(last.lines().last().unwrap()).unwrap();
    assert_eq!(last_line["data"], 199);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn unopenable_file_is_a_typed_error() {
    let tel = Telemetry::new();
    let e = tel
        .add_file_handler("f", "/nonexistent-dir-telemere/x/app.log")
        .unwrap_err();
    assert!(matches!(e, telemere_lite::TelemetryError::OpenFile { .. }));
}
