//! Event-driven fan-out (the seed's "Event-Driven Architecture"): events
//! of each type go to an `events-<type>` channel; each consumer subscribes
//! to the types it cares about and receives exactly those, in order. Events
//! come from a service over WebSocket and from the server itself (Rust API,
//! `sender-conn-id` null).
//!
//! Run it: `cargo run -p sente-lite-server --example event_fanout`.

mod common;

use common::{example_config, Client, Result};
use sente_lite_server::Server;
use serde_json::json;
use std::collections::BTreeMap;

const TYPES: [&str; 3] = ["user-registered", "order-placed", "payment-failed"];

/// Which consumer wants which event types.
const CONSUMERS: [(&str, &[&str]); 3] = [
    ("email-service", &["user-registered", "order-placed"]),
    (
        "audit-log",
        &["user-registered", "order-placed", "payment-failed"],
    ),
    ("fraud-detection", &["payment-failed"]),
];

fn channel(event_type: &str) -> String {
    format!("events-{event_type}")
}

/// A consumer: collects events until it has seen the `end` marker on every
/// channel it subscribed to. Returns "type#n" for each event, in arrival
/// order.
async fn consume(mut client: Client, types: &[&str]) -> Result<Vec<String>> {
    let mut open = types.len();
    let mut seen = Vec::new();
    while open > 0 {
        let message = client.recv_type("channel-message").await?;
        let data = &message["data"];
        if data["end"] == true {
            open -= 1;
            continue;
        }
        seen.push(format!(
            "{}#{}",
            data["event-type"].as_str().unwrap_or("?"),
            data["n"]
        ));
    }
    client.close().await?;
    Ok(seen)
}

/// The whole scenario; returns what each consumer received.
pub async fn run(server: &Server) -> Result<BTreeMap<String, Vec<String>>> {
    let addr = server.local_addr();
    let mut consumers = Vec::new();
    for (name, types) in CONSUMERS {
        let mut client = Client::connect(addr).await?;
        for t in types {
            client.subscribe(&channel(t)).await?;
        }
        consumers.push((name, tokio::spawn(consume(client, types))));
    }

    // An event-publishing service over WebSocket. It is not subscribed,
    // so the next frame after each publish is its result.
    let mut service = Client::connect(addr).await?;
    let mut n = 0u64;
    for round in 0..2 {
        for t in TYPES {
            n += 1;
            service
                .send(json!({"type": "publish", "channel-id": channel(t),
                             "data": {"event-type": t, "n": n, "round": round}}))
                .await?;
            let result = service.recv_type("publish-result").await?;
            if result["success"] != true {
                return Err(format!("publish failed: {result}").into());
            }
        }
    }
    // The server publishes events itself too.
    n += 1;
    server
        .channels()
        .publish(
            None,
            &channel("user-registered"),
            json!({"event-type": "user-registered", "n": n, "email": "user@example.com"}),
            false,
        )
        .await?;
    for t in TYPES {
        server
            .channels()
            .publish(None, &channel(t), json!({"end": true}), false)
            .await?;
    }

    let mut received = BTreeMap::new();
    for (name, handle) in consumers {
        received.insert(name.to_owned(), handle.await??);
    }
    service.close().await?;
    Ok(received)
}

#[tokio::main]
async fn main() -> Result<()> {
    let server = Server::start(example_config()).await?;
    println!("server on ws://{}/", server.local_addr());
    for (consumer, events) in run(&server).await? {
        println!("{consumer}: {events:?}");
    }
    server.stop().await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn each_consumer_gets_exactly_its_event_types_in_order() -> Result<()> {
        let server = Server::start(example_config()).await?;
        let got = run(&server).await?;
        let strings = |v: &[&str]| v.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
        assert_eq!(
            got["email-service"],
            strings(&[
                "user-registered#1",
                "order-placed#2",
                "user-registered#4",
                "order-placed#5",
                "user-registered#7",
            ])
        );
        assert_eq!(
            got["fraud-detection"],
            strings(&["payment-failed#3", "payment-failed#6"])
        );
        let audit: &Vec<String> = &got["audit-log"];
        let expected: Vec<String> = (1..=7)
            .map(|n| format!("{}#{n}", if n == 7 { TYPES[0] } else { TYPES[(n - 1) % 3] }))
            .collect();
        assert_eq!(audit, &expected);
        server.stop().await;
        Ok(())
    }
}
