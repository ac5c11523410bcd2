//! A chat room (the seed's "Complete Example Application"): a server with
//! predefined channels and retention, two users chatting, a late joiner
//! catching up from the retained history, and a server announcement.
//!
//! Run it: `cargo run -p sente-lite-server --example chat_room`. It starts
//! its own server on a free port, runs the clients in the same process,
//! prints the conversation and exits.

mod common;

use common::{example_config, Client, Result};
use sente_lite_protocol::ChannelConfig;
use sente_lite_server::Server;
use serde_json::{json, Map, Value};

/// What each user saw.
#[derive(Debug, Default)]
pub struct Transcript {
    /// Chat lines alice received live, as "user: message".
    pub alice: Vec<String>,
    /// The history carol got when she joined.
    pub carol_history: Vec<String>,
    /// Chat lines carol received live after joining.
    pub carol: Vec<String>,
    /// The server announcement as each of them got it.
    pub announcements: Vec<Value>,
}

fn line(message: &Value) -> String {
    let data = &message["data"];
    format!(
        "{}: {}",
        data["user"].as_str().unwrap_or("?"),
        data["message"].as_str().unwrap_or("")
    )
}

/// Sends a chat message and waits for its `publish-result` (skipping
/// anything that arrives before it). Excludes the sender: a chat client
/// shows its own line itself.
async fn say(client: &mut Client, user: &str, message: &str) -> Result<()> {
    client
        .send(json!({
            "type": "publish",
            "channel-id": "general",
            "data": {"user": user, "message": message, "timestamp": sente_lite_protocol::now_ms()},
            "exclude-sender": true,
        }))
        .await?;
    client.recv_type("publish-result").await?;
    Ok(())
}

/// The whole scenario against a running server.
pub async fn run(server: &Server) -> Result<Transcript> {
    // Predefined channels with their own settings (the others use the
    // config's default: 50 subscribers, 20 retained messages).
    let channels = server.channels();
    channels
        .create_channel(
            "general",
            Some(ChannelConfig {
                max_subscribers: 100,
                message_retention: 50,
                ..ChannelConfig::default()
            }),
        )
        .await?;
    channels
        .create_channel(
            "announcements",
            Some(ChannelConfig {
                max_subscribers: 1000,
                message_retention: 10,
                ..ChannelConfig::default()
            }),
        )
        .await?;

    let addr = server.local_addr();
    let mut alice = Client::connect(addr).await?;
    let mut bob = Client::connect(addr).await?;
    alice.subscribe("general").await?;
    alice.subscribe("announcements").await?;
    bob.subscribe("general").await?;

    let mut transcript = Transcript::default();
    say(&mut alice, "alice", "Hello everyone!").await?;
    say(&mut bob, "bob", "Hi alice!").await?;
    // alice excluded herself: she receives only bob's line.
    transcript
        .alice
        .push(line(&alice.recv_type("channel-message").await?));
    say(&mut alice, "alice", "Is anyone else here?").await?;

    // carol joins late and catches up from the retained history.
    let mut carol = Client::connect(addr).await?;
    let history = carol.subscribe("general").await?;
    transcript.carol_history = history.iter().map(line).collect();
    carol.subscribe("announcements").await?;
    say(&mut bob, "bob", "Welcome carol").await?;
    transcript
        .carol
        .push(line(&carol.recv_type("channel-message").await?));
    transcript
        .alice
        .push(line(&alice.recv_type("channel-message").await?));

    // A server announcement to one channel.
    let mut announcement = Map::new();
    announcement.insert("type".into(), json!("system-message"));
    announcement.insert("message".into(), json!("Chat server is running smoothly"));
    server
        .broadcast_to_channel("announcements", announcement)
        .await?;
    transcript
        .announcements
        .push(alice.recv_type("system-message").await?);
    transcript
        .announcements
        .push(carol.recv_type("system-message").await?);

    for c in [alice, bob, carol] {
        c.close().await?;
    }
    Ok(transcript)
}

#[tokio::main]
async fn main() -> Result<()> {
    let mut config = example_config();
    config.channels.default_config.max_subscribers = 50;
    config.channels.default_config.message_retention = 20;
    let server = Server::start(config).await?;
    println!("chat server on ws://{}/", server.local_addr());
    let t = run(&server).await?;
    println!("alice saw: {:?}", t.alice);
    println!("carol caught up on: {:?}", t.carol_history);
    println!("carol saw: {:?}", t.carol);
    for a in &t.announcements {
        println!("announcement: {a}");
    }
    server.stop().await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn chat_room_runs() -> Result<()> {
        let server = Server::start(example_config()).await?;
        let t = run(&server).await?;
        assert_eq!(t.alice, ["bob: Hi alice!", "bob: Welcome carol"]);
        assert_eq!(
            t.carol_history,
            [
                "alice: Hello everyone!",
                "bob: Hi alice!",
                "alice: Is anyone else here?"
            ]
        );
        assert_eq!(t.carol, ["bob: Welcome carol"]);
        assert_eq!(t.announcements.len(), 2);
        for a in &t.announcements {
            assert_eq!(a["message"], "Chat server is running smoothly");
            assert_eq!(a["channel-id"], "announcements");
            assert!(a["broadcast-time"].is_i64());
        }
        server.stop().await;
        Ok(())
    }
}
