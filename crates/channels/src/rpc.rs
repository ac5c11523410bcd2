//! RPC over channels: a request goes to the channel's subscribers (but the
//! requester), the first `rpc-response` goes back to the requester, and a
//! timer answers `rpc-timeout` when none comes in time.

use crate::conn::{ConnId, Frame, Offer};
use crate::engine::{ev, truncated, Engine, Inner};
use crate::error::EngineError;
use crate::events;
use sente_lite_protocol::{Reason, RpcRequestDelivery, ServerMessage};
use serde_json::Value;
use std::collections::hash_map::RandomState;
use std::collections::{BTreeMap, HashMap};
use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Weak};
use std::time::Duration;
use tokio::sync::Notify;
use tokio::time::Instant;

struct Pending {
    requester: ConnId,
    deadline: Instant,
    seq: u64,
    timeout_ms: u64,
    /// The requester has been given its `rpc-request-result`. Until then a
    /// response is held in `early`, so it can never overtake the result.
    announced: bool,
    early: Option<Frame>,
}

/// Pending requests, indexed by id and by deadline. Bounded by
/// `max-pending-rpc` and `max-pending-rpc-per-connection`.
#[derive(Default)]
pub(crate) struct RpcTable {
    pending: HashMap<String, Pending>,
    deadlines: BTreeMap<(Instant, u64), String>,
    per_conn: HashMap<ConnId, usize>,
    next_seq: u64,
    salt: Option<u64>,
}

impl RpcTable {
    pub(crate) fn len(&self) -> usize {
        self.pending.len()
    }

    /// Requests more than `grace` past their deadline.
    pub(crate) fn overdue(&self, grace: Duration) -> usize {
        let now = Instant::now();
        match now.checked_sub(grace) {
            Some(cutoff) => self.deadlines.range(..(cutoff, 0)).count(),
            None => 0,
        }
    }

    fn earliest(&self) -> Option<Instant> {
        self.deadlines.keys().next().map(|(t, _)| *t)
    }

    fn remove(&mut self, id: &str) -> Option<Pending> {
        let p = self.pending.remove(id)?;
        self.deadlines.remove(&(p.deadline, p.seq));
        if let Some(n) = self.per_conn.get_mut(&p.requester) {
            *n -= 1;
            if *n == 0 {
                self.per_conn.remove(&p.requester);
            }
        }
        Some(p)
    }

    pub(crate) fn drop_requester(&mut self, conn: ConnId) -> usize {
        if self.per_conn.remove(&conn).is_none() {
            return 0;
        }
        let ids: Vec<String> = self
            .pending
            .iter()
            .filter(|(_, p)| p.requester == conn)
            .map(|(id, _)| id.clone())
            .collect();
        for id in &ids {
            if let Some(p) = self.pending.remove(id) {
                self.deadlines.remove(&(p.deadline, p.seq));
            }
        }
        ids.len()
    }

    /// Expires every request due at `now` and returns, for each, the
    /// requester and the `rpc-timeout` frame to send it. A request whose
    /// `rpc-request-result` is still being sent keeps its timeout frame in
    /// `early` instead (delivered right after the result) and is returned
    /// with no frame.
    fn take_due(&mut self, now: Instant) -> Vec<(String, ConnId, u64, Option<Frame>)> {
        let mut due = Vec::new();
        while let Some(entry) = self.deadlines.first_entry() {
            if entry.key().0 > now {
                break;
            }
            let id = entry.remove();
            let Some(p) = self.pending.get_mut(&id) else {
                continue;
            };
            let frame = timeout_frame(&id, p.timeout_ms);
            let (requester, timeout_ms) = (p.requester, p.timeout_ms);
            if p.announced {
                self.remove(&id);
                due.push((id, requester, timeout_ms, Some(frame)));
            } else {
                p.early.get_or_insert(frame);
                due.push((id, requester, timeout_ms, None));
            }
        }
        due
    }

    /// A fresh request id: a sequence number plus a per-engine random salt,
    /// so one connection cannot guess the ids of another's requests.
    fn next_id(&mut self) -> (String, u64) {
        self.next_seq += 1;
        let salt = *self
            .salt
            .get_or_insert_with(|| RandomState::new().build_hasher().finish());
        let mut h = RandomState::new().build_hasher();
        h.write_u64(salt ^ self.next_seq);
        let tag = h.finish() & 0xffff_ffff;
        (format!("req-{}-{tag:08x}", self.next_seq), self.next_seq)
    }
}

/// An accepted RPC request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RpcSent {
    pub request_id: String,
    /// Workers whose sink accepted the request.
    pub delivered_to: usize,
    /// Their connection ids.
    pub subscribers: Vec<String>,
    pub timeout_ms: u64,
}

impl Engine {
    /// Sends an RPC request from `requester` to the other subscribers of
    /// `channel_id`. With none, fails with `no-subscribers` and keeps nothing
    /// pending. `timeout_ms` defaults to the channel's `rpc-timeout-ms` and
    /// is clamped to `max-rpc-timeout-ms`.
    pub fn send_rpc_request(
        &self,
        requester: ConnId,
        channel_id: &str,
        data: Value,
        timeout_ms: Option<u64>,
    ) -> Result<RpcSent, EngineError> {
        self.send_rpc_request_with_reply(requester, channel_id, data, timeout_ms, None)
    }

    /// Like [`send_rpc_request`](Self::send_rpc_request), and on success
    /// offers the frame `reply` builds (the `rpc-request-result`) to the
    /// requester's sink before any response to the request can reach it,
    /// however fast a worker answers.
    pub fn send_rpc_request_with_reply(
        &self,
        requester: ConnId,
        channel_id: &str,
        data: Value,
        timeout_ms: Option<u64>,
        reply: Option<&dyn Fn(&RpcSent) -> Frame>,
    ) -> Result<RpcSent, EngineError> {
        self.rpc_request(requester, channel_id, data, timeout_ms, reply)
            .inspect_err(|e| self.reject(e))
    }

    fn rpc_request(
        &self,
        requester: ConnId,
        channel_id: &str,
        data: Value,
        timeout_ms: Option<u64>,
        reply: Option<&dyn Fn(&RpcSent) -> Frame>,
    ) -> Result<RpcSent, EngineError> {
        let inner = &self.inner;
        self.check_id(channel_id)?;
        let Some(ch_config) = self.channel_config(channel_id) else {
            return Err(if inner.config.auto_create {
                EngineError::NoSubscribers(truncated(channel_id))
            } else {
                EngineError::ChannelNotFound(truncated(channel_id))
            });
        };
        let Some(requester_conn) = self.conn(requester) else {
            return Err(EngineError::ConnectionNotFound(requester.to_string()));
        };
        let timeout_ms = timeout_ms
            .unwrap_or(ch_config.rpc_timeout_ms)
            .min(inner.config.max_rpc_timeout_ms);
        let deadline = Instant::now() + Duration::from_millis(timeout_ms);

        // Register before delivering, so a fast worker's response finds it.
        let (request_id, wake) = {
            let mut rpc = inner.rpc.lock();
            if rpc.pending.len() >= inner.config.max_pending_rpc {
                return Err(EngineError::MaxPendingRpcReached(
                    inner.config.max_pending_rpc,
                ));
            }
            let per = rpc.per_conn.get(&requester).copied().unwrap_or(0);
            if per >= inner.config.max_pending_rpc_per_connection {
                return Err(EngineError::MaxPendingRpcReached(
                    inner.config.max_pending_rpc_per_connection,
                ));
            }
            let (id, seq) = rpc.next_id();
            let wake = rpc.earliest().is_none_or(|t| deadline < t);
            rpc.pending.insert(
                id.clone(),
                Pending {
                    requester,
                    deadline,
                    seq,
                    timeout_ms,
                    announced: reply.is_none(),
                    early: None,
                },
            );
            rpc.deadlines.insert((deadline, seq), id.clone());
            *rpc.per_conn.entry(requester).or_insert(0) += 1;
            (id, wake)
        };

        let delivery = RpcRequestDelivery {
            request_id: request_id.clone(),
            channel_id: channel_id.to_owned(),
            data,
            sender_conn_id: requester.to_string(),
            timeout_ms,
        };
        let frame = Frame::new(crate::frames::typed("rpc-request", &delivery));
        let workers = self.offer_to_channel(channel_id, &frame, requester);
        if workers.is_empty() {
            inner.rpc.lock().remove(&request_id);
            return Err(EngineError::NoSubscribers(truncated(channel_id)));
        }
        if wake {
            inner.rpc_wake.notify_one();
        }
        inner.counters.rpc_requests.fetch_add(1, Relaxed);
        ev!(
            self,
            ch_config.telemetry_enabled,
            Debug,
            events::RPC_REQUEST_SENT,
            serde_json::json!({
            "request-id": &request_id, "channel-id": channel_id,
            "sender-conn-id": requester.to_string(), "delivered-to": workers.len(),
            "timeout-ms": timeout_ms})
        );
        inner
            .counters
            .deliveries
            .fetch_add(workers.len() as u64, Relaxed);
        let sent = RpcSent {
            request_id,
            delivered_to: workers.len(),
            subscribers: workers,
            timeout_ms,
        };
        if let Some(reply) = reply {
            let frame = reply(&sent);
            // Under the table's lock, which a response must take first.
            let mut rpc = inner.rpc.lock();
            let early = match rpc.pending.get_mut(&sent.request_id) {
                Some(p) => {
                    p.announced = true;
                    p.early.take()
                }
                None => None,
            };
            requester_conn.sink.offer(&frame);
            if let Some(response) = early {
                rpc.remove(&sent.request_id);
                requester_conn.sink.offer(&response);
            }
        }
        Ok(sent)
    }

    /// Routes a worker's response to the requester. Fails with
    /// `request-not-found` when the id is unknown, answered or expired.
    /// Returns the requester's id.
    pub fn send_rpc_response(
        &self,
        request_id: &str,
        data: Value,
        error: bool,
    ) -> Result<ConnId, EngineError> {
        self.rpc_response(request_id, data, error)
            .inspect_err(|e| self.reject(e))
    }

    fn rpc_response(
        &self,
        request_id: &str,
        data: Value,
        error: bool,
    ) -> Result<ConnId, EngineError> {
        let not_found = || EngineError::RequestNotFound(truncated(request_id));
        let frame = Frame::new(
            ServerMessage::RpcResponse {
                request_id: request_id.to_owned(),
                data,
                error,
            }
            .to_json(),
        );
        let (target, send_now) = {
            let mut rpc = self.inner.rpc.lock();
            let p = rpc.pending.get_mut(request_id).ok_or_else(not_found)?;
            if p.early.is_some() {
                // Answered already; the answer waits for the announcement.
                return Err(not_found());
            }
            if p.announced {
                (
                    rpc.remove(request_id).ok_or_else(not_found)?.requester,
                    true,
                )
            } else {
                // The requester's rpc-request-result is being sent right
                // now; that code delivers this response right after it.
                p.early = Some(frame.clone());
                (p.requester, false)
            }
        };
        if send_now {
            match self.send_to_connection(target, &frame) {
                Ok(Offer::Queued) | Ok(Offer::Full) | Ok(Offer::Closed) => {}
                // The requester left between our lookup and the send; its
                // pending requests are gone with it.
                Err(_) => return Err(not_found()),
            }
        }
        self.inner.counters.rpc_responses.fetch_add(1, Relaxed);
        ev!(
            self,
            true,
            Debug,
            events::RPC_RESPONSE_SENT,
            serde_json::json!({
            "request-id": request_id, "target-conn-id": target.to_string(), "error": error})
        );
        Ok(target)
    }

    /// Expires every request past its deadline now, sending each requester
    /// an `rpc-timeout` error; returns how many. The engine's timer calls
    /// this on its own; calling it by hand is harmless.
    pub fn cleanup_expired_rpc_requests(&self) -> usize {
        expire_due(&self.inner)
    }

    /// RPC requests waiting for a response.
    pub fn pending_rpc_requests(&self) -> usize {
        self.inner.rpc.lock().len()
    }
}

fn timeout_frame(request_id: &str, timeout_ms: u64) -> Frame {
    Frame::new(
        ServerMessage::error(
            Reason::RpcTimeout,
            format!("no rpc-response within {timeout_ms} ms"),
            Some(request_id.to_owned()),
        )
        .to_json(),
    )
}

fn expire_due(inner: &Arc<Inner>) -> usize {
    let due = inner.rpc.lock().take_due(Instant::now());
    let engine = Engine {
        inner: Arc::clone(inner),
    };
    for (id, requester, timeout_ms, frame) in &due {
        if let Some(frame) = frame {
            // The requester may have left; then there is no one to tell.
            let _ = engine.send_to_connection(*requester, frame);
        }
        ev!(
            engine,
            true,
            Info,
            events::RPC_REQUEST_EXPIRED,
            serde_json::json!({
            "request-id": id, "requester-conn-id": requester.to_string(),
            "timeout-ms": timeout_ms})
        );
    }
    if !due.is_empty() {
        ev!(
            engine,
            true,
            Debug,
            events::RPC_CLEANUP_COMPLETED,
            serde_json::json!({"expired": due.len()})
        );
    }
    inner
        .counters
        .rpc_expired
        .fetch_add(due.len() as u64, Relaxed);
    due.len()
}

/// The RPC timer: sleeps until the earliest deadline (or a wake-up for an
/// earlier one), expires what is due, and ends when the engine is dropped.
pub(crate) async fn timer(engine: Weak<Inner>, wake: Arc<Notify>) {
    loop {
        let next = {
            let Some(inner) = engine.upgrade() else {
                return;
            };
            expire_due(&inner);
            let next = inner.rpc.lock().earliest();
            next
        };
        match next {
            Some(at) => {
                tokio::select! {
                    _ = tokio::time::sleep_until(at) => {}
                    _ = wake.notified() => {}
                }
            }
            None => wake.notified().await,
        }
    }
}
