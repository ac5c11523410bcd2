//! The `sente-lite` binary: flags, configuration errors (exit code 2), the
//! startup line, serving, and a clean exit on SIGTERM.

#![allow(clippy::unwrap_used)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_sente-lite");

/// The binary with a clean environment (no seed or SENTE_LITE_* variables
/// inherited from whoever runs the tests), quiet telemetry.
fn command() -> Command {
    let mut c = Command::new(BIN);
    for (name, _) in std::env::vars() {
        if name.starts_with("SENTE_LITE_") {
            c.env_remove(name);
        }
    }
    for name in sente_lite_server::SEED_ENV.map(|(n, _)| n) {
        c.env_remove(name);
    }
    c.env("SENTE_LITE_TELEMETRY_OUTPUT", "none");
    c
}

/// Runs to completion (bounded: these invocations never serve).
fn run(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut c = command();
    c.args(args);
    for (k, v) in env {
        c.env(k, v);
    }
    let child = c
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_output(child, Duration::from_secs(10))
}

fn wait_output(mut child: Child, limit: Duration) -> Output {
    let deadline = Instant::now() + limit;
    loop {
        if child.try_wait().unwrap().is_some() {
            return child.wait_with_output().unwrap();
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let out = child.wait_with_output().unwrap();
            panic!(
                "sente-lite did not exit within {limit:?}; stdout {:?} stderr {:?}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[test]
fn help_and_version() {
    let out = run(&["--help"], &[]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let help = text(&out.stdout);
    for needle in ["Usage", "--port", "--config", "--host", "--set"] {
        assert!(help.contains(needle), "--help lacks {needle}: {help}");
    }
    let out = run(&["--version"], &[]);
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(
        text(&out.stdout).trim(),
        format!("sente-lite {}", env!("CARGO_PKG_VERSION"))
    );
}

#[test]
fn bad_configuration_exits_2_naming_the_key() {
    // (flags, environment, what stderr must contain: the key, the value,
    // the source)
    type Case = (
        &'static [&'static str],
        &'static [(&'static str, &'static str)],
        &'static [&'static str],
    );
    let cases: [Case; 9] = [
        (
            &["--port", "abc"],
            &[],
            &["`port`", "\"abc\"", "command line"],
        ),
        (&[], &[("PORT", "abc")], &["`port`", "environment PORT"]),
        (
            &[],
            &[("PORT", "70000")],
            &["`port`", "\"70000\"", "(from environment PORT)", "65535"],
        ),
        (
            &[],
            &[("MAX_SUBSCRIBERS", "-5")],
            &[
                "channels.default-config.max-subscribers",
                "\"-5\"",
                "environment MAX_SUBSCRIBERS",
            ],
        ),
        (
            &["--max-connections", "0"],
            &[],
            &["websocket.max-connections", "\"0\"", "(from command line)"],
        ),
        (
            &["--set", "websocket.max-connections=0"],
            &[],
            &["websocket.max-connections", "(from command line)"],
        ),
        (
            &[],
            &[("SENTE_LITE_WEBSOCKET_HEARTBEAT_INTERVAL_MS", "0")],
            &[
                "websocket.heartbeat-interval-ms",
                "(from environment SENTE_LITE_WEBSOCKET_HEARTBEAT_INTERVAL_MS)",
            ],
        ),
        (
            &["--set", "no.such-key=1"],
            &[],
            &["no.such-key", "command line"],
        ),
        (
            &[],
            &[("SENTE_LITE_WEBSOCKET_MAX_CONECTIONS", "5")],
            &[
                "unknown environment variable `SENTE_LITE_WEBSOCKET_MAX_CONECTIONS`",
                "SENTE_LITE_WEBSOCKET_MAX_CONNECTIONS",
            ],
        ),
    ];
    for (args, env, needles) in cases {
        let out = run(args, env);
        let stderr = text(&out.stderr);
        assert_eq!(
            out.status.code(),
            Some(2),
            "{args:?} {env:?}: stderr {stderr}"
        );
        for needle in needles {
            assert!(
                stderr.contains(needle),
                "{args:?} {env:?}: stderr {stderr:?} lacks {needle}"
            );
        }
        assert!(out.stdout.is_empty(), "{args:?}: {}", text(&out.stdout));
    }
    // An unknown key in the config file.
    let path = std::env::temp_dir().join(format!("sente-lite-binary-{}.toml", std::process::id()));
    std::fs::write(&path, "[websocket]\nmax-conections = 5\n").unwrap();
    let out = run(&["--config", path.to_str().unwrap()], &[]);
    let _ = std::fs::remove_file(&path);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("websocket.max-conections"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn print_config_shows_the_merged_configuration() {
    let out = run(
        &["--print-config", "--port", "4321"],
        &[("MAX_SUBSCRIBERS", "7")],
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let printed = text(&out.stdout);
    assert!(printed.contains("port = 4321"), "{printed}");
    assert!(printed.contains("max-subscribers = 7"), "{printed}");
}

#[test]
fn print_config_never_shows_a_secret() {
    let token = "admin-token-for-print-config";
    let out = run(
        &["--print-config"],
        &[
            ("SENTE_LITE_HTTP_ADMIN_TOKEN", token),
            (
                "SENTE_LITE_BROKER_REDIS_URL",
                "redis://app:hunter2@db:6379/0",
            ),
        ],
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let printed = text(&out.stdout);
    assert!(printed.contains("admin-token = \"<set>\""), "{printed}");
    assert!(
        printed.contains("redis-url = \"redis://app:<redacted>@db:6379/0\""),
        "{printed}"
    );
    assert!(
        !printed.contains(token) && !printed.contains("hunter2"),
        "{printed}"
    );
    // Unset, it reads as unset.
    let out = run(&["--print-config"], &[]);
    assert!(
        text(&out.stdout).contains("admin-token = \"\""),
        "{}",
        text(&out.stdout)
    );
}

/// GET over std, blocking, with a timeout.
fn http_get(addr: SocketAddr, path: &str) -> (u16, serde_json::Value) {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut raw = String::new();
    s.read_to_string(&mut raw).unwrap();
    let (head, body) = raw.split_once("\r\n\r\n").unwrap();
    let status = head.split(' ').nth(1).unwrap().parse().unwrap();
    (status, serde_json::from_str(body).unwrap())
}

#[test]
fn serves_on_port_0_and_exits_0_on_sigterm() {
    let mut child = command()
        .args(["--port", "0", "--host", "127.0.0.1"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let first = match rx.recv_timeout(Duration::from_secs(10)) {
        Ok(l) => l,
        Err(e) => {
            let _ = child.kill();
            let out = child.wait_with_output().unwrap();
            panic!("no startup line ({e}); stderr {}", text(&out.stderr));
        }
    };
    // "sente-lite listening on ws://127.0.0.1:PORT/ (...)"
    let addr: SocketAddr = first
        .split("ws://")
        .nth(1)
        .and_then(|rest| rest.split('/').next())
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(|| panic!("no address in the startup line {first:?}"));
    assert_eq!(addr.ip().to_string(), "127.0.0.1");
    assert_ne!(addr.port(), 0, "{first}");

    let (status, health) = http_get(addr, "/health");
    assert_eq!(status, 200, "{health}");
    assert_eq!(health["status"], "healthy");
    let (_, stats) = http_get(addr, "/stats");
    assert_eq!(stats["server-config"]["port"], addr.port());

    let killed = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let out = wait_output(child, Duration::from_secs(10));
    assert_eq!(
        out.status.code(),
        Some(0),
        "exit after SIGTERM; stderr {}",
        text(&out.stderr)
    );
    reader.join().unwrap();
    let rest: Vec<String> = rx.try_iter().collect();
    assert!(rest.is_empty(), "one startup line only; then {rest:?}");
    assert!(TcpStream::connect_timeout(&addr, Duration::from_secs(1)).is_err());
}
