//! The "Delivery guarantees" section of docs/BENCHMARKS.md, from the JSON
//! of `sente-lite-bench delivery` (recovery, presence, `rpc-dispatch`,
//! conflation; both brokers).

use serde_json::Value;
use std::fmt::Write as _;

/// The section's markers in docs/BENCHMARKS.md, so that
/// `cargo xtask bench --delivery-only` can replace it alone.
pub(crate) const START: &str = "<!-- bench:delivery:start -->";
pub(crate) const END: &str = "<!-- bench:delivery:end -->";

/// The section, between its markers.
pub(crate) fn section(d: &Value, date: &str, machine: &str) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "{START}");
    let _ = writeln!(
        s,
        "## Delivery guarantees: recovery, presence, RPC dispatch, conflation\n"
    );
    let _ = writeln!(
        s,
        "One sente-lite (release build) per broker, started by the load tool: the in-process \
         broker, and one node on a `redis-server` of the run's own; the tool's clients on the \
         same 2 cores, over 127.0.0.1.\n"
    );
    let _ = writeln!(s, "- Machine: {machine}");
    let _ = writeln!(
        s,
        "- Run: {date}{}",
        if d["quick"] == true {
            " (quick sizes)"
        } else {
            ""
        }
    );
    let _ = writeln!(
        s,
        "- Reproduce: `cargo xtask bench --delivery-only` (this section alone), or \
         `cargo build --release -p sente-lite-server -p sente-lite-bench && \
         target/release/sente-lite-bench delivery --sente-bin target/release/sente-lite`\n"
    );
    let empty = Vec::new();
    let results = d["results"].as_array().unwrap_or(&empty);
    let brokers: Vec<&str> = results
        .iter()
        .filter_map(|r| r["broker"].as_str())
        .collect();
    let col = |f: &dyn Fn(&Value) -> String| -> String {
        results.iter().map(f).collect::<Vec<_>>().join(" | ")
    };
    let num = |v: &Value, digits: usize| {
        v.as_f64()
            .map_or_else(|| "–".to_owned(), |x| format!("{x:.digits$}"))
    };
    let _ = writeln!(s, "| measure | {} |", brokers.join(" | "));
    let _ = writeln!(s, "| --- |{}", " ---: |".repeat(brokers.len()));
    let first = results.first().cloned().unwrap_or(Value::Null);
    let missed = &first["recovery"]["missed"];
    let _ = writeln!(
        s,
        "| recovery of {missed} missed messages (100 B): `subscribe` → first missed message, ms | {} |",
        col(&|r| num(&r["recovery"]["first-ms"], 2))
    );
    let _ = writeln!(
        s,
        "| … → last missed message, ms | {} |",
        col(&|r| num(&r["recovery"]["last-ms"], 2))
    );
    let members = &first["presence"]["members"];
    let _ = writeln!(
        s,
        "| `presence` of a {members}-member channel, ms | {} |",
        col(&|r| num(&r["presence"]["presence-ms"], 2))
    );
    let _ = writeln!(
        s,
        "| `presence-stats` of it, ms | {} |",
        col(&|r| num(&r["presence"]["presence-stats-ms"], 2))
    );
    let _ = writeln!(
        s,
        "| `presence-result` size, KiB | {} |",
        col(&|r| num(
            &Value::from(r["presence"]["presence-bytes"].as_f64().unwrap_or(f64::NAN) / 1024.0),
            0
        ))
    );
    let rpc = |r: &Value, dispatch: &str| -> Value {
        r["rpc"]
            .as_array()
            .and_then(|a| a.iter().find(|x| x["dispatch"] == dispatch))
            .cloned()
            .unwrap_or(Value::Null)
    };
    let _ = writeln!(
        s,
        "| RPC, 4 workers, 64 in flight: `rpc-dispatch = one`, requests/s | {} |",
        col(&|r| num(&rpc(r, "one")["requests-per-sec"], 0))
    );
    let _ = writeln!(
        s,
        "| … `rpc-dispatch = all`, requests/s | {} |",
        col(&|r| num(&rpc(r, "all")["requests-per-sec"], 0))
    );
    let _ = writeln!(
        s,
        "| … `one` ÷ `all` | {} |",
        col(&|r| {
            let (one, all) = (
                rpc(r, "one")["requests-per-sec"].as_f64(),
                rpc(r, "all")["requests-per-sec"].as_f64(),
            );
            match (one, all) {
                (Some(o), Some(a)) if a > 0.0 => format!("{:.2}", o / a),
                _ => "–".to_owned(),
            }
        })
    );
    let _ = writeln!(
        s,
        "| … requests the workers received per request: one / all | {} |",
        col(&|r| {
            let per = |d: &str| {
                let x = rpc(r, d);
                match (x["worker-deliveries"].as_f64(), x["requests"].as_f64()) {
                    (Some(w), Some(n)) if n > 0.0 => format!("{:.2}", w / n),
                    _ => "–".to_owned(),
                }
            };
            format!("{} / {}", per("one"), per("all"))
        })
    );
    let feed = |r: &Value, policy: &str| -> Value {
        r["conflation"]
            .as_array()
            .and_then(|a| a.iter().find(|x| x["policy"] == policy))
            .cloned()
            .unwrap_or(Value::Null)
    };
    let latest = feed(&first, "latest");
    let _ = writeln!(
        s,
        "| 10× overload ({} published at {}/s of 1 KiB, read at {}/s): `latest` subscriber still connected | {} |",
        latest["published"],
        num(&latest["publish-per-sec"], 0),
        num(&latest["read-per-sec"], 0),
        col(&|r| if feed(r, "latest")["closed"].is_null() { "yes".to_owned() } else { "no".to_owned() })
    );
    let _ = writeln!(
        s,
        "| … messages it received (the rest conflated) | {} |",
        col(&|r| num(&feed(r, "latest")["received"], 0))
    );
    let _ = writeln!(
        s,
        "| … ended on the newest message | {} |",
        col(&|r| if feed(r, "latest")["newest-received"] == true {
            "yes".to_owned()
        } else {
            "no".to_owned()
        })
    );
    let _ = writeln!(
        s,
        "| … newest message received after the last publish, ms | {} |",
        col(&|r| num(&feed(r, "latest")["newest-after-last-publish-ms"], 0))
    );
    let _ = writeln!(
        s,
        "| … `close` subscriber under the same load | {} |",
        col(&|r| {
            let c = feed(r, "close");
            c["closed"].as_str().map_or_else(
                || "not closed".to_owned(),
                |why| format!("{} after {} messages", why.replace('|', "/"), c["received"]),
            )
        })
    );
    let _ = writeln!(s);
    let _ = writeln!(
        s,
        "The server's queues have their defaults (4,096 frames, 1 MiB) and the slow \
         subscriber a 4 KiB socket receive buffer, so the backlog outgrows the queue within \
         the run; the time to the newest message is the backlog the socket buffers and the \
         queue still held, read at 1,000/s."
    );
    let _ = writeln!(s, "{END}");
    s
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use serde_json::json;

    #[test]
    fn the_section_shows_each_brokers_figures() {
        let r = |broker: &str, first: f64| {
            json!({"broker": broker,
                   "recovery": {"missed": 1000, "first-ms": first, "last-ms": 9.5},
                   "presence": {"members": 10000, "presence-ms": 40.0, "presence-stats-ms": 30.0,
                                "presence-bytes": 2048},
                   "rpc": [{"dispatch": "one", "requests-per-sec": 20000.0, "requests": 100,
                            "worker-deliveries": 100},
                           {"dispatch": "all", "requests-per-sec": 10000.0, "requests": 100,
                            "worker-deliveries": 400}],
                   "conflation": [{"policy": "latest", "closed": null, "received": 3000,
                                   "newest-received": true, "published": 30000,
                                   "publish-per-sec": 10000.0, "read-per-sec": 1000.0,
                                   "newest-after-last-publish-ms": 800.0},
                                  {"policy": "close", "closed": "closed: slow-consumer",
                                   "received": 700}]})
        };
        let d = json!({"quick": false, "results": [r("local", 1.25), r("redis", 3.5)]});
        let s = section(&d, "today", "this machine");
        assert!(s.starts_with(START) && s.trim_end().ends_with(END));
        assert!(
            s.contains("| `subscribe` → first missed message, ms | 1.25 | 3.50 |")
                || s.contains("| 1.25 | 3.50 |"),
            "{s}"
        );
        assert!(s.contains("| … `one` ÷ `all` | 2.00 | 2.00 |"), "{s}");
        assert!(s.contains("| 1.00 / 4.00 | 1.00 / 4.00 |"), "{s}");
        assert!(
            s.contains("closed: slow-consumer after 700 messages"),
            "{s}"
        );
        assert!(s.contains("| `presence-result` size, KiB | 2 | 2 |"), "{s}");
    }
}
