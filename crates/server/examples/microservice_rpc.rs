//! Microservice RPC (the seed's "Microservice Communication"): a user
//! service worker subscribes to `user-service` and answers `rpc-request`s;
//! an API gateway sends requests and receives the answers as
//! `rpc-response`, correlated by `request-id`. A request nobody answers ends
//! with an `rpc-timeout` error frame.
//!
//! Run it: `cargo run -p sente-lite-server --example microservice_rpc`.

mod common;

use common::{example_config, Client, Result};
use sente_lite_server::Server;
use serde_json::{json, Value};
use std::collections::BTreeMap;

/// What the gateway got back.
#[derive(Debug, Default)]
pub struct Outcome {
    /// user id → (error flag, data) of the worker's answer.
    pub profiles: BTreeMap<u64, (bool, Value)>,
    /// The error frame of the request to a service that never answers.
    pub timeout: Value,
    /// Requests the worker handled.
    pub handled: usize,
}

/// The user service: answers `get-profile` requests until told to stop.
/// Requests and the results of its answers interleave, so it handles every
/// frame as it comes.
async fn user_service(mut worker: Client) -> Result<usize> {
    let mut handled = 0;
    let mut stopping = false;
    loop {
        let frame = worker.recv().await?;
        match frame["type"].as_str() {
            Some("rpc-request") => {
                let data = &frame["data"];
                stopping |= data["action"] == "shutdown";
                let (error, answer) = match data["params"]["user-id"].as_u64() {
                    _ if stopping => (false, json!({"stopping": true})),
                    Some(1) => (false, json!({"id": 1, "name": "Alice", "theme": "dark"})),
                    Some(2) => (false, json!({"id": 2, "name": "Bob", "theme": "light"})),
                    other => (
                        true,
                        json!({"message": format!("no user {}", other.unwrap_or(0))}),
                    ),
                };
                worker
                    .send(json!({
                        "type": "rpc-response",
                        "request-id": frame["request-id"],
                        "data": answer,
                        "error": error,
                    }))
                    .await?;
            }
            Some("rpc-response-result") => {
                if frame["success"] != true {
                    return Err(format!("answer refused: {frame}").into());
                }
                if stopping {
                    worker.close().await?;
                    return Ok(handled);
                }
                handled += 1;
            }
            _ => {}
        }
    }
}

/// The gateway: sends requests and collects the answers, which may arrive
/// before the result of a later request.
struct Gateway {
    client: Client,
    /// `rpc-response` and `error` frames not yet claimed.
    answers: Vec<Value>,
}

impl Gateway {
    /// Sends one request and returns its `request-id`.
    async fn request(&mut self, channel: &str, data: Value, timeout_ms: u64) -> Result<String> {
        self.client
            .send(
                json!({"type": "rpc-request", "channel-id": channel, "data": data,
                         "timeout-ms": timeout_ms}),
            )
            .await?;
        loop {
            let frame = self.client.recv().await?;
            match frame["type"].as_str() {
                Some("rpc-request-result") => {
                    if frame["delivery"]["success"] != true {
                        return Err(format!("request not delivered: {frame}").into());
                    }
                    return Ok(frame["request-id"].as_str().unwrap_or_default().to_owned());
                }
                Some("rpc-response" | "error") => self.answers.push(frame),
                _ => {}
            }
        }
    }

    /// The answer (`rpc-response`, or the `rpc-timeout` error) to `id`.
    async fn answer(&mut self, id: &str) -> Result<Value> {
        loop {
            if let Some(i) = self.answers.iter().position(|a| a["request-id"] == id) {
                return Ok(self.answers.remove(i));
            }
            let frame = self.client.recv().await?;
            if matches!(frame["type"].as_str(), Some("rpc-response" | "error")) {
                self.answers.push(frame);
            }
        }
    }
}

/// The whole scenario against a running server.
pub async fn run(server: &Server) -> Result<Outcome> {
    let addr = server.local_addr();
    let mut worker = Client::connect(addr).await?;
    worker.subscribe("user-service").await?;
    let service = tokio::spawn(user_service(worker));

    // A service that is subscribed but never answers.
    let mut sleepy = Client::connect(addr).await?;
    sleepy.subscribe("report-service").await?;

    let mut gateway = Gateway {
        client: Client::connect(addr).await?,
        answers: Vec::new(),
    };
    // Three requests in flight at once, answered in any order.
    let mut ids = Vec::new();
    for user_id in [1u64, 2, 99] {
        let data = json!({"action": "get-profile", "params": {"user-id": user_id}});
        ids.push((user_id, gateway.request("user-service", data, 5_000).await?));
    }
    let mut outcome = Outcome::default();
    for (user_id, id) in ids {
        let response = gateway.answer(&id).await?;
        let error = response["error"].as_bool().unwrap_or(false);
        outcome
            .profiles
            .insert(user_id, (error, response["data"].clone()));
    }

    let id = gateway
        .request("report-service", json!({"report": "monthly"}), 200)
        .await?;
    outcome.timeout = gateway.answer(&id).await?;

    let id = gateway
        .request("user-service", json!({"action": "shutdown"}), 1_000)
        .await?;
    gateway.answer(&id).await?;
    outcome.handled = service.await??;
    gateway.client.close().await?;
    sleepy.close().await?;
    Ok(outcome)
}

#[tokio::main]
async fn main() -> Result<()> {
    let server = Server::start(example_config()).await?;
    println!("server on ws://{}/", server.local_addr());
    let outcome = run(&server).await?;
    for (user, (error, data)) in &outcome.profiles {
        println!("user {user}: error={error} {data}");
    }
    println!("unanswered request: {}", outcome.timeout);
    println!("the user service handled {} requests", outcome.handled);
    server.stop().await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn microservice_rpc_runs() -> Result<()> {
        let server = Server::start(example_config()).await?;
        let o = run(&server).await?;
        assert_eq!(o.profiles.len(), 3);
        assert_eq!(
            o.profiles[&1],
            (false, json!({"id": 1, "name": "Alice", "theme": "dark"}))
        );
        assert_eq!(o.profiles[&2].1["name"], "Bob");
        assert_eq!(o.profiles[&99], (true, json!({"message": "no user 99"})));
        assert_eq!(o.timeout["reason"], "rpc-timeout");
        assert_eq!(o.handled, 3);
        assert_eq!(server.channels().pending_rpc_requests(), 0);
        server.stop().await;
        Ok(())
    }
}
