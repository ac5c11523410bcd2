//! The Session without any transport: frames in, frames out of its sink.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use parking_lot::Mutex;
use sente_lite_channels::{ConnAddr, Engine, EngineConfig, Frame, Offer, Sink};
use sente_lite_session::{AllowAll, Authorizer, Handled, Identity, Refusal, Session};
use serde_json::Value;
use std::sync::Arc;

#[derive(Default)]
struct Outbox(Mutex<Vec<String>>);

impl Sink for Outbox {
    fn offer(&self, frame: &Frame) -> Offer {
        self.0.lock().push(frame.as_str().to_owned());
        Offer::Queued
    }
}

impl Outbox {
    fn take(&self) -> Vec<Value> {
        std::mem::take(&mut *self.0.lock())
            .iter()
            .map(|f| serde_json::from_str(f).unwrap())
            .collect()
    }
}

fn open(engine: &Engine, auth: Arc<dyn Authorizer>) -> (Session, Arc<Outbox>) {
    let out = Arc::new(Outbox::default());
    let s = Session::open(engine, out.clone(), auth, Identity::anonymous()).unwrap();
    (s, out)
}

#[tokio::test]
async fn welcome_then_replies_in_order() {
    let e = Engine::new(EngineConfig::default()).unwrap();
    let (s, out) = open(&e, Arc::new(AllowAll));
    assert_eq!(
        s.handle_text(r#"{"type":"subscribe","channel-id":"c"}"#)
            .await,
        Handled::Routed
    );
    assert_eq!(
        s.handle_text(r#"{"type":"publish","channel-id":"c","data":{"b":1.10,"a":2}}"#)
            .await,
        Handled::Routed
    );
    let got = out.take();
    let types: Vec<&str> = got.iter().map(|f| f["type"].as_str().unwrap()).collect();
    assert_eq!(
        types,
        [
            "welcome",
            "subscription-result",
            "channel-message",
            "publish-result"
        ]
    );
    assert_eq!(got[0]["conn-id"], s.addr().to_string());
    assert_eq!(got[2]["offset"], 1);
    assert_eq!(
        s.handle_text("not json").await,
        Handled::ErrorSent,
        "an undecodable frame is answered with an error"
    );
    assert_eq!(out.take()[0]["reason"], "invalid-json");
    assert_eq!(s.handle_binary(), Handled::ErrorSent);
    assert_eq!(out.take()[0]["reason"], "binary-not-supported");
    s.close().await;
    assert_eq!(e.connection_count(), 0);
    assert_eq!(e.total_subscriptions(), 0);
}

/// Denies everything on channels starting with `private`.
struct NoPrivate;

impl Authorizer for NoPrivate {
    fn subscribe(&self, _: &Identity, _: &ConnAddr, channel: &str) -> Result<(), Refusal> {
        deny(channel)
    }
    fn publish(&self, _: &Identity, _: &ConnAddr, channel: &str, _: bool) -> Result<(), Refusal> {
        deny(channel)
    }
    fn rpc_call(&self, _: &Identity, _: &ConnAddr, channel: &str, _: bool) -> Result<(), Refusal> {
        deny(channel)
    }
}

fn deny(channel: &str) -> Result<(), Refusal> {
    if channel.starts_with("private") {
        Err(Refusal::forbidden("not for you"))
    } else {
        Ok(())
    }
}

#[tokio::test]
async fn the_authorizer_is_asked_before_every_operation() {
    let e = Engine::new(EngineConfig::default()).unwrap();
    let (s, out) = open(&e, Arc::new(NoPrivate));
    out.take();
    for (frame, result) in [
        (
            r#"{"type":"subscribe","channel-id":"private-a"}"#,
            "subscription-result",
        ),
        (
            r#"{"type":"publish","channel-id":"private-a","data":1}"#,
            "publish-result",
        ),
        (
            r#"{"type":"rpc-request","channel-id":"private-a","data":1}"#,
            "rpc-request-result",
        ),
    ] {
        s.handle_text(frame).await;
        let got = out.take();
        assert_eq!(got.len(), 1, "{frame}");
        assert_eq!(got[0]["type"], result);
        let success = got[0].get("success").or(got[0]["delivery"].get("success"));
        assert_eq!(success, Some(&Value::Bool(false)), "{frame}");
        let reason = got[0].get("reason").or(got[0]["delivery"].get("reason"));
        assert_eq!(reason, Some(&Value::from("forbidden")), "{frame}");
    }
    assert_eq!(
        e.channel_count(),
        0,
        "nothing was created for a refused operation"
    );
    s.handle_text(r#"{"type":"subscribe","channel-id":"public"}"#)
        .await;
    assert_eq!(out.take()[0]["success"], true);
}

/// Takes the token "good-<user>" (expiring at `exp` when it is
/// "good-<user>-<exp>"), and no anonymous connection.
struct Tokens;

impl Authorizer for Tokens {
    fn authenticate(&self, token: &str) -> Result<Identity, Refusal> {
        let rest = token
            .strip_prefix("good-")
            .ok_or_else(|| Refusal::unauthorized("bad token"))?;
        let mut parts = rest.splitn(2, '-');
        let mut who = Identity::user(parts.next().unwrap());
        who.expires_at_ms = parts.next().map(|e| e.parse().unwrap());
        Ok(who)
    }
    fn allows_anonymous(&self) -> bool {
        false
    }
    fn auth_timeout(&self) -> std::time::Duration {
        std::time::Duration::from_secs(10)
    }
}

/// A sink that records the close the session asks for.
#[derive(Default)]
struct Closing(Outbox, Mutex<Option<(u16, sente_lite_protocol::Reason)>>);

impl Sink for Closing {
    fn offer(&self, frame: &Frame) -> Offer {
        self.0.offer(frame)
    }
    fn close(&self, code: u16, reason: sente_lite_protocol::Reason) {
        *self.1.lock() = Some((code, reason));
    }
}

#[tokio::test(start_paused = true)]
async fn an_unauthenticated_session_answers_unauthorized_and_is_closed_at_the_timeout() {
    let e = Engine::new(EngineConfig::default()).unwrap();
    let sink = Arc::new(Closing::default());
    let s = Session::open(&e, sink.clone(), Arc::new(Tokens), Identity::anonymous()).unwrap();
    s.handle_text(r#"{"type":"subscribe","channel-id":"c"}"#)
        .await;
    s.handle_text(r#"{"type":"ping"}"#).await;
    let got = sink.0.take();
    assert_eq!(got[1]["reason"], "unauthorized", "{got:?}");
    assert_eq!(got[2]["type"], "pong");
    assert_eq!(
        e.total_subscriptions(),
        0,
        "the subscribe was not processed"
    );
    tokio::time::sleep(std::time::Duration::from_millis(9_900)).await;
    assert_eq!(*sink.1.lock(), None, "not before the timeout");
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    assert_eq!(
        *sink.1.lock(),
        Some((4001, sente_lite_protocol::Reason::Unauthorized))
    );
    s.close().await;
}

#[tokio::test(start_paused = true)]
async fn authenticating_cancels_the_timeout_and_a_refresh_moves_the_expiry() {
    let e = Engine::new(EngineConfig::default()).unwrap();
    let sink = Arc::new(Closing::default());
    let s = Session::open(&e, sink.clone(), Arc::new(Tokens), Identity::anonymous()).unwrap();
    // Paused time does not move the wall clock: expiries are wall-clock ms.
    let exp = sente_lite_protocol::now_ms() + 20_000;
    s.handle_text(&format!(
        r#"{{"type":"authenticate","token":"good-ann-{exp}"}}"#
    ))
    .await;
    let r = &sink.0.take()[1];
    assert_eq!(
        (r["success"].as_bool(), r["user-id"].as_str()),
        (Some(true), Some("ann")),
        "{r}"
    );
    assert_eq!(r["expires-at"], exp);
    tokio::time::sleep(std::time::Duration::from_secs(15)).await;
    assert_eq!(*sink.1.lock(), None, "the auth timeout was cancelled");
    // Another user's token is refused; the same user's moves the expiry.
    s.handle_text(r#"{"type":"authenticate","token":"good-bob"}"#)
        .await;
    assert_eq!(sink.0.take()[0]["reason"], "forbidden");
    s.handle_text(&format!(
        r#"{{"type":"authenticate","token":"good-ann-{}"}}"#,
        exp + 60_000
    ))
    .await;
    assert_eq!(sink.0.take()[0]["success"], true);
    tokio::time::sleep(std::time::Duration::from_secs(10)).await;
    assert_eq!(
        *sink.1.lock(),
        None,
        "refreshed: not closed at the first expiry"
    );
    s.close().await;
}
