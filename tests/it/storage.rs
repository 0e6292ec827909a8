//! Faults and durability of a recording: a disk that fills up under load
//! and frees up again, and a recorder killed with SIGKILL (the real
//! binary); a client that aborts its upload and a stream still open at the
//! drain timeout (in process). docs/reliability.md lists the promises these
//! check.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http::Method;
use tapedeck::capture::{RunState, Store};

use crate::support::admin::{admin_address, dropped, get, scrape, wait_for};
use crate::support::disk::SmallDisk;
use crate::support::{self, TestProxy, TestUpstream, output, pattern, send};

async fn healthz(admin: &str) -> (u16, String) {
    let client = support::client();
    let (status, _, body) = send(
        &client,
        Method::GET,
        &format!("http://{admin}/healthz"),
        &[],
        Bytes::new(),
    )
    .await;
    (status.as_u16(), String::from_utf8_lossy(&body).into_owned())
}

/// Clients posting 2 KiB bodies through the proxy until told to stop or
/// `limit` requests were sent; every answer must be the upstream's 200.
struct Load {
    answered: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    workers: Vec<tokio::task::JoinHandle<()>>,
}

impl Load {
    fn start(addr: &str, clients: u64, limit: u64, until_error: bool) -> Load {
        let answered = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let sent = Arc::new(AtomicU64::new(0));
        let workers = (0..clients)
            .map(|w| {
                let (answered, stop, sent) = (answered.clone(), stop.clone(), sent.clone());
                let addr = addr.to_string();
                tokio::spawn(async move {
                    let client = support::client();
                    while !stop.load(Ordering::SeqCst) {
                        let i = sent.fetch_add(1, Ordering::SeqCst);
                        if i >= limit {
                            break;
                        }
                        let req = http::Request::post(format!("http://{addr}/api/fill?resp=100"))
                            .header("x-session-id", format!("w{w}"))
                            .body(http_body_util::Full::new(pattern(i, 2048)))
                            .expect("request");
                        let resp = match client.request(req).await {
                            Ok(r) => r,
                            Err(e) if until_error => {
                                let _ = e;
                                break;
                            }
                            Err(e) => panic!("request {i} failed: {e}"),
                        };
                        let status = resp.status();
                        let body = http_body_util::BodyExt::collect(resp.into_body()).await;
                        match body {
                            Ok(_) => assert_eq!(status, 200, "request {i}: no client errors"),
                            Err(_) if until_error => break,
                            Err(e) => panic!("request {i}: body failed: {e}"),
                        }
                        answered.fetch_add(1, Ordering::SeqCst);
                    }
                })
            })
            .collect();
        Load {
            answered,
            stop,
            workers,
        }
    }

    async fn finish(self) -> u64 {
        self.stop.store(true, Ordering::SeqCst);
        for w in self.workers {
            w.await.expect("load worker");
        }
        self.answered.load(Ordering::SeqCst)
    }
}

fn rows(capture: &Path) -> i64 {
    support::sqlite_count(capture, "SELECT count(*) FROM exchanges")
}

const QUEUE: u64 = 16 * 1024 * 1024;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_drops_and_counts_records_recording_resumes_when_space_returns_and_sigterm_closes_the_run()
 {
    let disk = SmallDisk::mount("3m");
    let capture = disk.path.join("capture.db");
    let upstream = TestUpstream::start().await;
    let (mut child, addr, mut lines) = support::record_process_with(
        &upstream.url(),
        capture.as_os_str(),
        &[
            "--admin",
            "127.0.0.1:0",
            "--queue-bytes",
            "16MiB",
            "--drain-timeout",
            "5s",
        ],
    )
    .await;
    let admin = admin_address(&mut lines).await;
    let pid = child.id().expect("pid");
    // What the idle process holds (more in a debug build than in a
    // release one): the bound is on what recording adds to it.
    let idle = support::rss(pid, "VmRSS:");

    // Fill the disk, then the queue: drops for the disk begin.
    let load = Load::start(&addr, 8, 400_000, false);
    let full = wait_for(
        &admin,
        Duration::from_secs(120),
        "drops for a full disk",
        |m| get(m, "tapedeck_records_dropped_total{reason=\"disk_full\"}") >= 2000,
    )
    .await;
    let (status, body) = healthz(&admin).await;
    assert_eq!(status, 503, "/healthz while records are dropped: {body}");
    assert!(body.contains("disk_full"), "{body}");
    let recorded_while_full = get(&full, "tapedeck_exchanges_recorded_total");
    let answered_while_full = load.finish().await;

    // Space returns: the held batch and the queue commit, and recording
    // goes on with new traffic.
    disk.grow("256m");
    let load = Load::start(&addr, 4, 2000, false);
    let answered = answered_while_full + load.finish().await;
    let settled = wait_for(
        &admin,
        Duration::from_secs(60),
        "recording to catch up",
        |m| {
            get(m, "tapedeck_exchanges_recorded_total") + dropped(m) == answered
                && get(m, "tapedeck_writer_queue_bytes") == 0
        },
    )
    .await;
    let rss_peak = support::rss(pid, "VmHWM:");
    let recorded = get(&settled, "tapedeck_exchanges_recorded_total");
    let lost = dropped(&settled);
    assert!(
        recorded >= recorded_while_full + 2000,
        "recording resumed: {recorded_while_full} before space returned, {recorded} after"
    );
    assert_eq!(healthz(&admin).await.0, 200, "healthy again");
    assert_eq!(
        rows(&capture),
        recorded as i64,
        "recorded = rows in the file"
    );
    assert!(
        rss_peak.saturating_sub(idle) < QUEUE + 32 * 1024 * 1024,
        "peak RSS {} MiB over an idle {} MiB with a {} MiB queue",
        rss_peak >> 20,
        idle >> 20,
        QUEUE >> 20
    );

    let started = std::time::Instant::now();
    let code = support::terminate(&mut child).await;
    let took = started.elapsed();
    assert_eq!(code, Some(0), "a cleanly closed capture exits 0");
    assert!(took < Duration::from_secs(5), "SIGTERM took {took:?}");
    let mut said = Vec::new();
    while let Ok(Some(line)) = lines.next_line().await {
        said.push(line);
    }
    let said = said.join("\n");
    assert!(
        said.contains(&format!("{recorded} exchanges"))
            && said.contains(&format!("{lost} dropped")),
        "the summary names the drops: {said}"
    );
    assert!(said.contains("disk_full"), "{said}");

    let store = Store::open(&capture).await.expect("capture opens");
    let run = store.run(None).await.expect("run");
    assert_eq!(run.state, RunState::Stopped);
    assert_eq!((run.exchanges, run.dropped), (recorded as i64, lost as i64));
    store.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_kill_9_the_rows_are_there_counted_and_the_run_shows_as_interrupted() {
    let dir = tempfile::tempdir().expect("tempdir");
    let capture = dir.path().join("killed.db");
    let present = kill_9_under_load(capture.to_str().expect("utf8 path"), Some(1024)).await;
    // The run's own counters were kept as batches committed.
    let out = std::process::Command::new("sqlite3")
        .arg(format!("file:{}?mode=ro", capture.display()))
        .arg("SELECT exchanges FROM captures")
        .output()
        .expect("sqlite3");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        present.to_string(),
        "the run's exchanges column"
    );
    assert_eq!(rows(&capture), present);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_after_kill_9_the_run_shows_as_interrupted() {
    let capture = support::pg_capture().await;
    // The PostgreSQL writer may trail the traffic by more than a batch:
    // what was queued at the kill is lost, what was committed is there.
    kill_9_under_load(&capture, None).await;
}

/// Records `capture` under load, checks that `captures list` says
/// `recording`, kills the recorder with SIGKILL and checks what `captures`
/// says then: the run holds every batch committed before the kill, and
/// (given) at most `missing` fewer rows than the answered requests;
/// returns the exchanges the run holds.
async fn kill_9_under_load(capture: &str, missing: Option<i64>) -> i64 {
    let upstream = TestUpstream::start().await;
    let (mut child, addr, mut lines) = support::record_process_with(
        &upstream.url(),
        std::ffi::OsStr::new(capture),
        &["--admin", "127.0.0.1:0"],
    )
    .await;
    let admin = admin_address(&mut lines).await;
    let load = Load::start(&addr, 4, 1_000_000, true);
    wait_for(&admin, Duration::from_secs(60), "2000 recorded", |m| {
        get(m, "tapedeck_exchanges_recorded_total") >= 2000
    })
    .await;
    let (code, live, _) = output(&["captures", "list", capture]).await;
    let committed = get(&scrape(&admin).await, "tapedeck_exchanges_recorded_total") as i64;
    assert_eq!(code, 0);
    assert!(live.contains("recording"), "a live run: {live}");

    let pid = child.id().expect("pid").to_string();
    let killed = std::process::Command::new("kill")
        .args(["-KILL", &pid])
        .status()
        .expect("kill");
    assert!(killed.success());
    child.wait().await.expect("wait");
    let answered = load.finish().await as i64;

    let store = Store::open(Path::new(capture)).await.expect("open");
    let run = store.run(None).await.expect("run");
    store.close().await;
    let present = run.exchanges;
    assert_eq!(run.state, RunState::Interrupted);
    assert!(
        present >= committed && present <= answered + 4,
        "{present} rows: {committed} were committed before the kill, {answered} answered"
    );
    if let Some(missing) = missing {
        assert!(
            answered - present <= missing,
            "{present} rows for {answered} answered: at most the unflushed batch is missing"
        );
    }
    let (code, show, _) = output(&["captures", "show", capture]).await;
    assert_eq!(code, 0);
    assert!(show.contains("interrupted"), "{show}");
    assert!(show.contains(&format!("{present} exchanges")), "{show}");
    let (_, json, _) = output(&["captures", "list", capture, "--json"]).await;
    assert!(json.contains("\"state\": \"interrupted\""), "{json}");
    present
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_aborts_its_upload_is_downstream_closed_not_an_upstream_error() {
    use tokio::io::AsyncWriteExt;
    let upstream = TestUpstream::start().await;
    let mut proxy = TestProxy::start(&upstream.url()).await;
    let metrics = proxy.recording.as_ref().expect("running").metrics();
    let mut socket = tokio::net::TcpStream::connect(proxy.addr)
        .await
        .expect("connect");
    socket
        .write_all(b"POST /api/upload HTTP/1.1\r\nHost: chat\r\nContent-Length: 100000\r\n\r\n")
        .await
        .expect("head");
    socket.write_all(&[b'x'; 4096]).await.expect("some body");
    // The proxy has the request before the client goes away.
    while metrics.requests.get() == 0 {
        tokio::task::yield_now().await;
    }
    drop(socket);
    let run = proxy.stop().await;
    assert_eq!((run.exchanges, run.dropped), (1, 0));
    let exchanges = proxy.store.exchanges(run.id).await.expect("read");
    assert_eq!(
        exchanges[0].error_kind.as_deref(),
        Some("downstream_closed"),
        "{:?}",
        exchanges[0].error_message
    );
    let text = metrics.encode();
    assert!(
        !text.contains("tapedeck_upstream_errors_total{"),
        "no upstream error counted: {text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exchanges_still_open_at_the_drain_timeout_are_counted_as_dropped_in_the_closed_run() {
    let upstream = TestUpstream::start().await;
    let mut proxy = TestProxy::start_with(&upstream.url(), |c| {
        c.drain_timeout = Duration::from_millis(300);
    })
    .await;
    let metrics = proxy.recording.as_ref().expect("running").metrics();
    let client = support::client();
    send(
        &client,
        Method::GET,
        &proxy.url("/api/a"),
        &[],
        Bytes::new(),
    )
    .await;
    // A stream that stays open past the stop.
    let req = http::Request::get(proxy.url("/sse"))
        .body(http_body_util::Full::new(Bytes::new()))
        .expect("request");
    let resp = client.request(req).await.expect("sse head");
    let mut body = resp.into_body();
    let first = http_body_util::BodyExt::frame(&mut body)
        .await
        .expect("a frame")
        .expect("first chunk");
    assert!(first.is_data());

    let run = proxy.stop().await;
    assert_eq!(
        (run.exchanges, run.dropped),
        (1, 1),
        "the open stream is counted in the closed run"
    );
    let text = metrics.encode();
    assert!(
        text.contains("tapedeck_records_dropped_total{reason=\"drain_timeout\"} 1"),
        "{text}"
    );
    // The stream ends after the run was closed: it is not counted again.
    upstream.release();
    while http_body_util::BodyExt::frame(&mut body).await.is_some() {}
    drop(body);
    assert_eq!(metrics.writer.dropped_total(), 1);
    let stored = proxy.store.run(Some(run.id)).await.expect("run");
    assert_eq!((stored.exchanges, stored.dropped), (1, 1));
}
