//! The admin endpoints behind `http.admin-token`, and what `/health` and
//! `/stats` may show: no secret, no broker password.

#![allow(clippy::unwrap_used)]

use sente_lite_tests::*;
use serde_json::json;

const TOKEN: &str = "test-admin-token-0123456789";

fn with_token() -> Config {
    let mut c = config();
    c.http.admin_token = TOKEN.to_owned();
    // Shown in /stats (the local broker never reads it): its password must
    // not be.
    c.broker.redis_url = "redis://app:hunter2@127.0.0.1:6379/0".to_owned();
    c
}

#[tokio::test]
async fn with_an_admin_token_stats_and_channels_need_it() {
    let server = start(with_token()).await;
    let addr = server.local_addr();
    let mut a = Client::connect(addr).await;
    a.subscribe("private-room").await;

    let bearer = format!("Bearer {TOKEN}");
    let lower = format!("bearer {TOKEN}");
    let wrong = format!("Bearer {TOKEN}x");
    let basic = format!("Basic {TOKEN}");
    let mut refused = 0;
    for path in ["/stats", "/channels"] {
        for headers in [
            vec![],
            vec![("Authorization", wrong.as_str())],
            vec![("Authorization", basic.as_str())],
            vec![("Authorization", "Bearer ")],
            vec![("Authorization", TOKEN)],
        ] {
            let r = http_request(addr, "GET", path, &headers).await;
            refused += 1;
            assert_eq!(r.status, 401, "{path} {headers:?}: {}", r.body);
            let body = r.json();
            assert_keys(&body, &["error", "reason", "message"]);
            assert_eq!(body["error"], "unauthorized");
            assert_eq!(body["reason"], "unauthorized");
            assert!(r.header("www-authenticate").unwrap().starts_with("Bearer"));
            assert!(!r.body.contains("private-room") && !r.body.contains(TOKEN));
        }
        for auth in [&bearer, &lower] {
            let r = http_request(addr, "GET", path, &[("Authorization", auth.as_str())]).await;
            assert_eq!(r.status, 200, "{path}: {}", r.body);
            assert!(r.body.contains("private-room"), "{}", r.body);
        }
    }
    let r = http_request(addr, "GET", "/stats", &[("Authorization", bearer.as_str())]).await;
    let s = r.json();
    assert_eq!(s["transport"]["rejected-unauthorized"], refused, "{s}");
    // The running configuration shows the token as set, never the token,
    // and the broker URL without its password.
    assert_eq!(s["server-config"]["http"]["admin-token"], "<set>", "{s}");
    assert_eq!(
        s["server-config"]["broker"]["redis-url"],
        "redis://app:<redacted>@127.0.0.1:6379/0"
    );
    assert!(!r.body.contains(TOKEN) && !r.body.contains("hunter2"));
}

#[tokio::test]
async fn health_stays_open_and_shows_no_channel_names_or_config() {
    let server = start(with_token()).await;
    let addr = server.local_addr();
    let mut a = Client::connect(addr).await;
    a.subscribe("private-room").await;
    let mut b = Client::connect(addr).await;
    b.publish("private-room", json!("x")).await;
    let r = http_request(addr, "GET", "/health", &[]).await;
    assert_eq!(r.status, 200, "{}", r.body);
    for secret in [
        "private-room",
        TOKEN,
        "hunter2",
        "server-config",
        "redis://",
    ] {
        assert!(
            !r.body.contains(secret),
            "/health shows {secret}: {}",
            r.body
        );
    }
    let (status, h) = http_get(addr, "/health").await;
    assert_eq!(status, 200);
    assert_eq!(h["channels"], 1, "counts, not names: {h}");
}

#[tokio::test]
async fn without_a_token_the_admin_endpoints_are_open_as_before() {
    let server = start_default().await;
    let addr = server.local_addr();
    let s = stats(addr).await;
    assert_eq!(s["server-config"]["http"]["admin-token"], "", "{s}");
    // A token sent anyway is ignored.
    let r = http_request(
        addr,
        "GET",
        "/channels",
        &[("Authorization", "Bearer whatever")],
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(stats(addr).await["transport"]["rejected-unauthorized"], 0);
}

/// A Redis broker that cannot be reached: `/health` says so, without the
/// password in its URL.
#[tokio::test]
async fn health_never_shows_the_broker_password() {
    let port = external::free_port();
    let mut c = config();
    c.broker.kind = sente_lite_server::BrokerKind::Redis;
    c.broker.redis_url = format!("redis://app:hunter2@127.0.0.1:{port}/0");
    c.websocket.message_timeout_ms = 200;
    let server = start(c).await;
    let addr = server.local_addr();
    let mut last = String::new();
    let deadline = tokio::time::Instant::now() + TIMEOUT;
    // Until the first connect attempt has failed and named the URL.
    while !last.contains("connect to") {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no connect error: {last}"
        );
        let r = http_request(addr, "GET", "/health", &[]).await;
        assert_eq!(r.status, 503, "{}", r.body);
        last = r.body;
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert!(!last.contains("hunter2"), "{last}");
    assert!(last.contains("redis://app:<redacted>@127.0.0.1"), "{last}");
    // Nor does a client refused for it: the broker's error text is
    // redacted where it is made, not only in /health (`list-channels`
    // answers with the broker's error as its message).
    let mut a = Client::connect(addr).await;
    a.send(json!({"type": "list-channels"})).await;
    let r = a.recv_type("error").await;
    assert_eq!(r["reason"], "broker-unavailable", "{r}");
    assert!(r["message"].as_str().unwrap().contains("<redacted>"), "{r}");
    assert!(!r.to_string().contains("hunter2"), "{r}");
}
