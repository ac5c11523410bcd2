//! The deployment harness end to end: the committed `deploy/nginx.conf` in
//! a real nginx in front of a server (WebSockets and HTTP through it), a
//! real redis-server (started, stopped, started again), and real server
//! processes (`sente-lite-node`, SIGKILLed). Needs the Debian packages
//! redis-server and nginx (`.ci/run` installs them).

#![allow(clippy::unwrap_used)]

use sente_lite_tests::external::{self, Nginx, Node, RedisServer};
use sente_lite_tests::*;
use serde_json::json;

/// Publishes from `from` (subscribed to `channel`, so it gets its own
/// message too) and returns its `channel-message` and `publish-result`,
/// which may come in either order.
async fn publish_subscribed(
    from: &mut Client,
    channel: &str,
    data: serde_json::Value,
) -> (serde_json::Value, serde_json::Value) {
    from.send(json!({"type": "publish", "channel-id": channel, "data": data}))
        .await;
    let (mut message, mut result) = (None, None);
    while message.is_none() || result.is_none() {
        let v = from.recv().await;
        match v["type"].as_str() {
            Some("channel-message") => message = Some(v),
            Some("publish-result") => result = Some(v),
            _ => panic!("unexpected frame while publishing: {v}"),
        }
    }
    (message.unwrap(), result.unwrap())
}

#[tokio::test]
async fn websockets_and_http_go_through_the_deploy_nginx_conf() {
    let server = start_default().await;
    let nginx = Nginx::start(&[server.local_addr()]);

    let mut a = Client::connect(nginx.addr()).await;
    let mut b = Client::connect(nginx.addr()).await;
    assert_ne!(a.conn_id, b.conn_id);
    a.subscribe("room").await;
    b.subscribe("room").await;

    let (own, result) = publish_subscribed(&mut a, "room", json!({"m": "through nginx"})).await;
    assert_eq!(result["delivered-to"], 2, "{result}");
    assert_eq!(own["data"], json!({"m": "through nginx"}), "{own}");
    let got = b.recv_type("channel-message").await;
    assert_eq!(got["channel-id"], "room", "{got}");
    assert_eq!(got["data"], json!({"m": "through nginx"}), "{got}");
    assert_eq!(got["sender-conn-id"], a.conn_id.as_str(), "{got}");
    assert_eq!(got["offset"], own["offset"], "one message, one position");

    let (status, health) = http_get(nginx.addr(), "/health").await;
    assert_eq!(status, 200, "{health}\nnginx log:\n{}", nginx.log());
    assert_eq!(health["status"], "healthy", "{health}");
    assert_eq!(health["connections"], 2, "{health}");

    // Both connections are the server's own, upgraded through the proxy.
    let r = http_request(nginx.addr(), "GET", "/stats", &[]).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(
        r.header("server").unwrap_or_default().starts_with("nginx"),
        "answered by nginx: {:?}",
        r.headers
    );
    a.roundtrip().await;
    b.roundtrip().await;
    a.close().await;
    b.close().await;
    drop(nginx);
    server.stop().await;
}

#[test]
fn the_deploy_nginx_conf_is_the_seed_block_with_long_timeouts() {
    let conf = external::deploy_nginx_conf();
    for line in [
        "upstream sente_lite {",
        "server app1:3000;",
        "server app2:3000;",
        "server app3:3000;",
        "listen 80;",
        "proxy_pass http://sente_lite;",
        "proxy_http_version 1.1;",
        "proxy_set_header Upgrade $http_upgrade;",
        "proxy_set_header Connection \"upgrade\";",
        "proxy_set_header Host $host;",
        "proxy_set_header X-Real-IP $remote_addr;",
        "proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;",
        "proxy_cache_bypass $http_upgrade;",
        "proxy_read_timeout 3600s;",
    ] {
        assert!(
            conf.lines().any(|l| l.trim() == line),
            "deploy/nginx.conf lacks `{line}`"
        );
    }
    let a = external::local(4001);
    let b = external::local(4002);
    let rewritten = external::rewrite_nginx_conf(&conf, &[a, b], external::local(4000));
    assert!(
        rewritten.contains("server 127.0.0.1:4001;\n"),
        "{rewritten}"
    );
    assert!(
        rewritten.contains("server 127.0.0.1:4002;\n"),
        "{rewritten}"
    );
    assert!(
        rewritten.contains("listen 127.0.0.1:4000;\n"),
        "{rewritten}"
    );
    assert!(!rewritten.contains("app1"), "{rewritten}");
}

#[test]
fn redis_server_answers_stops_and_starts_again_empty() {
    let mut redis = RedisServer::start();
    let port = redis.port();
    assert_eq!(redis.url(), format!("redis://127.0.0.1:{port}/"));
    assert_eq!(redis.command(&["PING"]), "+PONG\r\n");
    assert_eq!(redis.command(&["SET", "k", "v"]), "+OK\r\n");
    assert_eq!(redis.command(&["GET", "k"]), "$1\r\nv\r\n");
    assert_eq!(redis.command(&["KEYS", "*"]), "*1\r\n$1\r\nk\r\n");
    assert_eq!(redis.command(&["GET", "none"]), "$-1\r\n");

    redis.stop();
    assert!(!redis.is_running());
    assert!(
        !external::accepts(redis.addr()),
        "nothing listens after stop"
    );

    redis.start_again();
    assert!(redis.is_running());
    assert_eq!(redis.port(), port, "the same port");
    assert_eq!(redis.command(&["PING"]), "+PONG\r\n");
    assert_eq!(redis.command(&["GET", "k"]), "$-1\r\n", "no data kept");
    assert_eq!(redis.command(&["SET", "k", "w"]), "+OK\r\n");

    redis.kill();
    assert!(!redis.is_running());
    assert!(
        !external::accepts(redis.addr()),
        "nothing listens after kill"
    );
    redis.start_again();
    assert_eq!(
        redis.command(&["DBSIZE"]),
        ":0\r\n",
        "empty after a kill too"
    );
}

#[tokio::test]
async fn a_node_process_serves_health_until_killed() {
    let mut node = Node::spawn(sente_lite_tests::node_bin!(), &[]);
    assert!(node.is_running());
    let (status, health) = http_get(node.addr(), "/health").await;
    assert_eq!(status, 200, "{health}\n{}", node.log());
    assert_eq!(health["status"], "healthy", "{health}");

    let mut c = Client::connect(node.addr()).await;
    c.subscribe("x").await;
    node.kill();
    assert!(!node.is_running());
    assert!(
        !external::accepts(node.addr()),
        "nothing listens after kill"
    );
    // SIGKILL: the connection drops without a close frame.
    let (_, end) = c.drain_until_end().await;
    assert!(matches!(end, Ended::Dropped(_)), "{end:?}");
    let log = node.log();
    assert!(
        log.lines()
            .all(|l| l.starts_with("sente-lite listening on ")),
        "telemetry output none: nothing but the startup line:\n{log}"
    );
}

#[tokio::test]
async fn nginx_passes_over_a_killed_node() {
    let mut one = Node::spawn(sente_lite_tests::node_bin!(), &[]);
    let two = Node::spawn(sente_lite_tests::node_bin!(), &[]);
    let nginx = Nginx::start(&[one.addr(), two.addr()]);
    for _ in 0..4 {
        let (status, _) = http_get(nginx.addr(), "/health").await;
        assert_eq!(status, 200);
    }
    one.kill();
    // A refused connection is an error nginx passes to the next upstream.
    for _ in 0..4 {
        let (status, health) = http_get(nginx.addr(), "/health").await;
        assert_eq!(status, 200, "{health}\nnginx log:\n{}", nginx.log());
    }
    let mut c = Client::connect(nginx.addr()).await;
    c.roundtrip().await;
}

/// The environment of a node process `id` on `redis`.
fn redis_env<'a>(redis_url: &'a str, id: &'a str) -> Vec<(&'a str, &'a str)> {
    vec![
        ("SENTE_LITE_BROKER_KIND", "redis"),
        ("SENTE_LITE_BROKER_REDIS_URL", redis_url),
        ("SENTE_LITE_NODE_ID", id),
        ("SENTE_LITE_BROKER_NODE_TTL_MS", "1500"),
    ]
}

/// How long nodes spawned as processes get to see each other (or a dead
/// one's TTL to run out).
const NODES_WITHIN: std::time::Duration = std::time::Duration::from_secs(30);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_redis_nodes_behind_the_deploy_nginx_conf_are_one_server() {
    let redis = RedisServer::start();
    let url = redis.url();
    let nodes: Vec<Node> = ["app1", "app2", "app3"]
        .iter()
        .map(|id| Node::spawn(sente_lite_tests::node_bin!(), &redis_env(&url, id)))
        .collect();
    for n in &nodes {
        health_until(n.addr(), NODES_WITHIN, "three nodes", |s, h| {
            s == 200 && node_count(h) == 3
        })
        .await;
    }
    let addrs: Vec<_> = nodes.iter().map(Node::addr).collect();
    let nginx = Nginx::start(&addrs);
    // Six clients through nginx; its round robin spreads them over the
    // three nodes (the conn ids name the node).
    let mut clients = Vec::new();
    for _ in 0..6 {
        let mut c = Client::connect(nginx.addr()).await;
        c.subscribe("room").await;
        clients.push(c);
    }
    let on: std::collections::BTreeSet<String> = clients
        .iter()
        .map(|c| c.conn_id.rsplit('@').next().unwrap().to_owned())
        .collect();
    assert_eq!(on.len(), 3, "clients on every node: {on:?}");
    let mut publisher = Client::connect(nginx.addr()).await;
    for i in 0..20 {
        let r = publisher.publish("room", json!({"i": i})).await;
        assert_eq!(r["delivered-to"], 6, "{r}");
    }
    for c in &mut clients {
        for i in 0..20 {
            let m = c.recv_type("channel-message").await;
            assert_eq!(m["data"], json!({"i": i}), "{}", c.conn_id);
        }
        c.roundtrip().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_node_stops_being_counted_and_the_others_serve_on() {
    let redis = RedisServer::start();
    let url = redis.url();
    let mut doomed = Node::spawn(sente_lite_tests::node_bin!(), &redis_env(&url, "doomed"));
    let survivor = start(redis_node(config(), &url, "survivor")).await;
    health_until(survivor.local_addr(), NODES_WITHIN, "two nodes", |s, h| {
        s == 200 && node_count(h) == 2
    })
    .await;
    let mut far = Client::connect(doomed.addr()).await;
    far.subscribe("k").await;
    let mut near = Client::connect(survivor.local_addr()).await;
    near.subscribe("k").await;
    let mut p = Client::connect(survivor.local_addr()).await;
    assert_eq!(p.publish("k", json!(1)).await["delivered-to"], 2);

    doomed.kill();
    let killed = std::time::Instant::now();
    health_until(
        survivor.local_addr(),
        NODES_WITHIN,
        "the dead node gone",
        |s, h| s == 200 && node_count(h) == 1,
    )
    .await;
    let r = p.publish("k", json!(2)).await;
    assert_eq!(r["delivered-to"], 1, "{r}");
    assert!(killed.elapsed() < std::time::Duration::from_secs(30));
    assert_eq!(near.recv_type("channel-message").await["data"], 1);
    assert_eq!(near.recv_type("channel-message").await["data"], 2);
    let (status, ch) = http_get(survivor.local_addr(), "/channels").await;
    assert_eq!(
        (status, ch["channels"]["k"]["subscriber-count"].clone()),
        (200, json!(1))
    );
}
