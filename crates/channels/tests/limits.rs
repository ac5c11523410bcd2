//! The engine's own limits: subscriptions per connection, idle channels,
//! retained bytes (per channel and in total), replays cut to fit the
//! subscriber's queue, and who may answer an RPC request.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

mod common;

use common::Inbox;
use sente_lite_channels::{Engine, EngineConfig, Frame, Subscribed};
use sente_lite_protocol::{ChannelConfig, Reason};
use serde_json::json;
use std::time::{Duration, Instant};

fn engine_with(f: impl FnOnce(&mut EngineConfig)) -> Engine {
    let mut c = EngineConfig::default();
    f(&mut c);
    Engine::new(c).unwrap()
}

fn retaining(n: usize) -> ChannelConfig {
    ChannelConfig {
        message_retention: n,
        ..ChannelConfig::default()
    }
}

/// A JSON string value of about `n` bytes.
fn blob(n: usize, tag: usize) -> serde_json::Value {
    json!(format!("{tag:04}{}", "x".repeat(n)))
}

/// Waits (at most `within`) for `cond`, checking every few milliseconds.
async fn eventually(within: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if cond() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    cond()
}

#[tokio::test]
async fn subscriptions_per_connection_are_bounded() {
    let e = engine_with(|c| c.max_subscriptions_per_connection = 2);
    let a = e.connect(Inbox::new()).unwrap();
    let b = e.connect(Inbox::new()).unwrap();
    e.subscribe(a, "one").await.unwrap();
    e.subscribe(a, "two").await.unwrap();
    let err = e.subscribe(a, "three").await.unwrap_err();
    assert_eq!(err.reason(), Reason::MaxSubscriptionsReached);
    // Subscribing again to one it has is no new subscription.
    assert!(e.subscribe(a, "two").await.unwrap().already_subscribed);
    // Another connection has its own budget.
    e.subscribe(b, "three").await.unwrap();
    // Room again after a leave.
    e.unsubscribe(a, "one").await.unwrap();
    e.subscribe(a, "three").await.unwrap();
    assert_eq!(e.subscriptions(a).unwrap(), ["three", "two"]);
    assert_eq!(e.rejections()[&Reason::MaxSubscriptionsReached], 1);
}

#[tokio::test]
async fn idle_auto_created_channels_are_removed_with_their_history() {
    let e = engine_with(|c| {
        c.idle_channel_ttl_ms = 200;
        c.default_channel = retaining(5);
    });
    let started = Instant::now();
    let a = e.connect(Inbox::new()).unwrap();
    e.publish(None, "unused", json!(1), false).await.unwrap();
    e.create_channel("created", None).await.unwrap();
    e.subscribe(a, "busy").await.unwrap();
    e.subscribe(a, "left").await.unwrap();
    e.unsubscribe(a, "left").await.unwrap();
    assert_eq!(e.channel_count(), 4);

    assert!(
        eventually(Duration::from_secs(5), || e.channel_count() == 2).await,
        "the two idle auto-created channels go"
    );
    assert!(
        started.elapsed() >= Duration::from_millis(200),
        "not before the ttl"
    );
    let left: Vec<String> = e.list_channels().await.unwrap().into_keys().collect();
    assert_eq!(left, ["busy", "created"]);
    assert_eq!(e.limit_stats().idle_channels_removed, 2);
    // Its retained message went with it: a new subscriber sees none.
    let again = e.subscribe(a, "unused").await.unwrap();
    assert!(again.retained_messages.is_empty());
    assert_eq!(again.position.offset, 0);
}

#[tokio::test]
async fn a_channel_in_use_is_not_idle() {
    let e = engine_with(|c| c.idle_channel_ttl_ms = 300);
    // Published to all the time, no subscriber: in use.
    let t0 = Instant::now();
    while t0.elapsed() < Duration::from_millis(700) {
        e.publish(None, "ticker", json!(1), false).await.unwrap();
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(e.channel_count(), 1);
    assert_eq!(e.sweep_idle_channels().await, 0);
    assert_eq!(e.limit_stats().idle_channels_removed, 0);
}

#[tokio::test]
async fn retained_bytes_per_channel_drop_the_oldest() {
    let e = engine_with(|c| {
        c.max_retained_bytes = 10_000;
        c.default_channel = retaining(100);
    });
    for i in 1..=20 {
        e.publish(None, "c", blob(1_000, i), false).await.unwrap();
    }
    let kept = e.channel_info("c").await.unwrap().retained_messages;
    assert!(kept.len() < 10, "at most 10 000 bytes: {}", kept.len());
    assert!(kept.len() >= 5, "as many as fit: {}", kept.len());
    assert_eq!(kept.last().unwrap().offset, 20, "the newest are kept");
    let offsets: Vec<u64> = kept.iter().map(|m| m.offset).collect();
    let want: Vec<u64> = (21 - kept.len() as u64..=20).collect();
    assert_eq!(offsets, want);
    let stats = e.limit_stats();
    assert!(stats.retained_bytes <= 10_000, "{stats:?}");
    assert_eq!(stats.retained_evicted, 20 - kept.len() as u64);
    // One message larger than the bound is not retained at all.
    e.publish(None, "c", blob(20_000, 0), false).await.unwrap();
    let kept = e.channel_info("c").await.unwrap().retained_messages;
    assert!(kept.iter().all(|m| m.offset != 21));
}

#[tokio::test]
async fn retained_bytes_in_total_drop_the_oldest_of_any_channel() {
    let e = engine_with(|c| {
        c.max_retained_bytes_total = 20_000;
        c.default_channel = retaining(100);
    });
    for i in 1..=10 {
        e.publish(None, "old", blob(1_000, i), false).await.unwrap();
    }
    for i in 1..=10 {
        e.publish(None, "new", blob(1_000, i), false).await.unwrap();
    }
    let old = e.channel_info("old").await.unwrap().retained_messages;
    let new = e.channel_info("new").await.unwrap().retained_messages;
    assert_eq!(new.len(), 10, "the newer channel keeps everything");
    assert!(old.len() < 10, "the oldest messages went first");
    assert_eq!(old.last().unwrap().offset, 10);
    let stats = e.limit_stats();
    assert!(stats.retained_bytes <= 20_000, "{stats:?}");
    assert_eq!(stats.retained_evicted, 10 - old.len() as u64);
    // Deleting a channel gives its bytes back.
    e.delete_channel("new").await.unwrap();
    e.delete_channel("old").await.unwrap();
    assert_eq!(e.limit_stats().retained_bytes, 0);
}

fn result_frame(s: &Subscribed) -> Frame {
    Frame::new(
        json!({
            "type": "subscription-result",
            "retained-messages": s.retained_messages,
            "retained-omitted": s.retained_omitted,
        })
        .to_string(),
    )
}

#[tokio::test]
async fn a_replay_is_cut_to_fit_the_subscribers_queue() {
    let e = engine_with(|c| c.default_channel = retaining(10));
    for i in 1..=10 {
        e.publish(None, "big", blob(1_000, i), false).await.unwrap();
    }
    let inbox = Inbox::new();
    *inbox.free.lock() = Some(4_000);
    let c = e.connect(inbox.clone()).unwrap();
    let s = e
        .subscribe_with_reply(c, "big", Some(&result_frame))
        .await
        .unwrap();
    assert!(s.retained_omitted > 0);
    assert_eq!(s.retained_messages.len() + s.retained_omitted, 10);
    assert_eq!(
        s.retained_messages.last().unwrap().offset,
        10,
        "newest kept"
    );
    let frame = &inbox.raw()[0];
    assert!(frame.len() <= 4_000, "the frame fits: {}", frame.len());
    assert_eq!(e.limit_stats().retained_omitted, s.retained_omitted as u64);

    // Room for everything: nothing left out.
    let roomy = Inbox::new();
    *roomy.free.lock() = Some(1 << 20);
    let c = e.connect(roomy.clone()).unwrap();
    let s = e
        .subscribe_with_reply(c, "big", Some(&result_frame))
        .await
        .unwrap();
    assert_eq!((s.retained_messages.len(), s.retained_omitted), (10, 0));
}

#[tokio::test]
async fn a_replay_never_carries_more_than_max_retained_bytes() {
    // Retained under an older, larger bound is still cut on the way out.
    let e = engine_with(|c| {
        c.max_retained_bytes = 3_000;
        c.default_channel = retaining(10);
    });
    for i in 1..=10 {
        e.publish(None, "c", blob(1_000, i), false).await.unwrap();
    }
    let c = e.connect(Inbox::new()).unwrap();
    let s = e.subscribe(c, "c").await.unwrap();
    let bytes: usize = s
        .retained_messages
        .iter()
        .map(|m| serde_json::to_string(m).unwrap().len())
        .sum();
    assert!(bytes <= 3_000, "{bytes}");
    assert_eq!(s.retained_messages.last().unwrap().offset, 10);
}

#[tokio::test]
async fn only_a_connection_sent_the_request_may_answer_it() {
    let e = Engine::new(EngineConfig::default()).unwrap();
    let req = Inbox::new();
    let r = e.connect(req.clone()).unwrap();
    let w = e.connect(Inbox::new()).unwrap();
    let stranger = e.connect(Inbox::new()).unwrap();
    let late = e.connect(Inbox::new()).unwrap();
    e.subscribe(r, "api").await.unwrap();
    e.subscribe(w, "api").await.unwrap();
    e.subscribe(stranger, "elsewhere").await.unwrap();
    let sent = e
        .send_rpc_request(r, "api", json!("q"), Some(5_000))
        .await
        .unwrap();
    // Subscribed after the request went out: it was not sent it.
    e.subscribe(late, "api").await.unwrap();
    for who in [stranger, late, r] {
        let err = e
            .send_rpc_response(who, None, &sent.request_id, json!("forged"), false)
            .await
            .unwrap_err();
        assert_eq!(err.reason(), Reason::RequestNotFound, "{who}");
    }
    assert!(req.of_type("rpc-response").is_empty());
    // The real worker's answer still goes through, naming it.
    e.send_rpc_response(w, Some("user-7"), &sent.request_id, json!("real"), false)
        .await
        .unwrap();
    let got = req.of_type("rpc-response");
    assert_eq!(got.len(), 1);
    assert_eq!(got[0]["data"], "real");
    assert_eq!(got[0]["responder-conn-id"], w.to_string().as_str());
    assert_eq!(got[0]["responder-user-id"], "user-7");
    // Answered: forgotten.
    assert_eq!(e.hub().rpc_sent_len(), 0);
}

#[tokio::test]
async fn a_worker_that_left_the_channel_may_not_answer() {
    let e = Engine::new(EngineConfig::default()).unwrap();
    let r = e.connect(Inbox::new()).unwrap();
    let w = e.connect(Inbox::new()).unwrap();
    let w2 = e.connect(Inbox::new()).unwrap();
    e.subscribe(w, "api").await.unwrap();
    e.subscribe(w2, "api").await.unwrap();
    let sent = e
        .send_rpc_request(r, "api", json!("q"), Some(5_000))
        .await
        .unwrap();
    e.unsubscribe(w, "api").await.unwrap();
    e.subscribe(w, "api").await.unwrap();
    let err = e
        .send_rpc_response(w, None, &sent.request_id, json!(1), false)
        .await
        .unwrap_err();
    assert_eq!(err.reason(), Reason::RequestNotFound);
    e.send_rpc_response(w2, None, &sent.request_id, json!(2), false)
        .await
        .unwrap();
}

#[tokio::test(start_paused = true)]
async fn who_was_sent_a_request_is_remembered_only_until_its_deadline() {
    let e = engine_with(|c| c.max_pending_rpc = 4);
    let r = e.connect(Inbox::new()).unwrap();
    let w = e.connect(Inbox::new()).unwrap();
    e.subscribe(w, "api").await.unwrap();
    let first = e
        .send_rpc_request(r, "api", json!(1), Some(100))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(150)).await;
    // Expired: the worker may no longer answer it.
    let err = e
        .send_rpc_response(w, None, &first.request_id, json!(1), false)
        .await
        .unwrap_err();
    assert_eq!(err.reason(), Reason::RequestNotFound);
    for _ in 0..4 {
        e.send_rpc_request(r, "api", json!(1), Some(60_000))
            .await
            .unwrap();
    }
    assert!(e.hub().rpc_sent_len() <= 4, "bounded by max-pending-rpc");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publishes_racing_the_idle_sweep_never_fail() {
    // A 1 ms ttl: the channel is removed between almost every two
    // publishes, so publishes keep meeting removals.
    let e = engine_with(|c| c.idle_channel_ttl_ms = 1);
    let t0 = Instant::now();
    let mut n = 0u64;
    while t0.elapsed() < Duration::from_millis(600) {
        for ch in ["a", "b", "c"] {
            e.publish(None, ch, json!(n), false)
                .await
                .unwrap_or_else(|err| panic!("publish {n} to {ch}: {err}"));
        }
        n += 1;
        tokio::time::sleep(Duration::from_millis(3)).await;
    }
    assert!(
        e.limit_stats().idle_channels_removed > 0,
        "the sweep did remove channels meanwhile"
    );
}

/// A recovery is all or nothing, and it never overflows the subscriber's
/// queue: when the missed messages would not fit it, the subscriber is
/// told `too-far-behind` and gets the fresh retained replay instead.
#[tokio::test]
async fn a_recovery_that_would_not_fit_the_queue_starts_afresh() {
    let e = engine_with(|c| {
        c.default_channel = ChannelConfig {
            message_retention: 1,
            history_size: 50,
            ..ChannelConfig::default()
        }
    });
    let first = e
        .subscribe(e.connect(Inbox::new()).unwrap(), "c")
        .await
        .unwrap();
    for i in 0..20 {
        e.publish(None, "c", blob(500, i), false).await.unwrap();
    }
    let at = sente_lite_protocol::Position {
        offset: 0,
        epoch: first.position.epoch.to_string(),
    };
    let reply = |_: &Subscribed| Frame::new("{\"type\":\"subscription-result\"}".into());

    // Room for all 20: recovered, in order, right after the reply.
    let roomy = Inbox::new();
    *roomy.free.lock() = Some(1 << 20);
    let conn = e.connect(roomy.clone()).unwrap();
    let s = e
        .subscribe_recovering(conn, "c", Some(&at), Some(&reply))
        .await
        .unwrap();
    assert_eq!(s.recovered, Some(Ok(20)));
    assert!(s.retained_messages.is_empty());
    let frames = roomy.json();
    assert_eq!(frames[0]["type"], "subscription-result");
    let offsets: Vec<u64> = frames[1..]
        .iter()
        .map(|m| m["offset"].as_u64().unwrap())
        .collect();
    assert_eq!(offsets, (1..=20).collect::<Vec<_>>());
    assert_eq!(e.limit_stats().recovered, 20);

    // Room for about ten: none of them, and the retained replay.
    let tight = Inbox::new();
    *tight.free.lock() = Some(6_000);
    let conn = e.connect(tight.clone()).unwrap();
    let s = e
        .subscribe_recovering(conn, "c", Some(&at), Some(&reply))
        .await
        .unwrap();
    assert_eq!(s.recovered, Some(Err(Reason::TooFarBehind)));
    assert_eq!(s.retained_messages.len(), 1);
    assert_eq!(tight.of_type("channel-message").len(), 0);
    assert_eq!(e.limit_stats().recovered, 20);

    // Room in bytes but not in frames (the reply and 20 messages do not
    // fit 20 frames): none of them either.
    let few = Inbox::with_capacity(20);
    let conn = e.connect(few.clone()).unwrap();
    let s = e
        .subscribe_recovering(conn, "c", Some(&at), Some(&reply))
        .await
        .unwrap();
    assert_eq!(s.recovered, Some(Err(Reason::TooFarBehind)));
    assert_eq!(few.of_type("channel-message").len(), 0);
    let conn = e.connect(Inbox::with_capacity(21)).unwrap();
    let s = e
        .subscribe_recovering(conn, "c", Some(&at), None)
        .await
        .unwrap();
    assert_eq!(s.recovered, Some(Ok(20)), "the reply and 20 fit 21");

    // Already subscribed: nothing changes, nothing is recovered.
    let s = e
        .subscribe_recovering(conn, "c", Some(&at), None)
        .await
        .unwrap();
    assert!(s.already_subscribed);
    assert_eq!(s.recovered, None);
}
