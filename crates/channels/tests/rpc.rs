//! RPC correlation and timeouts, with tokio's clock paused so timing is
//! exact and no test sleeps for real.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

mod common;

use common::{Inbox, Now};
use sente_lite_channels::{Engine, EngineConfig};
use sente_lite_protocol::{ChannelConfig, Reason};
use serde_json::json;
use std::time::Duration;

fn engine() -> Engine {
    Engine::new(EngineConfig::default()).unwrap()
}

#[tokio::test(start_paused = true)]
async fn request_reaches_other_subscribers_and_the_response_the_requester() {
    let e = engine();
    let (req, w1, w2) = (Inbox::new(), Inbox::new(), Inbox::new());
    let creq = e.connect(req.clone()).unwrap();
    let cw1 = e.connect(w1.clone()).unwrap();
    let cw2 = e.connect(w2.clone()).unwrap();
    for c in [creq, cw1, cw2] {
        e.subscribe(c, "api").await.unwrap();
    }
    let sent = e
        .send_rpc_request(creq, "api", json!({"action": "get"}), Some(5000))
        .await
        .unwrap();
    assert_eq!(sent.delivered_to, 2, "everyone but the requester");
    let mut workers = sent.subscribers.clone();
    workers.sort();
    let mut expect = vec![cw1.to_string(), cw2.to_string()];
    expect.sort();
    assert_eq!(workers, expect);
    assert!(req.of_type("rpc-request").is_empty());
    let delivered = &w1.of_type("rpc-request")[0];
    assert_eq!(delivered["request-id"], sent.request_id.as_str());
    assert_eq!(delivered["channel-id"], "api");
    assert_eq!(delivered["data"], json!({"action": "get"}));
    assert_eq!(delivered["sender-conn-id"], creq.to_string().as_str());
    assert_eq!(delivered["timeout-ms"], 5000);
    assert_eq!(e.pending_rpc_requests(), 1);

    let target = e
        .send_rpc_response(cw1, None, &sent.request_id, json!({"user": 1}), false)
        .await
        .unwrap();
    assert_eq!(target, Some(creq));
    let resp = req.of_type("rpc-response");
    assert_eq!(
        resp,
        vec![
            json!({"type": "rpc-response", "request-id": sent.request_id, "data": {"user": 1}, "error": false, "responder-conn-id": cw1.to_string()})
        ]
    );
    assert_eq!(e.pending_rpc_requests(), 0);
    // The second worker's answer is too late.
    let err = e
        .send_rpc_response(cw2, None, &sent.request_id, json!(2), true)
        .await
        .unwrap_err();
    assert_eq!(err.reason(), Reason::RequestNotFound);
    assert_eq!(
        e.send_rpc_response(cw2, None, "req-nope", json!(null), false)
            .await
            .unwrap_err()
            .reason(),
        Reason::RequestNotFound
    );
}

#[tokio::test(start_paused = true)]
async fn no_other_subscriber_means_no_subscribers_and_nothing_pending() {
    let e = engine();
    let req = e.connect(Inbox::new()).unwrap();
    e.subscribe(req, "lonely").await.unwrap();
    let err = e
        .send_rpc_request(req, "lonely", json!(1), None)
        .await
        .unwrap_err();
    assert_eq!(err.reason(), Reason::NoSubscribers);
    let err = e
        .send_rpc_request(req, "missing", json!(1), None)
        .await
        .unwrap_err();
    assert_eq!(err.reason(), Reason::NoSubscribers);
    assert_eq!(e.pending_rpc_requests(), 0);
    assert_eq!(e.channel_count(), 1, "an rpc-request creates no channel");
}

#[tokio::test(start_paused = true)]
async fn timeout_fires_on_its_own_within_the_deadline() {
    let e = engine();
    let req = Inbox::new();
    let creq = e.connect(req.clone()).unwrap();
    let w = e.connect(Inbox::new()).unwrap();
    e.subscribe(w, "slow").await.unwrap();
    let sent = e
        .send_rpc_request(creq, "slow", json!(1), Some(250))
        .await
        .unwrap();

    tokio::time::sleep(Duration::from_millis(249)).await;
    assert!(req.of_type("error").is_empty(), "not before its time");
    assert_eq!(e.pending_rpc_requests(), 1);

    tokio::time::sleep(Duration::from_millis(100)).await;
    let errs = req.of_type("error");
    assert_eq!(errs.len(), 1, "within timeout + 100 ms");
    assert_eq!(errs[0]["reason"], "rpc-timeout");
    assert_eq!(errs[0]["request-id"], sent.request_id.as_str());
    assert_eq!(e.pending_rpc_requests(), 0);
    assert_eq!(e.counters().rpc_expired, 1);
    assert_eq!(
        e.send_rpc_response(w, None, &sent.request_id, json!(1), false)
            .await
            .unwrap_err()
            .reason(),
        Reason::RequestNotFound
    );
}

#[tokio::test(start_paused = true)]
async fn an_earlier_deadline_wakes_the_timer() {
    let e = engine();
    let req = Inbox::new();
    let creq = e.connect(req.clone()).unwrap();
    let w = e.connect(Inbox::new()).unwrap();
    e.subscribe(w, "c").await.unwrap();
    let long = e
        .send_rpc_request(creq, "c", json!(1), Some(10_000))
        .await
        .unwrap();
    // Let the timer go to sleep on the long deadline first.
    tokio::task::yield_now().await;
    let short = e
        .send_rpc_request(creq, "c", json!(2), Some(100))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(150)).await;
    let errs = req.of_type("error");
    assert_eq!(errs.len(), 1);
    assert_eq!(errs[0]["request-id"], short.request_id.as_str());
    tokio::time::sleep(Duration::from_millis(10_000)).await;
    let errs = req.of_type("error");
    assert_eq!(errs.len(), 2);
    assert_eq!(errs[1]["request-id"], long.request_id.as_str());
}

#[tokio::test(start_paused = true)]
async fn the_channel_default_timeout_applies_and_is_clamped() {
    let mut cfg = EngineConfig {
        max_rpc_timeout_ms: 1_000,
        ..EngineConfig::default()
    };
    cfg.default_channel = ChannelConfig {
        rpc_timeout_ms: 300,
        ..ChannelConfig::default()
    };
    let e = Engine::new(cfg).unwrap();
    let creq = e.connect(Inbox::new()).unwrap();
    let w = e.connect(Inbox::new()).unwrap();
    e.subscribe(w, "c").await.unwrap();
    assert_eq!(
        e.send_rpc_request(creq, "c", json!(1), None)
            .await
            .unwrap()
            .timeout_ms,
        300
    );
    assert_eq!(
        e.send_rpc_request(creq, "c", json!(1), Some(u64::MAX))
            .await
            .unwrap()
            .timeout_ms,
        1_000
    );
}

#[tokio::test(start_paused = true)]
async fn cleanup_returns_the_count_of_expired_requests() {
    let e = engine();
    let req = Inbox::new();
    let creq = e.connect(req.clone()).unwrap();
    let w = e.connect(Inbox::new()).unwrap();
    e.subscribe(w, "c").await.unwrap();
    // Due at once. This test never yields, so on the current-thread runtime
    // the timer task cannot run before `cleanup_expired_rpc_requests` does.
    for _ in 0..3 {
        e.send_rpc_request(creq, "c", json!(1), Some(0))
            .await
            .unwrap();
    }
    e.send_rpc_request(creq, "c", json!(1), Some(60_000))
        .await
        .unwrap();
    assert_eq!(e.cleanup_expired_rpc_requests(), 3);
    assert_eq!(e.cleanup_expired_rpc_requests(), 0);
    assert_eq!(e.pending_rpc_requests(), 1);
    assert_eq!(req.of_type("error").len(), 3);
    assert_eq!(e.counters().rpc_expired, 3);
}

#[tokio::test(start_paused = true)]
async fn a_requester_that_disconnects_leaves_nothing_pending() {
    let e = engine();
    let creq = e.connect(Inbox::new()).unwrap();
    let w = e.connect(Inbox::new()).unwrap();
    e.subscribe(w, "c").await.unwrap();
    let sent = e
        .send_rpc_request(creq, "c", json!(1), Some(1_000))
        .await
        .unwrap();
    e.send_rpc_request(creq, "c", json!(2), Some(1_000))
        .await
        .unwrap();
    assert_eq!(e.pending_rpc_requests(), 2);
    e.disconnect(creq).await;
    assert_eq!(e.pending_rpc_requests(), 0);
    assert_eq!(
        e.send_rpc_response(w, None, &sent.request_id, json!(1), false)
            .await
            .unwrap_err()
            .reason(),
        Reason::RequestNotFound
    );
    tokio::time::sleep(Duration::from_millis(2_000)).await;
    assert_eq!(e.counters().rpc_expired, 0, "nothing left to expire");
}

#[tokio::test(start_paused = true)]
async fn pending_requests_are_bounded_per_connection_and_in_total() {
    let e = Engine::new(EngineConfig {
        max_pending_rpc: 3,
        max_pending_rpc_per_connection: 2,
        ..EngineConfig::default()
    })
    .unwrap();
    let a = e.connect(Inbox::new()).unwrap();
    let b = e.connect(Inbox::new()).unwrap();
    let w = e.connect(Inbox::new()).unwrap();
    e.subscribe(w, "c").await.unwrap();
    e.send_rpc_request(a, "c", json!(1), None).await.unwrap();
    e.send_rpc_request(a, "c", json!(1), None).await.unwrap();
    assert_eq!(
        e.send_rpc_request(a, "c", json!(1), None)
            .await
            .unwrap_err()
            .reason(),
        Reason::MaxPendingRpcReached
    );
    e.send_rpc_request(b, "c", json!(1), None).await.unwrap();
    assert_eq!(
        e.send_rpc_request(b, "c", json!(1), None)
            .await
            .unwrap_err()
            .reason(),
        Reason::MaxPendingRpcReached
    );
    assert_eq!(e.pending_rpc_requests(), 3);
}

#[tokio::test(start_paused = true)]
async fn request_ids_are_unique_and_not_sequential_guesses() {
    let e = engine();
    let a = e.connect(Inbox::new()).unwrap();
    let w = e.connect(Inbox::new()).unwrap();
    e.subscribe(w, "c").await.unwrap();
    let mut ids: Vec<String> = Vec::new();
    for _ in 0..50 {
        ids.push(
            e.send_rpc_request(a, "c", json!(1), None)
                .await
                .unwrap()
                .request_id,
        );
    }
    let set: std::collections::HashSet<_> = ids.iter().collect();
    assert_eq!(set.len(), ids.len());
    assert!(ids.iter().all(|i| i.starts_with("req-")));
}

#[tokio::test(start_paused = true)]
async fn the_timer_ends_when_the_engine_is_dropped() {
    let e = engine();
    let weak_probe = {
        let creq = e.connect(Inbox::new()).unwrap();
        let w = e.connect(Inbox::new()).unwrap();
        e.subscribe(w, "c").await.unwrap();
        e.send_rpc_request(creq, "c", json!(1), Some(60_000))
            .await
            .unwrap();
        tokio::runtime::Handle::current()
            .metrics()
            .num_alive_tasks()
    };
    assert_eq!(
        weak_probe, 2,
        "the RPC timer and the idle-channel sweeper are alive"
    );
    drop(e);
    for _ in 0..10 {
        tokio::task::yield_now().await;
    }
    assert_eq!(
        tokio::runtime::Handle::current()
            .metrics()
            .num_alive_tasks(),
        0
    );
}

#[tokio::test(start_paused = true)]
async fn an_impossible_channel_id_is_invalid_not_empty() {
    let e = engine();
    let c = e.connect(Inbox::new()).unwrap();
    for id in [String::new(), "x".repeat(257)] {
        let err = e
            .send_rpc_request(c, &id, json!(1), None)
            .await
            .unwrap_err();
        assert_eq!(err.reason(), Reason::InvalidChannelId);
    }
    let strict = Engine::new(EngineConfig {
        auto_create: false,
        ..EngineConfig::default()
    })
    .unwrap();
    let c = strict.connect(Inbox::new()).unwrap();
    assert_eq!(
        strict.subscribe(c, "").await.unwrap_err().reason(),
        Reason::InvalidChannelId
    );
    assert_eq!(
        strict
            .publish(Some(c), "", json!(1), false)
            .await
            .unwrap_err()
            .reason(),
        Reason::InvalidChannelId
    );
}

/// A worker living in the same process, answering (or sweeping timeouts)
/// from inside `offer`, i.e. before the requester's result could be sent.
struct InstantWorker {
    engine: parking_lot::Mutex<Option<Engine>>,
    /// Its own connection, set once connected.
    conn: parking_lot::Mutex<Option<sente_lite_channels::ConnId>>,
    sweep_instead: bool,
}

impl sente_lite_channels::Sink for InstantWorker {
    fn offer(&self, frame: &sente_lite_channels::Frame) -> sente_lite_channels::Offer {
        let v: serde_json::Value = serde_json::from_str(frame.as_str()).unwrap();
        let me = *self.conn.lock();
        if let (Some(e), Some(id), Some(me)) =
            (self.engine.lock().as_ref(), v["request-id"].as_str(), me)
        {
            if self.sweep_instead {
                e.cleanup_expired_rpc_requests();
            } else {
                e.send_rpc_response(me, None, id, json!("fast"), false)
                    .now()
                    .unwrap();
            }
        }
        sente_lite_channels::Offer::Queued
    }
}

async fn instant_worker_case(sweep_instead: bool) -> Vec<serde_json::Value> {
    let e = engine();
    let worker = std::sync::Arc::new(InstantWorker {
        engine: parking_lot::Mutex::new(Some(e.clone())),
        conn: parking_lot::Mutex::new(None),
        sweep_instead,
    });
    let w = e.connect(worker.clone()).unwrap();
    *worker.conn.lock() = Some(w);
    e.subscribe(w, "api").await.unwrap();
    let req = Inbox::new();
    let r = e.connect(req.clone()).unwrap();
    let result = |sent: &sente_lite_channels::RpcSent| {
        sente_lite_channels::Frame::new(
            json!({"type": "rpc-request-result", "request-id": sent.request_id}).to_string(),
        )
    };
    let timeout = if sweep_instead { Some(0) } else { None };
    e.send_rpc_request_with_reply(r, "api", json!(1).into(), timeout, Some(&result))
        .await
        .unwrap();
    worker.engine.lock().take();
    assert_eq!(e.pending_rpc_requests(), 0);
    req.json()
}

#[tokio::test(start_paused = true)]
async fn a_response_never_overtakes_the_request_result() {
    let frames = instant_worker_case(false).await;
    let types: Vec<&str> = frames.iter().map(|f| f["type"].as_str().unwrap()).collect();
    assert_eq!(types, ["rpc-request-result", "rpc-response"]);
    assert_eq!(frames[0]["request-id"], frames[1]["request-id"]);
    assert_eq!(frames[1]["data"], "fast");
}

#[tokio::test(start_paused = true)]
async fn a_timeout_never_overtakes_the_request_result() {
    let frames = instant_worker_case(true).await;
    let types: Vec<&str> = frames.iter().map(|f| f["type"].as_str().unwrap()).collect();
    assert_eq!(types, ["rpc-request-result", "error"]);
    assert_eq!(frames[1]["reason"], "rpc-timeout");
    assert_eq!(frames[0]["request-id"], frames[1]["request-id"]);
}

/// `rpc-dispatch = one`: round robin over the workers whose queue has room
/// (a full one is skipped, not closed), none left is `no-subscribers`, and
/// a worker that leaves unanswered hands its request to the next one
/// within the same deadline; then the request times out as usual.
#[tokio::test(start_paused = true)]
async fn dispatch_one_takes_turns_skips_full_workers_and_hands_over_on_leave() {
    let cfg = EngineConfig {
        default_channel: ChannelConfig {
            rpc_dispatch: sente_lite_protocol::RpcDispatch::One,
            ..ChannelConfig::default()
        },
        ..EngineConfig::default()
    };
    let e = Engine::new(cfg).unwrap();
    let req = Inbox::new();
    let creq = e.connect(req.clone()).unwrap();
    let workers: Vec<_> = (0..3).map(|_| Inbox::new()).collect();
    let mut ids = Vec::new();
    for w in &workers {
        let c = e.connect(w.clone()).unwrap();
        e.subscribe(c, "jobs").await.unwrap();
        ids.push(c);
    }
    e.subscribe(creq, "jobs").await.unwrap();
    for i in 0..6 {
        let sent = e
            .send_rpc_request(creq, "jobs", json!(i), Some(1_000))
            .await
            .unwrap();
        assert_eq!(sent.delivered_to, 1);
    }
    let counts: Vec<usize> = workers
        .iter()
        .map(|w| w.of_type("rpc-request").len())
        .collect();
    assert_eq!(counts, [2, 2, 2], "round robin");
    assert!(req.of_type("rpc-request").is_empty(), "never the requester");

    // A worker without room is skipped.
    *workers[0].free.lock() = Some(0);
    for i in 0..4 {
        e.send_rpc_request(creq, "jobs", json!(i), Some(1_000))
            .await
            .unwrap();
    }
    assert_eq!(workers[0].of_type("rpc-request").len(), 2);
    assert!(!workers[0].closed.load(std::sync::atomic::Ordering::SeqCst));
    let total: usize = workers.iter().map(|w| w.of_type("rpc-request").len()).sum();
    assert_eq!(total, 10);

    // Its worker leaves: the next one gets the same request.
    for w in &workers {
        w.clear();
    }
    *workers[0].free.lock() = None;
    let sent = e
        .send_rpc_request(creq, "jobs", json!("handover"), Some(1_000))
        .await
        .unwrap();
    let who = sent.subscribers[0].clone();
    let i = ids.iter().position(|c| c.to_string() == who).unwrap();
    tokio::time::advance(Duration::from_millis(400)).await;
    e.unsubscribe(ids[i], "jobs").await.unwrap();
    // (It also hands over the earlier requests it had not answered.)
    let has = |j: usize| {
        workers[j]
            .of_type("rpc-request")
            .iter()
            .any(|r| r["request-id"] == sent.request_id.as_str())
    };
    let next: Vec<usize> = (0..3).filter(|j| *j != i && has(*j)).collect();
    assert_eq!(next.len(), 1, "exactly one other worker");
    assert!(e.limit_stats().rpc_redispatched >= 1);
    // Only the new worker may answer; the old deadline still holds.
    assert_eq!(
        e.send_rpc_response(ids[i], None, &sent.request_id, json!(1), false)
            .await
            .unwrap_err()
            .reason(),
        Reason::RequestNotFound
    );
    tokio::time::advance(Duration::from_millis(650)).await;
    tokio::task::yield_now().await;
    let timeouts: Vec<_> = req
        .of_type("error")
        .into_iter()
        .filter(|f| f["request-id"] == sent.request_id.as_str())
        .collect();
    assert_eq!(timeouts.len(), 1, "timed out at the first deadline, once");
    assert_eq!(timeouts[0]["reason"], "rpc-timeout");

    // No worker with room: no-subscribers, nothing pending.
    for w in &workers {
        *w.free.lock() = Some(0);
    }
    let err = e
        .send_rpc_request(creq, "jobs", json!(0), None)
        .await
        .unwrap_err();
    assert_eq!(err.reason(), Reason::NoSubscribers);
}
