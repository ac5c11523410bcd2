//! A minimal WebSocket client for the examples: JSON in, JSON out, with a
//! timeout on every receive so an example never hangs.

#![allow(dead_code)] // each example uses part of it

use futures::{SinkExt, StreamExt};
use sente_lite_server::Config;
use serde_json::{json, Value};
use std::error::Error;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

pub type BoxError = Box<dyn Error + Send + Sync>;
pub type Result<T> = std::result::Result<T, BoxError>;

/// How long an example waits for any one frame.
pub const RECV_TIMEOUT: Duration = Duration::from_secs(5);

/// A server configuration for an example: a free port on 127.0.0.1, and
/// telemetry counted but not printed (set `output` to "console" to watch
/// the server's signals on stderr).
pub fn example_config() -> Config {
    let mut config = Config {
        port: 0,
        host: "127.0.0.1".into(),
        ..Config::default()
    };
    config.telemetry.output = sente_lite_server::TelemetryOutput::None;
    config
}

/// One client connection.
pub struct Client {
    ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
    /// The id the server gave this connection (its `welcome`).
    pub conn_id: String,
}

impl Client {
    /// Connects and reads the `welcome` frame.
    pub async fn connect(addr: SocketAddr) -> Result<Client> {
        let (ws, _) = tokio_tungstenite::connect_async(format!("ws://{addr}/")).await?;
        let mut client = Client {
            ws,
            conn_id: String::new(),
        };
        let welcome = client.recv_type("welcome").await?;
        client.conn_id = welcome["conn-id"].as_str().unwrap_or_default().to_owned();
        Ok(client)
    }

    pub async fn send(&mut self, frame: Value) -> Result<()> {
        self.ws.send(Message::text(frame.to_string())).await?;
        Ok(())
    }

    /// The next JSON frame (pings are answered while waiting).
    pub async fn recv(&mut self) -> Result<Value> {
        loop {
            let msg = tokio::time::timeout(RECV_TIMEOUT, self.ws.next())
                .await
                .map_err(|_| "timed out waiting for a frame")?;
            match msg {
                Some(Ok(Message::Text(text))) => return Ok(serde_json::from_str(text.as_str())?),
                Some(Ok(Message::Close(frame))) => {
                    return Err(format!("connection closed: {frame:?}").into())
                }
                Some(Ok(_)) => {} // ping/pong
                Some(Err(e)) => return Err(e.into()),
                None => return Err("connection ended".into()),
            }
        }
    }

    /// Reads until a frame of type `ty` and returns it; other frames are
    /// skipped.
    pub async fn recv_type(&mut self, ty: &str) -> Result<Value> {
        loop {
            let frame = self.recv().await?;
            if frame["type"] == ty {
                return Ok(frame);
            }
        }
    }

    /// Subscribes and waits for the result; returns its retained messages.
    pub async fn subscribe(&mut self, channel: &str) -> Result<Vec<Value>> {
        self.send(json!({"type": "subscribe", "channel-id": channel}))
            .await?;
        let result = self.recv_type("subscription-result").await?;
        if result["success"] != true {
            return Err(format!("subscribe to {channel} failed: {result}").into());
        }
        Ok(result["retained-messages"]
            .as_array()
            .cloned()
            .unwrap_or_default())
    }

    /// Closes the connection cleanly.
    pub async fn close(mut self) -> Result<()> {
        self.ws.close(None).await?;
        while let Ok(Some(Ok(_))) = tokio::time::timeout(RECV_TIMEOUT, self.ws.next()).await {}
        Ok(())
    }
}
