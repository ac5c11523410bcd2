//! Timestamps: RFC 3339 UTC with microseconds, formatted without
//! `core::fmt`. Used by the signal's serde and text forms and by the
//! hand-written JSON-lines writer.

use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Serialize, Serializer};

/// Where the macros' signals get their [`Signal::time`](crate::Signal::time)
/// ([`Telemetry::set_clock`](crate::Telemetry::set_clock)).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Clock {
    /// The real-time clock at full resolution (`SystemTime::now`,
    /// `clock_gettime(CLOCK_REALTIME)`): about 30-45 ns a read on the
    /// benchmark machine, a fifth of an accepted async signal's cost.
    #[default]
    Precise,
    /// Linux: the coarse real-time clock (`CLOCK_REALTIME_COARSE`), the
    /// kernel's last tick: about 6 ns a read, but it advances only once a
    /// scheduler tick (1 to 4 ms, `clock_getres` tells), so signals of one
    /// tick share a timestamp. Elsewhere the same as `Precise`.
    Coarse,
}

impl Clock {
    pub(crate) fn as_u8(self) -> u8 {
        match self {
            Clock::Precise => 0,
            Clock::Coarse => 1,
        }
    }

    pub(crate) fn from_u8(v: u8) -> Clock {
        if v == 1 {
            Clock::Coarse
        } else {
            Clock::Precise
        }
    }

    /// The time now, read from this clock.
    #[inline]
    pub fn now(self) -> SystemTime {
        match self {
            Clock::Precise => SystemTime::now(),
            Clock::Coarse => coarse_now(),
        }
    }
}

#[cfg(target_os = "linux")]
#[inline]
fn coarse_now() -> SystemTime {
    let ts = rustix::time::clock_gettime(rustix::time::ClockId::RealtimeCoarse);
    from_unix(ts.tv_sec, ts.tv_nsec).unwrap_or_else(SystemTime::now)
}

#[cfg(not(target_os = "linux"))]
#[inline]
fn coarse_now() -> SystemTime {
    SystemTime::now()
}

/// `sec` seconds and `nsec` nanoseconds after the Unix epoch (`sec` may be
/// negative; `nsec` is in `0..1e9`); `None` if not representable.
#[cfg_attr(not(target_os = "linux"), allow(dead_code))]
#[inline]
fn from_unix(sec: i64, nsec: i64) -> Option<SystemTime> {
    let nsec = u32::try_from(nsec).ok().filter(|n| *n < 1_000_000_000)?;
    if sec >= 0 {
        UNIX_EPOCH.checked_add(Duration::new(sec.unsigned_abs(), nsec))
    } else {
        UNIX_EPOCH
            .checked_sub(Duration::from_secs(sec.unsigned_abs()))?
            .checked_add(Duration::from_nanos(u64::from(nsec)))
    }
}

/// A timestamp serialized as RFC 3339 UTC with microseconds.
pub(crate) struct Rfc3339(pub(crate) SystemTime);

impl Serialize for Rfc3339 {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut buf = [0u8; 32];
        let n = rfc3339_bytes(&mut buf, self.0);
        s.serialize_str(std::str::from_utf8(&buf[..n]).unwrap_or("?"))
    }
}

/// Writes `t` as `YYYY-MM-DDTHH:MM:SS.ffffffZ` (UTC).
pub(crate) fn write_rfc3339(out: &mut impl fmt::Write, t: SystemTime) -> fmt::Result {
    let mut buf = [0u8; 32];
    let n = rfc3339_bytes(&mut buf, t);
    out.write_str(std::str::from_utf8(&buf[..n]).unwrap_or("?"))
}

/// The RFC 3339 form in ASCII digits, without `core::fmt` (it shows up in
/// the file handler's profile); returns the length written.
pub(crate) fn rfc3339_bytes(buf: &mut [u8; 32], t: SystemTime) -> usize {
    let (secs, micros) = match t.duration_since(UNIX_EPOCH) {
        Ok(d) => (d.as_secs() as i64, d.subsec_micros()),
        Err(e) => {
            let d = e.duration();
            let mut s = -(d.as_secs() as i64);
            let mut us = d.subsec_micros();
            if us > 0 {
                s -= 1;
                us = 1_000_000 - us;
            }
            (s, us)
        }
    };
    let days = secs.div_euclid(86_400);
    let sod = secs.rem_euclid(86_400) as u32;
    let (y, m, d) = civil_from_days(days);
    let y = y.clamp(0, 9999) as u32;
    fn put(buf: &mut [u8], at: usize, v: u32, width: usize) {
        let mut v = v;
        for i in (0..width).rev() {
            buf[at + i] = b'0' + (v % 10) as u8;
            v /= 10;
        }
    }
    put(buf, 0, y, 4);
    buf[4] = b'-';
    put(buf, 5, m, 2);
    buf[7] = b'-';
    put(buf, 8, d, 2);
    buf[10] = b'T';
    put(buf, 11, sod / 3600, 2);
    buf[13] = b':';
    put(buf, 14, (sod / 60) % 60, 2);
    buf[16] = b':';
    put(buf, 17, sod % 60, 2);
    buf[19] = b'.';
    put(buf, 20, micros, 6);
    buf[26] = b'Z';
    27
}

/// Days since 1970-01-01 to (year, month, day), proleptic Gregorian
/// (the well-known era-based algorithm by Howard Hinnant).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn clocks_agree_within_a_tick() {
        let coarse = Clock::Coarse.now();
        let precise = Clock::Precise.now();
        // The coarse clock lags by at most a tick (<= 10 ms even at HZ=100)
        // and is never ahead of a later precise read.
        let lag = precise.duration_since(coarse).unwrap_or_default();
        assert!(lag < Duration::from_millis(50), "{lag:?}");
        assert_eq!(
            from_unix(-1, 500_000_000),
            UNIX_EPOCH.checked_sub(Duration::from_millis(500))
        );
        assert_eq!(from_unix(1, 1_000_000_000), None);
        assert_eq!(Clock::from_u8(Clock::Coarse.as_u8()), Clock::Coarse);
    }

    #[test]
    fn rfc3339() {
        let mut s = String::new();
        write_rfc3339(&mut s, UNIX_EPOCH).unwrap();
        assert_eq!(s, "1970-01-01T00:00:00.000000Z");
        s.clear();
        // 2024-02-29T12:34:56.789012Z
        let t = UNIX_EPOCH + Duration::new(1_709_210_096, 789_012_000);
        write_rfc3339(&mut s, t).unwrap();
        assert_eq!(s, "2024-02-29T12:34:56.789012Z");
        s.clear();
        write_rfc3339(&mut s, UNIX_EPOCH - Duration::from_micros(1)).unwrap();
        assert_eq!(s, "1969-12-31T23:59:59.999999Z");
    }
}
