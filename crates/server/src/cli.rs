//! The `sente-lite` command line: parse flags, load the configuration, run
//! the server until SIGINT or SIGTERM, stop gracefully.
//!
//! The binary's `main` is [`cli::main`](crate::cli::main). It lives in the
//! library so that other binaries (the end-to-end tests start real server
//! processes with one) run exactly the same program.

use crate::{Config, ConfigError};
use clap::Parser;
use std::path::PathBuf;
use std::process::ExitCode;

/// A real-time WebSocket pub/sub server with embedded telemetry.
///
/// Configuration comes from, in rising priority: defaults, the TOML file of
/// --config, the environment (PORT, HOST, TELEMETRY_ENABLED, APP_NAME,
/// AUTO_CREATE_CHANNELS, MAX_SUBSCRIBERS, MESSAGE_RETENTION, and
/// SENTE_LITE_<KEY> for every key), then these flags. See
/// docs/CONFIGURATION.md for every key.
#[derive(Debug, Parser)]
#[command(name = "sente-lite", version, about, long_about)]
struct Cli {
    /// TOML configuration file.
    #[arg(long, value_name = "PATH")]
    config: Option<PathBuf>,
    /// TCP port (0 picks a free one). Key: port.
    #[arg(long)]
    port: Option<String>,
    /// Address to bind: an IP or localhost. Key: host.
    #[arg(long)]
    host: Option<String>,
    /// Key: websocket.max-connections.
    #[arg(long, value_name = "N")]
    max_connections: Option<String>,
    /// Key: websocket.heartbeat-interval-ms.
    #[arg(long, value_name = "MS")]
    heartbeat_interval_ms: Option<String>,
    /// Key: websocket.message-timeout-ms.
    #[arg(long, value_name = "MS")]
    message_timeout_ms: Option<String>,
    /// Key: websocket.max-message-bytes.
    #[arg(long, value_name = "BYTES")]
    max_message_bytes: Option<String>,
    /// Key: channels.auto-create.
    #[arg(long, value_name = "BOOL")]
    auto_create: Option<String>,
    /// Key: telemetry.min-level.
    #[arg(long, value_name = "LEVEL")]
    log_level: Option<String>,
    /// Set any key: --set channels.default-config.message-retention=10
    #[arg(long = "set", value_name = "KEY=VALUE")]
    set: Vec<String>,
    /// Print every configuration key with its value and exit.
    #[arg(long)]
    print_config: bool,
}

impl Cli {
    fn overrides(&self) -> Result<Vec<(String, String)>, ConfigError> {
        let mut out = Vec::new();
        let named = [
            ("port", &self.port),
            ("host", &self.host),
            ("websocket.max-connections", &self.max_connections),
            (
                "websocket.heartbeat-interval-ms",
                &self.heartbeat_interval_ms,
            ),
            ("websocket.message-timeout-ms", &self.message_timeout_ms),
            ("websocket.max-message-bytes", &self.max_message_bytes),
            ("channels.auto-create", &self.auto_create),
            ("telemetry.min-level", &self.log_level),
        ];
        for (key, v) in named {
            if let Some(v) = v {
                out.push((key.to_owned(), v.clone()));
            }
        }
        for kv in &self.set {
            let Some((k, v)) = kv.split_once('=') else {
                return Err(ConfigError::BadValue {
                    key: kv.clone(),
                    value: String::new(),
                    origin: "command line --set".to_owned(),
                    expected: "KEY=VALUE".to_owned(),
                });
            };
            out.push((k.trim().to_owned(), v.to_owned()));
        }
        Ok(out)
    }
}

/// The whole `sente-lite` binary: parses the flags of the process, loads the
/// configuration (defaults, `--config` file, environment, flags), and either
/// prints it (`--print-config`) or runs the server on a new multi-threaded
/// runtime until SIGINT or SIGTERM, then stops it gracefully.
///
/// Exit codes: 0 after a graceful stop (or `--print-config`), 2 on a
/// configuration error (one line on stderr), 1 when the runtime or the
/// server cannot start. `main.rs` is only a call to this, so other binaries
/// (the end-to-end tests' `sente-lite-node`) run exactly the same program.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let env: Vec<(String, String)> = std::env::vars().collect();
    let config = match cli
        .overrides()
        .and_then(|o| Config::load(cli.config.as_deref(), &env, &o))
    {
        Ok(c) => c,
        Err(e) => {
            eprintln!("sente-lite: configuration error: {e}");
            return ExitCode::from(2);
        }
    };
    if cli.print_config {
        // Secrets shown as "<set>", URL passwords redacted.
        match toml::to_string(&config.redacted()) {
            Ok(s) => print!("{s}"),
            Err(e) => eprintln!("sente-lite: {e}"),
        }
        return ExitCode::SUCCESS;
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("sente-lite: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(crate::run(config, shutdown_signal(), |server| {
        let addr = server.local_addr();
        let node = match server.node_id() {
            Some(id) => format!(
                ", node {id} on {}",
                sente_lite_transport::redact_credentials(&server.config().broker.redis_url)
            ),
            None => String::new(),
        };
        let (ws, http) = if server.config().tls.cert_file.trim().is_empty() {
            ("ws", "http")
        } else {
            ("wss", "https")
        };
        println!(
            "sente-lite listening on {ws}://{addr}/ (HTTP: {http}://{addr}/health, /stats, /channels){node}"
        );
        let _ = std::io::Write::flush(&mut std::io::stdout());
    }));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("sente-lite: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Resolves on SIGINT or SIGTERM.
async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
