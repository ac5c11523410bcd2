//! The sente-lite side of the tool, end to end over real sockets, against a
//! small in-test server that speaks the sente-lite protocol through the
//! `sente-lite-protocol` types (welcome, subscribe, publish with fan-out,
//! rpc-request routed to a subscribed worker and its rpc-response routed
//! back). The real server is tested the same way with `compare` once it
//! runs; this keeps the adapter honest meanwhile.

use futures::{SinkExt, StreamExt};
use sente_lite_protocol::{
    decode_client, ChannelMessage, ClientMessage, Delivery, RpcRequestDelivery, ServerMessage,
};
use serde_json::Value;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;

type Tx = mpsc::Sender<String>;

#[derive(Default)]
struct State {
    channels: HashMap<String, Vec<(String, Tx)>>,
    conns: HashMap<String, Tx>,
    rpc: HashMap<String, String>,
}

struct Mock {
    state: Mutex<State>,
    next: AtomicU64,
}

impl Mock {
    fn id(&self, prefix: &str) -> String {
        format!("{prefix}-{}", self.next.fetch_add(1, Ordering::Relaxed))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

async fn serve(listener: TcpListener, mock: Arc<Mock>) {
    while let Ok((stream, _)) = listener.accept().await {
        let mock = mock.clone();
        tokio::spawn(async move {
            let Ok(ws) = tokio_tungstenite::accept_async(stream).await else {
                return;
            };
            let (mut sink, mut stream) = ws.split();
            let (tx, mut rx) = mpsc::channel::<String>(65_536);
            let conn_id = mock.id("conn");
            mock.lock().conns.insert(conn_id.clone(), tx.clone());
            let writer = tokio::spawn(async move {
                while let Some(text) = rx.recv().await {
                    if sink.send(Message::text(text)).await.is_err() {
                        break;
                    }
                }
            });
            let welcome = ServerMessage::Welcome {
                conn_id: conn_id.clone(),
                server_time: sente_lite_protocol::now_ms(),
                user_id: None,
            };
            let _ = tx.send(welcome.to_json()).await;
            while let Some(Ok(msg)) = stream.next().await {
                let Message::Text(text) = msg else { continue };
                let reply = handle(&mock, &conn_id, &text).await;
                if tx.send(reply.to_json()).await.is_err() {
                    break;
                }
            }
            let mut st = mock.lock();
            st.conns.remove(&conn_id);
            for subs in st.channels.values_mut() {
                subs.retain(|(c, _)| *c != conn_id);
            }
            drop(st);
            writer.abort();
        });
    }
}

async fn handle(mock: &Mock, conn_id: &str, text: &str) -> ServerMessage {
    let msg = match decode_client(text) {
        Ok(m) => m,
        Err(e) => return e.into(),
    };
    match msg {
        ClientMessage::Subscribe { channel_id, .. } => {
            let mut st = mock.lock();
            let tx = st.conns[conn_id].clone();
            let subs = st.channels.entry(channel_id.clone()).or_default();
            subs.push((conn_id.to_owned(), tx));
            ServerMessage::SubscriptionResult {
                channel_id,
                success: true,
                subscriber_count: Some(subs.len()),
                retained_messages: Some(vec![]),
                retained_omitted: 0,
                offset: None,
                epoch: None,
                recovered: None,
                recovered_count: None,
                recover_reason: None,
                reason: None,
            }
        }
        ClientMessage::Publish {
            channel_id, data, ..
        } => {
            let message_id = mock.id("msg");
            let frame = ServerMessage::ChannelMessage(ChannelMessage {
                channel_id: channel_id.clone(),
                message_id: message_id.clone(),
                data,
                sender_conn_id: Some(conn_id.to_owned()),
                published_at: sente_lite_protocol::now_ms(),
                offset: 1,
                epoch: "e1".to_owned(),
            })
            .to_json();
            let subs: Vec<Tx> = mock
                .lock()
                .channels
                .get(&channel_id)
                .map(|s| s.iter().map(|(_, tx)| tx.clone()).collect())
                .unwrap_or_default();
            for s in &subs {
                let _ = s.send(frame.clone()).await;
            }
            ServerMessage::PublishResult {
                channel_id,
                success: true,
                message_id: Some(message_id),
                delivered_to: Some(subs.len()),
                reason: None,
            }
        }
        ClientMessage::RpcRequest {
            channel_id,
            data,
            timeout_ms,
        } => {
            let request_id = mock.id("req");
            let worker = mock
                .lock()
                .channels
                .get(&channel_id)
                .and_then(|s| s.first().cloned());
            let Some((worker_id, worker_tx)) = worker else {
                return ServerMessage::RpcRequestResult {
                    request_id: Some(request_id),
                    channel_id,
                    delivery: Delivery {
                        success: false,
                        delivered_to: 0,
                        subscribers: None,
                        reason: None,
                    },
                };
            };
            mock.lock()
                .rpc
                .insert(request_id.clone(), conn_id.to_owned());
            let frame = ServerMessage::RpcRequest(RpcRequestDelivery {
                request_id: request_id.clone(),
                channel_id: channel_id.clone(),
                data,
                sender_conn_id: conn_id.to_owned(),
                timeout_ms: timeout_ms.unwrap_or(30_000),
            });
            let _ = worker_tx.send(frame.to_json()).await;
            ServerMessage::RpcRequestResult {
                request_id: Some(request_id),
                channel_id,
                delivery: Delivery {
                    success: true,
                    delivered_to: 1,
                    subscribers: Some(vec![worker_id]),
                    reason: None,
                },
            }
        }
        ClientMessage::RpcResponse {
            request_id,
            data,
            error,
        } => {
            let requester = {
                let mut st = mock.lock();
                st.rpc
                    .remove(&request_id)
                    .and_then(|c| st.conns.get(&c).cloned())
            };
            let success = requester.is_some();
            if let Some(tx) = requester {
                let frame = ServerMessage::RpcResponse {
                    request_id: request_id.clone(),
                    data,
                    error,
                    responder_conn_id: None,
                    responder_user_id: None,
                };
                let _ = tx.send(frame.to_json()).await;
            }
            ServerMessage::RpcResponseResult {
                request_id,
                success,
                reason: None,
            }
        }
        other => ServerMessage::error(
            sente_lite_protocol::Reason::UnknownMessageType,
            format!("mock does not handle {other}"),
            None,
        ),
    }
}

fn metric(run: &Value, name: &str) -> f64 {
    run["metrics"][name]
        .as_f64()
        .unwrap_or_else(|| panic!("metric {name} missing in {run}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sente_adapter_runs_every_scenario_over_real_sockets() {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let mock = Arc::new(Mock {
        state: Mutex::new(State::default()),
        next: AtomicU64::new(1),
    });
    tokio::spawn(serve(listener, mock));

    let json = std::env::temp_dir().join(format!("bench-sente-e2e-{}.json", std::process::id()));
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_sente-lite-bench"))
        .args(["run", "--server", "sente", "--addr", &addr.to_string()])
        // The "server" is this test process: its /proc entry is measured.
        .args(["--server-pid", &std::process::id().to_string()])
        .args(["--scenarios", "fanout,rpc,idle,churn"])
        .args(["--duration-secs", "1", "--fanout-subscribers", "10"])
        .args([
            "--fanout-rates",
            "50",
            "--rpc-clients",
            "2",
            "--rpc-rate",
            "60",
        ])
        .args(["--idle-connections", "100", "--idle-per-channel", "50"])
        .args(["--conns-per-process", "60", "--idle-hold-secs", "0.1"])
        .args(["--churn-count", "20", "--churn-rate", "40"])
        .args(["--json", json.to_str().expect("utf-8")])
        .output()
        .await
        .expect("run tool");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "tool failed\nstdout:\n{stdout}\nstderr:\n{stderr}"
    );
    let doc: Value =
        serde_json::from_str(&std::fs::read_to_string(&json).expect("json")).expect("json");
    let _ = std::fs::remove_file(&json);
    let results = doc["results"].as_array().expect("results");
    assert_eq!(results.len(), 4, "{doc}");
    let by = |s: &str| {
        results
            .iter()
            .find(|r| r["scenario"] == s)
            .unwrap_or_else(|| panic!("no {s}"))
    };
    for r in results {
        assert_eq!(r["server"], "sente-lite");
        assert_eq!(r["ok"], true, "{r}");
    }
    let fanout = by("fanout");
    assert_eq!(metric(fanout, "published"), 50.0);
    assert_eq!(metric(fanout, "delivered"), 500.0);
    assert_eq!(metric(fanout, "expected"), 500.0);
    assert_eq!(metric(fanout, "lost"), 0.0);
    assert_eq!(metric(fanout, "duplicates"), 0.0);
    assert_eq!(metric(fanout, "publish_rejected"), 0.0);
    assert_eq!(metric(fanout, "latency_count"), 500.0);
    assert!(metric(fanout, "server_peak_rss_bytes") > 1e6);

    let rpc = by("rpc");
    assert_eq!(metric(rpc, "requests"), 60.0);
    assert_eq!(metric(rpc, "replies"), 60.0);
    assert_eq!(metric(rpc, "lost"), 0.0);
    assert_eq!(metric(rpc, "rejected"), 0.0);

    let idle = by("idle");
    assert_eq!(metric(idle, "processes"), 2.0);
    assert_eq!(metric(idle, "connections"), 100.0);
    assert_eq!(metric(idle, "delivered"), 100.0);

    let churn = by("churn");
    assert_eq!(metric(churn, "cycles"), 20.0);
    assert_eq!(metric(churn, "failures"), 0.0);
}
