//! [`FrameRate`]: the per-connection token bucket of
//! `websocket.max-frames-per-second`.

use std::time::{Duration, Instant};

/// What to do with a client frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Admit {
    /// Within the rate: process it.
    Pass,
    /// Over the rate: answer `error` `rate-limited`, do not process it.
    Refuse,
    /// Over the rate, and more frames refused within the last second than
    /// allowed: close the connection (1008 `rate-limited`).
    Close,
}

/// A token bucket of `burst` tokens refilled at `rate` per second, full
/// when the connection opens; each client frame takes one. Owned by the
/// connection's task: no atomics, one clock read per frame.
#[derive(Debug)]
pub(crate) struct FrameRate {
    rate: f64,
    burst: f64,
    tokens: f64,
    last: Instant,
    max_refused: u32,
    /// Frames refused since `window` began (a fixed one-second window).
    refused: u32,
    window: Instant,
}

impl FrameRate {
    pub(crate) fn new(rate: u32, burst: u32, max_refused: u32, now: Instant) -> FrameRate {
        let burst = f64::from(burst.max(1));
        FrameRate {
            rate: f64::from(rate.max(1)),
            burst,
            tokens: burst,
            last: now,
            max_refused,
            refused: 0,
            window: now,
        }
    }

    /// Takes a token for a frame that arrived at `now`.
    pub(crate) fn admit(&mut self, now: Instant) -> Admit {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = now;
        self.tokens = (self.tokens + elapsed * self.rate).min(self.burst);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            return Admit::Pass;
        }
        if now.saturating_duration_since(self.window) >= Duration::from_secs(1) {
            self.window = now;
            self.refused = 0;
        }
        self.refused = self.refused.saturating_add(1);
        if self.refused > self.max_refused {
            Admit::Close
        } else {
            Admit::Refuse
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_passes_then_the_rate_holds() {
        let t0 = Instant::now();
        let mut r = FrameRate::new(10, 5, 100, t0);
        for _ in 0..5 {
            assert_eq!(r.admit(t0), Admit::Pass);
        }
        assert_eq!(r.admit(t0), Admit::Refuse);
        // 100 ms gives one token back, not more.
        let t1 = t0 + Duration::from_millis(100);
        assert_eq!(r.admit(t1), Admit::Pass);
        assert_eq!(r.admit(t1), Admit::Refuse);
        // A long pause refills to the burst only.
        let t2 = t1 + Duration::from_secs(60);
        for _ in 0..5 {
            assert_eq!(r.admit(t2), Admit::Pass);
        }
        assert_eq!(r.admit(t2), Admit::Refuse);
    }

    #[test]
    fn the_defaults_pass_a_burst_of_1000_and_a_steady_2000_per_second() {
        let c = crate::TransportConfig::default();
        let t0 = Instant::now();
        let mut r = FrameRate::new(
            c.max_frames_per_second,
            c.frames_burst,
            c.max_refused_frames_per_second,
            t0,
        );
        for _ in 0..1_000 {
            assert_eq!(r.admit(t0), Admit::Pass);
        }
        // Then 2,000 frames/s for a minute, one every 500 µs.
        for i in 1..=120_000u64 {
            let t = t0 + Duration::from_micros(500 * i);
            assert_eq!(r.admit(t), Admit::Pass, "frame {i}");
        }
    }

    #[test]
    fn too_many_refusals_within_a_second_close() {
        let t0 = Instant::now();
        let mut r = FrameRate::new(1, 1, 3, t0);
        assert_eq!(r.admit(t0), Admit::Pass);
        for _ in 0..3 {
            assert_eq!(r.admit(t0), Admit::Refuse);
        }
        assert_eq!(r.admit(t0), Admit::Close);
        // Refusals spread out over seconds do not add up.
        let mut r = FrameRate::new(1, 1, 3, t0);
        for s in 0..10u64 {
            let t = t0 + Duration::from_millis(1_000 * s + 500);
            assert_eq!(r.admit(t), Admit::Pass, "second {s}");
            for _ in 0..3 {
                assert_eq!(r.admit(t), Admit::Refuse, "second {s}");
            }
        }
    }
}
