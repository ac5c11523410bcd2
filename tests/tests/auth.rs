//! Identities and permissions end to end: tokens on the upgrade and in
//! `authenticate` frames, the 4001/4002 closes, namespace permissions,
//! filtered and paginated `list-channels`, and the same rules on every
//! node of a Redis cluster.

#![allow(clippy::unwrap_used)]

use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
use sente_lite_server::{AllowAnonymous, NamespaceConfig, Permission};
use sente_lite_tests::*;
use serde_json::{json, Value};
use std::net::SocketAddr;
use std::time::Duration;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

const SECRET: &str = "test-secret-for-the-auth-tests";

fn token(claims: Value) -> String {
    encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .unwrap()
}

fn secs() -> i64 {
    now_ms() / 1000
}

/// A server with the HMAC key set, `allow-anonymous` as given, and the
/// namespaces `private` (subscribe granted, publish subscribers, rpc-call
/// nobody) and `public` (publish authenticated).
fn auth_config(anonymous: AllowAnonymous) -> Config {
    let mut c = config();
    c.auth.jwt_hmac_secret = SECRET.to_owned();
    c.auth.allow_anonymous = anonymous;
    c.auth.leeway_ms = 0;
    c.channels.namespaces.insert(
        "private".into(),
        NamespaceConfig {
            subscribe: Permission::Granted,
            publish: Permission::Subscribers,
            rpc_call: Permission::Nobody,
            ..NamespaceConfig::default()
        },
    );
    c.channels.namespaces.insert(
        "public".into(),
        NamespaceConfig {
            publish: Permission::Authenticated,
            ..NamespaceConfig::default()
        },
    );
    c
}

/// Opens a WebSocket on `path` with extra headers and reads `welcome`.
async fn connect_with(addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> Client {
    let mut req = format!("ws://{addr}{path}").into_client_request().unwrap();
    for (n, v) in headers {
        let name = http::HeaderName::from_bytes(n.as_bytes()).unwrap();
        req.headers_mut().insert(name, v.parse().unwrap());
    }
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (ws, _) = within("handshake", tokio_tungstenite::client_async(req, tcp))
        .await
        .unwrap();
    Client::from_ws(ws).await
}

async fn connect_as(addr: SocketAddr, claims: Value) -> Client {
    connect_with(addr, &format!("/?token={}", token(claims)), &[]).await
}

async fn upgrade_status(addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> HttpResponse {
    let mut h = vec![
        ("Connection", "Upgrade"),
        ("Upgrade", "websocket"),
        ("Sec-WebSocket-Version", "13"),
        ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="),
    ];
    h.extend_from_slice(headers);
    http_request(addr, "GET", path, &h).await
}

async fn send_recv(c: &mut Client, v: Value) -> Value {
    c.send(v).await;
    c.recv().await
}

#[tokio::test]
async fn with_nothing_configured_anonymous_clients_do_everything() {
    let server = start_default().await;
    let mut a = Client::connect(server.local_addr()).await;
    assert!(a.welcome.get("user-id").is_none(), "{}", a.welcome);
    a.subscribe("private:anything").await;
    let mut b = Client::connect(server.local_addr()).await;
    b.publish("private:anything", json!(1)).await;
    assert_eq!(a.recv_type("channel-message").await["data"], 1);
    // Where no key is configured no token is checked: the connection is
    // anonymous, as its welcome (without user-id) says.
    let c = connect_as(server.local_addr(), json!({"sub": "x"})).await;
    assert!(c.welcome.get("user-id").is_none(), "{}", c.welcome);
}

#[tokio::test]
async fn a_token_on_the_url_or_in_a_bearer_header_names_the_user() {
    let server = start(auth_config(AllowAnonymous::Auto)).await;
    let addr = server.local_addr();
    let a = connect_as(addr, json!({"sub": "alice"})).await;
    assert_eq!(a.welcome["user-id"], "alice", "{}", a.welcome);
    let bearer = format!(
        "Bearer {}",
        token(json!({"sub": "bob", "exp": secs() + 600}))
    );
    let b = connect_with(addr, "/", &[("Authorization", &bearer)]).await;
    assert_eq!(b.welcome["user-id"], "bob");
}

#[tokio::test]
async fn bad_tokens_get_401_before_the_upgrade() {
    let server = start(auth_config(AllowAnonymous::Auto)).await;
    let addr = server.local_addr();
    let wrong_key = encode(
        &Header::new(Algorithm::HS256),
        &json!({"sub": "a"}),
        &EncodingKey::from_secret(b"other"),
    )
    .unwrap();
    let hs512_other = encode(
        &Header::new(Algorithm::HS512),
        &json!({"sub": "a"}),
        &EncodingKey::from_secret(b"nope"),
    )
    .unwrap();
    let none = "eyJhbGciOiJub25lIn0.eyJzdWIiOiJhIn0.";
    let expired = token(json!({"sub": "a", "exp": secs() - 60}));
    for bad in [
        wrong_key.as_str(),
        hs512_other.as_str(),
        none,
        expired.as_str(),
        "garbage",
        "a.b.c",
    ] {
        let r = upgrade_status(addr, &format!("/?token={bad}"), &[]).await;
        assert_eq!(r.status, 401, "{bad}: {}", r.body);
        assert_eq!(r.json()["reason"], "unauthorized", "{}", r.body);
        let bearer = format!("Bearer {bad}");
        let r = upgrade_status(addr, "/", &[("Authorization", &bearer)]).await;
        assert_eq!(r.status, 401, "{bad}: {}", r.body);
    }
    // Each refusal at the door is counted (the stats need no token here).
    let s = stats(addr).await;
    assert_eq!(s["transport"]["rejected-unauthorized"], 12, "{s}");
}

#[tokio::test]
async fn without_a_token_only_authenticate_and_ping_are_processed() {
    let server = start(auth_config(AllowAnonymous::Auto)).await;
    let addr = server.local_addr();
    let mut anon = Client::connect(addr).await;
    for frame in [
        json!({"type": "subscribe", "channel-id": "lobby"}),
        json!({"type": "publish", "channel-id": "lobby", "data": 1}),
        json!({"type": "rpc-request", "channel-id": "lobby", "data": 1}),
        json!({"type": "list-channels"}),
        json!({"type": "get-subscriptions"}),
    ] {
        let r = send_recv(&mut anon, frame.clone()).await;
        assert_eq!(
            (r["type"].as_str(), r["reason"].as_str()),
            (Some("error"), Some("unauthorized")),
            "{frame}: {r}"
        );
    }
    anon.roundtrip().await;
    // Not processed: nothing was created or subscribed.
    assert_eq!(server.channels().channel_count(), 0);
    let r = send_recv(
        &mut anon,
        json!({"type": "authenticate", "token": "nonsense"}),
    )
    .await;
    assert_eq!(
        r,
        json!({"type": "authenticate-result", "success": false, "reason": "unauthorized"})
    );
    let exp = secs() + 600;
    let r = send_recv(
        &mut anon,
        json!({"type": "authenticate", "token": token(json!({"sub": "carol", "exp": exp}))}),
    )
    .await;
    assert_eq!(
        r,
        json!({"type": "authenticate-result", "success": true, "user-id": "carol", "expires-at": exp * 1000})
    );
    anon.subscribe("lobby").await;
    let s = stats(addr).await;
    assert!(
        s["channel-stats"]["rejected"]["unauthorized"]
            .as_u64()
            .unwrap()
            >= 6,
        "{}",
        s["channel-stats"]["rejected"]
    );
}

#[tokio::test]
async fn a_connection_that_never_authenticates_is_closed_with_4001() {
    let mut c = auth_config(AllowAnonymous::No);
    c.auth.timeout_ms = 300;
    let server = start(c).await;
    let mut anon = Client::connect(server.local_addr()).await;
    let started = std::time::Instant::now();
    let (_, end) = anon.drain_until_end().await;
    assert!(
        matches!(&end, Ended::Closed(Some((4001, r))) if r == "unauthorized"),
        "{end:?}"
    );
    assert!(
        started.elapsed() >= Duration::from_millis(250),
        "{:?}",
        started.elapsed()
    );
    // One that authenticates in time stays.
    let mut ok = Client::connect(server.local_addr()).await;
    let r = send_recv(
        &mut ok,
        json!({"type": "authenticate", "token": token(json!({"sub": "dave"}))}),
    )
    .await;
    assert_eq!(r["success"], true, "{r}");
    tokio::time::sleep(Duration::from_millis(500)).await; // past the 300 ms the first one had
    ok.roundtrip().await;
}

#[tokio::test]
async fn an_expired_token_closes_with_4002_unless_refreshed_for_the_same_user() {
    let server = start(auth_config(AllowAnonymous::Auto)).await;
    let addr = server.local_addr();
    let exp = secs() + 2;
    let mut short = connect_as(addr, json!({"sub": "erin", "exp": exp})).await;
    let mut refreshed = connect_as(addr, json!({"sub": "erin", "exp": exp})).await;
    let r = send_recv(&mut refreshed, json!({"type": "authenticate", "token": token(json!({"sub": "mallory", "exp": exp + 600}))})).await;
    assert_eq!(
        (r["success"].as_bool(), r["reason"].as_str()),
        (Some(false), Some("forbidden")),
        "another user: {r}"
    );
    let r = send_recv(
        &mut refreshed,
        json!({"type": "authenticate", "token": token(json!({"sub": "erin", "exp": exp + 600}))}),
    )
    .await;
    assert_eq!(r["success"], true, "{r}");
    let (_, end) = short.drain_until_end().await;
    assert!(
        matches!(&end, Ended::Closed(Some((4002, r))) if r == "token-expired"),
        "{end:?}"
    );
    assert!(now_ms() >= exp * 1000, "closed before its exp");
    refreshed.roundtrip().await;
    refreshed.subscribe("lobby").await;
}

#[tokio::test]
async fn namespace_permissions_refuse_with_forbidden_and_are_counted() {
    let server = start(auth_config(AllowAnonymous::Yes)).await;
    let addr = server.local_addr();
    let mut anon = Client::connect(addr).await;
    let mut alice = connect_as(
        addr,
        json!({"sub": "alice", "channels": ["private:alice-*"]}),
    )
    .await;
    let mut bob = connect_as(addr, json!({"sub": "bob", "channels": ["private:bob-*"]})).await;

    let refused = |r: &Value, ty: &str| {
        assert_eq!(r["type"], ty, "{r}");
        // rpc-request-result nests its outcome in `delivery`.
        let outcome = r.get("delivery").unwrap_or(r);
        assert_eq!(outcome["success"], false, "{r}");
        assert_eq!(outcome["reason"], "forbidden", "{r}");
    };
    let sub = |ch: &str| json!({"type": "subscribe", "channel-id": ch});
    refused(
        &send_recv(&mut anon, sub("private:alice-1")).await,
        "subscription-result",
    );
    refused(
        &send_recv(&mut bob, sub("private:alice-1")).await,
        "subscription-result",
    );
    alice.subscribe("private:alice-1").await;
    // publish = subscribers: alice (subscribed) may, bob may not.
    let publ = |ch: &str| json!({"type": "publish", "channel-id": ch, "data": "x"});
    refused(
        &send_recv(&mut bob, publ("private:alice-1")).await,
        "publish-result",
    );
    let r = send_recv(&mut alice, publ("private:alice-1")).await;
    let (r, _) = if r["type"] == "channel-message" {
        (alice.recv_type("publish-result").await, ())
    } else {
        (r, ())
    };
    assert_eq!(r["success"], true, "{r}");
    // rpc-call = nobody.
    let rpc = json!({"type": "rpc-request", "channel-id": "private:alice-1", "data": 1});
    refused(&send_recv(&mut alice, rpc).await, "rpc-request-result");
    // public: anyone subscribes, only users publish.
    anon.subscribe("public:news").await;
    refused(
        &send_recv(&mut anon, publ("public:news")).await,
        "publish-result",
    );
    bob.publish("public:news", json!("hi")).await;
    assert_eq!(anon.recv_type("channel-message").await["data"], "hi");
    // The default namespace is open.
    anon.publish("lobby", json!(1)).await;
    let s = stats(addr).await;
    assert_eq!(
        s["channel-stats"]["rejected"]["forbidden"], 5,
        "{}",
        s["channel-stats"]["rejected"]
    );
}

#[tokio::test]
async fn list_channels_shows_only_what_may_be_subscribed_in_pages() {
    let server = start(auth_config(AllowAnonymous::Yes)).await;
    let addr = server.local_addr();
    for i in 0..250 {
        server
            .channels()
            .create_channel(&format!("room-{i:03}"), None)
            .await
            .unwrap();
    }
    for id in ["private:alice-1", "private:bob-1"] {
        server.channels().create_channel(id, None).await.unwrap();
    }
    let pages = |c: Client, limit: Option<u64>| async move {
        let mut c = c;
        let mut seen = Vec::new();
        let mut cursor: Option<String> = None;
        let mut sizes = Vec::new();
        loop {
            let mut frame = json!({"type": "list-channels"});
            if let Some(l) = limit {
                frame["limit"] = json!(l);
            }
            if let Some(cur) = &cursor {
                frame["cursor"] = json!(cur);
            }
            let r = send_recv(&mut c, frame).await;
            assert_eq!(r["type"], "channel-list", "{r}");
            let ids: Vec<String> = r["channels"].as_object().unwrap().keys().cloned().collect();
            sizes.push(ids.len());
            seen.extend(ids);
            match r.get("next-cursor") {
                Some(next) => cursor = Some(next.as_str().unwrap().to_owned()),
                None => break,
            }
        }
        (seen, sizes)
    };
    let (seen, sizes) = pages(Client::connect(addr).await, None).await;
    assert_eq!(sizes, [100, 100, 50], "default limit 100");
    assert_eq!(seen.len(), 250);
    assert!(
        seen.iter().all(|id| id.starts_with("room-")),
        "anonymous sees no private channel"
    );
    let mut sorted = seen.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(sorted.len(), 250, "each channel once");
    let alice = connect_as(
        addr,
        json!({"sub": "alice", "channels": ["private:alice-*"]}),
    )
    .await;
    let (seen, sizes) = pages(alice, Some(200)).await;
    assert_eq!(sizes, [200, 51]);
    assert!(
        seen.contains(&"private:alice-1".to_owned()) && !seen.contains(&"private:bob-1".to_owned())
    );
    // A limit past the most is cut to it.
    let mut c = Client::connect(addr).await;
    let r = send_recv(&mut c, json!({"type": "list-channels", "limit": 1_000_000})).await;
    assert_eq!(r["channels"].as_object().unwrap().len(), 250);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_node_of_a_cluster_applies_the_same_rules() {
    let redis = sente_lite_tests::external::RedisServer::start();
    let node = |id: &str| redis_node(auth_config(AllowAnonymous::Yes), &redis.url(), id);
    let a = start(node("node-a")).await;
    let b = start(node("node-b")).await;
    for n in [&a, &b] {
        wait_healthy(n.local_addr(), 2).await;
    }
    let mut alice = connect_as(
        a.local_addr(),
        json!({"sub": "alice", "channels": ["private:alice-*"]}),
    )
    .await;
    alice.subscribe("private:alice-1").await;
    let mut anon_b = Client::connect(b.local_addr()).await;
    let r = send_recv(
        &mut anon_b,
        json!({"type": "subscribe", "channel-id": "private:alice-1"}),
    )
    .await;
    assert_eq!(r["reason"], "forbidden", "{r}");
    let r = send_recv(&mut anon_b, json!({"type": "list-channels"})).await;
    assert!(r["channels"].as_object().unwrap().is_empty(), "{r}");
    let mut alice_b = connect_as(
        b.local_addr(),
        json!({"sub": "alice", "channels": ["private:alice-*"]}),
    )
    .await;
    let r = send_recv(&mut alice_b, json!({"type": "list-channels"})).await;
    assert!(r["channels"].get("private:alice-1").is_some(), "{r}");
    alice_b.subscribe("private:alice-1").await;
    let r = send_recv(
        &mut alice_b,
        json!({"type": "publish", "channel-id": "private:alice-1", "data": 7}),
    )
    .await;
    let r = if r["type"] == "channel-message" {
        alice_b.recv_type("publish-result").await
    } else {
        r
    };
    assert_eq!(r["success"], true, "{r}");
    assert_eq!(alice.recv_type("channel-message").await["data"], 7);
}

#[tokio::test]
async fn get_channels_is_paginated_too() {
    let server = start_default().await;
    let addr = server.local_addr();
    for i in 0..150 {
        server
            .channels()
            .create_channel(&format!("c:{i:03} x"), None)
            .await
            .unwrap();
    }
    let (status, first) = http_get(addr, "/channels").await;
    assert_eq!(status, 200, "{first}");
    assert_eq!(first["channels"].as_object().unwrap().len(), 100);
    let cursor = first["next-cursor"].as_str().unwrap().to_owned();
    assert_eq!(cursor, "c:099 x");
    let encoded = cursor.replace(':', "%3A").replace(' ', "%20");
    let (_, second) = http_get(addr, &format!("/channels?limit=1000&cursor={encoded}")).await;
    let ids: Vec<&String> = second["channels"].as_object().unwrap().keys().collect();
    assert_eq!(ids.len(), 50, "{second}");
    assert_eq!(ids[0], "c:100 x");
    assert!(second.get("next-cursor").is_none(), "{second}");
    let (status, body) = http_get(addr, "/channels?limit=lots").await;
    assert_eq!(
        (status, body["reason"].as_str()),
        (400, Some("invalid-message")),
        "{body}"
    );
}
