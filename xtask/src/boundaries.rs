//! The crate boundaries of docs/ARCHITECTURE.md, checked against the
//! manifests (`cargo metadata`): each invariant there that is an absence
//! ("channels knows nothing of warp") is a test here.

#[cfg(test)]
mod tests {
    use serde_json::Value;
    use std::collections::BTreeMap;

    /// The normal (not dev, not build) dependencies of every workspace
    /// package, by package name.
    fn dependencies() -> BTreeMap<String, Vec<String>> {
        let out = std::process::Command::new(std::env::var("CARGO").unwrap_or("cargo".into()))
            .args([
                "metadata",
                "--format-version",
                "1",
                "--no-deps",
                "--offline",
            ])
            .current_dir(crate::root())
            .output()
            .expect("cargo metadata runs");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let meta: Value = serde_json::from_slice(&out.stdout).expect("metadata is JSON");
        let mut map = BTreeMap::new();
        for p in meta["packages"].as_array().expect("packages") {
            let deps = p["dependencies"]
                .as_array()
                .expect("dependencies")
                .iter()
                .filter(|d| d["kind"].is_null())
                .filter_map(|d| d["name"].as_str().map(str::to_owned))
                .collect();
            map.insert(p["name"].as_str().expect("name").to_owned(), deps);
        }
        map
    }

    const WEB: [&str; 6] = [
        "warp",
        "hyper",
        "hyper-util",
        "tokio-tungstenite",
        "http",
        "httparse",
    ];

    #[test]
    fn each_crate_knows_only_what_architecture_says() {
        let deps = dependencies();
        let of = |name: &str| {
            deps.get(name)
                .unwrap_or_else(|| panic!("no package {name}"))
        };

        let protocol = of("sente-lite-protocol");
        assert!(
            protocol
                .iter()
                .all(|d| ["serde", "serde_json", "thiserror"].contains(&d.as_str())),
            "protocol depends on serde, serde_json and thiserror only: {protocol:?}"
        );
        let telemetry = of("telemere-lite");
        assert!(
            !telemetry.iter().any(|d| d.starts_with("sente-lite")),
            "telemetry knows nothing of sente-lite: {telemetry:?}"
        );
        for name in [
            "sente-lite-channels",
            "sente-lite-session",
            "sente-lite-redis",
            "sente-lite-server",
        ] {
            let d = of(name);
            assert!(
                !d.iter().any(|d| WEB.contains(&d.as_str())),
                "{name} knows nothing of warp, hyper, tungstenite or HTTP types: {d:?}"
            );
        }
        let channels = of("sente-lite-channels");
        assert!(
            !channels
                .iter()
                .any(|d| d == "sente-lite-session" || d == "sente-lite-transport"),
            "channels knows nothing of sessions or transports: {channels:?}"
        );
        let session = of("sente-lite-session");
        assert!(
            !session.iter().any(|d| d == "sente-lite-transport"),
            "session knows nothing of transports: {session:?}"
        );
        let auth = of("sente-lite-auth");
        assert!(
            !auth.iter().any(|d| WEB.contains(&d.as_str())
                || d == "tokio"
                || d == "sente-lite-transport"
                || d == "sente-lite-redis"
                || d == "sente-lite-server"),
            "auth knows nothing of sockets, HTTP, runtimes, transports, brokers or the server: {auth:?}"
        );
        let redis = of("sente-lite-redis");
        assert!(
            !redis.iter().any(|d| d == "sente-lite-session"
                || d == "sente-lite-transport"
                || d == "sente-lite-server"),
            "the Redis broker knows nothing of sessions, transports or the server: {redis:?}"
        );
        assert!(
            !channels
                .iter()
                .any(|d| d == "redis" || d == "sente-lite-redis"),
            "channels knows nothing of Redis: {channels:?}"
        );
        let transport = of("sente-lite-transport");
        assert!(
            transport.contains(&"warp".to_owned()),
            "transport is the one that has warp"
        );
    }
}
