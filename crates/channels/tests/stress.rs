//! Multi-threaded stress: counts add up exactly, each subscriber sees each
//! publisher's messages in order, and max-subscribers holds under races.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

mod common;

use common::{Inbox, Now};
use sente_lite_channels::{ConnId, Engine, EngineConfig};
use sente_lite_protocol::ChannelConfig;
use serde_json::json;
use std::collections::HashMap;
use std::sync::{Arc, Barrier};

#[test]
fn concurrent_publishers_counts_and_per_publisher_order() {
    const PUBLISHERS: usize = 4;
    const PER: u64 = 500;
    const SUBSCRIBERS: usize = 8;
    let rt = tokio::runtime::Runtime::new().unwrap();
    let _g = rt.enter();
    let e = Engine::new(EngineConfig::default()).unwrap();
    let inboxes: Vec<Arc<Inbox>> = (0..SUBSCRIBERS).map(|_| Inbox::new()).collect();
    for inbox in &inboxes {
        let id = e.connect(inbox.clone()).unwrap();
        e.subscribe(id, "shared").now().unwrap();
        e.subscribe(id, "other").now().unwrap();
    }
    let barrier = Arc::new(Barrier::new(PUBLISHERS));
    let handles: Vec<_> = (0..PUBLISHERS)
        .map(|p| {
            let e = e.clone();
            let barrier = Arc::clone(&barrier);
            std::thread::spawn(move || {
                let me = e.connect(Inbox::new()).unwrap();
                barrier.wait();
                let mut delivered = 0;
                for i in 0..PER {
                    let ch = if i % 3 == 0 { "other" } else { "shared" };
                    delivered += e
                        .publish(Some(me), ch, json!({"p": p, "i": i}), false)
                        .now()
                        .unwrap()
                        .delivered_to;
                }
                (me, delivered)
            })
        })
        .collect();
    let results: Vec<(ConnId, usize)> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    let delivered: usize = results.iter().map(|r| r.1).sum();
    let total = PUBLISHERS as u64 * PER;
    assert_eq!(delivered as u64, total * SUBSCRIBERS as u64);
    assert_eq!(e.counters().published, total);
    assert_eq!(e.counters().deliveries, total * SUBSCRIBERS as u64);
    let ids: std::collections::HashSet<String> = inboxes[0]
        .json()
        .iter()
        .map(|m| m["message-id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        ids.len() as u64,
        total,
        "message ids are unique across threads"
    );
    for inbox in &inboxes {
        let got = inbox.json();
        assert_eq!(got.len() as u64, total);
        let mut last: HashMap<(String, u64), u64> = HashMap::new();
        for m in got {
            let key = (
                m["channel-id"].as_str().unwrap().to_owned(),
                m["data"]["p"].as_u64().unwrap(),
            );
            let i = m["data"]["i"].as_u64().unwrap();
            if let Some(prev) = last.insert(key, i) {
                assert!(i > prev, "per-publisher order kept");
            }
        }
    }
}

#[test]
fn max_subscribers_holds_under_concurrent_subscribes() {
    const THREADS: usize = 8;
    const EACH: usize = 50;
    const MAX: usize = 123;
    let rt = tokio::runtime::Runtime::new().unwrap();
    let _g = rt.enter();
    let e = Engine::new(EngineConfig {
        max_connections: THREADS * EACH,
        ..EngineConfig::default()
    })
    .unwrap();
    e.create_channel(
        "hot",
        Some(ChannelConfig {
            max_subscribers: MAX,
            ..ChannelConfig::default()
        }),
    )
    .now()
    .unwrap();
    let barrier = Arc::new(Barrier::new(THREADS));
    let ok: usize = (0..THREADS)
        .map(|_| {
            let e = e.clone();
            let barrier = Arc::clone(&barrier);
            std::thread::spawn(move || {
                let ids: Vec<ConnId> = (0..EACH)
                    .map(|_| e.connect(Inbox::new()).unwrap())
                    .collect();
                barrier.wait();
                ids.iter()
                    .filter(|id| e.subscribe(**id, "hot").now().is_ok())
                    .count()
            })
        })
        .collect::<Vec<_>>()
        .into_iter()
        .map(|h| h.join().unwrap())
        .sum();
    assert_eq!(ok, MAX);
    assert_eq!(e.channel_info("hot").now().unwrap().subscribers.len(), MAX);
    assert_eq!(e.total_subscriptions(), MAX);
}

#[test]
fn concurrent_disconnects_and_deletes_leave_consistent_state() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let _g = rt.enter();
    let e = Engine::new(EngineConfig::default()).unwrap();
    let ids: Vec<ConnId> = (0..200).map(|_| e.connect(Inbox::new()).unwrap()).collect();
    for (n, id) in ids.iter().enumerate() {
        e.subscribe(*id, &format!("ch-{}", n % 5)).now().unwrap();
        e.subscribe(*id, "all").now().unwrap();
    }
    let (left, right) = ids.split_at(100);
    let (left, right) = (left.to_vec(), right.to_vec());
    let e1 = e.clone();
    let t1 = std::thread::spawn(move || {
        for id in left {
            e1.disconnect(id).now();
        }
    });
    let e2 = e.clone();
    let t2 = std::thread::spawn(move || {
        for n in 0..5 {
            e2.delete_channel(&format!("ch-{n}")).now().unwrap();
        }
    });
    t1.join().unwrap();
    t2.join().unwrap();
    assert_eq!(e.connection_count(), 100);
    assert_eq!(e.channel_info("all").now().unwrap().subscribers.len(), 100);
    assert_eq!(e.total_subscriptions(), 100);
    for id in right {
        assert_eq!(e.subscriptions(id).unwrap(), vec!["all"]);
    }
}

/// A subscribe racing with the delete of the same channel (which it then
/// creates again) never leaves a ghost: once the connection disconnects,
/// no channel lists it.
#[test]
fn subscribe_racing_delete_leaves_no_ghost_subscriber() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let _g = rt.enter();
    let e = Engine::new(EngineConfig::default()).unwrap();
    for round in 0..2_000 {
        let c = e.connect(Inbox::new()).unwrap();
        e.subscribe(c, "g").now().unwrap();
        let barrier = Arc::new(Barrier::new(2));
        let (e1, b1) = (e.clone(), Arc::clone(&barrier));
        let deleter = std::thread::spawn(move || {
            b1.wait();
            let _ = e1.delete_channel("g").now();
        });
        let (e2, b2) = (e.clone(), Arc::clone(&barrier));
        let subscriber = std::thread::spawn(move || {
            b2.wait();
            // Unsubscribe and subscribe again, as a client flipping its
            // subscription would; either may meet the delete.
            let _ = e2.unsubscribe(c, "g").now();
            let _ = e2.subscribe(c, "g").now();
        });
        deleter.join().unwrap();
        subscriber.join().unwrap();
        assert!(e.disconnect(c).now());
        assert_eq!(
            e.hub().local_count("g"),
            0,
            "round {round}: a disconnected connection is still subscribed"
        );
        assert_eq!(e.total_subscriptions(), 0, "round {round}");
    }
}

/// A subscribe that joins the next incarnation of a channel while the old
/// one is being deleted stays subscribed: its answer's epoch is the new
/// one, and it is in the channel's list and its own set.
#[test]
fn subscribe_into_the_next_incarnation_survives_the_delete() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let _g = rt.enter();
    let e = Engine::new(EngineConfig::default()).unwrap();
    for round in 0..3_000 {
        let keeper = e.connect(Inbox::new()).unwrap();
        e.subscribe(keeper, "g").now().unwrap();
        let old = e.channel_info("g").now().unwrap().position.epoch;
        let c = e.connect(Inbox::new()).unwrap();
        let barrier = Arc::new(Barrier::new(2));
        let (e1, b1) = (e.clone(), Arc::clone(&barrier));
        let deleter = std::thread::spawn(move || {
            b1.wait();
            e1.delete_channel("g").now().unwrap();
        });
        let (e2, b2, old2) = (e.clone(), Arc::clone(&barrier), old.clone());
        let subscriber = std::thread::spawn(move || {
            b2.wait();
            loop {
                let r = e2.subscribe(c, "g").now().unwrap();
                if r.position.epoch != old2 {
                    return;
                }
                let _ = e2.unsubscribe(c, "g").now();
            }
        });
        deleter.join().unwrap();
        subscriber.join().unwrap();
        assert!(
            e.hub().local_subscribers("g").contains(&c),
            "round {round}: not in the channel's list"
        );
        assert_eq!(
            e.subscriptions(c).unwrap(),
            vec!["g"],
            "round {round}: not in its own set"
        );
        e.disconnect(c).now();
        e.disconnect(keeper).now();
        let _ = e.delete_channel("g").now();
    }
}
