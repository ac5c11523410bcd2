//! The RPC router: pending requests, their correlation ids and deadlines,
//! and the early-response ordering.
//!
//! It knows nothing of channels, hubs or brokers: the node registers a
//! request here before delivering it (so a fast worker's response finds
//! it), routes a response to the requester the router names, and sends the
//! timeouts the router hands back. Requesters are connections of this node
//! (a request is registered where its requester lives): a response that a
//! worker on another node gives is carried to this node by the broker that
//! spans them, then routed here.

use crate::conn::{ConnId, Frame};
use crate::error::truncated;
use crate::error::EngineError;
use parking_lot::Mutex;
use sente_lite_protocol::{Reason, ServerMessage};
use std::collections::hash_map::RandomState;
use std::collections::{BTreeMap, HashMap};
use std::hash::{BuildHasher, Hasher};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Notify;
use tokio::time::Instant;

struct Pending {
    requester: ConnId,
    deadline: Instant,
    seq: u64,
    timeout_ms: u64,
    /// The channel's `telemetry-enabled`, for the response's signal.
    telemetry: bool,
    /// The requester has been given its `rpc-request-result`. Until then a
    /// response or timeout is held in `early`, so it can never overtake the
    /// result.
    announced: bool,
    early: Option<Frame>,
}

/// Pending requests, indexed by id and by deadline. Bounded by
/// `max-pending-rpc` and `max-pending-rpc-per-connection`.
#[derive(Default)]
struct Table {
    pending: HashMap<String, Pending>,
    deadlines: BTreeMap<(Instant, u64), String>,
    per_conn: HashMap<ConnId, usize>,
    next_seq: u64,
    salt: Option<u64>,
}

/// A request's settings as the node registers it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Request {
    pub(crate) requester: ConnId,
    pub(crate) timeout_ms: u64,
    pub(crate) telemetry: bool,
    /// The node will announce the request (`rpc-request-result`) with
    /// [`RpcRouter::announce`]; hold early answers until then.
    pub(crate) announce: bool,
}

/// Where a response goes.
#[derive(Debug)]
pub(crate) enum Route {
    /// To this requester, now.
    Now { requester: ConnId, telemetry: bool },
    /// Held until the requester's `rpc-request-result` is queued; the
    /// announcing code delivers it.
    Held { requester: ConnId, telemetry: bool },
}

/// A request that timed out.
#[derive(Debug)]
pub(crate) struct Expired {
    pub(crate) request_id: String,
    pub(crate) requester: ConnId,
    pub(crate) timeout_ms: u64,
    /// The `rpc-timeout` to send now; `None` when it is held for the
    /// announcement instead.
    pub(crate) frame: Option<Frame>,
}

/// Pending RPC requests and the timer's wake-up.
pub(crate) struct RpcRouter {
    table: Mutex<Table>,
    max_pending: usize,
    max_per_connection: usize,
    /// This node's name, appended to request ids (`req-…@node`) when the
    /// node is one of several.
    node: Option<Arc<str>>,
    /// Wakes the node's timer task for an earlier deadline (or its end).
    pub(crate) wake: Arc<Notify>,
}

impl Table {
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

    /// A fresh request id: a sequence number plus a per-router random
    /// salt, so one connection cannot guess the ids of another's requests.
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

impl RpcRouter {
    pub(crate) fn new(
        max_pending: usize,
        max_per_connection: usize,
        node: Option<Arc<str>>,
    ) -> RpcRouter {
        RpcRouter {
            node,
            table: Mutex::new(Table::default()),
            max_pending,
            max_per_connection,
            wake: Arc::new(Notify::new()),
        }
    }

    /// Registers a request; returns its id. Wakes the timer when the
    /// deadline is the earliest.
    pub(crate) fn register(&self, r: Request) -> Result<String, EngineError> {
        let deadline = Instant::now() + Duration::from_millis(r.timeout_ms);
        let mut t = self.table.lock();
        if t.pending.len() >= self.max_pending {
            return Err(EngineError::MaxPendingRpcReached(self.max_pending));
        }
        let per = t.per_conn.get(&r.requester).copied().unwrap_or(0);
        if per >= self.max_per_connection {
            return Err(EngineError::MaxPendingRpcReached(self.max_per_connection));
        }
        let (mut id, seq) = t.next_id();
        if let Some(node) = &self.node {
            // The requester's node, where a worker's node sends the
            // response (`@` never appears in our own part).
            id.push('@');
            id.push_str(node);
        }
        let wake = t.earliest().is_none_or(|e| deadline < e);
        t.pending.insert(
            id.clone(),
            Pending {
                requester: r.requester,
                deadline,
                seq,
                timeout_ms: r.timeout_ms,
                telemetry: r.telemetry,
                announced: !r.announce,
                early: None,
            },
        );
        t.deadlines.insert((deadline, seq), id.clone());
        *t.per_conn.entry(r.requester).or_insert(0) += 1;
        drop(t);
        if wake {
            self.wake.notify_one();
        }
        Ok(id)
    }

    /// Forgets a request that reached no worker.
    pub(crate) fn cancel(&self, id: &str) {
        self.table.lock().remove(id);
    }

    /// Marks the request announced and, under the table's lock (which a
    /// response must take first), offers the `rpc-request-result` and then
    /// any answer that came before it.
    pub(crate) fn announce(&self, id: &str, result: &Frame, offer: &dyn Fn(&Frame)) {
        let mut t = self.table.lock();
        let early = match t.pending.get_mut(id) {
            Some(p) => {
                p.announced = true;
                p.early.take()
            }
            None => None,
        };
        offer(result);
        if let Some(answer) = early {
            t.remove(id);
            offer(&answer);
        }
    }

    /// Takes the request a response answers. `request-not-found` when it is
    /// unknown, answered or expired.
    pub(crate) fn respond(&self, id: &str, response: &Frame) -> Result<Route, EngineError> {
        let not_found = || EngineError::RequestNotFound(truncated(id));
        let mut t = self.table.lock();
        let p = t.pending.get_mut(id).ok_or_else(not_found)?;
        if p.early.is_some() {
            // Answered (or timed out) already; that waits for the announcement.
            return Err(not_found());
        }
        let (requester, telemetry) = (p.requester, p.telemetry);
        if p.announced {
            t.remove(id);
            Ok(Route::Now {
                requester,
                telemetry,
            })
        } else {
            p.early = Some(response.clone());
            Ok(Route::Held {
                requester,
                telemetry,
            })
        }
    }

    /// Drops every request of a requester that left; returns how many.
    pub(crate) fn drop_requester(&self, conn: ConnId) -> usize {
        let mut t = self.table.lock();
        if t.per_conn.remove(&conn).is_none() {
            return 0;
        }
        let ids: Vec<String> = t
            .pending
            .iter()
            .filter(|(_, p)| p.requester == conn)
            .map(|(id, _)| id.clone())
            .collect();
        for id in &ids {
            if let Some(p) = t.pending.remove(id) {
                t.deadlines.remove(&(p.deadline, p.seq));
            }
        }
        ids.len()
    }

    /// Expires every request due at `now`. A request whose
    /// `rpc-request-result` is still being sent keeps its timeout in
    /// `early` (delivered right after the result) and is returned with no
    /// frame.
    pub(crate) fn take_due(&self, now: Instant) -> Vec<Expired> {
        let mut t = self.table.lock();
        let mut due = Vec::new();
        while let Some(entry) = t.deadlines.first_entry() {
            if entry.key().0 > now {
                break;
            }
            let id = entry.remove();
            let Some(p) = t.pending.get_mut(&id) else {
                continue;
            };
            let frame = timeout_frame(&id, p.timeout_ms);
            let (requester, timeout_ms) = (p.requester, p.timeout_ms);
            if p.announced {
                t.remove(&id);
                due.push(Expired {
                    request_id: id,
                    requester,
                    timeout_ms,
                    frame: Some(frame),
                });
            } else {
                p.early.get_or_insert(frame);
                due.push(Expired {
                    request_id: id,
                    requester,
                    timeout_ms,
                    frame: None,
                });
            }
        }
        due
    }

    /// The earliest deadline pending.
    pub(crate) fn earliest(&self) -> Option<Instant> {
        self.table.lock().earliest()
    }

    /// Requests pending.
    pub(crate) fn len(&self) -> usize {
        self.table.lock().pending.len()
    }

    /// Requests more than `grace` past their deadline.
    pub(crate) fn overdue(&self, grace: Duration) -> usize {
        let t = self.table.lock();
        match Instant::now().checked_sub(grace) {
            Some(cutoff) => t.deadlines.range(..(cutoff, 0)).count(),
            None => 0,
        }
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
