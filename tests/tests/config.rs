//! `Config::load`: defaults < TOML file < environment < flags, and bad
//! values rejected with an error naming the key.

#![allow(clippy::unwrap_used)]

use sente_lite_server::{Config, Server, TelemetryOutput};
use std::path::PathBuf;

/// A TOML file in the temp dir, removed when dropped.
struct TempToml(PathBuf);

impl TempToml {
    fn new(name: &str, text: &str) -> TempToml {
        let path = std::env::temp_dir().join(format!(
            "sente-lite-config-test-{}-{name}.toml",
            std::process::id()
        ));
        std::fs::write(&path, text).unwrap();
        TempToml(path)
    }
}

impl Drop for TempToml {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

fn pairs(v: &[(&str, &str)]) -> Vec<(String, String)> {
    v.iter()
        .map(|(a, b)| ((*a).to_owned(), (*b).to_owned()))
        .collect()
}

/// The error of a load that must fail; its message must name `key`.
#[track_caller]
fn load_err(
    file: Option<&TempToml>,
    env: &[(&str, &str)],
    overrides: &[(&str, &str)],
    key: &str,
) -> String {
    let r = Config::load(file.map(|f| f.0.as_path()), &pairs(env), &pairs(overrides));
    let e = match r {
        Ok(c) => panic!("expected an error naming `{key}`, got {c:?}"),
        Err(e) => e.to_string(),
    };
    assert!(e.contains(key), "error {e:?} does not name `{key}`");
    e
}

#[test]
fn nothing_given_is_the_defaults() {
    let c = Config::load(None, &[], &[]).unwrap();
    assert_eq!(c, Config::default());
    assert_eq!(c.port, 3000);
    assert_eq!(c.host, "localhost");
    assert!(c.channels.auto_create);
    assert_eq!(c.channels.default_config.max_subscribers, 1000);
    assert_eq!(c.websocket.heartbeat_interval_ms, 30_000);
    // Unrelated variables are ignored.
    let c = Config::load(None, &pairs(&[("PATH", "/bin"), ("HOME", "/root")]), &[]).unwrap();
    assert_eq!(c, Config::default());
}

#[test]
fn defaults_then_file_then_env_then_flags() {
    let file = TempToml::new(
        "precedence",
        r#"
port = 4000
host = "0.0.0.0"

[websocket]
max-connections = 50
heartbeat-interval-ms = 1500

[channels.default-config]
max-subscribers = 10
message-retention = 7
"#,
    );
    let env = pairs(&[
        ("PORT", "5000"),
        ("SENTE_LITE_WEBSOCKET_MAX_CONNECTIONS", "60"),
        ("MAX_SUBSCRIBERS", "20"),
        ("APP_NAME", "chat-server"),
        ("AUTO_CREATE_CHANNELS", "false"),
        ("SENTE_LITE_TELEMETRY_OUTPUT", "none"),
    ]);
    let flags = pairs(&[("port", "6000"), ("websocket.heartbeat-interval-ms", "250")]);
    let c = Config::load(Some(&file.0), &env, &flags).unwrap();
    assert_eq!(c.port, 6000, "flag beats env beats file");
    assert_eq!(c.host, "0.0.0.0", "file beats default");
    assert_eq!(
        c.websocket.max_connections, 60,
        "SENTE_LITE_* env beats file"
    );
    assert_eq!(c.websocket.heartbeat_interval_ms, 250, "flag beats file");
    assert_eq!(
        c.channels.default_config.max_subscribers, 20,
        "seed env beats file"
    );
    assert_eq!(c.channels.default_config.message_retention, 7, "file only");
    assert_eq!(c.telemetry.handler_id, "chat-server");
    assert!(!c.channels.auto_create);
    assert_eq!(c.telemetry.output, TelemetryOutput::None);
    // Untouched keys keep their defaults.
    assert_eq!(
        c.websocket.max_message_bytes,
        Config::default().websocket.max_message_bytes
    );

    // Without the flag, env wins over the file; without env, the file.
    let c = Config::load(Some(&file.0), &env, &[]).unwrap();
    assert_eq!(c.port, 5000);
    let c = Config::load(Some(&file.0), &[], &[]).unwrap();
    assert_eq!(c.port, 4000);
    assert_eq!(c.websocket.max_connections, 50);
}

#[test]
fn sente_lite_variables_beat_the_seed_names() {
    let env = pairs(&[
        ("PORT", "5000"),
        ("SENTE_LITE_PORT", "5001"),
        ("MESSAGE_RETENTION", "3"),
        ("SENTE_LITE_CHANNELS_DEFAULT_CONFIG_MESSAGE_RETENTION", "4"),
        ("HOST", "127.0.0.1"),
        ("TELEMETRY_ENABLED", "false"),
    ]);
    let c = Config::load(None, &env, &[]).unwrap();
    assert_eq!(c.port, 5001);
    assert_eq!(c.channels.default_config.message_retention, 4);
    assert_eq!(c.host, "127.0.0.1");
    assert!(!c.telemetry.enabled);
}

#[test]
fn bad_values_are_errors_naming_the_key() {
    load_err(None, &[("PORT", "abc")], &[], "port");
    load_err(None, &[("SENTE_LITE_PORT", "-1")], &[], "port");
    load_err(None, &[], &[("port", "70000")], "port");
    load_err(
        None,
        &[("MAX_SUBSCRIBERS", "many")],
        &[],
        "channels.default-config.max-subscribers",
    );
    load_err(
        None,
        &[("AUTO_CREATE_CHANNELS", "maybe")],
        &[],
        "channels.auto-create",
    );
    load_err(
        None,
        &[],
        &[("websocket.max-connections", "0")],
        "websocket.max-connections",
    );
    load_err(
        None,
        &[("SENTE_LITE_WEBSOCKET_HEARTBEAT_INTERVAL_MS", "0")],
        &[],
        "websocket.heartbeat-interval-ms",
    );
    load_err(None, &[], &[("host", "not-an-ip")], "host");
    load_err(
        None,
        &[],
        &[("telemetry.output", "fancy")],
        "telemetry.output",
    );
    load_err(
        None,
        &[],
        &[("telemetry.min-level", "loud")],
        "telemetry.min-level",
    );
    load_err(None, &[], &[("no-such.key", "1")], "no-such.key");
    load_err(
        None,
        &[],
        &[("websocket.max-message-bytes", "100000000")],
        "websocket.max-outbound-bytes",
    );
}

#[test]
fn bad_files_are_errors_naming_the_key() {
    let f = TempToml::new("unknown-key", "[websocket]\nmax-conections = 5\n");
    load_err(Some(&f), &[], &[], "websocket.max-conections");
    let f = TempToml::new("unknown-top", "prot = 5\n");
    load_err(Some(&f), &[], &[], "prot");
    let f = TempToml::new("wrong-type", "port = \"eighty\"\n");
    load_err(Some(&f), &[], &[], "port");
    let f = TempToml::new("zero", "[websocket]\nmax-connections = 0\n");
    load_err(Some(&f), &[], &[], "websocket.max-connections");
    let f = TempToml::new("not-a-table", "websocket = 3\n");
    load_err(Some(&f), &[], &[], "websocket");
    let f = TempToml::new("syntax", "port = \n");
    let e = load_err(Some(&f), &[], &[], "port");
    assert!(
        e.contains(&f.0.display().to_string()),
        "names the file: {e}"
    );
    // A file that does not exist.
    let missing = std::env::temp_dir().join("sente-lite-no-such-config.toml");
    let e = Config::load(Some(&missing), &[], &[])
        .unwrap_err()
        .to_string();
    assert!(e.contains("sente-lite-no-such-config.toml"), "{e}");
}

#[tokio::test]
async fn start_refuses_an_invalid_config() {
    let mut c = Config {
        port: 0,
        host: "127.0.0.1".into(),
        ..Config::default()
    };
    c.telemetry.output = TelemetryOutput::None;
    c.websocket.max_connections = 0;
    let e = Server::start(c.clone()).await.unwrap_err().to_string();
    assert!(e.contains("websocket.max-connections"), "{e}");
    // Built in code: a value set there is named as such, a default as one.
    assert!(e.contains("(from the Rust API)"), "{e}");
    c.websocket.max_connections = 10;
    c.websocket.max_message_bytes = 100_000_000;
    let e = Server::start(c).await.unwrap_err().to_string();
    assert!(
        e.contains("`websocket.max-outbound-bytes` = \"1048576\" (from default)")
            && e.contains("100000000 (from the Rust API)"),
        "{e}"
    );
}

/// Asserts that the error `e` contains every needle.
#[track_caller]
fn names_all(e: &str, needles: &[&str]) {
    for n in needles {
        assert!(e.contains(n), "error {e:?} lacks {n:?}");
    }
}

#[test]
fn misspelled_sente_lite_variables_are_errors() {
    let e = load_err(
        None,
        &[("SENTE_LITE_WEBSOCKET_MAX_CONECTIONS", "5")],
        &[],
        "`SENTE_LITE_WEBSOCKET_MAX_CONECTIONS`",
    );
    names_all(
        &e,
        &[
            "unknown environment variable",
            "no config key of that name",
            "did you mean `SENTE_LITE_WEBSOCKET_MAX_CONNECTIONS`",
        ],
    );
    // Among correct ones, and with no key near it: no suggestion.
    let e = load_err(
        None,
        &[("SENTE_LITE_PORT", "4000"), ("SENTE_LITE_LOG", "debug")],
        &[],
        "`SENTE_LITE_LOG`",
    );
    assert!(!e.contains("did you mean"), "{e}");
    // Only the SENTE_LITE_ prefix is ours: other variables stay ignored,
    // and the seed's bare names keep working.
    let env = pairs(&[
        ("PATH", "/bin"),
        ("SENTE_LITE", "x"),
        ("MY_SENTE_LITE_PORT", "1"),
        ("PORT", "4001"),
        ("SENTE_LITE_HOST", "127.0.0.1"),
    ]);
    let c = Config::load(None, &env, &[]).unwrap();
    assert_eq!((c.port, c.host.as_str()), (4001, "127.0.0.1"));
}

#[test]
fn type_errors_name_key_value_and_source() {
    let e = load_err(None, &[("PORT", "70000")], &[], "`port`");
    names_all(
        &e,
        &["\"70000\"", "(from environment PORT)", "from 0 to 65535"],
    );
    let e = load_err(None, &[("SENTE_LITE_PORT", "70000")], &[], "`port`");
    names_all(&e, &["(from environment SENTE_LITE_PORT)"]);
    let e = load_err(None, &[], &[("port", "70000")], "`port`");
    names_all(&e, &["\"70000\"", "(from command line)"]);
    let e = load_err(
        None,
        &[(
            "SENTE_LITE_WEBSOCKET_MAX_MESSAGE_BYTES",
            "99999999999999999999",
        )],
        &[],
        "`websocket.max-message-bytes`",
    );
    names_all(
        &e,
        &[
            "99999999999999999999",
            "environment SENTE_LITE_WEBSOCKET_MAX_MESSAGE_BYTES",
        ],
    );
    // The same from a file: out of range, negative.
    for (name, text, key, value) in [
        ("port-range", "port = 70000\n", "`port`", "70000"),
        ("port-negative", "port = -1\n", "`port`", "-1"),
        (
            "buffer-negative",
            "[telemetry]\nbuffer-size = -3\n",
            "`telemetry.buffer-size`",
            "-3",
        ),
    ] {
        let f = TempToml::new(name, text);
        let e = load_err(Some(&f), &[], &[], key);
        names_all(&e, &[value, &f.0.display().to_string()]);
    }
}

#[test]
fn range_errors_name_their_source() {
    let e = load_err(
        None,
        &[("SENTE_LITE_WEBSOCKET_HEARTBEAT_INTERVAL_MS", "0")],
        &[],
        "websocket.heartbeat-interval-ms",
    );
    assert_eq!(
        e,
        "`websocket.heartbeat-interval-ms` = \"0\" (from environment \
         SENTE_LITE_WEBSOCKET_HEARTBEAT_INTERVAL_MS): must be at least 1"
    );
    let e = load_err(
        None,
        &[],
        &[("websocket.heartbeat-interval-ms", "0")],
        "websocket.heartbeat-interval-ms",
    );
    names_all(&e, &["(from command line)"]);
    let f = TempToml::new("range-zero", "[websocket]\nmax-connections = 0\n");
    let e = load_err(Some(&f), &[], &[], "websocket.max-connections");
    names_all(&e, &[&format!("(from {})", f.0.display())]);
    // The final value is what is checked: a later source may fix it.
    let c = Config::load(
        Some(&f.0),
        &pairs(&[("SENTE_LITE_WEBSOCKET_MAX_CONNECTIONS", "5")]),
        &[],
    )
    .unwrap();
    assert_eq!(c.websocket.max_connections, 5);
    // A rule between two keys names both, with their sources.
    let e = load_err(
        None,
        &[],
        &[("websocket.max-message-bytes", "100000000")],
        "`websocket.max-outbound-bytes` = \"1048576\" (from default)",
    );
    names_all(
        &e,
        &["websocket.max-message-bytes", "100000000", "command line"],
    );
    let e = load_err(None, &[("HOST", "not-an-ip")], &[], "`host`");
    names_all(&e, &["(from environment HOST)"]);
}

#[test]
fn zero_limits_that_would_refuse_everything_are_errors() {
    let e = load_err(
        None,
        &[("MAX_SUBSCRIBERS", "0")],
        &[],
        "`channels.default-config.max-subscribers`",
    );
    names_all(&e, &["(from environment MAX_SUBSCRIBERS)", "at least 1"]);
    let e = load_err(
        None,
        &[],
        &[("channels.default-config.rpc-timeout-ms", "0")],
        "`channels.default-config.rpc-timeout-ms`",
    );
    names_all(&e, &["(from command line)", "at least 1"]);
    let f = TempToml::new("rpc-zero", "[channels]\nmax-rpc-timeout-ms = 0\n");
    let e = load_err(Some(&f), &[], &[], "`channels.max-rpc-timeout-ms`");
    names_all(&e, &["at least 1"]);
    let e = load_err(
        None,
        &[],
        &[("telemetry.output", "file"), ("telemetry.file", " ")],
        "`telemetry.file`",
    );
    names_all(&e, &["must not be empty"]);
    // Zeros that mean something stay accepted.
    let c = Config::load(
        None,
        &pairs(&[("PORT", "0"), ("MESSAGE_RETENTION", "0")]),
        &[("websocket.shutdown-drain-ms".into(), "0".into())],
    )
    .unwrap();
    assert_eq!(c.port, 0);
    assert_eq!(c.websocket.shutdown_drain_ms, 0);
}

#[test]
fn telemetry_names_are_parsed_once_into_their_canonical_form() {
    let env = pairs(&[
        ("SENTE_LITE_TELEMETRY_MIN_LEVEL", "WARNING"),
        ("SENTE_LITE_TELEMETRY_OUTPUT", "file"),
        ("SENTE_LITE_TELEMETRY_FORMAT", "json"),
    ]);
    let c = Config::load(None, &env, &[]).unwrap();
    let shown = serde_json::to_value(&c.telemetry).unwrap();
    assert_eq!(shown["min-level"], "warn");
    assert_eq!(shown["output"], "file");
    assert_eq!(shown["format"], "json");
    let f = TempToml::new("level-case", "[telemetry]\nmin-level = \"Debug\"\n");
    let c = Config::load(Some(&f.0), &[], &[]).unwrap();
    assert_eq!(
        serde_json::to_value(&c.telemetry).unwrap()["min-level"],
        "debug"
    );
    // Bad names: key, value, source and the allowed set.
    let e = load_err(
        None,
        &[("SENTE_LITE_TELEMETRY_OUTPUT", "fancy")],
        &[],
        "`telemetry.output`",
    );
    names_all(
        &e,
        &[
            "\"fancy\"",
            "environment SENTE_LITE_TELEMETRY_OUTPUT",
            "console, file or none",
        ],
    );
    let f = TempToml::new("format-bad", "[telemetry]\nformat = \"xml\"\n");
    let e = load_err(Some(&f), &[], &[], "`telemetry.format`");
    names_all(&e, &["\"xml\"", &f.0.display().to_string(), "text or json"]);
    let e = load_err(
        None,
        &[],
        &[("telemetry.min-level", "loud")],
        "`telemetry.min-level`",
    );
    names_all(
        &e,
        &[
            "\"loud\"",
            "command line",
            "trace, debug, info, warn, error, fatal or report",
        ],
    );
}
