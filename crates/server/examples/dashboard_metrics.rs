//! Live dashboard (the seed's "Live Dashboard Updates"): the server
//! broadcasts a `metrics-update` to the `dashboard-metrics` channel
//! periodically, from its own statistics; a dashboard client subscribes and
//! renders a few updates.
//!
//! Run it: `cargo run -p sente-lite-server --example dashboard_metrics`.

mod common;

use common::{example_config, Client, Result};
use sente_lite_server::{Engine, Server};
use serde_json::{json, Map, Value};
use std::time::Duration;

/// The metrics one update carries, from the engine's own counts.
fn collect_metrics(engine: &Engine) -> Map<String, Value> {
    let health = engine.health();
    let mut update = Map::new();
    update.insert("type".into(), json!("metrics-update"));
    update.insert(
        "data".into(),
        json!({
            "connections": engine.connection_count(),
            "channels": health.total_channels,
            "subscriptions": health.total_subscriptions,
            "pending-rpc-requests": health.pending_rpc_requests,
        }),
    );
    update.insert("timestamp".into(), json!(sente_lite_protocol::now_ms()));
    update
}

/// Broadcasts metrics to `dashboard-metrics` every `every` until the
/// returned handle is aborted.
fn start_broadcasting(server: &Server, every: Duration) -> tokio::task::JoinHandle<()> {
    let engine = server.channels().clone();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        loop {
            tick.tick().await;
            let _ = engine
                .broadcast_to_channel("dashboard-metrics", collect_metrics(&engine))
                .await;
        }
    })
}

/// The whole scenario: returns the updates the dashboard received.
pub async fn run(server: &Server, updates: usize) -> Result<Vec<Value>> {
    server
        .channels()
        .create_channel("dashboard-metrics", None)
        .await?;
    let broadcaster = start_broadcasting(server, Duration::from_millis(50));

    let mut dashboard = Client::connect(server.local_addr()).await?;
    dashboard.subscribe("dashboard-metrics").await?;
    // Some other activity for the metrics to show.
    let mut other = Client::connect(server.local_addr()).await?;
    other.subscribe("orders").await?;

    let mut received = Vec::new();
    while received.len() < updates {
        received.push(dashboard.recv_type("metrics-update").await?);
    }
    broadcaster.abort();
    dashboard.close().await?;
    other.close().await?;
    Ok(received)
}

#[tokio::main]
async fn main() -> Result<()> {
    let server = Server::start(example_config()).await?;
    println!("server on ws://{}/", server.local_addr());
    for update in run(&server, 3).await? {
        println!(
            "dashboard: {} at {}",
            update["data"], update["broadcast-time"]
        );
    }
    server.stop().await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn dashboard_receives_metrics_updates() -> Result<()> {
        let server = Server::start(example_config()).await?;
        let updates = run(&server, 3).await?;
        assert_eq!(updates.len(), 3);
        let mut last_time = 0;
        for u in &updates {
            assert_eq!(u["type"], "metrics-update");
            assert_eq!(u["channel-id"], "dashboard-metrics");
            let t = u["broadcast-time"].as_i64().unwrap_or_default();
            assert!(t >= last_time, "updates in order");
            last_time = t;
            let connections = u["data"]["connections"].as_u64().unwrap_or_default();
            assert!(connections >= 1, "{u}");
            assert!(u["data"]["subscriptions"].as_u64().unwrap_or_default() >= 1);
        }
        server.stop().await;
        Ok(())
    }
}
