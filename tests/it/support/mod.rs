//! Test harness: an in-process upstream that reports what it saw, a
//! recording proxy on an ephemeral port with a temporary capture, a plain
//! HTTP client, raw-socket helpers and (`admin`) a recorder's metrics.

pub mod admin;
pub mod disk;
pub mod thirdparty;

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use bytes::Bytes;
use http::{HeaderMap, Method, Request, Response, StatusCode};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tapedeck::capture::Store;
use tapedeck::proxy::{RecordConfig, Recording};
use tapedeck::shutdown::Shutdown;
use tapedeck::upstream::Upstream;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, mpsc};

/// What the upstream received and what it answered, for one request.
#[derive(Debug, Clone)]
pub struct Seen {
    /// When the request head arrived.
    pub at: std::time::Instant,
    /// When the answer was handed to hyper.
    pub answered_at: std::time::Instant,
    pub path: String,
    pub version: http::Version,
    pub headers: HeaderMap,
    pub body: Bytes,
    pub answered: Bytes,
}

/// An in-process upstream on 127.0.0.1:0.
///
/// Routes: `/sse` streams `first` then waits for [`TestUpstream::release`]
/// before `rest`; `/hang` never answers; `/login` hands out a token; any
/// `/slow?ms=N` answers after N ms; `/status/NNN` answers NNN; `/echo`
/// answers the request's URI, headers and body as text; `/die` stops
/// the upstream (port closed, connections cut); any other path answers 200
/// with `?resp=N` pseudo-random bytes (default 64), echoing `x-test-id`.
pub struct TestUpstream {
    pub addr: SocketAddr,
    seen: mpsc::UnboundedReceiver<Seen>,
    release: Arc<Notify>,
    shutdown: Shutdown,
}

impl TestUpstream {
    pub async fn start() -> TestUpstream {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind upstream");
        let addr = listener.local_addr().expect("upstream addr");
        let (tx, seen) = mpsc::unbounded_channel();
        let release = Arc::new(Notify::new());
        let shutdown = Shutdown::new();
        let (rel, stop) = (release.clone(), shutdown.clone());
        tokio::spawn(async move {
            let mut conns = tokio::task::JoinSet::new();
            loop {
                let stream = tokio::select! {
                    r = listener.accept() => match r { Ok((s, _)) => s, Err(_) => continue },
                    () = stop.wait() => break,
                };
                let (tx, rel, die) = (tx.clone(), rel.clone(), stop.clone());
                conns.spawn(async move {
                    let service = hyper::service::service_fn(move |req| {
                        let (tx, rel, die) = (tx.clone(), rel.clone(), die.clone());
                        async move { Ok::<_, Infallible>(answer(req, tx, rel, die).await) }
                    });
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
            // Stopped: the port closes and open connections are cut.
            conns.abort_all();
        });
        TestUpstream {
            addr,
            seen,
            release,
            shutdown,
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Lets a waiting `/sse` response finish.
    pub fn release(&self) {
        self.release.notify_one();
    }

    /// Everything seen so far.
    pub fn drain(&mut self) -> Vec<Seen> {
        let mut out = Vec::new();
        while let Ok(s) = self.seen.try_recv() {
            out.push(s);
        }
        out
    }
}

impl Drop for TestUpstream {
    fn drop(&mut self) {
        self.shutdown.trigger();
    }
}

type TestBody = UnsyncBoxBody<Bytes, Infallible>;

/// Deterministic bytes of length `n` from a seed.
pub fn pattern(seed: u64, n: usize) -> Bytes {
    let mut x = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect::<Vec<u8>>()
        .into()
}

fn query_param(uri: &http::Uri, name: &str) -> Option<String> {
    uri.query()?.split('&').find_map(|p| {
        let (k, v) = p.split_once('=')?;
        (k == name).then(|| v.to_string())
    })
}

async fn answer(
    req: Request<Incoming>,
    tx: mpsc::UnboundedSender<Seen>,
    release: Arc<Notify>,
    die: Shutdown,
) -> Response<TestBody> {
    let at = std::time::Instant::now();
    let (parts, body) = req.into_parts();
    let body = body
        .collect()
        .await
        .map(|c| c.to_bytes())
        .unwrap_or_default();
    let path = parts.uri.path().to_string();
    let mut seen = Seen {
        at,
        answered_at: at,
        path: path.clone(),
        version: parts.version,
        headers: parts.headers.clone(),
        body,
        answered: Bytes::new(),
    };
    match path.as_str() {
        "/sse" => {
            let _ = tx.send(seen);
            let stream = futures_util::stream::unfold(0u8, move |step| {
                let release = release.clone();
                async move {
                    match step {
                        0 => Some((Ok(Frame::data(Bytes::from_static(b"data: first\n\n"))), 1)),
                        1 => {
                            release.notified().await;
                            Some((Ok(Frame::data(Bytes::from_static(b"data: rest\n\n"))), 2))
                        }
                        _ => None,
                    }
                }
            });
            let mut resp = Response::new(StreamBody::new(stream).boxed_unsync());
            resp.headers_mut()
                .insert("content-type", "text/event-stream".parse().expect("static"));
            resp
        }
        "/hang" => {
            let _ = tx.send(seen);
            std::future::pending::<()>().await;
            unreachable!("pending never resolves")
        }
        "/slow" => {
            let ms: u64 = query_param(&parts.uri, "ms")
                .and_then(|v| v.parse().ok())
                .unwrap_or(100);
            // Service time of the simulated backend, not test synchronisation.
            tokio::time::sleep(std::time::Duration::from_millis(ms)).await;
            seen.answered_at = std::time::Instant::now();
            let _ = tx.send(seen);
            Response::new(Full::new(Bytes::from_static(b"slow")).boxed_unsync())
        }
        p if p.starts_with("/status/") => {
            let code: u16 = p["/status/".len()..].parse().unwrap_or(500);
            let _ = tx.send(seen);
            let mut resp = Response::new(Full::new(Bytes::from_static(b"{}")).boxed_unsync());
            *resp.status_mut() =
                StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            resp
        }
        "/die" => {
            let _ = tx.send(seen);
            die.trigger();
            Response::new(Full::new(Bytes::new()).boxed_unsync())
        }
        "/echo" => {
            // The request back as text: its URI, headers and body, the way
            // error pages and debug endpoints repeat what they were sent.
            let mut text = format!("{}\n", parts.uri);
            for (name, value) in &parts.headers {
                text += &format!("{name}: {}\n", String::from_utf8_lossy(value.as_bytes()));
            }
            text += &format!("\n{}", String::from_utf8_lossy(&seen.body));
            let out = Bytes::from(text);
            seen.answered = out.clone();
            let _ = tx.send(seen);
            let mut resp = Response::new(Full::new(out).boxed_unsync());
            resp.headers_mut()
                .insert("content-type", "text/plain".parse().expect("static"));
            resp
        }
        "/login" => {
            let out = Bytes::from_static(br#"{"token":"tok-123","user":"ann"}"#);
            seen.answered = out.clone();
            let _ = tx.send(seen);
            let mut resp = Response::new(Full::new(out).boxed_unsync());
            resp.headers_mut()
                .insert("content-type", "application/json".parse().expect("static"));
            resp.headers_mut().insert(
                "set-cookie",
                "session=cookie-secret; Path=/; HttpOnly"
                    .parse()
                    .expect("static"),
            );
            resp
        }
        _ => {
            let n: usize = query_param(&parts.uri, "resp")
                .and_then(|v| v.parse().ok())
                .unwrap_or(64);
            let seed: u64 = query_param(&parts.uri, "seed")
                .and_then(|v| v.parse().ok())
                .unwrap_or(0);
            let out = pattern(seed ^ 0xabcdef, n);
            seen.answered = out.clone();
            let id = parts.headers.get("x-test-id").cloned();
            let _ = tx.send(seen);
            let mut resp = Response::new(Full::new(out).boxed_unsync());
            *resp.status_mut() = StatusCode::OK;
            if let Some(id) = id {
                resp.headers_mut().insert("x-test-id", id);
            }
            resp
        }
    }
}

/// A recording proxy with a temporary capture.
pub struct TestProxy {
    pub addr: SocketAddr,
    pub store: Store,
    pub capture: PathBuf,
    pub recording: Option<Recording>,
    pub _dir: tempfile::TempDir,
}

impl TestProxy {
    pub async fn start(upstream: &str) -> TestProxy {
        Self::start_with(upstream, |_| {}).await
    }

    pub async fn start_with(upstream: &str, tweak: impl FnOnce(&mut RecordConfig)) -> TestProxy {
        let dir = tempfile::tempdir().expect("tempdir");
        let capture = dir.path().join("capture.db");
        let store = Store::create(&capture).await.expect("create capture");
        let mut config = RecordConfig::new(Upstream::parse(upstream).expect("upstream url"));
        tweak(&mut config);
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let recording = Recording::start(listener, store.clone(), config, Shutdown::new())
            .await
            .expect("start recording");
        TestProxy {
            addr: recording.local_addr(),
            store,
            capture,
            recording: Some(recording),
            _dir: dir,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// Stops the proxy (drain + flush) and returns the run summary.
    pub async fn stop(&mut self) -> tapedeck::capture::RunSummary {
        self.recording
            .take()
            .expect("running")
            .stop()
            .await
            .expect("clean stop")
    }
}

/// A plain HTTP/1.1 client.
pub fn client() -> Client<HttpConnector, Full<Bytes>> {
    Client::builder(TokioExecutor::new()).build(HttpConnector::new())
}

/// Sends a request and collects the response.
pub async fn send(
    client: &Client<HttpConnector, Full<Bytes>>,
    method: Method,
    url: &str,
    headers: &[(&str, &str)],
    body: Bytes,
) -> (StatusCode, HeaderMap, Bytes) {
    let mut req = Request::builder().method(method).uri(url);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = client
        .request(req.body(Full::new(body)).expect("request"))
        .await
        .expect("response");
    let (parts, body) = resp.into_parts();
    let body = body.collect().await.expect("body").to_bytes();
    (parts.status, parts.headers, body)
}

/// Writes raw bytes on a new connection and returns the status code of the
/// answer (reads until the status line is complete).
pub async fn raw_status(addr: SocketAddr, request: &[u8]) -> u16 {
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    // The server may answer (and close) before reading all of a huge head.
    let _ = stream.write_all(request).await;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 1024];
    while !buf.windows(2).any(|w| w == b"\r\n") {
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => break,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
    let line = String::from_utf8_lossy(&buf);
    line.split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status line in {line:?}"))
}

/// Blake3 of bytes, hex: compare bodies by hash in messages.
pub fn digest(b: &[u8]) -> String {
    blake3::hash(b).to_hex().to_string()
}

/// Groups items by a key.
pub fn group<K: std::hash::Hash + Eq, V>(
    items: impl IntoIterator<Item = (K, V)>,
) -> HashMap<K, Vec<V>> {
    let mut map: HashMap<K, Vec<V>> = HashMap::new();
    for (k, v) in items {
        map.entry(k).or_default().push(v);
    }
    map
}

/// One synthetic recorded exchange: `(offset_ms, duration_ms, method, uri, status)`.
pub type Rec = (u64, u64, &'static str, String, u16);

/// Writes a capture whose sessions hold exactly these exchanges (each
/// request carries `x-test-id: s{session}-{index}`; a 101 is a WebSocket
/// whose client sent one text frame), through the real store.
pub async fn synthetic_capture(path: &std::path::Path, sessions: &[Vec<Rec>]) -> Store {
    synthetic_runs(path, &[(0, sessions.to_vec())]).await
}

/// [`synthetic_capture`] with several runs, each starting `start_ms` after
/// a common origin (wall time); session numbers run on across runs.
pub async fn synthetic_runs(path: &std::path::Path, runs: &[(u64, Vec<Vec<Rec>>)]) -> Store {
    let store = Store::create(path).await.expect("create capture");
    let mut first_session = 0;
    for (start_ms, sessions) in runs {
        synthetic_run(&store, *start_ms, first_session, sessions).await;
        first_session += sessions.len();
    }
    store
}

async fn synthetic_run(store: &Store, start_ms: u64, first_session: usize, sessions: &[Vec<Rec>]) {
    use std::time::Duration;
    use tapedeck::capture::{CapturedBody, ExchangeRecord, NewRun, SessionInfo, SessionKeyKind};
    let run = store
        .begin_run(&NewRun {
            upstream: "http://recorded",
            listen: "-",
            max_body_bytes: 1 << 20,
            redaction: "none",
            sample_fraction: 1.0,
        })
        .await
        .expect("run");
    let mut records = Vec::new();
    let mut infos = Vec::new();
    for (s, exchanges) in sessions.iter().enumerate() {
        let s = first_session + s;
        let info = Arc::new(SessionInfo {
            session_no: s as i64 + 1,
            key_kind: SessionKeyKind::Header,
            key: format!("s{s}"),
            client_addr: "127.0.0.1".into(),
            user_agent: None,
            started_at_us: 0,
        });
        infos.push(info.clone());
        for (i, (offset, duration, method, uri, status)) in exchanges.iter().enumerate() {
            let mut headers = HeaderMap::new();
            headers.insert("x-test-id", format!("s{s}-{i}").parse().expect("ascii"));
            records.push(ExchangeRecord {
                session: info.clone(),
                seq: i as i64 + 1,
                started_at_us: 1_700_000_000_000_000 + (start_ms + offset) as i64 * 1000,
                offset: Duration::from_millis(*offset),
                method: method.to_string(),
                uri: uri.clone(),
                http_version: "HTTP/1.1",
                request_headers: headers,
                request_body: CapturedBody::default(),
                status: Some(*status),
                response_headers: HeaderMap::new(),
                response_body: CapturedBody::default(),
                ttfb: Some(Duration::from_millis(*duration)),
                duration: Duration::from_millis(*duration),
                failure: None,
                response_chunks: Vec::new(),
                // A socket: its client says hello.
                ws_frames: if *status == 101 {
                    vec![tapedeck::capture::WsFrame::text(
                        "client",
                        &format!("hello from s{s}-{i}"),
                    )]
                } else {
                    Vec::new()
                },
                ws_frames_dropped: 0,
            });
        }
    }
    store
        .insert_batch(run, &infos, &records, &[], 0)
        .await
        .expect("insert");
    store.finish_run(run, 0).await.expect("finish");
}

/// Logs `user` in to a demo backend (any password) and returns the token.
pub async fn demo_login(client: &tapedeck::demo::script::ChatClient, user: &str) -> String {
    let r = client
        .call(
            Method::POST,
            "/api/login",
            None,
            &[],
            Some(serde_json::json!({"user": user, "password": "pw"})),
        )
        .await
        .expect("login");
    assert_eq!(r.status, StatusCode::OK, "login of {user}");
    r.json()["token"].as_str().expect("token").to_string()
}

/// The real binary, logging warnings only, killed when dropped.
pub fn tapedeck() -> tokio::process::Command {
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_tapedeck"));
    cmd.env("RUST_LOG", "warn").kill_on_drop(true);
    cmd
}

/// An in-process HTTP/1.1 and h2c server on an ephemeral loopback port
/// answering every request with `answer`; stopped when dropped.
pub struct Served {
    /// `http://127.0.0.1:PORT`.
    pub url: String,
    stop: Shutdown,
}

impl Drop for Served {
    fn drop(&mut self) {
        self.stop.trigger();
    }
}

/// Serves `answer` (see [`Served`]).
pub async fn serve(
    answer: impl Fn(&Request<Incoming>) -> Response<Full<Bytes>> + Send + Sync + 'static,
) -> Served {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    let stop = Shutdown::new();
    let halt = stop.clone();
    let answer = Arc::new(answer);
    tokio::spawn(async move {
        loop {
            let stream = tokio::select! {
                r = listener.accept() => match r { Ok((s, _)) => s, Err(_) => continue },
                () = halt.wait() => break,
            };
            let answer = answer.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |req| {
                    let answer = answer.clone();
                    async move { Ok::<_, Infallible>(answer(&req)) }
                });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    Served { url, stop }
}

/// A demo backend with the default configuration on an ephemeral port.
pub async fn demo_backend() -> tapedeck::demo::backend::DemoBackend {
    demo_backend_with(tapedeck::demo::backend::BackendConfig::default()).await
}

/// A demo backend configured as `config` on an ephemeral port.
pub async fn demo_backend_with(
    config: tapedeck::demo::backend::BackendConfig,
) -> tapedeck::demo::backend::DemoBackend {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    tapedeck::demo::backend::DemoBackend::start(listener, config, Shutdown::new()).expect("backend")
}

/// What a demo backend says it did (`GET /api/stats`).
pub async fn demo_stats(
    b: &tapedeck::demo::backend::DemoBackend,
) -> tapedeck::demo::backend::Stats {
    let r = tapedeck::demo::script::ChatClient::new(&b.url(), "test")
        .call(Method::GET, "/api/stats", None, &[], None)
        .await
        .expect("stats");
    serde_json::from_slice(&r.body).expect("stats json")
}

/// A recording proxy in front of a demo backend, into `capture`.
pub async fn demo_recording(
    upstream: &tapedeck::demo::backend::DemoBackend,
    capture: &std::path::Path,
    keep_credentials: bool,
) -> Recording {
    let store = Store::create(capture).await.expect("capture");
    let mut config = RecordConfig::new(Upstream::parse(&upstream.url()).expect("url"));
    config.redaction.keep_credentials = keep_credentials;
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    Recording::start(listener, store, config, Shutdown::new())
        .await
        .expect("record")
}

/// Drives `population` through a recording proxy in front of `upstream`
/// into `capture`; every scripted request must get its expected answer.
pub async fn record_population(
    upstream: &tapedeck::demo::backend::DemoBackend,
    capture: &std::path::Path,
    population: tapedeck::demo::script::Population,
    keep_credentials: bool,
) {
    let rec = demo_recording(upstream, capture, keep_credentials).await;
    let (tx, _rx) = mpsc::unbounded_channel();
    let outcome = tapedeck::demo::script::drive(rec.local_addr(), population, tx).await;
    assert!(outcome.mismatches.is_empty(), "{:?}", outcome.mismatches);
    rec.stop().await.expect("stop");
}

/// A `tapedeck record` process on an ephemeral loopback port: the child,
/// the address it listens on (from its banner) and the rest of its stdout.
pub async fn record_process(
    upstream: &str,
    capture: &std::ffi::OsStr,
) -> (
    tokio::process::Child,
    String,
    tokio::io::Lines<tokio::io::BufReader<tokio::process::ChildStdout>>,
) {
    record_process_with(upstream, capture, &[]).await
}

/// [`record_process`] with more flags (`--admin 127.0.0.1:0` prints the
/// admin address as the next line).
pub async fn record_process_with(
    upstream: &str,
    capture: &std::ffi::OsStr,
    flags: &[&str],
) -> (
    tokio::process::Child,
    String,
    tokio::io::Lines<tokio::io::BufReader<tokio::process::ChildStdout>>,
) {
    use tokio::io::AsyncBufReadExt;
    let mut child = tapedeck()
        .args(["record", "--upstream", upstream, "--listen", "127.0.0.1:0"])
        .args(flags)
        .arg("--capture")
        .arg(capture)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::inherit())
        .spawn()
        .expect("spawn record");
    let mut lines = tokio::io::BufReader::new(child.stdout.take().expect("stdout")).lines();
    let banner = lines.next_line().await.expect("read").expect("banner line");
    let addr = admin::address_in(&banner);
    (child, addr, lines)
}

/// A resident-set figure of the process, bytes: `VmRSS:` now, `VmHWM:`
/// its peak.
pub fn rss(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map(|kb| kb * 1024)
        .unwrap_or_else(|| panic!("{field} in /proc/{pid}/status"))
}

/// Sends SIGTERM and waits for the exit code.
pub async fn terminate(child: &mut tokio::process::Child) -> Option<i32> {
    let pid = child.id().expect("pid").to_string();
    let killed = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .expect("kill");
    assert!(killed.success());
    child.wait().await.expect("wait").code()
}

/// A fresh, empty PostgreSQL database on the test server, as a capture
/// URL. The server comes from `TAPEDECK_TEST_PG` (`bash tests/run.sh` starts
/// one); without it the test fails and says so.
pub async fn pg_capture() -> String {
    use sqlx::Connection;
    let admin = std::env::var("TAPEDECK_TEST_PG").unwrap_or_else(|_| {
        panic!(
            "the PostgreSQL tests need a server: set TAPEDECK_TEST_PG=postgres://USER@127.0.0.1:PORT/DB, \
             or run `bash tests/run.sh`, which starts a throwaway one"
        )
    });
    let name = format!("tapedeck_{:016x}", rand::random::<u64>());
    let mut conn = sqlx::PgConnection::connect(&admin)
        .await
        .unwrap_or_else(|e| panic!("cannot reach TAPEDECK_TEST_PG {admin}: {e}"));
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .execute(&mut conn)
        .await
        .expect("create database");
    let base = admin.rsplit_once('/').map_or(admin.as_str(), |(b, _)| b);
    format!("{base}/{name}")
}

/// Replays `store` in process against `target` (seed 7, the documented
/// defaults otherwise; `tweak` changes what a test needs) and returns the
/// report.
pub async fn replay_with(
    store: &Store,
    target: &str,
    profile: tapedeck::profile::Profile,
    tweak: impl FnOnce(&mut tapedeck::replay::ReplayConfig),
) -> tapedeck::report::Report {
    let mut config = tapedeck::replay::ReplayConfig {
        seed: Some(7),
        ..tapedeck::replay::ReplayConfig::new(
            Upstream::parse(target).expect("target"),
            profile,
            store.path().display().to_string(),
        )
    };
    tweak(&mut config);
    tapedeck::replay::run(
        store,
        config,
        Arc::new(tapedeck::report::outcome::LiveStats::default()),
    )
    .await
    .expect("replay runs")
    .report
}

/// Replays `capture` against `target` with the profile `profile` (and
/// `extra` flags): (exit code, stdout and stderr, the report).
pub async fn replay_capture(
    capture: &std::path::Path,
    target: &str,
    profile: &str,
    extra: &[&str],
) -> (i32, String, tapedeck::report::Report) {
    let dir = tempfile::tempdir().expect("tempdir");
    let profile_path = dir.path().join("p.toml");
    std::fs::write(&profile_path, profile).expect("profile");
    let report = dir.path().join("r.json");
    let mut args = vec![
        "replay",
        capture.to_str().expect("utf-8"),
        "--target",
        target,
        "--profile",
        profile_path.to_str().expect("utf-8"),
        "--report",
        report.to_str().expect("utf-8"),
    ];
    args.extend_from_slice(extra);
    let (code, stdout, stderr) = output(&args).await;
    let output = format!("{stdout}{stderr}");
    let text = std::fs::read_to_string(&report).unwrap_or_else(|e| panic!("{e}: {output}"));
    (
        code,
        output,
        serde_json::from_str(&text).expect("report JSON"),
    )
}

/// Runs the binary to the end: (exit code, stdout, stderr).
pub async fn output(args: &[&str]) -> (i32, String, String) {
    let out = tapedeck().args(args).output().await.expect("run tapedeck");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Runs the binary to the end under a small Python wrapper that reads the
/// child's peak resident set from the kernel once it has exited
/// (`getrusage(RUSAGE_CHILDREN)`, the wrapper's only child): (exit code,
/// stdout, stderr, peak RSS in bytes). Exact however short the run:
/// polling `/proc` misses a process that exits within a few milliseconds.
pub async fn output_with_peak_rss(args: &[&str]) -> (i32, String, String, u64) {
    const WRAPPER: &str = "import resource, subprocess, sys\n\
        code = subprocess.run(sys.argv[2:]).returncode\n\
        open(sys.argv[1], 'w').write(str(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss))\n\
        sys.exit(code if code >= 0 else 128 - code)\n";
    let rss_file = tempfile::NamedTempFile::new().expect("temp file");
    let out = tokio::process::Command::new("python3")
        .arg("-c")
        .arg(WRAPPER)
        .arg(rss_file.path())
        .arg(env!("CARGO_BIN_EXE_tapedeck"))
        .args(args)
        .env("RUST_LOG", "warn")
        .kill_on_drop(true)
        .output()
        .await
        .expect("run python3 with tapedeck");
    // ru_maxrss is in KiB on Linux.
    let text = std::fs::read_to_string(rss_file.path()).expect("the wrapper's figure");
    let peak_kib: u64 = text
        .trim()
        .parse()
        .unwrap_or_else(|_| panic!("no peak RSS figure in {text:?}"));
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
        peak_kib * 1024,
    )
}

/// A WebSocket upstream's socket, server side, once the handshake is done.
pub type ServerSocket = tokio_tungstenite::WebSocketStream<TokioIo<hyper::upgrade::Upgraded>>;

/// Answers a WebSocket handshake (`101`, the key's accept value) and hands
/// the socket to `serve` once the connection has switched.
pub fn accept_websocket<F, Fut>(
    req: &mut Request<Incoming>,
    serve: F,
) -> Response<http_body_util::Empty<Bytes>>
where
    F: FnOnce(ServerSocket) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
    let key = req
        .headers()
        .get("sec-websocket-key")
        .map(|k| derive_accept_key(k.as_bytes()))
        .unwrap_or_default();
    let upgraded = hyper::upgrade::on(req);
    tokio::spawn(async move {
        let Ok(io) = upgraded.await else { return };
        let role = tokio_tungstenite::tungstenite::protocol::Role::Server;
        serve(
            tokio_tungstenite::WebSocketStream::from_raw_socket(TokioIo::new(io), role, None).await,
        )
        .await;
    });
    Response::builder()
        .status(101)
        .header("connection", "upgrade")
        .header("upgrade", "websocket")
        .header("sec-websocket-accept", key)
        .body(http_body_util::Empty::new())
        .expect("101")
}

/// The one number a query of a SQLite capture answers (`sqlite3`, read only).
pub fn sqlite_count(capture: &std::path::Path, sql: &str) -> i64 {
    let out = std::process::Command::new("sqlite3")
        .arg(format!("file:{}?mode=ro", capture.display()))
        .arg(sql)
        .output()
        .expect("sqlite3");
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .unwrap_or_else(|_| panic!("sqlite3 said {out:?}"))
}

/// Each socket's client text frames, in arrival order, as a WebSocket
/// upstream saw them.
pub type SocketLog = Arc<std::sync::Mutex<Vec<Vec<String>>>>;

/// A WebSocket upstream on 127.0.0.1:0 that echoes text frames upper-cased
/// and logs each socket's client text frames; returns its URL and the log.
pub async fn ws_echo_upstream() -> (String, SocketLog) {
    ws_echo_upstream_with(None).await
}

/// [`ws_echo_upstream`], over TLS with `tls` (then its URL is
/// `https://localhost:PORT`, and ALPN is as `tls` offers it).
pub async fn ws_echo_upstream_with(tls: Option<Arc<rustls::ServerConfig>>) -> (String, SocketLog) {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let url = match tls {
        Some(_) => format!("https://localhost:{port}"),
        None => format!("http://127.0.0.1:{port}"),
    };
    let acceptor = tls.map(tokio_rustls::TlsAcceptor::from);
    let log: SocketLog = Arc::default();
    let sockets = log.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let sockets = sockets.clone();
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |mut req: Request<Incoming>| {
                    let sockets = sockets.clone();
                    async move {
                        Ok::<_, Infallible>(accept_websocket(&mut req, |mut ws| async move {
                            let index = {
                                let mut s = sockets.lock().expect("log");
                                s.push(Vec::new());
                                s.len() - 1
                            };
                            while let Some(Ok(msg)) = ws.next().await {
                                if let Message::Text(t) = msg {
                                    sockets.lock().expect("log")[index].push(t.to_string());
                                    let _ = ws.send(Message::text(t.to_uppercase())).await;
                                }
                            }
                        }))
                    }
                });
                let server = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
                let _ = match acceptor {
                    Some(acceptor) => {
                        let Ok(tls) = acceptor.accept(stream).await else {
                            return;
                        };
                        server
                            .serve_connection_with_upgrades(TokioIo::new(tls), service)
                            .await
                    }
                    None => {
                        server
                            .serve_connection_with_upgrades(TokioIo::new(stream), service)
                            .await
                    }
                };
            });
        }
    });
    (url, log)
}

/// The exchanges of a run's first session (by start), and how many
/// sessions the run holds.
pub async fn first_session(
    store: &Store,
    run_id: i64,
) -> (usize, Vec<tapedeck::capture::StoredExchange>) {
    let (spans, _) = store.session_spans(&[run_id]).await.expect("spans");
    let first = spans.first().expect("a session");
    let exchanges = store
        .session_exchanges(run_id, first.session_no)
        .await
        .expect("exchanges");
    (spans.len(), exchanges)
}
