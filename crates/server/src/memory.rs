//! How much memory the machine (or the server's cgroup) has: the default of
//! `websocket.max-outbound-bytes-total` is a quarter of it.

use sente_lite_transport::DEFAULT_OUTBOUND_BYTES_TOTAL;

/// The memory this process may use, in bytes: `MemTotal` of
/// `/proc/meminfo`, or the cgroup's limit (v2 `memory.max`, v1
/// `memory.limit_in_bytes`) when that is lower (a container). `None` where
/// neither can be read (not Linux).
pub fn machine_memory() -> Option<u64> {
    let total = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|text| mem_total(&text));
    let cgroup = [
        "/sys/fs/cgroup/memory.max",
        "/sys/fs/cgroup/memory/memory.limit_in_bytes",
    ]
    .iter()
    .filter_map(|p| std::fs::read_to_string(p).ok())
    // "max" (no limit) does not parse; v1's "no limit" is a huge number.
    .filter_map(|s| s.trim().parse::<u64>().ok())
    .min();
    match (total, cgroup) {
        (Some(t), Some(c)) => Some(t.min(c)),
        (t, c) => t.or(c),
    }
}

/// `MemTotal` of a `/proc/meminfo` text, in bytes.
fn mem_total(meminfo: &str) -> Option<u64> {
    let line = meminfo.lines().find(|l| l.starts_with("MemTotal:"))?;
    let kib: u64 = line
        .trim_start_matches("MemTotal:")
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    kib.checked_mul(1024)
}

/// `websocket.max-outbound-bytes-total` when it is 0: a quarter of
/// [`machine_memory`], or 1 GiB where that is unknown.
pub(crate) fn default_outbound_total() -> usize {
    machine_memory()
        .map(|m| usize::try_from(m / 4).unwrap_or(usize::MAX))
        .filter(|&q| q > 0)
        .unwrap_or(DEFAULT_OUTBOUND_BYTES_TOTAL)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mem_total_is_read_in_bytes() {
        let text = "MemTotal:       24576000 kB\nMemFree:         1000 kB\n";
        assert_eq!(mem_total(text), Some(24_576_000 * 1024));
        assert_eq!(mem_total("MemFree: 1 kB\n"), None);
        assert_eq!(mem_total("MemTotal: lots kB\n"), None);
    }

    #[test]
    fn this_machine_has_memory_and_a_quarter_of_it_is_the_default() {
        if cfg!(target_os = "linux") {
            let m = machine_memory().expect("Linux has /proc/meminfo");
            assert!(m > 16 << 20, "{m}");
            assert_eq!(default_outbound_total() as u64, m / 4);
        } else {
            assert_eq!(default_outbound_total(), DEFAULT_OUTBOUND_BYTES_TOTAL);
        }
    }
}
