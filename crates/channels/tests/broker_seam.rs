//! A broker written outside the crate, against the public `Broker` trait
//! only: it wraps the `LocalBroker` and records what the node asks of it.
//! It shows the seam holds (nothing of the hub, session or transport is
//! needed to write one) and checks the node's first-in / last-out calls.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

mod common;

use common::Inbox;
use parking_lot::Mutex;
use sente_lite_channels::{
    Broker, BrokerHealth, BrokerTotals, ChannelMeta, ConnAddr, Create, Engine, EngineConfig,
    EngineError, Frame, Hub, JoinFn, LocalBroker, Offer, Publication, Published, Reply, Sent,
};
use sente_lite_protocol::ChannelConfig;
use std::sync::Arc;
use telemere_lite::Telemetry;

struct Recording {
    inner: LocalBroker,
    log: Mutex<Vec<String>>,
}

impl Recording {
    fn take(&self) -> Vec<String> {
        std::mem::take(&mut *self.log.lock())
    }
}

impl Broker for Recording {
    fn node(&self) -> Option<&Arc<str>> {
        self.inner.node()
    }
    fn message_id(&self) -> String {
        self.inner.message_id()
    }
    fn publish<'a>(
        &'a self,
        channel: &'a str,
        message: Publication<'a>,
        hub: &'a Hub,
    ) -> Reply<'a, Result<Published, EngineError>> {
        self.inner.publish(channel, message, hub)
    }
    fn join<'a>(
        &'a self,
        channel: &'a str,
        create: Create,
        recover: Option<&'a sente_lite_protocol::Position>,
        join: &'a mut JoinFn<'_>,
    ) -> Reply<'a, Result<(), EngineError>> {
        self.log.lock().push(format!("join {channel}"));
        self.inner.join(channel, create, recover, join)
    }
    fn subscribe<'a>(&'a self, channel: &'a str) -> Reply<'a, Result<(), EngineError>> {
        self.log.lock().push(format!("subscribe {channel}"));
        // As a network broker would: answer later.
        Reply::later(async move { Ok(()) })
    }
    fn unsubscribe<'a>(
        &'a self,
        channel: &'a str,
        hub: &'a Hub,
    ) -> Reply<'a, Result<(), EngineError>> {
        self.log.lock().push(format!(
            "unsubscribe {channel} (local {})",
            hub.local_count(channel)
        ));
        Reply::later(async move { Ok(()) })
    }
    fn send_rpc_request<'a>(
        &'a self,
        channel: &'a str,
        request_id: &'a str,
        timeout: std::time::Duration,
        frame: &'a Frame,
        exclude: Option<&'a ConnAddr>,
        hub: &'a Hub,
    ) -> Reply<'a, Result<Sent, EngineError>> {
        self.inner
            .send_rpc_request(channel, request_id, timeout, frame, exclude, hub)
    }
    fn send_to_channel<'a>(
        &'a self,
        channel: &'a str,
        frame: &'a Frame,
        exclude: Option<&'a ConnAddr>,
        ids: bool,
        hub: &'a Hub,
    ) -> Reply<'a, Result<Sent, EngineError>> {
        self.inner
            .send_to_channel(channel, frame, exclude, ids, hub)
    }
    fn send_to_connection<'a>(
        &'a self,
        to: &'a ConnAddr,
        frame: &'a Frame,
        hub: &'a Hub,
    ) -> Reply<'a, Result<Offer, EngineError>> {
        self.inner.send_to_connection(to, frame, hub)
    }
    fn broadcast<'a>(&'a self, frame: &'a Frame, hub: &'a Hub) -> Reply<'a, (usize, usize)> {
        self.inner.broadcast(frame, hub)
    }
    fn create_channel<'a>(
        &'a self,
        channel: &'a str,
        config: ChannelConfig,
    ) -> Reply<'a, Result<(), EngineError>> {
        self.inner.create_channel(channel, config)
    }
    fn delete_channel<'a>(
        &'a self,
        channel: &'a str,
        hub: &'a Hub,
    ) -> Reply<'a, Result<usize, EngineError>> {
        self.inner.delete_channel(channel, hub)
    }
    fn channel<'a>(
        &'a self,
        channel: &'a str,
        hub: &'a Hub,
    ) -> Reply<'a, Result<Option<ChannelMeta>, EngineError>> {
        self.inner.channel(channel, hub)
    }
    fn channels<'a>(
        &'a self,
        hub: &'a Hub,
    ) -> Reply<'a, Result<Vec<(String, ChannelMeta)>, EngineError>> {
        self.inner.channels(hub)
    }
    fn history<'a>(
        &'a self,
        channel: &'a str,
    ) -> Reply<'a, Result<sente_lite_channels::History, EngineError>> {
        self.inner.history(channel)
    }
    fn channel_count(&self) -> usize {
        self.inner.channel_count()
    }
    fn total_subscriptions(&self, hub: &Hub) -> usize {
        self.inner.total_subscriptions(hub)
    }
    fn totals(&self) -> BrokerTotals {
        self.inner.totals()
    }
    fn health(&self) -> BrokerHealth {
        self.inner.health()
    }
}

#[tokio::test]
async fn the_node_subscribes_first_in_and_leaves_last_out() {
    let config = EngineConfig::default();
    let broker = Arc::new(Recording {
        inner: LocalBroker::new(config.clone(), Telemetry::new()),
        log: Mutex::new(Vec::new()),
    });
    let e = Engine::with_broker(config, Telemetry::new(), broker.clone()).unwrap();
    let (a, b) = (
        e.connect(Inbox::new()).unwrap(),
        e.connect(Inbox::new()).unwrap(),
    );

    e.subscribe(a, "c").await.unwrap();
    assert_eq!(
        broker.take(),
        ["subscribe c", "join c"],
        "first in: before the join"
    );
    e.subscribe(b, "c").await.unwrap();
    assert_eq!(broker.take(), ["join c"], "the node is subscribed already");
    e.unsubscribe(a, "c").await.unwrap();
    assert_eq!(broker.take(), Vec::<String>::new(), "b is still here");
    e.disconnect(b).await;
    assert_eq!(broker.take(), ["unsubscribe c (local 0)"], "last out");

    // Publishing goes through the broker's stream, whoever it is.
    let c = e.connect(Inbox::new()).unwrap();
    e.subscribe(c, "d").await.unwrap();
    let p = e
        .publish(None, "d", serde_json::json!(1), false)
        .await
        .unwrap();
    assert_eq!((p.delivered_to, p.position.offset), (1, 1));
}
