//! A recording sink for engine tests.
#![allow(dead_code)]

use parking_lot::Mutex;
use sente_lite_channels::{Frame, Offer, Sink};
use serde_json::Value;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

/// Records every frame it accepts; can be made full or closed, and can have
/// a capacity after which it reports `Full`.
#[derive(Default)]
pub struct Inbox {
    frames: Mutex<Vec<Frame>>,
    pub full: AtomicBool,
    pub closed: AtomicBool,
    pub capacity: AtomicUsize,
    /// What `free_bytes` answers (`None`: no byte bound).
    pub free: Mutex<Option<usize>>,
}

impl Inbox {
    pub fn new() -> Arc<Inbox> {
        Arc::new(Inbox {
            capacity: AtomicUsize::new(usize::MAX),
            ..Default::default()
        })
    }

    pub fn with_capacity(n: usize) -> Arc<Inbox> {
        let i = Inbox::new();
        i.capacity.store(n, Ordering::SeqCst);
        i
    }

    /// Every accepted frame, parsed.
    pub fn json(&self) -> Vec<Value> {
        self.frames
            .lock()
            .iter()
            .map(|f| serde_json::from_str(f.as_str()).expect("frames are JSON"))
            .collect()
    }

    /// Accepted frames of one `type`.
    pub fn of_type(&self, ty: &str) -> Vec<Value> {
        self.json()
            .into_iter()
            .filter(|v| v["type"] == ty)
            .collect()
    }

    pub fn len(&self) -> usize {
        self.frames.lock().len()
    }

    pub fn raw(&self) -> Vec<Frame> {
        self.frames.lock().clone()
    }

    pub fn clear(&self) {
        self.frames.lock().clear();
    }
}

impl Sink for Inbox {
    fn offer(&self, frame: &Frame) -> Offer {
        if self.closed.load(Ordering::SeqCst) {
            return Offer::Closed;
        }
        let mut f = self.frames.lock();
        if self.full.load(Ordering::SeqCst) || f.len() >= self.capacity.load(Ordering::SeqCst) {
            return Offer::Full;
        }
        f.push(frame.clone());
        Offer::Queued
    }

    fn free_frames(&self) -> Option<usize> {
        let cap = self.capacity.load(Ordering::SeqCst);
        (cap != usize::MAX).then(|| cap.saturating_sub(self.frames.lock().len()))
    }

    fn free_bytes(&self) -> Option<usize> {
        *self.free.lock()
    }
}

/// Runs an engine future to completion on the calling thread, for tests that
/// drive the engine from plain threads. With the in-process broker every
/// engine future completes at its first poll.
pub trait Now: std::future::Future + Sized {
    fn now(self) -> Self::Output {
        futures::executor::block_on(self)
    }
}

impl<F: std::future::Future> Now for F {}
