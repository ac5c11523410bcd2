//! Connection admission end to end (issue 11, transport part): the Origin
//! check, connections per client address behind trusted proxies, the
//! pending-handshake limit, TLS (`wss://`, `https://`), HTTP/1.1 unless
//! `http.http2`, and a server out of file descriptors.

#![allow(clippy::unwrap_used)]

use futures::{SinkExt, StreamExt};
use sente_lite_server::{Authorizer, ConnectInfo, Hooks, Identity, Refusal};
use sente_lite_tests::external::{Node, TempDir};
use sente_lite_tests::*;
use serde_json::{json, Value};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderName;
use tokio_tungstenite::tungstenite::Message;

/// A WebSocket upgrade with extra request headers, kept open (`Ok`), or
/// the refusal's status (`Err`).
async fn upgrade_with(addr: SocketAddr, headers: &[(&str, &str)]) -> Result<Client, u16> {
    let mut req = format!("ws://{addr}/").into_client_request().unwrap();
    for (n, v) in headers {
        req.headers_mut().append(
            HeaderName::from_bytes(n.as_bytes()).unwrap(),
            v.parse().unwrap(),
        );
    }
    let tcp = within("TCP connect", TcpStream::connect(addr))
        .await
        .unwrap();
    match within(
        "WebSocket handshake",
        tokio_tungstenite::client_async(req, tcp),
    )
    .await
    {
        Ok((ws, _)) => Ok(Client::from_ws(ws).await),
        Err(tokio_tungstenite::tungstenite::Error::Http(r)) => Err(r.status().as_u16()),
        Err(e) => panic!("upgrade failed without an HTTP answer: {e}"),
    }
}

/// The raw upgrade request of `ws_upgrade_raw`, with more headers: for a
/// refusal's JSON body.
async fn refused_upgrade(addr: SocketAddr, extra: &[(&str, &str)]) -> HttpResponse {
    let mut headers = vec![
        ("Connection", "Upgrade"),
        ("Upgrade", "websocket"),
        ("Sec-WebSocket-Version", "13"),
        ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="),
    ];
    headers.extend_from_slice(extra);
    http_request(addr, "GET", "/", &headers).await
}

/// Records the `ConnectInfo.peer` of every connection.
#[derive(Default)]
struct Peers(Mutex<Vec<Option<SocketAddr>>>);

impl Authorizer for Peers {
    fn connect(&self, info: &ConnectInfo) -> Result<Identity, Refusal> {
        self.0.lock().unwrap().push(info.peer);
        Ok(Identity::anonymous())
    }
}

async fn start_recording(config: Config) -> (Server, Arc<Peers>) {
    let peers = Arc::new(Peers::default());
    let hooks = Hooks {
        authorizer: Some(Arc::clone(&peers) as Arc<dyn Authorizer>),
        routes: Vec::new(),
    };
    let server = Server::start_with(config, hooks)
        .await
        .expect("server starts");
    (server, peers)
}

// ------------------------------------------------------------- origin --

#[tokio::test]
async fn an_upgrade_from_an_origin_not_allowed_is_refused_403() {
    let mut c = config();
    c.websocket.allowed_origins = vec!["https://*.example.com".into()];
    let server = start(c).await;
    let addr = server.local_addr();
    let r = refused_upgrade(addr, &[("Origin", "https://evil.example.org")]).await;
    assert_eq!(r.status, 403, "{r:?}");
    let body = r.json();
    assert_eq!(body["reason"], "forbidden-origin", "{body}");
    assert_eq!(body["error"], "forbidden", "{body}");
    // A look-alike that only contains the allowed suffix.
    let r = refused_upgrade(addr, &[("Origin", "https://example.com.evil.org")]).await;
    assert_eq!(r.status, 403, "{r:?}");
    // An allowed origin, and no Origin at all (not a browser), pass.
    let mut ok = upgrade_with(addr, &[("Origin", "https://app.example.com")])
        .await
        .expect("an allowed origin is upgraded");
    ok.roundtrip().await;
    let mut plain = Client::connect(addr).await;
    plain.roundtrip().await;
    let s = stats(addr).await;
    assert_eq!(s["transport"]["rejected-origin"], 2, "{s}");
    assert_eq!(s["transport"]["connections-accepted"], 2, "{s}");
}

#[tokio::test]
async fn by_default_any_origin_may_connect() {
    let server = start_default().await;
    let mut c = upgrade_with(
        server.local_addr(),
        &[("Origin", "https://anywhere.example")],
    )
    .await
    .expect("the default allows every origin");
    c.roundtrip().await;
    assert_eq!(server.transport_stats().rejected_origin, 0);
}

// ------------------------------------------------------------- per IP --

#[tokio::test]
async fn one_address_gets_at_most_max_connections_per_ip() {
    let mut c = config();
    c.websocket.max_connections_per_ip = 2;
    let server = start(c).await;
    let addr = server.local_addr();
    let mut a = Client::connect(addr).await;
    let b = Client::connect(addr).await;
    let r = ws_upgrade_raw(addr).await;
    assert_eq!(r.status, 429, "{r:?}");
    let body = r.json();
    assert_eq!(body["reason"], "max-connections-per-ip-reached", "{body}");
    assert_eq!(body["error"], "too-many-requests", "{body}");
    assert_eq!(server.transport_stats().rejected_max_connections_per_ip, 1);
    // The two admitted still work.
    a.roundtrip().await;
    // A closed one gives its place back.
    b.close().await;
    eventually("the closed connection is gone", || {
        server.health().connections == 1
    })
    .await;
    let mut c3 = connect_when_admitted(addr, &[]).await;
    c3.roundtrip().await;
    assert_eq!(
        server.transport_stats().rejected_max_connections_per_ip,
        1,
        "{:?}",
        server.transport_stats()
    );
}

/// Upgrades until one is admitted (a place given back when a connection's
/// task has ended, a moment after the engine forgot it), for at most
/// [`TIMEOUT`].
async fn connect_when_admitted(addr: SocketAddr, headers: &[(&str, &str)]) -> Client {
    let deadline = tokio::time::Instant::now() + TIMEOUT;
    loop {
        match upgrade_with(addr, headers).await {
            Ok(c) => return c,
            Err(429) if tokio::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            Err(status) => panic!("upgrade refused with {status}"),
        }
    }
}

#[tokio::test]
async fn behind_a_trusted_proxy_the_forwarded_address_is_the_client() {
    let mut c = config();
    c.websocket.max_connections_per_ip = 1;
    c.http.trusted_proxies = vec!["127.0.0.0/8".into()];
    let (server, peers) = start_recording(c).await;
    let addr = server.local_addr();
    // Two clients behind the proxy: one connection each.
    let mut one = upgrade_with(addr, &[("X-Forwarded-For", "203.0.113.1")])
        .await
        .expect("first client");
    let mut two = upgrade_with(addr, &[("X-Forwarded-For", "198.51.100.7, 127.0.0.1")])
        .await
        .expect("second client, through two proxies");
    let real = upgrade_with(addr, &[("X-Real-IP", "192.0.2.9")])
        .await
        .expect("a third, named by X-Real-IP");
    // A second connection of the first client is over its limit, even
    // with a forged entry on the left of the list.
    assert_eq!(
        upgrade_with(addr, &[("X-Forwarded-For", "10.9.9.9, 203.0.113.1")])
            .await
            .err(),
        Some(429)
    );
    one.roundtrip().await;
    two.roundtrip().await;
    drop(real);
    let seen: Vec<String> = peers
        .0
        .lock()
        .unwrap()
        .iter()
        .map(|p| p.unwrap().ip().to_string())
        .collect();
    // The authorizer is asked before the limit is checked: the refused
    // fourth upgrade was seen too, as its real client.
    assert_eq!(
        seen,
        ["203.0.113.1", "198.51.100.7", "192.0.2.9", "203.0.113.1"]
    );
    assert_eq!(server.transport_stats().rejected_max_connections_per_ip, 1);
}

#[tokio::test]
async fn an_untrusted_peer_cannot_forge_its_address() {
    let mut c = config();
    c.websocket.max_connections_per_ip = 1;
    let (server, peers) = start_recording(c).await;
    let addr = server.local_addr();
    let mut first = upgrade_with(addr, &[("X-Forwarded-For", "203.0.113.1")])
        .await
        .expect("first connection");
    // Another forged address does not make it another client.
    assert_eq!(
        upgrade_with(
            addr,
            &[
                ("X-Forwarded-For", "203.0.113.2"),
                ("X-Real-IP", "203.0.113.3")
            ]
        )
        .await
        .err(),
        Some(429)
    );
    first.roundtrip().await;
    let seen = peers.0.lock().unwrap().clone();
    assert_eq!(seen.len(), 2, "{seen:?}");
    for peer in seen {
        let peer = peer.unwrap();
        assert_eq!(peer.ip().to_string(), "127.0.0.1");
        assert_ne!(peer.port(), 0, "the TCP peer's own address, port included");
    }
    assert_eq!(server.transport_stats().rejected_max_connections_per_ip, 1);
}

// ---------------------------------------------------- pending handshakes --

#[tokio::test]
async fn idle_sockets_past_max_pending_handshakes_close_the_oldest() {
    let mut c = config();
    c.http.max_pending_handshakes = 8;
    // Long enough that no idle socket times out during the test.
    c.http.handshake_timeout_ms = 60_000;
    let server = start(c).await;
    let addr = server.local_addr();
    let mut idle = Vec::new();
    for _ in 0..8 {
        idle.push(TcpStream::connect(addr).await.unwrap());
    }
    eventually("8 sockets are pending", || {
        server.transport_stats().pending_handshakes == 8
    })
    .await;
    // 22 more: each closes the oldest pending one.
    for _ in 0..22 {
        idle.push(TcpStream::connect(addr).await.unwrap());
    }
    eventually("22 sockets were evicted", || {
        server.transport_stats().handshakes_evicted == 22
    })
    .await;
    // The oldest were the ones closed: they read the end of the stream.
    for (i, tcp) in idle.iter_mut().take(22).enumerate() {
        let mut b = [0u8; 1];
        let n = within("an evicted socket closes", tcp.read(&mut b))
            .await
            .unwrap_or(0);
        assert_eq!(n, 0, "socket {i} was closed without an answer");
    }
    assert_eq!(server.transport_stats().pending_handshakes, 8);
    // A real client still gets through while 8 idle sockets wait.
    let (status, body) = http_get(addr, "/health").await;
    assert_eq!(status, 200, "{body}");
    let mut ws = Client::connect(addr).await;
    ws.roundtrip().await;
    // /health closed one more idle socket to get in; the upgrade came
    // after /health's place was free again.
    let t = server.transport_stats();
    assert_eq!(t.handshakes_evicted, 23, "{t:?}");
    assert_eq!(t.pending_handshakes, 7, "{t:?}");
    // Every idle socket closed: none pending.
    drop(idle);
    eventually("no socket is pending", || {
        server.transport_stats().pending_handshakes == 0
    })
    .await;
}

#[tokio::test]
async fn the_handshake_timeout_closes_a_socket_silent_on_a_tls_port() {
    let certs = TestCerts::new();
    let mut c = certs.config();
    c.http.handshake_timeout_ms = 200;
    let server = start(c).await;
    let mut tcp = TcpStream::connect(server.local_addr()).await.unwrap();
    let mut b = [0u8; 1];
    let n = within("the silent socket is closed", tcp.read(&mut b))
        .await
        .unwrap_or(0);
    assert_eq!(n, 0);
    eventually("the timeout is counted", || {
        server.transport_stats().handshake_timeouts == 1
    })
    .await;
}

// ----------------------------------------------------------------- TLS --

/// A CA and a `localhost` certificate it signed, in PEM files.
struct TestCerts {
    dir: TempDir,
    ca: rustls::pki_types::CertificateDer<'static>,
}

impl TestCerts {
    fn new() -> TestCerts {
        let ca_key = rcgen::KeyPair::generate().unwrap();
        let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "sente-lite test CA");
        let ca = ca_params.self_signed(&ca_key).unwrap();
        let issuer = rcgen::Issuer::new(ca_params, ca_key);
        let key = rcgen::KeyPair::generate().unwrap();
        let leaf = rcgen::CertificateParams::new(vec!["localhost".to_owned()])
            .unwrap()
            .signed_by(&key, &issuer)
            .unwrap();
        let dir = TempDir::new("tls");
        std::fs::write(dir.join("cert.pem"), leaf.pem()).unwrap();
        std::fs::write(dir.join("key.pem"), key.serialize_pem()).unwrap();
        TestCerts {
            dir,
            ca: ca.der().clone(),
        }
    }

    fn config(&self) -> Config {
        let mut c = config();
        c.tls.cert_file = self.dir.join("cert.pem").display().to_string();
        c.tls.key_file = self.dir.join("key.pem").display().to_string();
        c
    }

    /// A TLS connection to `addr` as `localhost`, trusting only the CA.
    async fn connect(
        &self,
        addr: SocketAddr,
        alpn: &[&[u8]],
    ) -> tokio_rustls::client::TlsStream<TcpStream> {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(self.ca.clone()).unwrap();
        let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        let tcp = TcpStream::connect(addr).await.unwrap();
        let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
        within(
            "the TLS handshake",
            tokio_rustls::TlsConnector::from(Arc::new(config)).connect(name, tcp),
        )
        .await
        .expect("TLS handshake")
    }
}

/// Writes an HTTP/1.1 request with `Connection: close` and reads the whole
/// answer.
async fn exchange<S: AsyncRead + AsyncWrite + Unpin>(mut s: S, path: &str) -> String {
    within("an HTTP exchange", async {
        s.write_all(
            format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
                .as_bytes(),
        )
        .await
        .unwrap();
        let mut out = Vec::new();
        let _ = s.read_to_end(&mut out).await;
        String::from_utf8_lossy(&out).into_owned()
    })
    .await
}

#[tokio::test]
async fn wss_and_https_are_served_on_the_same_port() {
    let certs = TestCerts::new();
    let server = start(certs.config()).await;
    let addr = server.local_addr();
    // https GET /health.
    let answer = exchange(certs.connect(addr, &[]).await, "/health").await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.contains("\"status\":\"healthy\""), "{answer}");
    // wss: subscribe, publish, receive.
    let open = |tls| async move {
        let (ws, _) = within(
            "the wss handshake",
            tokio_tungstenite::client_async(format!("wss://localhost:{}/", addr.port()), tls),
        )
        .await
        .expect("wss upgrade");
        ws
    };
    let mut sub = open(certs.connect(addr, &[b"http/1.1".as_slice()]).await).await;
    let mut publisher = open(certs.connect(addr, &[]).await).await;
    async fn next<S: AsyncRead + AsyncWrite + Unpin>(
        ws: &mut tokio_tungstenite::WebSocketStream<S>,
        ty: &str,
    ) -> Value {
        within(&format!("a {ty} frame"), async {
            loop {
                match ws.next().await {
                    Some(Ok(Message::Text(t))) => {
                        let v: Value = serde_json::from_str(t.as_str()).unwrap();
                        if v["type"] == ty {
                            return v;
                        }
                    }
                    Some(Ok(_)) => {}
                    other => panic!("stream ended: {other:?}"),
                }
            }
        })
        .await
    }
    next(&mut sub, "welcome").await;
    next(&mut publisher, "welcome").await;
    let send = |v: Value| Message::Text(v.to_string().into());
    sub.send(send(json!({"type": "subscribe", "channel-id": "secure"})))
        .await
        .unwrap();
    assert_eq!(next(&mut sub, "subscription-result").await["success"], true);
    publisher
        .send(send(
            json!({"type": "publish", "channel-id": "secure", "data": "over tls"}),
        ))
        .await
        .unwrap();
    assert_eq!(
        next(&mut publisher, "publish-result").await["success"],
        true
    );
    assert_eq!(next(&mut sub, "channel-message").await["data"], "over tls");
    let t = server.transport_stats();
    assert_eq!(t.connections_accepted, 2, "{t:?}");
    assert_eq!(t.tls_handshake_failures, 0, "{t:?}");
    // Plain HTTP on the TLS port is not served.
    let plain = raw_exchange(addr, b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n").await;
    assert!(!plain.contains("healthy"), "{plain}");
    eventually("the failed handshake is counted", || {
        server.transport_stats().tls_handshake_failures == 1
    })
    .await;
}

#[tokio::test]
async fn bad_tls_files_stop_the_start_naming_the_key_and_the_file() {
    let certs = TestCerts::new();
    // The key file in place of the certificate.
    let mut c = certs.config();
    c.tls.cert_file = c.tls.key_file.clone();
    let err = Server::start(c.clone()).await.unwrap_err().to_string();
    assert!(
        err.contains("`tls.cert-file`") && err.contains(&c.tls.key_file),
        "{err}"
    );
    // A key that is not the certificate's.
    let other = rcgen::KeyPair::generate().unwrap();
    let wrong = certs.dir.join("other-key.pem");
    std::fs::write(&wrong, other.serialize_pem()).unwrap();
    let mut c = certs.config();
    c.tls.key_file = wrong.display().to_string();
    let err = Server::start(c).await.unwrap_err().to_string();
    assert!(
        err.contains("`tls.key-file`") && err.contains("other-key.pem"),
        "{err}"
    );
    // One file alone.
    let mut c = certs.config();
    c.tls.key_file = String::new();
    let err = Server::start(c).await.unwrap_err().to_string();
    assert!(err.starts_with("`tls.key-file`"), "{err}");
}

// --------------------------------------------------------------- HTTP/2 --

#[tokio::test]
async fn http2_prior_knowledge_is_refused_by_default() {
    let server = start_default().await;
    let preface = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00";
    let answer = raw_exchange(server.local_addr(), preface).await;
    assert!(answer.starts_with("HTTP/1.1 505 "), "{answer}");
    assert!(
        answer.contains("\"reason\":\"http2-not-enabled\""),
        "{answer}"
    );
    assert_eq!(server.transport_stats().rejected_http2, 1);
    // And hyper's own HTTP/2 client gets no HTTP/2 from it.
    let tcp = TcpStream::connect(server.local_addr()).await.unwrap();
    let result = within("an h2 client", async {
        let (mut send, conn) = hyper::client::conn::http2::handshake(
            hyper_util::rt::TokioExecutor::new(),
            hyper_util::rt::TokioIo::new(tcp),
        )
        .await?;
        tokio::spawn(conn);
        let req = http::Request::get("http://localhost/health")
            .body(String::new())
            .unwrap();
        send.send_request(req).await
    })
    .await;
    assert!(result.is_err(), "HTTP/2 answered: {result:?}");
}

#[tokio::test]
async fn with_http_http2_on_the_http_endpoints_speak_http2() {
    let mut c = config();
    c.http.http2 = true;
    let server = start(c).await;
    let tcp = TcpStream::connect(server.local_addr()).await.unwrap();
    let response = within("an h2c GET /health", async {
        let (mut send, conn) = hyper::client::conn::http2::handshake(
            hyper_util::rt::TokioExecutor::new(),
            hyper_util::rt::TokioIo::new(tcp),
        )
        .await
        .unwrap();
        tokio::spawn(conn);
        let req = http::Request::get("http://localhost/health")
            .body(String::new())
            .unwrap();
        send.send_request(req).await.unwrap()
    })
    .await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.version(), http::Version::HTTP_2);
    // HTTP/1.1 and WebSockets as before.
    let (status, _) = http_get(server.local_addr(), "/health").await;
    assert_eq!(status, 200);
    Client::connect(server.local_addr()).await.roundtrip().await;
    assert_eq!(server.transport_stats().rejected_http2, 0);
}

// ------------------------------------------------------ out of descriptors --

#[tokio::test]
async fn out_of_file_descriptors_the_server_keeps_serving() {
    let nofile = 64;
    let mut node = Node::spawn_under_ulimit(
        sente_lite_tests::node_bin!(),
        &format!("-n {nofile}"),
        &[
            // Idle sockets hold their descriptor for the whole test.
            ("SENTE_LITE_HTTP_HANDSHAKE_TIMEOUT_MS", "60000"),
            ("SENTE_LITE_TELEMETRY_OUTPUT", "console"),
            ("SENTE_LITE_TELEMETRY_MIN_LEVEL", "warn"),
        ],
    );
    let addr = node.addr();
    // The start warned that max-connections (1000) cannot fit in 64 (the
    // telemetry handler is asynchronous: it may write after the startup
    // line).
    wait_for_log(&node, "file-limit-low").await;
    let mut a = Client::connect(addr).await;
    let mut b = Client::connect(addr).await;
    a.subscribe("room").await;
    // Far more sockets than the server has descriptors: it accepts until
    // accept fails, the rest wait in the listen backlog.
    let mut extra = Vec::new();
    for _ in 0..(2 * nofile) {
        extra.push(TcpStream::connect(addr).await.unwrap());
    }
    // The connections already open still work, both ways.
    within("publishing while out of descriptors", async {
        b.publish("room", json!("still here")).await;
        assert_eq!(a.recv_type("channel-message").await["data"], "still here");
    })
    .await;
    // Failed accepts were logged (and are counted, checked below).
    wait_for_log(&node, "accept-failed").await;
    // Descriptors free again: /health answers, new clients connect.
    drop(extra);
    let (status, body) = http_get(addr, "/health").await;
    assert_eq!(status, 200, "{body}");
    let s = stats(addr).await;
    assert!(s["transport"]["accept-errors"].as_u64().unwrap() > 0, "{s}");
    let mut c = Client::connect(addr).await;
    c.roundtrip().await;
    a.roundtrip().await;
    assert!(node.is_running());
    node.stop();
}

/// Polls the node's log until it holds `needle`, for at most [`TIMEOUT`].
async fn wait_for_log(node: &Node, needle: &str) {
    let deadline = tokio::time::Instant::now() + TIMEOUT;
    while !node.log().contains(needle) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no `{needle}` in the node's log:\n{}",
            node.log()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The soft open-files limit is raised to the hard one at start: a node
/// started with a soft limit of 64 takes far more sockets without one
/// failed accept, and says nothing about a low limit (the hard one is
/// enough).
#[tokio::test]
async fn the_soft_file_limit_is_raised_to_the_hard_one() {
    let hard: u64 = {
        let out = std::process::Command::new("sh")
            .args(["-c", "ulimit -Hn"])
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).trim().to_owned();
        // "unlimited" is as good as any large number here.
        text.parse().unwrap_or(u64::MAX)
    };
    assert!(
        hard >= 1_200,
        "this test needs a hard open-files limit of at least 1200 (it is {hard})"
    );
    let mut node = Node::spawn_under_ulimit(
        sente_lite_tests::node_bin!(),
        "-Sn 64",
        &[
            ("SENTE_LITE_HTTP_HANDSHAKE_TIMEOUT_MS", "60000"),
            ("SENTE_LITE_TELEMETRY_OUTPUT", "console"),
            ("SENTE_LITE_TELEMETRY_MIN_LEVEL", "debug"),
        ],
    );
    let addr = node.addr();
    wait_for_log(&node, "file-limit-raised").await;
    let mut sockets = Vec::new();
    for _ in 0..200 {
        sockets.push(TcpStream::connect(addr).await.unwrap());
    }
    let mut a = Client::connect(addr).await;
    a.roundtrip().await;
    let s = stats(addr).await;
    assert_eq!(s["transport"]["accept-errors"], 0, "{s}");
    assert!(
        s["transport"]["pending-handshakes"].as_u64().unwrap() >= 200,
        "{s}"
    );
    assert!(!node.log().contains("file-limit-low"), "{}", node.log());
    drop(sockets);
    node.stop();
}
