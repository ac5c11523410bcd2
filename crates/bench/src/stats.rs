//! Latency and loss accounting.
//!
//! Every published message (and every RPC request) carries a [`Stamp`] in its
//! payload: the publisher's number `p`, its sequence number `s` (0, 1, 2, ...
//! per publisher) and the wall-clock send time `t` in microseconds since the
//! Unix epoch. A receiver records `now - t` in an HDR histogram and marks
//! `(p, s)` in a [`SeqTracker`], which tells duplicates, gaps (losses) and
//! reordering apart. Wall-clock time is used (not `Instant`) because
//! publishers and receivers may live in different processes of the tool; all
//! run on one machine, so they share the clock.

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::time::{SystemTime, UNIX_EPOCH};

/// Microseconds since the Unix epoch.
pub fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// What a payload carries for accounting. Unknown fields (the padding `x`)
/// are ignored when decoding.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stamp {
    pub p: u32,
    pub s: u64,
    pub t: u64,
}

/// The JSON payload for `stamp`, padded with `x` characters to `size` bytes
/// (or left at its natural length when that is already larger).
pub fn payload(stamp: Stamp, size: usize) -> String {
    let head = format!(r#"{{"p":{},"s":{},"t":{},"x":""#, stamp.p, stamp.s, stamp.t);
    let pad = size.saturating_sub(head.len() + 2);
    let mut out = String::with_capacity(head.len() + pad + 2);
    out.push_str(&head);
    out.extend(std::iter::repeat_n('x', pad));
    out.push_str("\"}");
    out
}

/// A latency histogram in microseconds, 1 µs to 10 min, 3 significant digits.
#[derive(Debug, Clone)]
pub struct Latency {
    hist: Histogram<u64>,
}

impl Default for Latency {
    fn default() -> Self {
        Self::new()
    }
}

/// Latency percentiles in microseconds, as reported.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct LatencySummary {
    pub count: u64,
    pub p50_us: u64,
    pub p90_us: u64,
    pub p99_us: u64,
    pub max_us: u64,
    pub mean_us: f64,
}

impl Latency {
    pub fn new() -> Self {
        // Constant bounds that `new_with_bounds` accepts (low >= 1,
        // high >= 2 * low, precision <= 5): this cannot fail.
        let hist = Histogram::new_with_bounds(1, 600_000_000, 3).expect("valid histogram bounds");
        Latency { hist }
    }

    /// Records one latency; values beyond the range are clamped.
    pub fn record(&mut self, us: u64) {
        let v = us.clamp(1, self.hist.high());
        // Cannot fail after clamping into the histogram's range.
        let _ = self.hist.record(v);
    }

    /// Records the latency of a stamp received now.
    pub fn record_stamp(&mut self, stamp: &Stamp, now_us: u64) {
        self.record(now_us.saturating_sub(stamp.t));
    }

    pub fn merge(&mut self, other: &Latency) {
        // Same bounds on both sides, so `add` cannot fail.
        let _ = self.hist.add(&other.hist);
    }

    pub fn summary(&self) -> LatencySummary {
        if self.hist.is_empty() {
            return LatencySummary::default();
        }
        LatencySummary {
            count: self.hist.len(),
            p50_us: self.hist.value_at_quantile(0.50),
            p90_us: self.hist.value_at_quantile(0.90),
            p99_us: self.hist.value_at_quantile(0.99),
            max_us: self.hist.max(),
            mean_us: self.hist.mean(),
        }
    }
}

/// Counts of one receiver (or of many, merged).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SeqCounts {
    /// Distinct `(publisher, seq)` pairs received.
    pub unique: u64,
    /// Copies of a pair already received.
    pub duplicates: u64,
    /// Pairs that arrived after a higher sequence number of the same
    /// publisher (reordering; not a loss).
    pub out_of_order: u64,
    /// Pairs outside what any publisher sent (a sequence number beyond the
    /// tracker's capacity, or an unknown publisher).
    pub unexpected: u64,
}

impl SeqCounts {
    pub fn add(&mut self, o: &SeqCounts) {
        self.unique += o.unique;
        self.duplicates += o.duplicates;
        self.out_of_order += o.out_of_order;
        self.unexpected += o.unexpected;
    }
}

/// Which sequence numbers one receiver saw, per publisher: a bitset each, so
/// a duplicate is a bit already set and a loss is a bit never set.
#[derive(Debug, Clone, Default)]
pub struct SeqTracker {
    per_pub: HashMap<u32, PubSeen>,
    /// Highest sequence number + 1 that can be tracked per publisher.
    capacity: u64,
    counts: SeqCounts,
}

#[derive(Debug, Clone, Default)]
struct PubSeen {
    bits: Vec<u64>,
    next_expected: u64,
}

/// The outcome of marking one sequence number.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mark {
    New,
    Duplicate,
    Unexpected,
}

impl SeqTracker {
    /// A tracker for publishers that send at most `capacity` messages each.
    pub fn new(capacity: u64) -> Self {
        SeqTracker {
            capacity,
            ..Self::default()
        }
    }

    pub fn mark(&mut self, stamp: &Stamp) -> Mark {
        if stamp.s >= self.capacity {
            self.counts.unexpected += 1;
            return Mark::Unexpected;
        }
        let words = usize::try_from(self.capacity.div_ceil(64)).unwrap_or(usize::MAX);
        let seen = self.per_pub.entry(stamp.p).or_insert_with(|| PubSeen {
            bits: vec![0; words],
            next_expected: 0,
        });
        let (w, b) = ((stamp.s / 64) as usize, stamp.s % 64);
        if seen.bits[w] & (1 << b) != 0 {
            self.counts.duplicates += 1;
            return Mark::Duplicate;
        }
        seen.bits[w] |= 1 << b;
        self.counts.unique += 1;
        if stamp.s < seen.next_expected {
            self.counts.out_of_order += 1;
        } else {
            seen.next_expected = stamp.s + 1;
        }
        Mark::New
    }

    pub fn counts(&self) -> SeqCounts {
        self.counts
    }

    /// How many of publisher `p`'s first `sent` messages never arrived.
    pub fn missing(&self, p: u32, sent: u64) -> u64 {
        let sent = sent.min(self.capacity);
        let Some(seen) = self.per_pub.get(&p) else {
            return sent;
        };
        let mut got = 0u64;
        let full_words = (sent / 64) as usize;
        for w in &seen.bits[..full_words] {
            got += u64::from(w.count_ones());
        }
        let rem = sent % 64;
        if rem > 0 {
            let mask = (1u64 << rem) - 1;
            got += u64::from((seen.bits[full_words] & mask).count_ones());
        }
        sent - got
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn st(p: u32, s: u64) -> Stamp {
        Stamp { p, s, t: 0 }
    }

    #[test]
    fn complete_in_order_stream_has_no_loss_or_duplicate() {
        let mut t = SeqTracker::new(200);
        for s in 0..130 {
            assert_eq!(t.mark(&st(1, s)), Mark::New);
        }
        assert_eq!(t.missing(1, 130), 0);
        assert_eq!(
            t.counts(),
            SeqCounts {
                unique: 130,
                ..SeqCounts::default()
            }
        );
    }

    #[test]
    fn duplicate_is_detected() {
        let mut t = SeqTracker::new(100);
        t.mark(&st(0, 0));
        t.mark(&st(0, 1));
        assert_eq!(t.mark(&st(0, 1)), Mark::Duplicate);
        assert_eq!(t.counts().duplicates, 1);
        assert_eq!(t.counts().unique, 2);
        assert_eq!(t.missing(0, 2), 0);
    }

    #[test]
    fn gap_is_counted_as_missing_and_late_arrival_as_reordering() {
        let mut t = SeqTracker::new(1000);
        for s in (0..100).filter(|s| *s != 63 && *s != 64 && *s != 99) {
            t.mark(&st(7, s));
        }
        assert_eq!(t.missing(7, 100), 3);
        // A publisher that sent more than arrived: the tail counts too.
        assert_eq!(t.missing(7, 110), 13);
        // Publisher never heard from: everything is missing.
        assert_eq!(t.missing(8, 5), 5);
        t.mark(&st(7, 63));
        assert_eq!(t.counts().out_of_order, 1);
        assert_eq!(t.missing(7, 100), 2);
    }

    #[test]
    fn publishers_are_tracked_apart_and_overflow_is_unexpected() {
        let mut t = SeqTracker::new(10);
        assert_eq!(t.mark(&st(1, 3)), Mark::New);
        assert_eq!(t.mark(&st(2, 3)), Mark::New);
        assert_eq!(t.mark(&st(2, 10)), Mark::Unexpected);
        assert_eq!(t.counts().unique, 2);
        assert_eq!(t.counts().unexpected, 1);
    }

    #[test]
    fn payload_has_requested_size_and_decodes() {
        let stamp = Stamp {
            p: 3,
            s: 123_456,
            t: now_us(),
        };
        let p = payload(stamp, 100);
        assert_eq!(p.len(), 100);
        let back: Stamp = serde_json::from_str(&p).expect("stamp");
        assert_eq!(back, stamp);
        // Too small a size: natural length, still valid JSON.
        let small = payload(stamp, 1);
        assert_eq!(serde_json::from_str::<Stamp>(&small).expect("stamp"), stamp);
    }

    #[test]
    fn latency_percentiles() {
        let mut a = Latency::new();
        let mut b = Latency::new();
        for v in 1..=900 {
            a.record(v);
        }
        for v in 901..=1000 {
            b.record(v);
        }
        a.merge(&b);
        let s = a.summary();
        assert_eq!(s.count, 1000);
        assert!((499..=501).contains(&s.p50_us), "{s:?}");
        assert!((989..=991).contains(&s.p99_us), "{s:?}");
        assert_eq!(s.max_us, 1000);
        assert_eq!(Latency::new().summary(), LatencySummary::default());
    }
}
