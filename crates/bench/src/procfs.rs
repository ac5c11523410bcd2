//! The server's resource use, read from `/proc/<pid>`: CPU seconds (user
//! and system, from `stat`), resident memory now (`VmRSS`) and its lifetime peak
//! (`VmHWM`, from `status`). [`Sampler`] polls `VmRSS` during a run so a
//! scenario reports its own peak even when the server process was already
//! running before it.

use serde::Serialize;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

/// Why `/proc` could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ProcError {
    #[error("cannot read /proc/{pid}/{file}: {source}")]
    Read {
        pid: u32,
        file: &'static str,
        source: std::io::Error,
    },
    #[error("unexpected format of /proc/{pid}/{file}")]
    Format { pid: u32, file: &'static str },
}

/// One reading of a process.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct ProcSample {
    /// utime + stime, in seconds.
    pub cpu_seconds: f64,
    /// utime (user space), in seconds.
    pub user_seconds: f64,
    /// stime (the kernel on the process's behalf), in seconds.
    pub sys_seconds: f64,
    pub rss_bytes: u64,
    pub hwm_bytes: u64,
}

/// Clock ticks per second of `/proc/<pid>/stat` (`getconf CLK_TCK`; 100 on
/// every Linux this runs on, asked once anyway).
pub fn clock_ticks() -> u64 {
    static TICKS: OnceLock<u64> = OnceLock::new();
    *TICKS.get_or_init(|| {
        std::process::Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8(o.stdout).ok())
            .and_then(|s| s.trim().parse::<u64>().ok())
            .filter(|t| *t > 0)
            .unwrap_or(100)
    })
}

fn read(pid: u32, file: &'static str) -> Result<String, ProcError> {
    std::fs::read_to_string(format!("/proc/{pid}/{file}")).map_err(|source| ProcError::Read {
        pid,
        file,
        source,
    })
}

/// utime and stime of `pid`, in seconds.
pub fn cpu_times(pid: u32) -> Result<(f64, f64), ProcError> {
    parse_stat_times(&read(pid, "stat")?, clock_ticks())
        .ok_or(ProcError::Format { pid, file: "stat" })
}

/// Parses utime and stime (fields 14 and 15) of a `stat` line, in seconds.
/// The command name (field 2) is in parentheses and may itself contain
/// spaces and parentheses, so fields are counted from the last `)`.
pub fn parse_stat_times(stat: &str, ticks: u64) -> Option<(f64, f64)> {
    let after = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = after.split_ascii_whitespace().collect();
    // fields[0] is field 3 (state); utime is field 14, stime field 15.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some((utime as f64 / ticks as f64, stime as f64 / ticks as f64))
}

/// A `kB` line of `status` (`VmRSS:  1234 kB`), in bytes.
pub fn parse_status_kb(status: &str, key: &str) -> Option<u64> {
    status.lines().find_map(|l| {
        let rest = l.strip_prefix(key)?.strip_prefix(':')?;
        let kb: u64 = rest.split_ascii_whitespace().next()?.parse().ok()?;
        Some(kb * 1024)
    })
}

/// CPU, RSS and peak RSS of `pid` now.
pub fn sample(pid: u32) -> Result<ProcSample, ProcError> {
    let (user_seconds, sys_seconds) = cpu_times(pid)?;
    let status = read(pid, "status")?;
    let fmt = || ProcError::Format {
        pid,
        file: "status",
    };
    Ok(ProcSample {
        cpu_seconds: user_seconds + sys_seconds,
        user_seconds,
        sys_seconds,
        rss_bytes: parse_status_kb(&status, "VmRSS").ok_or_else(fmt)?,
        hwm_bytes: parse_status_kb(&status, "VmHWM").ok_or_else(fmt)?,
    })
}

/// Samples `VmRSS` of a process every `every` in a background task, keeping
/// the maximum, until [`Sampler::finish`].
#[derive(Debug)]
pub struct Sampler {
    pid: u32,
    start: ProcSample,
    peak_rss: Arc<AtomicU64>,
    stop: tokio::sync::watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

/// What a run used of the server process between `Sampler::start` and
/// `finish`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct ProcUsage {
    pub pid: u32,
    pub cpu_seconds: f64,
    /// The user-space part of `cpu_seconds`.
    pub user_seconds: f64,
    /// The system (kernel) part of `cpu_seconds`.
    pub sys_seconds: f64,
    /// Highest `VmRSS` seen while sampling.
    pub peak_rss_bytes: u64,
    /// `VmRSS` at the end.
    pub end_rss_bytes: u64,
    /// `VmHWM` at the end: the peak over the process's whole life.
    pub lifetime_hwm_bytes: u64,
}

impl Sampler {
    pub fn start(pid: u32, every: Duration) -> Result<Sampler, ProcError> {
        let start = sample(pid)?;
        let peak_rss = Arc::new(AtomicU64::new(start.rss_bytes));
        let (stop, mut stopped) = tokio::sync::watch::channel(false);
        let peak = peak_rss.clone();
        let task = tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            loop {
                tokio::select! {
                    _ = tick.tick() => {}
                    _ = stopped.changed() => break,
                }
                let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status")) else {
                    break;
                };
                if let Some(rss) = parse_status_kb(&status, "VmRSS") {
                    peak.fetch_max(rss, Ordering::Relaxed);
                }
            }
        });
        Ok(Sampler {
            pid,
            start,
            peak_rss,
            stop,
            task,
        })
    }

    /// The usage so far, without stopping.
    pub fn usage(&self) -> Result<ProcUsage, ProcError> {
        let now = sample(self.pid)?;
        let peak = self.peak_rss.fetch_max(now.rss_bytes, Ordering::Relaxed);
        Ok(ProcUsage {
            pid: self.pid,
            cpu_seconds: now.cpu_seconds - self.start.cpu_seconds,
            user_seconds: now.user_seconds - self.start.user_seconds,
            sys_seconds: now.sys_seconds - self.start.sys_seconds,
            peak_rss_bytes: peak.max(now.rss_bytes),
            end_rss_bytes: now.rss_bytes,
            lifetime_hwm_bytes: now.hwm_bytes,
        })
    }

    pub async fn finish(self) -> Result<ProcUsage, ProcError> {
        let usage = self.usage();
        let _ = self.stop.send(true);
        let _ = self.task.await;
        usage
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The memory tests watch this process's RSS: run them one at a time.
    static MEMORY: std::sync::Mutex<()> = std::sync::Mutex::new(());

    fn burn(d: Duration) -> u64 {
        let start = std::time::Instant::now();
        let mut x = 1u64;
        while start.elapsed() < d {
            for i in 0..10_000u64 {
                x = x.wrapping_mul(6364136223846793005).wrapping_add(i);
            }
        }
        x
    }

    #[test]
    fn reads_this_process() {
        let _one = MEMORY.lock().unwrap_or_else(|e| e.into_inner());
        let pid = std::process::id();
        let before = sample(pid).expect("sample self");
        assert!(before.rss_bytes > 1024 * 1024, "{before:?}");
        assert!(before.hwm_bytes >= before.rss_bytes, "{before:?}");
        // Touch 64 MiB so the peak moves, and burn CPU so the time moves.
        let block = vec![1u8; 64 * 1024 * 1024];
        let sum: u64 = block.iter().step_by(4096).map(|b| u64::from(*b)).sum();
        assert_eq!(sum, 16384);
        std::hint::black_box(burn(Duration::from_millis(300)));
        let after = sample(pid).expect("sample self");
        assert!(
            after.cpu_seconds >= before.cpu_seconds + 0.1,
            "{before:?} -> {after:?}"
        );
        assert!(
            after.hwm_bytes >= before.rss_bytes + 60 * 1024 * 1024,
            "{before:?} -> {after:?}"
        );
        drop(block);
    }

    #[test]
    fn missing_process_is_an_error() {
        // PIDs are below 2^22 on Linux.
        assert!(matches!(sample(u32::MAX - 1), Err(ProcError::Read { .. })));
    }

    #[test]
    fn stat_with_odd_command_name() {
        let line = "42 (a) b (c)) S 1 42 42 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 1 0 5 1000 10";
        assert_eq!(parse_stat_times(line, 100), Some((2.5, 0.5)));
        assert_eq!(parse_stat_times("garbage", 100), None);
        let status = "Name:\tx\nVmHWM:\t    2048 kB\nVmRSS:\t    1024 kB\n";
        assert_eq!(parse_status_kb(status, "VmRSS"), Some(1024 * 1024));
        assert_eq!(parse_status_kb(status, "VmHWM"), Some(2048 * 1024));
        assert_eq!(parse_status_kb(status, "VmSwap"), None);
    }

    #[test]
    fn sampler_sees_the_peak() {
        let _one = MEMORY.lock().unwrap_or_else(|e| e.into_inner());
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .expect("runtime");
        rt.block_on(async {
            let s = Sampler::start(std::process::id(), Duration::from_millis(5)).expect("start");
            let block = vec![7u8; 48 * 1024 * 1024];
            std::hint::black_box(
                block
                    .iter()
                    .step_by(4096)
                    .map(|b| u64::from(*b))
                    .sum::<u64>(),
            );
            let rss_with_block = sample(std::process::id()).expect("sample").rss_bytes;
            tokio::time::sleep(Duration::from_millis(50)).await;
            drop(block);
            let u = s.finish().await.expect("finish");
            assert!(
                u.peak_rss_bytes >= rss_with_block,
                "{u:?} vs {rss_with_block}"
            );
            assert!(u.end_rss_bytes < u.peak_rss_bytes, "{u:?}");
            assert!(u.cpu_seconds >= 0.0);
        });
    }
}
