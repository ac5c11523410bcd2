//! Property test: random sequences of connect / disconnect / subscribe /
//! unsubscribe / publish against a simple model. Every live subscriber gets
//! exactly the messages published while it was subscribed, in order.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

mod common;

use common::{Inbox, Now};
use proptest::prelude::*;
use sente_lite_channels::{ConnId, Engine, EngineConfig};
use serde_json::json;
use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

const CONNS: usize = 4;
const CHANNELS: [&str; 3] = ["a", "b", "c"];

#[derive(Debug, Clone)]
enum Op {
    Connect(usize),
    Disconnect(usize),
    Subscribe(usize, usize),
    Unsubscribe(usize, usize),
    Publish(Option<usize>, usize, bool),
}

fn op() -> impl Strategy<Value = Op> {
    let c = 0..CONNS;
    let ch = 0..CHANNELS.len();
    prop_oneof![
        1 => c.clone().prop_map(Op::Connect),
        1 => c.clone().prop_map(Op::Disconnect),
        3 => (c.clone(), ch.clone()).prop_map(|(c, h)| Op::Subscribe(c, h)),
        2 => (c.clone(), ch.clone()).prop_map(|(c, h)| Op::Unsubscribe(c, h)),
        4 => (proptest::option::of(c), ch, any::<bool>()).prop_map(|(c, h, x)| Op::Publish(c, h, x)),
    ]
}

struct Live {
    id: ConnId,
    inbox: Arc<Inbox>,
    subs: BTreeSet<usize>,
    /// (channel, payload) the model says this connection must have received.
    expected: Vec<(String, u64)>,
}

fn run(ops: Vec<Op>) -> Result<(), TestCaseError> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    let _guard = rt.enter();
    let e = Engine::new(EngineConfig::default()).unwrap();
    let mut live: HashMap<usize, Live> = HashMap::new();
    let mut seq = 0u64;
    for op in ops {
        match op {
            Op::Connect(i) => {
                if let std::collections::hash_map::Entry::Vacant(v) = live.entry(i) {
                    let inbox = Inbox::new();
                    let id = e.connect(inbox.clone()).unwrap();
                    v.insert(Live {
                        id,
                        inbox,
                        subs: BTreeSet::new(),
                        expected: Vec::new(),
                    });
                }
            }
            Op::Disconnect(i) => {
                if let Some(l) = live.remove(&i) {
                    prop_assert!(e.disconnect(l.id).now());
                }
            }
            Op::Subscribe(i, h) => {
                if let Some(l) = live.get_mut(&i) {
                    let r = e.subscribe(l.id, CHANNELS[h]).now().unwrap();
                    prop_assert_eq!(r.already_subscribed, !l.subs.insert(h));
                    prop_assert!(r.retained_messages.is_empty());
                }
            }
            Op::Unsubscribe(i, h) => {
                if let Some(l) = live.get_mut(&i) {
                    let r = e.unsubscribe(l.id, CHANNELS[h]).now();
                    prop_assert_eq!(r.is_ok(), l.subs.remove(&h));
                }
            }
            Op::Publish(sender, h, exclude) => {
                seq += 1;
                let sender_id = sender.and_then(|s| live.get(&s)).map(|l| l.id);
                let out = e
                    .publish(sender_id, CHANNELS[h], json!(seq), exclude)
                    .now()
                    .unwrap();
                let mut expected = 0;
                for l in live.values_mut() {
                    let excluded = exclude && Some(l.id) == sender_id;
                    if l.subs.contains(&h) && !excluded {
                        l.expected.push((CHANNELS[h].to_owned(), seq));
                        expected += 1;
                    }
                }
                prop_assert_eq!(out.delivered_to, expected);
            }
        }
    }
    let total: usize = live.values().map(|l| l.subs.len()).sum();
    prop_assert_eq!(e.total_subscriptions(), total);
    prop_assert_eq!(e.connection_count(), live.len());
    for l in live.values() {
        let got: Vec<(String, u64)> = l
            .inbox
            .json()
            .iter()
            .map(|m| {
                (
                    m["channel-id"].as_str().unwrap().to_owned(),
                    m["data"].as_u64().unwrap(),
                )
            })
            .collect();
        prop_assert_eq!(&got, &l.expected);
        let subs: Vec<String> = l.subs.iter().map(|h| CHANNELS[*h].to_owned()).collect();
        prop_assert_eq!(e.subscriptions(l.id).unwrap(), subs);
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]
    #[test]
    fn engine_matches_the_model(ops in proptest::collection::vec(op(), 1..80)) {
        run(ops)?;
    }
}
