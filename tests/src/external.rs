//! Real external processes for end-to-end tests: a `redis-server`, an
//! `nginx` configured from the committed `deploy/nginx.conf`, and
//! `sente-lite` server processes ([`Node`], the `sente-lite-node` binary of
//! this package).
//!
//! Each listens on a free port of 127.0.0.1, is waited for by polling (a
//! connect or request loop with a deadline, [`START_TIMEOUT`]; never a fixed
//! sleep), writes its output to a file in its own temporary directory (shown
//! when it fails to start), and is stopped on drop (signalled, then waited
//! for: no zombies, no strays).
//!
//! The helpers are synchronous (std only): they block the calling thread,
//! which is fine inside a `#[tokio::test]` since nothing they wait for runs
//! on the test's runtime. `redis-server` and `nginx` are the Debian
//! packages (`/usr/bin/redis-server`, `/usr/sbin/nginx`), installed by
//! `.ci/run`.
//!
//! A port picked by [`free_port`] is free when picked, not reserved: a
//! process that finds it taken by the time it binds exits, and `start`
//! tries again on another port. Readiness checks that the process that
//! answers is the one started (redis' `process_id`, nginx's pid file, the
//! node's startup line), not another test's process on a reused port.

use std::fs;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// The longest a process may take to become ready (or to stop).
pub const START_TIMEOUT: Duration = Duration::from_secs(20);

/// Between two readiness probes.
const POLL: Duration = Duration::from_millis(10);

/// How many ports `start` tries when the picked one turns out taken.
const PORT_ATTEMPTS: usize = 5;

/// The path of this package's `sente-lite-node` binary (the `sente-lite`
/// program, see `src/bin/node.rs`), for [`Node::spawn`]. A macro because
/// Cargo gives a binary's path (`CARGO_BIN_EXE_<name>`) to integration
/// tests only, at compile time: it must expand in the test's crate.
#[macro_export]
macro_rules! node_bin {
    () => {
        env!("CARGO_BIN_EXE_sente-lite-node")
    };
}

/// A TCP port of 127.0.0.1 that was free a moment ago (bound to port 0,
/// read, released).
pub fn free_port() -> u16 {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .and_then(|l| l.local_addr())
        .expect("bind 127.0.0.1:0")
        .port()
}

/// `127.0.0.1:port`.
pub fn local(port: u16) -> SocketAddr {
    SocketAddr::from((Ipv4Addr::LOCALHOST, port))
}

/// Whether something accepts TCP connections on `addr` now.
pub fn accepts(addr: SocketAddr) -> bool {
    TcpStream::connect_timeout(&addr, Duration::from_secs(1)).is_ok()
}

/// A blocking `GET path` (HTTP/1.1, `Connection: close`): the response's
/// status, or `None` when nothing answered with an HTTP status line.
pub fn http_status(addr: SocketAddr, path: &str) -> Option<u16> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(1)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    s.set_write_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut buf = Vec::new();
    // The body is read too (to the close), so the server never writes to a
    // socket already gone; a read error after the status line is no matter.
    let _ = s.read_to_end(&mut buf);
    let text = String::from_utf8_lossy(&buf);
    let status_line = text.lines().next()?;
    let mut parts = status_line.split(' ');
    if !parts.next()?.starts_with("HTTP/1.") {
        return None;
    }
    parts.next()?.parse().ok()
}

/// A directory of its own under the system's temporary directory, removed
/// (with everything in it) on drop.
#[derive(Debug)]
pub struct TempDir {
    path: PathBuf,
}

impl TempDir {
    /// Creates `<tmp>/sente-lite-<what>-<pid>-<n>`, empty.
    pub fn new(what: &str) -> TempDir {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let path =
            std::env::temp_dir().join(format!("sente-lite-{what}-{}-{n}", std::process::id()));
        let _ = fs::remove_dir_all(&path);
        fs::create_dir_all(&path).unwrap_or_else(|e| panic!("create {}: {e}", path.display()));
        TempDir { path }
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// `name` inside it.
    pub fn join(&self, name: &str) -> PathBuf {
        self.path.join(name)
    }

    /// Whether this process runs as root (it owns what it creates).
    fn created_by_root(&self) -> bool {
        fs::metadata(&self.path)
            .map(|m| m.uid() == 0)
            .unwrap_or(false)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.path);
    }
}

/// `path` if it is a file, else `name` in a directory of `PATH`.
fn find_binary(path: &str, name: &str) -> Option<PathBuf> {
    let p = Path::new(path);
    if p.is_file() {
        return Some(p.to_owned());
    }
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
}

/// The binary or a panic saying how to get it.
fn require_binary(path: &str, name: &str, package: &str) -> PathBuf {
    find_binary(path, name).unwrap_or_else(|| {
        panic!(
            "`{name}` not found (neither {path} nor on PATH): these tests run a real {name}; \
             `.ci/run` installs it (`apt-get install {package}`)"
        )
    })
}

/// A command whose stdout and stderr both go to `log` (created afresh).
fn logged(bin: &Path, log: &Path) -> Command {
    let file = fs::File::create(log).unwrap_or_else(|e| panic!("create {}: {e}", log.display()));
    let err = file
        .try_clone()
        .unwrap_or_else(|e| panic!("dup {}: {e}", log.display()));
    let mut cmd = Command::new(bin);
    cmd.stdin(Stdio::null())
        .stdout(Stdio::from(file))
        .stderr(Stdio::from(err));
    cmd
}

/// What a file holds, or a note that it cannot be read.
fn read_log(path: &Path) -> String {
    fs::read_to_string(path).unwrap_or_else(|e| format!("(cannot read {}: {e})", path.display()))
}

/// Sends `signal` (a name: `TERM`, `KILL`) to process `pid` with kill(1).
fn signal(pid: u32, signal: &str) {
    // A failure (the process is already gone) is no matter: the caller
    // waits for the process either way.
    let _ = Command::new("kill")
        .args([format!("-{signal}"), "--".to_owned(), pid.to_string()])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

/// Waits for `child` to exit, for at most `limit`.
fn wait_for_exit(child: &mut Child, limit: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + limit;
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return Some(status),
            Ok(None) if Instant::now() < deadline => std::thread::sleep(POLL),
            Ok(None) | Err(_) => return None,
        }
    }
}

/// SIGTERM, then waits; SIGKILL (and waits) if it does not exit in
/// [`START_TIMEOUT`]. Returns how it ended.
fn terminate(child: &mut Child) -> Option<ExitStatus> {
    if let Ok(Some(status)) = child.try_wait() {
        return Some(status);
    }
    signal(child.id(), "TERM");
    wait_for_exit(child, START_TIMEOUT).or_else(|| kill(child))
}

/// SIGKILL and waits.
fn kill(child: &mut Child) -> Option<ExitStatus> {
    let _ = child.kill();
    child.wait().ok()
}

/// How a readiness wait ended.
enum Start {
    Ready,
    /// The process exited before it was ready; its log.
    Exited(ExitStatus, String),
}

/// Polls `ready` until it holds, or the process exits, or [`START_TIMEOUT`]
/// passes (then the process is killed and this panics with its log).
fn wait_ready(child: &mut Child, what: &str, log: &Path, mut ready: impl FnMut() -> bool) -> Start {
    let deadline = Instant::now() + START_TIMEOUT;
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            return Start::Exited(status, read_log(log));
        }
        if ready() {
            return Start::Ready;
        }
        if Instant::now() >= deadline {
            kill(child);
            panic!(
                "{what} not ready after {START_TIMEOUT:?}; its output:\n{}",
                read_log(log)
            );
        }
        std::thread::sleep(POLL);
    }
}

/// Whether a log says the port was taken.
fn port_taken(log: &str) -> bool {
    log.contains("Address already in use") || log.contains("cannot listen")
}

// ---------------------------------------------------------------- redis --

/// A `redis-server` of its own on 127.0.0.1: no persistence (`--save ""`,
/// `--appendonly no`), working directory in a temporary directory. Killed
/// on drop.
#[derive(Debug)]
pub struct RedisServer {
    bin: PathBuf,
    port: u16,
    child: Option<Child>,
    dir: TempDir,
}

impl RedisServer {
    /// Starts one on a free port and waits until it answers `PING`.
    pub fn start() -> RedisServer {
        let bin = require_binary("/usr/bin/redis-server", "redis-server", "redis-server");
        for _ in 0..PORT_ATTEMPTS {
            let port = free_port();
            match RedisServer::spawn(&bin, port) {
                Ok((child, dir)) => {
                    return RedisServer {
                        bin,
                        port,
                        child: Some(child),
                        dir,
                    }
                }
                Err(log) if port_taken(&log) => continue,
                Err(log) => panic!("redis-server did not start:\n{log}"),
            }
        }
        panic!("redis-server found no free port in {PORT_ATTEMPTS} attempts");
    }

    /// One process on `port` in a fresh directory: ready, or its log.
    fn spawn(bin: &Path, port: u16) -> Result<(Child, TempDir), String> {
        let dir = TempDir::new("redis");
        let log = dir.join("redis.log");
        let mut child = logged(bin, &log)
            .args(["--port", &port.to_string()])
            .args(["--bind", "127.0.0.1"])
            .args(["--save", ""])
            .args(["--appendonly", "no"])
            .args(["--daemonize", "no"])
            .arg("--dir")
            .arg(dir.path())
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {}: {e}", bin.display()));
        let pid = child.id();
        let addr = local(port);
        let mut ours = None;
        let started = wait_ready(&mut child, "redis-server", &log, || {
            if raw_command(addr, &["PING"]).as_deref() != Some("+PONG\r\n") {
                return false;
            }
            // Whoever answers: this process, or another on a reused port?
            let info = raw_command(addr, &["INFO", "server"]).unwrap_or_default();
            ours = Some(info.contains(&format!("process_id:{pid}\r\n")));
            true
        });
        match started {
            Start::Ready if ours == Some(true) => Ok((child, dir)),
            Start::Ready => {
                kill(&mut child);
                Err(format!(
                    "Address already in use: another redis answers on {addr}"
                ))
            }
            Start::Exited(status, log) => Err(format!("exited ({status}):\n{log}")),
        }
    }

    /// `redis://127.0.0.1:<port>/`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    /// Its port (the same after [`start_again`](Self::start_again)).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `127.0.0.1:<port>`.
    pub fn addr(&self) -> SocketAddr {
        local(self.port)
    }

    /// Whether its process is running.
    pub fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// Stops it the polite way (SIGTERM) and waits until it exited.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            terminate(&mut child);
        }
    }

    /// Kills it (SIGKILL) and waits until it exited.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            kill(&mut child);
        }
    }

    /// Freezes it (SIGSTOP): connections stay open, nothing is answered,
    /// as a hung server. [`unfreeze`](Self::unfreeze) resumes it.
    pub fn freeze(&mut self) {
        if let Some(child) = &self.child {
            signal(child.id(), "STOP");
        }
    }

    /// Resumes a frozen server (SIGCONT).
    pub fn unfreeze(&mut self) {
        if let Some(child) = &self.child {
            signal(child.id(), "CONT");
        }
    }

    /// Starts a fresh process on the same port, with no data (after
    /// [`stop`](Self::stop) or [`kill`](Self::kill); a running one is
    /// stopped first). Waits until it answers `PING`; while the port is
    /// still held, tries again until [`START_TIMEOUT`].
    pub fn start_again(&mut self) {
        self.stop();
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            match RedisServer::spawn(&self.bin, self.port) {
                Ok((child, dir)) => {
                    self.child = Some(child);
                    self.dir = dir;
                    return;
                }
                Err(log) if port_taken(&log) && Instant::now() < deadline => {
                    std::thread::sleep(POLL);
                }
                Err(log) => panic!("redis-server did not start again on {}:\n{log}", self.port),
            }
        }
    }

    /// Sends one command (`["SET", "k", "v"]`) and returns the whole raw
    /// RESP reply text (`"+OK\r\n"`, `"$1\r\nv\r\n"`, `"*2\r\n..."`,
    /// `"-ERR ...\r\n"`). Panics when the server does not answer.
    pub fn command(&self, args: &[&str]) -> String {
        raw_command(self.addr(), args).unwrap_or_else(|| {
            panic!(
                "redis on {} did not answer {args:?}; its output:\n{}",
                self.addr(),
                read_log(&self.dir.join("redis.log"))
            )
        })
    }

    /// Its output so far.
    pub fn log(&self) -> String {
        read_log(&self.dir.join("redis.log"))
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// One RESP command on a new connection; the raw reply, or `None` when the
/// connection fails or the reply does not complete within 5 s.
fn raw_command(addr: SocketAddr, args: &[&str]) -> Option<String> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(1)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    s.set_write_timeout(Some(Duration::from_secs(5))).ok()?;
    let mut req = format!("*{}\r\n", args.len());
    for a in args {
        req.push_str(&format!("${}\r\n{a}\r\n", a.len()));
    }
    s.write_all(req.as_bytes()).ok()?;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        if let Some(end) = resp_end(&buf, 0) {
            buf.truncate(end);
            return Some(String::from_utf8_lossy(&buf).into_owned());
        }
        let n = s.read(&mut chunk).ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// Where the RESP2 reply starting at `at` ends, if `buf` holds all of it.
fn resp_end(buf: &[u8], at: usize) -> Option<usize> {
    let rest = buf.get(at..)?;
    let line_end = at + rest.windows(2).position(|w| w == b"\r\n")?;
    let after = line_end + 2;
    let count = || -> Option<i64> {
        std::str::from_utf8(&buf[at + 1..line_end])
            .ok()?
            .parse()
            .ok()
    };
    match rest.first()? {
        b'+' | b'-' | b':' => Some(after),
        b'$' => match usize::try_from(count()?) {
            Ok(n) => Some(after + n + 2).filter(|&end| buf.len() >= end),
            Err(_) => Some(after), // $-1: null
        },
        b'*' => {
            let mut pos = after;
            for _ in 0..count()?.max(0) {
                pos = resp_end(buf, pos)?;
            }
            Some(pos)
        }
        _ => Some(buf.len()), // not RESP2: return what came, as it came
    }
}

// ---------------------------------------------------------------- nginx --

/// The committed `deploy/nginx.conf` (an http-context snippet: the
/// `sente_lite` upstream and the server block), read now.
pub fn deploy_nginx_conf() -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/nginx.conf");
    fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

/// `snippet` (deploy/nginx.conf) with the upstream's `server ...;` lines
/// replaced by one per address of `upstreams` and `listen 80;` by `listen
/// <listen>;`; everything else unchanged. Panics when the snippet has no
/// such lines (its shape changed: this must be updated with it).
pub fn rewrite_nginx_conf(snippet: &str, upstreams: &[SocketAddr], listen: SocketAddr) -> String {
    assert!(!upstreams.is_empty(), "nginx needs at least one upstream");
    let mut out = String::new();
    let (mut in_upstream, mut servers, mut listens) = (false, 0, 0);
    for line in snippet.lines() {
        let t = line.trim();
        if t.starts_with("upstream ") && t.ends_with('{') {
            in_upstream = true;
        } else if in_upstream && t.starts_with("server ") && t.ends_with(';') {
            if servers == 0 {
                let indent = &line[..line.len() - line.trim_start().len()];
                for a in upstreams {
                    out.push_str(&format!("{indent}server {a};\n"));
                }
            }
            servers += 1;
            continue;
        } else if in_upstream && t == "}" {
            in_upstream = false;
        } else if t == "listen 80;" {
            out.push_str(&line.replace("listen 80;", &format!("listen {listen};")));
            out.push('\n');
            listens += 1;
            continue;
        }
        out.push_str(line);
        out.push('\n');
    }
    assert!(
        servers > 0 && listens == 1,
        "deploy/nginx.conf no longer has an upstream with `server ...;` lines and one `listen 80;`: \
         update tests/src/external.rs with it\n{snippet}"
    );
    out
}

/// An `nginx` of its own on 127.0.0.1, configured from the committed
/// `deploy/nginx.conf` (see [`rewrite_nginx_conf`]) inside a minimal
/// top-level configuration whose every path is in a temporary directory.
/// Stopped (SIGTERM, waited for) on drop.
#[derive(Debug)]
pub struct Nginx {
    addr: SocketAddr,
    child: Child,
    dir: TempDir,
}

impl Nginx {
    /// Starts one in front of `upstreams` on a free port and waits until it
    /// listens.
    pub fn start(upstreams: &[SocketAddr]) -> Nginx {
        let bin = require_binary("/usr/sbin/nginx", "nginx", "nginx");
        let snippet = deploy_nginx_conf();
        for _ in 0..PORT_ATTEMPTS {
            let addr = local(free_port());
            match Nginx::spawn(&bin, &snippet, upstreams, addr) {
                Ok((child, dir)) => return Nginx { addr, child, dir },
                Err(log) if port_taken(&log) => continue,
                Err(log) => panic!("nginx did not start:\n{log}"),
            }
        }
        panic!("nginx found no free port in {PORT_ATTEMPTS} attempts");
    }

    fn spawn(
        bin: &Path,
        snippet: &str,
        upstreams: &[SocketAddr],
        addr: SocketAddr,
    ) -> Result<(Child, TempDir), String> {
        let dir = TempDir::new("nginx");
        let d = dir.path().display();
        // As root, nginx's workers would switch to `nobody`, who may not
        // use this directory; they stay root instead. (Not root: the
        // directive would only be warned about, so it is left out.)
        let user = if dir.created_by_root() {
            "user root;\n"
        } else {
            ""
        };
        let conf = format!(
            "# Generated by tests/src/external.rs around deploy/nginx.conf.\n\
             daemon off;\n\
             {user}\
             worker_processes 1;\n\
             pid {d}/nginx.pid;\n\
             error_log {d}/error.log info;\n\
             events {{\n    worker_connections 1024;\n}}\n\
             http {{\n\
             access_log {d}/access.log;\n\
             client_body_temp_path {d}/client_body;\n\
             proxy_temp_path {d}/proxy;\n\
             fastcgi_temp_path {d}/fastcgi;\n\
             uwsgi_temp_path {d}/uwsgi;\n\
             scgi_temp_path {d}/scgi;\n\
             # ---- deploy/nginx.conf ----\n\
             {}\
             }}\n",
            rewrite_nginx_conf(snippet, upstreams, addr)
        );
        let conf_path = dir.join("nginx.conf");
        fs::write(&conf_path, conf).unwrap_or_else(|e| panic!("write nginx.conf: {e}"));
        let log = dir.join("error.log");
        let mut child = logged(bin, &dir.join("output.log"))
            .arg("-p")
            .arg(dir.path())
            .arg("-c")
            .arg(&conf_path)
            .arg("-e")
            .arg(&log)
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {}: {e}", bin.display()));
        // nginx writes its pid file once its listening sockets are open:
        // the pid there proves that this process holds the port.
        let pid = child.id().to_string();
        let pid_file = dir.join("nginx.pid");
        let started = wait_ready(&mut child, "nginx", &log, || {
            fs::read_to_string(&pid_file).is_ok_and(|p| p.trim() == pid) && accepts(addr)
        });
        match started {
            Start::Ready => Ok((child, dir)),
            Start::Exited(status, log) => Err(format!(
                "exited ({status}):\n{log}{}",
                read_log(&dir.join("output.log"))
            )),
        }
    }

    /// Where it listens.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Its error log so far.
    pub fn log(&self) -> String {
        read_log(&self.dir.join("error.log"))
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        // SIGTERM: the master stops its worker, waits for it, exits.
        terminate(&mut self.child);
    }
}

// ----------------------------------------------------------------- node --

/// A `sente-lite` server process (the `sente-lite-node` binary, see
/// [`node_bin!`]) on `127.0.0.1`, telemetry output `none`. Killed (SIGKILL)
/// on drop.
#[derive(Debug)]
pub struct Node {
    addr: SocketAddr,
    child: Option<Child>,
    dir: TempDir,
}

impl Node {
    /// Starts `bin` (pass `node_bin!()`, see [`node_bin!`]) on a free port with
    /// the environment `envs` (config variables: `SENTE_LITE_BROKER_KIND`,
    /// ...) and waits until it serves `/health` (any status: a node whose
    /// broker is down answers 503). The inherited environment's
    /// `SENTE_LITE_*` and seed variables (`PORT`, ...) are removed first;
    /// `PORT` and `HOST` are set here (see [`spawn_at`](Self::spawn_at) for
    /// a given port).
    pub fn spawn(bin: impl AsRef<Path>, envs: &[(&str, &str)]) -> Node {
        for _ in 0..PORT_ATTEMPTS {
            match Node::try_spawn(bin.as_ref(), free_port(), envs) {
                Ok(node) => return node,
                Err(log) if port_taken(&log) => continue,
                Err(log) => panic!("sente-lite node did not start:\n{log}"),
            }
        }
        panic!("sente-lite node found no free port in {PORT_ATTEMPTS} attempts");
    }

    /// As [`spawn`](Self::spawn) on `port` (a node started again where a
    /// killed one was); panics if it cannot listen there.
    pub fn spawn_at(bin: impl AsRef<Path>, port: u16, envs: &[(&str, &str)]) -> Node {
        Node::try_spawn(bin.as_ref(), port, envs)
            .unwrap_or_else(|log| panic!("sente-lite node did not start on port {port}:\n{log}"))
    }

    fn try_spawn(bin: &Path, port: u16, envs: &[(&str, &str)]) -> Result<Node, String> {
        for (name, _) in envs {
            assert!(
                *name != "PORT"
                    && *name != "HOST"
                    && *name != "SENTE_LITE_PORT"
                    && *name != "SENTE_LITE_HOST",
                "Node picks PORT and HOST itself (use Node::spawn_at for a given port): {name}"
            );
        }
        let dir = TempDir::new("node");
        let log = dir.join("node.log");
        let mut cmd = logged(bin, &log);
        for (name, _) in std::env::vars_os() {
            let inherited_config = name.to_str().is_some_and(|n| {
                n.starts_with("SENTE_LITE_")
                    || sente_lite_server::SEED_ENV
                        .iter()
                        .any(|(seed, _)| *seed == n)
            });
            if inherited_config {
                cmd.env_remove(&name);
            }
        }
        cmd.env("SENTE_LITE_TELEMETRY_OUTPUT", "none")
            .env("PORT", port.to_string())
            .env("HOST", "127.0.0.1")
            .envs(envs.iter().copied());
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {}: {e}", bin.display()));
        let addr = local(port);
        // The startup line (printed once the listener is bound) proves this
        // process holds the port; /health answering proves it serves.
        let line = format!("listening on ws://{addr}/");
        let started = wait_ready(&mut child, "sente-lite node", &log, || {
            read_log(&log).contains(&line) && http_status(addr, "/health").is_some()
        });
        match started {
            Start::Ready => Ok(Node {
                addr,
                child: Some(child),
                dir,
            }),
            Start::Exited(status, log) => Err(format!("exited ({status}):\n{log}")),
        }
    }

    /// Where it listens (`127.0.0.1:<port>`).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Its port.
    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// Its process id, while it runs (not yet stopped or killed).
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Whether its process is running.
    pub fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// Kills it (SIGKILL: no graceful stop, no close frames) and waits
    /// until it exited.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            kill(&mut child);
        }
    }

    /// Stops it gracefully (SIGTERM: every client gets a close 1001) and
    /// returns its exit status once it exited (`None` if it had already
    /// been stopped or killed).
    pub fn stop(&mut self) -> Option<ExitStatus> {
        let mut child = self.child.take()?;
        terminate(&mut child)
    }

    /// Its stdout and stderr so far.
    pub fn log(&self) -> String {
        read_log(&self.dir.join("node.log"))
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.kill();
    }
}
