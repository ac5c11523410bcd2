//! Delivery guarantees, end to end, with one suite for both brokers: each
//! scenario runs on one node with the in-process broker and on two nodes
//! on a real Redis (the client that comes back does so on the other
//! node). Recovery after a reconnect (`subscribe` with `recover`), the
//! `history` frame, presence and join/leave, `rpc-dispatch = one`.

#![allow(clippy::unwrap_used)]

use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
use sente_lite_server::{AllowAnonymous, NamespaceConfig, Permission};
use sente_lite_tests::external::RedisServer;
use sente_lite_tests::*;
use serde_json::{json, Value};
use std::net::SocketAddr;

/// Where a scenario runs: two addresses to connect to, the same server
/// twice for the in-process broker, two nodes on one Redis otherwise.
struct Nodes {
    addrs: [SocketAddr; 2],
    _servers: Vec<Server>,
    _redis: Option<RedisServer>,
}

/// The scenarios' settings: retention 2, history 8, recovery of at most
/// 100; a namespace `wide:` with a history of 200, one `closed:` only granted users may
/// subscribe to, and one `brief:` whose history forgets after 300 ms.
fn settings(mut c: Config) -> Config {
    // Tokens name users for presence; anonymous connections are welcome.
    c.auth.jwt_hmac_secret = SECRET.to_owned();
    c.auth.allow_anonymous = AllowAnonymous::Yes;
    // `work:` sends each RPC request to one worker.
    c.channels.namespaces.insert(
        "work".into(),
        NamespaceConfig {
            rpc_dispatch: sente_lite_protocol::RpcDispatch::One,
            ..NamespaceConfig::default()
        },
    );
    // `jl:` tells joins and leaves but keeps no presence.
    c.channels.namespaces.insert(
        "jl".into(),
        NamespaceConfig {
            join_leave: true,
            ..NamespaceConfig::default()
        },
    );
    // `room:` keeps presence and tells joins and leaves; `quiet:` does not.
    c.channels.namespaces.insert(
        "room".into(),
        NamespaceConfig {
            presence: true,
            join_leave: true,
            ..NamespaceConfig::default()
        },
    );
    c.channels.default_config.message_retention = 2;
    c.channels.default_config.history_size = 8;
    c.channels.max_recovery_messages = 100;
    c.channels.namespaces.insert(
        "wide".into(),
        NamespaceConfig {
            message_retention: 2,
            history_size: 200,
            ..NamespaceConfig::default()
        },
    );
    c.channels.namespaces.insert(
        "closed".into(),
        NamespaceConfig {
            subscribe: Permission::Granted,
            history_size: 8,
            ..NamespaceConfig::default()
        },
    );
    c.channels.namespaces.insert(
        "brief".into(),
        NamespaceConfig {
            history_size: 8,
            history_ttl_ms: 300,
            ..NamespaceConfig::default()
        },
    );
    c
}

const SECRET: &str = "a-secret-for-the-delivery-tests";

/// Connects to `addr` and authenticates as `user` with token `info`.
async fn connect_as(addr: SocketAddr, user: &str, info: Value) -> Client {
    let token = encode(
        &Header::new(Algorithm::HS256),
        &json!({"sub": user, "info": info, "exp": now_ms() / 1000 + 3600}),
        &EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .unwrap();
    let mut c = Client::connect(addr).await;
    c.send(json!({"type": "authenticate", "token": token}))
        .await;
    let r = c.recv_type("authenticate-result").await;
    assert_eq!(r["success"], true, "{r}");
    c
}

async fn local() -> Nodes {
    local_with(|c| c).await
}

async fn local_with(f: impl Fn(Config) -> Config) -> Nodes {
    let server = start(f(settings(config()))).await;
    let addr = server.local_addr();
    Nodes {
        addrs: [addr, addr],
        _servers: vec![server],
        _redis: None,
    }
}

async fn redis() -> Nodes {
    redis_with(|c| c).await
}

async fn redis_with(f: impl Fn(Config) -> Config) -> Nodes {
    let redis = RedisServer::start();
    let mut servers = Vec::new();
    for i in 0..2 {
        let c = redis_node(f(settings(config())), &redis.url(), &format!("node-{i}"));
        servers.push(start(c).await);
    }
    for s in &servers {
        wait_healthy(s.local_addr(), 2).await;
    }
    Nodes {
        addrs: [servers[0].local_addr(), servers[1].local_addr()],
        _servers: servers,
        _redis: Some(redis),
    }
}

/// Each scenario once per broker.
macro_rules! both_brokers {
    ($($name:ident),* $(,)?) => {
        mod on_local {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name(super::local().await).await;
                }
            )*
        }
        mod on_redis {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name(super::redis().await).await;
                }
            )*
        }
    };
}

both_brokers!(
    a_client_that_comes_back_gets_exactly_what_it_missed,
    recovery_under_concurrent_publishes_has_no_gap_and_no_duplicate,
    a_position_that_cannot_be_recovered_is_told_why_and_starts_afresh,
    history_pages_by_position_and_limit,
    history_follows_the_subscribe_permission_and_creates_nothing,
    messages_older_than_the_history_ttl_leave_it,
    presence_and_join_leave_are_cluster_wide,
    rpc_dispatch_one_sends_each_request_to_one_worker,
    a_request_whose_worker_leaves_goes_to_another_within_its_deadline,
);

async fn worker(addr: SocketAddr, channel: &str) -> Client {
    let mut w = Client::connect(addr).await;
    w.subscribe(channel).await;
    w
}

async fn rpc_dispatch_one_sends_each_request_to_one_worker(nodes: Nodes) {
    let [a, b] = nodes.addrs;
    let mut workers = vec![
        worker(a, "work:q").await,
        worker(b, "work:q").await,
        worker(a, "work:q").await,
        worker(b, "work:q").await,
    ];
    // The requester is a subscriber too: it is never sent its own request.
    let mut requester = worker(a, "work:q").await;
    const N: usize = 12;
    let mut ids = Vec::new();
    for i in 0..N {
        requester
            .send(json!({"type": "rpc-request", "channel-id": "work:q", "data": {"i": i}}))
            .await;
        let r = requester.recv_type("rpc-request-result").await;
        assert_eq!(r["delivery"]["success"], true, "{r}");
        assert_eq!(r["delivery"]["delivered-to"], 1, "{r}");
        assert_eq!(
            r["delivery"]["subscribers"].as_array().unwrap().len(),
            1,
            "{r}"
        );
        ids.push(r["request-id"].as_str().unwrap().to_owned());
    }
    // Each request reached exactly one worker; every worker had a share.
    let mut seen = Vec::new();
    let mut per_worker = Vec::new();
    // Round robin: each of the 4 got 12 / 4 (in-process), or its node's
    // turn's share (Redis); every one got some. Reading until a pong
    // proves nothing more is queued for it.
    for w in &mut workers {
        let stamp = json!("count");
        w.send(json!({"type": "ping", "timestamp": stamp})).await;
        let (_, before) = w.recv_until("pong").await;
        let got: Vec<String> = before
            .iter()
            .filter(|f| f["type"] == "rpc-request")
            .map(|f| f["request-id"].as_str().unwrap().to_owned())
            .collect();
        per_worker.push(got.len());
        // Answer each; a second answer to the same request is refused.
        for id in &got {
            w.send(json!({"type": "rpc-response", "request-id": id, "data": {"by": w.conn_id}}))
                .await;
            assert_eq!(w.recv_type("rpc-response-result").await["success"], true);
        }
        seen.extend(got);
    }
    seen.sort();
    let mut want = ids.clone();
    want.sort();
    assert_eq!(
        seen, want,
        "each request once, to one worker: {per_worker:?}"
    );
    assert!(
        per_worker.iter().all(|n| *n > 0),
        "round robin: {per_worker:?}"
    );
    let mut answered = Vec::new();
    for _ in 0..N {
        let r = requester.recv_type("rpc-response").await;
        answered.push(r["request-id"].as_str().unwrap().to_owned());
    }
    answered.sort();
    assert_eq!(answered, want);
    // A worker that was not sent a request may not answer it.
    let other = ids[0].clone();
    let w = &mut workers[0];
    w.send(json!({"type": "rpc-response", "request-id": other, "data": null}))
        .await;
    assert_eq!(
        w.recv_type("rpc-response-result").await["reason"],
        "request-not-found"
    );
    requester.roundtrip().await;
}

async fn a_request_whose_worker_leaves_goes_to_another_within_its_deadline(nodes: Nodes) {
    let [a, b] = nodes.addrs;
    let mut w1 = worker(a, "work:d").await;
    let mut w2 = worker(b, "work:d").await;
    let mut requester = Client::connect(a).await;
    requester
        .send(
            json!({"type": "rpc-request", "channel-id": "work:d", "data": "job",
                     "timeout-ms": 4000}),
        )
        .await;
    let r = requester.recv_type("rpc-request-result").await;
    assert_eq!(r["delivery"]["delivered-to"], 1, "{r}");
    let id = r["request-id"].as_str().unwrap().to_owned();
    // Whoever got it dies without answering.
    let (first, mut second) = tokio::select! {
        f = w1.recv() => { assert_eq!(f["request-id"], id.as_str()); (w1, w2) }
        f = w2.recv() => { assert_eq!(f["request-id"], id.as_str()); (w2, w1) }
    };
    let first_id = first.conn_id.clone();
    drop(first);
    let again = second.recv_type("rpc-request").await;
    assert_eq!(again["request-id"], id.as_str(), "{again}");
    assert_eq!(again["data"], "job", "{again}");
    second
        .send(json!({"type": "rpc-response", "request-id": id, "data": "done"}))
        .await;
    assert_eq!(
        second.recv_type("rpc-response-result").await["success"],
        true
    );
    let answer = requester.recv_type("rpc-response").await;
    assert_eq!(answer["data"], "done", "{answer}");
    assert_eq!(
        answer["responder-conn-id"],
        second.conn_id.as_str(),
        "{answer}"
    );
    assert_ne!(answer["responder-conn-id"], first_id.as_str());
    // Answered once: nothing else comes, not even a timeout.
    requester.roundtrip().await;
    let counted: u64 = {
        let mut n = 0;
        for addr in if a == b { vec![a] } else { vec![a, b] } {
            let (_, stats) = http_get(addr, "/stats").await;
            n += stats["channel-stats"]["rpc-redispatched"]
                .as_u64()
                .unwrap_or(0);
        }
        n
    };
    assert_eq!(counted, 1, "channel-stats.rpc-redispatched");
}

async fn presence_of(c: &mut Client, channel: &str) -> Value {
    c.send(json!({"type": "presence", "channel-id": channel}))
        .await;
    let r = c.recv_type("presence-result").await;
    assert_eq!(r["channel-id"], channel, "{r}");
    r
}

async fn presence_stats_of(c: &mut Client, channel: &str) -> Value {
    c.send(json!({"type": "presence-stats", "channel-id": channel}))
        .await;
    c.recv_type("presence-stats-result").await
}

/// The next `join`/`leave` frame; it must be the next frame.
async fn next_presence_frame(c: &mut Client, ty: &str, conn_id: &str) -> Value {
    let f = c.recv_type(ty).await;
    assert_eq!(f["conn-id"], conn_id, "{f}");
    f
}

async fn presence_and_join_leave_are_cluster_wide(nodes: Nodes) {
    let [a, b] = nodes.addrs;
    let mut alice = connect_as(a, "alice", json!({"name": "Alice"})).await;
    alice.subscribe("room:1").await;
    // Its own join comes after its subscription-result.
    let alice_conn = alice.conn_id.clone();
    let own = next_presence_frame(&mut alice, "join", &alice_conn).await;
    assert_eq!(own["user-id"], "alice", "{own}");
    assert_eq!(own["channel-id"], "room:1", "{own}");

    let mut bob = connect_as(b, "bob", json!(null)).await;
    bob.subscribe("room:1").await;
    let bob_id = bob.conn_id.clone();
    next_presence_frame(&mut bob, "join", &bob_id).await;
    let join = next_presence_frame(&mut alice, "join", &bob_id).await;
    assert_eq!(join["user-id"], "bob", "{join}");

    let mut anon = Client::connect(a).await;
    anon.subscribe("room:1").await;
    let anon_id = anon.conn_id.clone();
    next_presence_frame(&mut anon, "join", &anon_id).await;
    let join = next_presence_frame(&mut alice, "join", &anon_id).await;
    assert!(join["user-id"].is_null(), "{join}");
    next_presence_frame(&mut bob, "join", &anon_id).await;

    // Seen from either node, all three.
    for c in [&mut alice, &mut bob] {
        let p = presence_of(c, "room:1").await;
        assert_eq!(p["success"], true, "{p}");
        let clients = p["clients"].as_object().unwrap();
        assert_eq!(clients.len(), 3, "{p}");
        let alice_id = clients
            .iter()
            .find(|(_, v)| v["user-id"] == "alice")
            .map(|(k, _)| k.clone())
            .unwrap();
        assert_eq!(clients[&alice_id]["info"], json!({"name": "Alice"}), "{p}");
        assert_eq!(clients[&bob_id]["user-id"], "bob", "{p}");
        assert!(clients[&anon_id]["user-id"].is_null(), "{p}");
        let s = presence_stats_of(c, "room:1").await;
        assert_eq!(
            (s["clients"].as_u64(), s["users"].as_u64()),
            (Some(3), Some(2)),
            "{s}"
        );
    }

    // Unsubscribe and disconnect both leave, to every node.
    bob.send(json!({"type": "unsubscribe", "channel-id": "room:1"}))
        .await;
    assert_eq!(
        bob.recv_type("unsubscription-result").await["success"],
        true
    );
    let leave = next_presence_frame(&mut alice, "leave", &bob_id).await;
    assert_eq!(leave["user-id"], "bob", "{leave}");
    next_presence_frame(&mut anon, "leave", &bob_id).await;
    anon.close().await;
    let leave = next_presence_frame(&mut alice, "leave", &anon_id).await;
    assert!(leave["user-id"].is_null(), "{leave}");
    let p = presence_of(&mut bob, "room:1").await;
    assert_eq!(p["clients"].as_object().unwrap().len(), 1, "{p}");
    alice.roundtrip().await;

    // Channels without presence, and channels that do not exist.
    bob.subscribe("quiet:1").await;
    let p = presence_of(&mut bob, "quiet:1").await;
    assert_eq!(
        (p["success"].clone(), p["reason"].clone()),
        (json!(false), json!("presence-disabled"))
    );
    let s = presence_stats_of(&mut bob, "nowhere").await;
    assert_eq!(s["reason"], "channel-not-found", "{s}");
    let p = presence_of(&mut bob, "closed:1").await;
    assert_eq!(p["reason"], "forbidden", "{p}");
    // No join frames on a channel without join-leave.
    bob.roundtrip().await;
}

/// A killed node's connections leave presence once its liveness expires,
/// and subscribers of a join-leave channel on other nodes get their `leave`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_nodes_clients_leave_presence() {
    use sente_lite_tests::external::Node;
    let redis = RedisServer::start();
    let live = start(redis_node(settings(config()), &redis.url(), "node-live")).await;
    let url = redis.url();
    let mut doomed = Node::spawn(
        sente_lite_tests::node_bin!(),
        &[
            ("SENTE_LITE_BROKER_KIND", "redis"),
            ("SENTE_LITE_BROKER_REDIS_URL", &url),
            ("SENTE_LITE_NODE_ID", "node-doomed"),
            ("SENTE_LITE_BROKER_NODE_TTL_MS", "1500"),
            ("SENTE_LITE_CHANNELS_NAMESPACES_ROOM_PRESENCE", "true"),
            ("SENTE_LITE_CHANNELS_NAMESPACES_ROOM_JOIN_LEAVE", "true"),
            ("SENTE_LITE_CHANNELS_NAMESPACES_JL_JOIN_LEAVE", "true"),
        ],
    );
    wait_healthy(live.local_addr(), 2).await;
    let mut watcher = Client::connect(live.local_addr()).await;
    watcher.subscribe("room:x").await;
    let watcher_id = watcher.conn_id.clone();
    next_presence_frame(&mut watcher, "join", &watcher_id).await;
    let mut gone = Client::connect(doomed.addr()).await;
    gone.subscribe("room:x").await;
    let gone_id = gone.conn_id.clone();
    next_presence_frame(&mut gone, "join", &gone_id).await;
    next_presence_frame(&mut watcher, "join", &gone_id).await;
    assert_eq!(
        presence_of(&mut watcher, "room:x").await["clients"]
            .as_object()
            .unwrap()
            .len(),
        2
    );

    // A channel with join-leave and no presence: its leave comes too.
    watcher.subscribe("jl:x").await;
    next_presence_frame(&mut watcher, "join", &watcher_id).await;
    gone.subscribe("jl:x").await;
    next_presence_frame(&mut watcher, "join", &gone_id).await;

    doomed.kill();
    // Within the node's ttl (1.5 s) and a heartbeat (0.5 s) of the live node;
    // a presence read meanwhile does not lose them.
    assert_eq!(presence_of(&mut watcher, "room:x").await["success"], true);
    let mut leaves = Vec::new();
    while leaves.len() < 2 {
        let f = within("the dead node's leaves", watcher.recv()).await;
        if f["type"] == "leave" {
            leaves.push(f);
        }
    }
    for leave in &leaves {
        assert_eq!(leave["conn-id"], gone_id.as_str(), "{leave}");
        // An anonymous connection's `user-id` is null, not absent.
        assert!(leave.get("user-id").is_some_and(Value::is_null), "{leave}");
    }
    let mut channels: Vec<&str> = leaves
        .iter()
        .map(|l| l["channel-id"].as_str().unwrap())
        .collect();
    channels.sort_unstable();
    assert_eq!(channels, ["jl:x", "room:x"]);
    let p = presence_of(&mut watcher, "room:x").await;
    let clients = p["clients"].as_object().unwrap();
    assert_eq!(clients.keys().collect::<Vec<_>>(), [&watcher_id], "{p}");
    drop(gone);
}

fn offsets(messages: &[Value]) -> Vec<u64> {
    messages
        .iter()
        .map(|m| m["offset"].as_u64().unwrap())
        .collect()
}

/// Publishes `n` messages `{"n": from..}` to `channel` from `c`.
async fn publish_n(c: &mut Client, channel: &str, from: u64, n: u64) {
    for i in from..from + n {
        c.publish(channel, json!({"n": i})).await;
    }
}

async fn subscribe_recovering(c: &mut Client, channel: &str, offset: u64, epoch: &str) -> Value {
    c.send(json!({"type": "subscribe", "channel-id": channel,
                  "recover": {"offset": offset, "epoch": epoch}}))
        .await;
    let r = c.recv_type("subscription-result").await;
    assert_eq!(r["success"], true, "{r}");
    r
}

async fn history(c: &mut Client, query: Value) -> Value {
    c.send(query).await;
    c.recv_type("history-result").await
}

async fn a_client_that_comes_back_gets_exactly_what_it_missed(nodes: Nodes) {
    let [a, b] = nodes.addrs;
    let mut publisher = Client::connect(b).await;
    let mut sub = Client::connect(a).await;
    let r = sub.subscribe("room").await;
    assert_eq!(r["offset"], 0, "{r}");
    let epoch = r["epoch"].as_str().unwrap().to_owned();
    assert!(!epoch.is_empty(), "{r}");
    publish_n(&mut publisher, "room", 1, 3).await;
    let mut last = 0;
    for want in 1..=3 {
        let m = sub.recv_type("channel-message").await;
        assert_eq!(
            (m["offset"].as_u64(), m["epoch"].as_str()),
            (Some(want), Some(&*epoch))
        );
        last = want;
    }
    sub.close().await;

    // Missed while away, with data whose spelling must survive the relay.
    let odd = r#"{"n" : 4,"x":[1.50,  "\u00e9"]}"#;
    publisher
        .send_text(&format!(
            r#"{{"type":"publish","channel-id":"room","data":{odd}}}"#
        ))
        .await;
    assert_eq!(publisher.recv_type("publish-result").await["success"], true);
    publish_n(&mut publisher, "room", 5, 4).await;

    // Back, on the other node.
    let mut back = Client::connect(b).await;
    back.send(json!({"type": "subscribe", "channel-id": "room",
                     "recover": {"offset": last, "epoch": epoch}}))
        .await;
    let result = next_text(&mut back.ws).await;
    let r: Value = serde_json::from_str(&result).unwrap();
    assert_eq!(r["type"], "subscription-result", "{r}");
    assert_eq!(r["recovered"], true, "{r}");
    assert_eq!(r["recovered-count"], 5, "{r}");
    assert!(r.get("recover-reason").is_none(), "{r}");
    assert_eq!(r["offset"], 8, "{r}");
    // It has the retained ones: no replay.
    assert_eq!(r["retained-messages"], json!([]), "{r}");
    let first = next_text(&mut back.ws).await;
    assert!(
        first.contains(&format!(r#""data":{odd}"#)),
        "byte for byte: {first}"
    );
    let mut got = vec![serde_json::from_str::<Value>(&first).unwrap()];
    for _ in 0..4 {
        got.push(back.recv_type("channel-message").await);
    }
    assert_eq!(offsets(&got), [4, 5, 6, 7, 8]);
    assert_eq!(got[1]["data"], json!({"n": 5}));
    // Then live, and nothing in between.
    publisher.publish("room", json!({"n": 9})).await;
    let live = back.recv_type("channel-message").await;
    assert_eq!(live["offset"], 9);
    back.roundtrip().await;

    // Nothing missed: recovered, none sent.
    let mut again = Client::connect(a).await;
    let r = subscribe_recovering(&mut again, "room", 9, &epoch).await;
    assert_eq!(
        (r["recovered"].clone(), r["recovered-count"].clone()),
        (json!(true), json!(0))
    );
    again.roundtrip().await;
    let (_, stats) = http_get(a, "/stats").await;
    let on_a = stats["channel-stats"]["recovered"].as_u64().unwrap_or(0);
    let (_, stats) = http_get(b, "/stats").await;
    let on_b = stats["channel-stats"]["recovered"].as_u64().unwrap_or(0);
    let counted = if a == b { on_a } else { on_a + on_b };
    assert_eq!(counted, 5, "channel-stats.recovered");
}

async fn recovery_under_concurrent_publishes_has_no_gap_and_no_duplicate(nodes: Nodes) {
    let [a, b] = nodes.addrs;
    let mut sub = Client::connect(a).await;
    let epoch = sub.subscribe("wide:busy").await["epoch"]
        .as_str()
        .unwrap()
        .to_owned();
    let mut publisher = Client::connect(b).await;
    publish_n(&mut publisher, "wide:busy", 1, 2).await;
    for _ in 0..2 {
        sub.recv_type("channel-message").await;
    }
    sub.close().await;
    // A publisher that keeps going while the subscriber comes back.
    const TOTAL: u64 = 60;
    let pubs = tokio::spawn(async move {
        for i in 3..=TOTAL {
            publisher
                .send(json!({"type": "publish", "channel-id": "wide:busy", "data": {"n": i}}))
                .await;
        }
        for _ in 3..=TOTAL {
            assert_eq!(publisher.recv_type("publish-result").await["success"], true);
        }
    });
    let mut back = Client::connect(b).await;
    let r = subscribe_recovering(&mut back, "wide:busy", 2, &epoch).await;
    assert_eq!(r["recovered"], true, "{r}");
    let mut got = Vec::new();
    while got.last().map_or(2, |o| *o) < TOTAL {
        let m = back.recv_type("channel-message").await;
        got.push(m["offset"].as_u64().unwrap());
    }
    pubs.await.unwrap();
    assert_eq!(
        got,
        (3..=TOTAL).collect::<Vec<_>>(),
        "recovered then live, once each"
    );
    back.roundtrip().await;
}

async fn a_position_that_cannot_be_recovered_is_told_why_and_starts_afresh(nodes: Nodes) {
    let [a, b] = nodes.addrs;
    let mut sub = Client::connect(a).await;
    let epoch = sub.subscribe("far").await["epoch"]
        .as_str()
        .unwrap()
        .to_owned();
    sub.close().await;
    let mut publisher = Client::connect(b).await;
    publish_n(&mut publisher, "far", 1, 10).await;
    let retained = |r: &Value| offsets(r["retained-messages"].as_array().unwrap());

    // Another epoch: a fresh subscription with the retained replay.
    let mut c = Client::connect(b).await;
    let r = subscribe_recovering(&mut c, "far", 3, "not-the-epoch").await;
    assert_eq!(r["recovered"], false, "{r}");
    assert_eq!(r["recover-reason"], "epoch-changed", "{r}");
    assert!(r.get("recovered-count").is_none(), "{r}");
    assert_eq!(retained(&r), [9, 10]);
    c.roundtrip().await;
    c.close().await;

    // An offset past the stream's end is of no epoch of ours.
    let mut c = Client::connect(a).await;
    let r = subscribe_recovering(&mut c, "far", 11, &epoch).await;
    assert_eq!(r["recover-reason"], "epoch-changed", "{r}");
    c.close().await;

    // The history (8) no longer holds message 2.
    let mut c = Client::connect(a).await;
    let r = subscribe_recovering(&mut c, "far", 1, &epoch).await;
    assert_eq!(r["recovered"], false, "{r}");
    assert_eq!(r["recover-reason"], "too-far-behind", "{r}");
    assert_eq!(retained(&r), [9, 10]);
    c.roundtrip().await;
    c.close().await;

    // From 2 it does: all of 3..=10.
    let mut c = Client::connect(b).await;
    let r = subscribe_recovering(&mut c, "far", 2, &epoch).await;
    assert_eq!(r["recovered-count"], 8, "{r}");
    let got: Vec<Value> = {
        let mut v = Vec::new();
        for _ in 0..8 {
            v.push(c.recv_type("channel-message").await);
        }
        v
    };
    assert_eq!(offsets(&got), (3..=10).collect::<Vec<_>>());
    c.roundtrip().await;
    c.close().await;

    // More than max-recovery-messages (100) behind, though the history
    // (200) holds them all.
    let mut sub = Client::connect(a).await;
    let epoch = sub.subscribe("wide:far").await["epoch"]
        .as_str()
        .unwrap()
        .to_owned();
    sub.close().await;
    publish_n(&mut publisher, "wide:far", 1, 110).await;
    let mut c = Client::connect(b).await;
    let r = subscribe_recovering(&mut c, "wide:far", 9, &epoch).await;
    assert_eq!(r["recover-reason"], "too-far-behind", "{r}");
    assert_eq!(retained(&r), [109, 110]);
    c.close().await;
    let mut c = Client::connect(a).await;
    let r = subscribe_recovering(&mut c, "wide:far", 10, &epoch).await;
    assert_eq!(r["recovered-count"], 100, "{r}");
    // Four of the recoveries above were refused: counted, on either node.
    let mut missed = 0;
    for addr in if a == b { vec![a] } else { vec![a, b] } {
        let (_, stats) = http_get(addr, "/stats").await;
        missed += stats["channel-stats"]["recoveries-missed"]
            .as_u64()
            .unwrap_or(0);
    }
    assert_eq!(missed, 4, "channel-stats.recoveries-missed");
    for want in 11..=110 {
        assert_eq!(c.recv_type("channel-message").await["offset"], want);
    }
    c.roundtrip().await;
}

async fn history_pages_by_position_and_limit(nodes: Nodes) {
    let [a, b] = nodes.addrs;
    let mut publisher = Client::connect(a).await;
    publish_n(&mut publisher, "log", 1, 10).await;
    let mut c = Client::connect(b).await;
    let all = history(&mut c, json!({"type": "history", "channel-id": "log"})).await;
    assert_eq!(all["success"], true, "{all}");
    assert_eq!(all["offset"], 10, "{all}");
    let epoch = all["epoch"].as_str().unwrap().to_owned();
    let messages = all["messages"].as_array().unwrap();
    // history-size 8: the newest 8, oldest first, as channel-message frames.
    assert_eq!(offsets(messages), (3..=10).collect::<Vec<_>>());
    assert!(messages.iter().all(|m| m["type"] == "channel-message"));
    assert_eq!(messages[0]["data"], json!({"n": 3}));

    let newest = history(
        &mut c,
        json!({"type": "history", "channel-id": "log", "limit": 3}),
    )
    .await;
    assert_eq!(offsets(newest["messages"].as_array().unwrap()), [8, 9, 10]);

    let after = history(
        &mut c,
        json!({"type": "history", "channel-id": "log", "limit": 2,
               "since": {"offset": 4, "epoch": epoch}}),
    )
    .await;
    assert_eq!(offsets(after["messages"].as_array().unwrap()), [5, 6]);

    let caught_up = history(
        &mut c,
        json!({"type": "history", "channel-id": "log", "since": {"offset": 10, "epoch": epoch}}),
    )
    .await;
    assert_eq!(caught_up["messages"], json!([]), "{caught_up}");

    let gone = history(
        &mut c,
        json!({"type": "history", "channel-id": "log", "since": {"offset": 1, "epoch": epoch}}),
    )
    .await;
    assert_eq!(gone["success"], false, "{gone}");
    assert_eq!(gone["reason"], "too-far-behind", "{gone}");
    assert_eq!(
        (gone["offset"].as_u64(), gone["epoch"].as_str()),
        (Some(10), Some(&*epoch))
    );

    let other = history(
        &mut c,
        json!({"type": "history", "channel-id": "log", "since": {"offset": 1, "epoch": "old"}}),
    )
    .await;
    assert_eq!(other["reason"], "epoch-changed", "{other}");
    assert_eq!(other["epoch"], epoch.as_str(), "{other}");

    // limit 0: just the position.
    let none = history(
        &mut c,
        json!({"type": "history", "channel-id": "log", "limit": 0}),
    )
    .await;
    assert_eq!(
        (none["messages"].clone(), none["offset"].clone()),
        (json!([]), json!(10))
    );
    c.roundtrip().await;
}

async fn history_follows_the_subscribe_permission_and_creates_nothing(nodes: Nodes) {
    let [a, _] = nodes.addrs;
    let mut c = Client::connect(a).await;
    let r = history(&mut c, json!({"type": "history", "channel-id": "closed:x"})).await;
    assert_eq!(
        (r["success"].clone(), r["reason"].clone()),
        (json!(false), json!("forbidden"))
    );
    assert!(r.get("messages").is_none(), "{r}");
    let r = history(
        &mut c,
        json!({"type": "history", "channel-id": "nobody-made-this"}),
    )
    .await;
    assert_eq!(r["reason"], "channel-not-found", "{r}");
    let (_, channels) = http_get(a, "/channels").await;
    assert!(
        channels["channels"].get("nobody-made-this").is_none(),
        "{channels}"
    );
    let r = history(&mut c, json!({"type": "history", "channel-id": ""})).await;
    assert_eq!(r["reason"], "invalid-channel-id", "{r}");
    c.send_text(r#"{"type":"history","channel-id":"log","since":{"offset":"1","epoch":"e"}}"#)
        .await;
    let e = c.recv_type("error").await;
    assert_eq!(e["reason"], "invalid-message", "{e}");
    assert!(
        e["message"].as_str().unwrap().contains("since.offset"),
        "{e}"
    );
    c.roundtrip().await;
}

async fn messages_older_than_the_history_ttl_leave_it(nodes: Nodes) {
    let [a, b] = nodes.addrs;
    let mut sub = Client::connect(a).await;
    let epoch = sub.subscribe("brief:x").await["epoch"]
        .as_str()
        .unwrap()
        .to_owned();
    sub.close().await;
    let mut publisher = Client::connect(b).await;
    publish_n(&mut publisher, "brief:x", 1, 2).await;
    // Time itself is what is tested: the two age past the ttl (300 ms).
    tokio::time::sleep(std::time::Duration::from_millis(450)).await;
    publish_n(&mut publisher, "brief:x", 3, 1).await;
    let mut c = Client::connect(a).await;
    let h = history(&mut c, json!({"type": "history", "channel-id": "brief:x"})).await;
    assert_eq!(offsets(h["messages"].as_array().unwrap()), [3], "{h}");
    let r = subscribe_recovering(&mut c, "brief:x", 0, &epoch).await;
    assert_eq!(r["recover-reason"], "too-far-behind", "{r}");
    c.close().await;
    let mut c = Client::connect(b).await;
    let r = subscribe_recovering(&mut c, "brief:x", 2, &epoch).await;
    assert_eq!(r["recovered-count"], 1, "{r}");
    c.recv_type("channel-message").await;
    c.roundtrip().await;
}

/// Queues of 64 frames, and a namespace `feed:` whose slow subscribers are
/// conflated (`on-slow-consumer = latest`).
fn conflating(mut c: Config) -> Config {
    c.websocket.max_outbound_frames = 64;
    // Short, so that a queue that never empties under the overload would
    // pass it many times: a reader that makes progress is no slow consumer.
    c.websocket.message_timeout_ms = 2000;
    c.channels.namespaces.insert(
        "feed".into(),
        NamespaceConfig {
            on_slow_consumer: sente_lite_protocol::SlowConsumerPolicy::Latest,
            ..NamespaceConfig::default()
        },
    );
    c
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_latest_subscriber_under_overload_stays_and_converges_on_local() {
    latest_subscriber_under_overload(local_with(conflating).await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_latest_subscriber_under_overload_stays_and_converges_on_redis() {
    latest_subscriber_under_overload(redis_with(conflating).await).await;
}

/// A subscriber that does not read while 1,000 messages of 8 KiB (far more
/// than its queue of 64 and the socket buffers hold: over 10 times) are
/// published stays connected, gets offsets in order with gaps, and ends on
/// the newest message; a `close` channel's subscriber under the same load
/// is closed as a slow consumer.
async fn latest_subscriber_under_overload(nodes: Nodes) {
    let [a, b] = nodes.addrs;
    const N: u64 = 1_000;
    let mut slow = Client::connect_small_buffer(a, 4096).await;
    slow.subscribe("feed:prices").await;
    let mut strict = Client::connect_small_buffer(a, 4096).await;
    strict.subscribe("plain").await;
    // The slow one reads all along, slower than it is sent to (pacing, not
    // a wait for anything), for longer than message-timeout-ms (2 s)
    // with its queue never empty.
    let reader = tokio::spawn(async move {
        let mut got = Vec::new();
        let started = std::time::Instant::now();
        while got.last() != Some(&N) {
            let m = slow.recv_type("channel-message").await;
            got.push(m["offset"].as_u64().unwrap());
            assert_eq!(m["data"]["n"], json!(got.last().copied().unwrap()));
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
        (slow, got, started.elapsed())
    });
    let mut publisher = Client::connect(b).await;
    let pad = "p".repeat(8 * 1024);
    for i in 1..=N {
        publisher
            .send(json!({"type": "publish", "channel-id": "feed:prices", "data": {"n": i, "pad": pad}}))
            .await;
        publisher
            .send(json!({"type": "publish", "channel-id": "plain", "data": {"n": i, "pad": pad}}))
            .await;
    }
    for _ in 0..2 * N {
        assert_eq!(publisher.recv_type("publish-result").await["success"], true);
    }
    // Every offset greater than the one before, the last one N.
    let (mut slow, got, took) = reader.await.unwrap();
    assert!(
        took > std::time::Duration::from_millis(2000),
        "the overload outlasted message-timeout-ms: {took:?}"
    );
    assert!(got.windows(2).all(|w| w[0] < w[1]), "in order: {got:?}");
    assert!((got.len() as u64) < N, "conflated: {} of {N}", got.len());
    slow.roundtrip().await;
    let (_, stats) = http_get(a, "/stats").await;
    assert!(
        stats["transport"]["conflated"].as_u64().unwrap_or(0) > 0,
        "{stats}"
    );
    // The `close` channel's subscriber, which read nothing, was closed as a
    // slow consumer (its close frame may be lost to the reset of a socket
    // whose buffers it never read).
    let (_, end) = strict.drain_until_end().await;
    let end = format!("{end:?}");
    assert!(
        end.contains("slow-consumer") || end.contains("reset"),
        "{end}"
    );
    let (_, stats) = http_get(a, "/stats").await;
    assert!(
        stats["transport"]["closed-slow-consumer"]
            .as_u64()
            .unwrap_or(0)
            >= 1,
        "{stats}"
    );
}
