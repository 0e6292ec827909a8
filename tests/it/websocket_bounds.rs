//! Long WebSockets through the real `tapedeck record`, against an
//! in-process upstream that echoes binary messages and takes text ones in
//! silence: a socket of 200,000 tiny frames, and one of 5,000 frames of
//! 64 KiB each way. The proxy's memory stays bounded (a socket's frames
//! reach the writer in parts while it is open), frames past the bounds
//! (`--ws-max-frames`, `--ws-max-bytes`) or in a part the queue had no room
//! for are counted in the exchange (stored = sent − counted), the close
//! frames are always kept, last, with their code, and with bounds above
//! the traffic every frame is stored in order, redacted like the frames of
//! a short socket. docs/recording.md and docs/reliability.md describe the
//! promises.

use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

use base64::Engine;
use futures_util::{SinkExt, StreamExt};
use http::Request;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tapedeck::capture::{Store, StoredExchange};
use tokio::net::TcpListener;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::protocol::frame::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

use crate::support;

/// A credential the handshake URL carries; a frame that repeats it must
/// be stored with its marker, whichever part it lands in.
const TOKEN: &str = "tok_0123456789abcdef";

/// Where in the tiny-frames socket the frame repeating [`TOKEN`] goes: in
/// the second part.
const ECHO_AT: usize = 1500;

const MIB: u64 = 1024 * 1024;

/// An upstream that echoes each binary message and answers nothing to
/// text ones (the close handshake is tungstenite's).
pub(crate) async fn upstream() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let service = hyper::service::service_fn(|mut req: Request<Incoming>| async move {
                    Ok::<_, std::convert::Infallible>(support::accept_websocket(
                        &mut req,
                        |mut ws| async move {
                            while let Some(Ok(msg)) = ws.next().await {
                                if msg.is_binary() && ws.send(msg).await.is_err() {
                                    break;
                                }
                            }
                        },
                    ))
                });
                // HTTP/1.1 only: the proxy sends upgrades on connections of
                // their own.
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .with_upgrades()
                    .await;
            });
        }
    });
    url
}

/// A `tapedeck record` process with its admin endpoint (the capture a
/// file or a `postgres://` URL).
pub(crate) struct Recorder {
    child: tokio::process::Child,
    addr: String,
    admin: String,
    pid: u32,
    /// Resident set once it listens, before any traffic.
    idle: u64,
}

impl Recorder {
    pub(crate) async fn start(upstream: &str, capture: &Path, flags: &[&str]) -> Recorder {
        let mut all = vec!["--admin", "127.0.0.1:0"];
        all.extend_from_slice(flags);
        let (child, addr, mut lines) =
            support::record_process_with(upstream, capture.as_os_str(), &all).await;
        let admin = support::admin::admin_address(&mut lines).await;
        let pid = child.id().expect("pid");
        Recorder {
            child,
            addr,
            admin,
            pid,
            idle: support::rss(pid, "VmRSS:"),
        }
    }

    pub(crate) fn url(&self) -> String {
        format!("ws://{}/api/socket?room=r1&access_token={TOKEN}", self.addr)
    }

    /// Waits until the socket's exchange is recorded (or dropped) and the
    /// queue is empty; returns the metrics then and the peak resident set
    /// over the idle one.
    pub(crate) async fn settled(&self) -> (HashMap<String, f64>, u64) {
        let until = tokio::time::Instant::now() + Duration::from_secs(60);
        loop {
            let m = support::admin::scrape(&self.admin).await;
            let get = |name: &str| m.get(name).copied().unwrap_or(0.0);
            let dropped: f64 = m
                .iter()
                .filter(|(k, _)| k.starts_with("tapedeck_records_dropped_total{"))
                .map(|(_, v)| v)
                .sum();
            if get("tapedeck_exchanges_recorded_total") + dropped >= 1.0
                && get("tapedeck_writer_queue_bytes") == 0.0
            {
                let peak = support::rss(self.pid, "VmHWM:");
                return (m, peak.saturating_sub(self.idle));
            }
            assert!(
                tokio::time::Instant::now() < until,
                "the socket was never recorded: {m:?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Stops it (SIGTERM, exit 0) and reads the one recorded exchange.
    pub(crate) async fn stop(mut self, capture: &Path) -> StoredExchange {
        assert_eq!(support::terminate(&mut self.child).await, Some(0));
        let store = Store::open(capture).await.expect("capture");
        let run = store.run(None).await.expect("run");
        assert_eq!(
            (run.exchanges, run.dropped),
            (1, 0),
            "a part is not an exchange"
        );
        let mut exchanges = store.exchanges(run.id).await.expect("exchanges");
        store.close().await;
        assert_eq!(exchanges.len(), 1);
        exchanges.remove(0)
    }
}

/// Sends `n` tiny text frames (`m0`, `m1`, …; frame [`ECHO_AT`] repeats
/// the handshake's token) and a close with code 1000, and waits for the
/// close handshake to end.
pub(crate) async fn tiny_frames(url: &str, n: usize) {
    let (mut ws, resp) = tokio_tungstenite::connect_async(url)
        .await
        .expect("handshake");
    assert_eq!(resp.status(), 101);
    let messages = (0..n).map(|i| {
        Ok(Message::text(match i {
            ECHO_AT => format!(r#"{{"echo":"{TOKEN}"}}"#),
            i => format!("m{i}"),
        }))
    });
    ws.send_all(&mut futures_util::stream::iter(messages))
        .await
        .expect("send");
    ws.close(Some(CloseFrame {
        code: CloseCode::Normal,
        reason: "done".into(),
    }))
    .await
    .expect("close");
    while let Some(Ok(_)) = ws.next().await {}
}

/// The client frames' texts and the two closes at the end, as stored.
pub(crate) fn check_tiny(ex: &StoredExchange, kept: usize) {
    assert_eq!(ex.status, Some(101));
    assert!(
        !ex.uri.contains(TOKEN),
        "the URL's token is redacted: {}",
        ex.uri
    );
    let frames = &ex.ws_frames;
    assert_eq!(frames.len(), kept + 2, "{kept} frames and the two closes");
    for (i, f) in frames[..kept].iter().enumerate() {
        assert_eq!(
            (f.dir.as_str(), f.op.as_str()),
            ("client", "text"),
            "frame {i}"
        );
        if i == ECHO_AT {
            assert!(
                !f.data.contains(TOKEN) && f.data.contains("redacted:"),
                "a part's frame is redacted with the handshake's secrets: {}",
                f.data
            );
        } else {
            assert_eq!(f.data, format!("m{i}"), "frame {i} in order");
        }
    }
    let closes: Vec<(&str, &str, Option<u16>)> = frames[kept..]
        .iter()
        .map(|f| (f.dir.as_str(), f.op.as_str(), f.close_code))
        .collect();
    assert_eq!(
        closes,
        [
            ("client", "close", Some(1000)),
            ("server", "close", Some(1000))
        ],
        "the closes are kept, last"
    );
    assert!(frames.windows(2).all(|w| w[0].t_us <= w[1].t_us));
}

/// Rows of the capture's frame-part table.
fn parts(capture: &Path) -> i64 {
    support::sqlite_count(capture, "SELECT count(*) FROM ws_frame_parts")
}

/// What `captures show --json` says of the run's sockets.
pub(crate) async fn shown(capture: &Path) -> serde_json::Value {
    let path = capture.to_str().expect("utf8 path");
    let (code, out, err) = support::output(&["captures", "show", path, "--json"]).await;
    assert_eq!(code, 0, "{err}");
    let doc: serde_json::Value = serde_json::from_str(&out).expect("json");
    doc["websockets"].clone()
}

/// What recording may add to the idle process's resident set with a
/// queue of `queue` bytes: the queue itself (full of parts), the part
/// being filled (at most 1 MiB of payload, 1.4 MiB as base64), the part
/// being written (its JSON and SQLite's copy of it), and the 32 MiB the
/// disk-full test allows for the allocator's arenas, SQLite's page cache
/// and the runtime. Keeping a socket's frames until it closes would hold
/// them all: 64 MiB of payload is 87 MiB as base64 before its JSON.
fn budget(queue: u64) -> u64 {
    queue + 8 * MIB + 32 * MIB
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_socket_of_200000_tiny_frames_keeps_the_first_100000_counts_the_rest_and_keeps_its_close()
{
    let upstream = upstream().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let capture = dir.path().join("tiny.db");
    // The default bounds: 100,000 frames, 64 MiB.
    let rec = Recorder::start(&upstream, &capture, &[]).await;
    tiny_frames(&rec.url(), 200_000).await;
    let (metrics, over_idle) = rec.settled().await;
    assert!(
        over_idle < budget(64 * MIB),
        "peak RSS {} MiB over the idle process's",
        over_idle / MIB
    );
    let ex = rec.stop(&capture).await;
    check_tiny(&ex, 100_000);
    // Sent: 200,000 frames and two closes; stored: 100,002.
    assert_eq!(ex.ws_frames_dropped, 100_000);
    assert_eq!(
        metrics.get("tapedeck_ws_frames_dropped_total"),
        Some(&100_000.0)
    );
    assert_eq!(parts(&capture), 100, "written in parts of 1,000 frames");
    let shown = shown(&capture).await;
    assert_eq!(
        (
            &shown["sockets"],
            &shown["frames"],
            &shown["frames_dropped"]
        ),
        (&1.into(), &100_002.into(), &100_000.into()),
        "{shown}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_bounds_above_the_traffic_every_frame_of_a_long_socket_is_stored_in_order() {
    let upstream = upstream().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let capture = dir.path().join("all.db");
    let rec = Recorder::start(&upstream, &capture, &["--ws-max-frames", "250000"]).await;
    tiny_frames(&rec.url(), 200_000).await;
    let (_, over_idle) = rec.settled().await;
    assert!(
        over_idle < budget(64 * MIB),
        "peak RSS {} MiB over the idle process's",
        over_idle / MIB
    );
    let ex = rec.stop(&capture).await;
    check_tiny(&ex, 200_000);
    assert_eq!(ex.ws_frames_dropped, 0, "nothing lost");
    assert_eq!(parts(&capture), 200);

    // A copy reads the socket as one list and writes it in parts again.
    let copy = dir.path().join("copy.db");
    let (from, to) = (
        capture.to_str().expect("utf8"),
        copy.to_str().expect("utf8"),
    );
    let (code, _, err) = support::output(&["captures", "copy", from, to]).await;
    assert_eq!(code, 0, "{err}");
    assert_eq!(parts(&copy), 200);
    let store = Store::open(&copy).await.expect("copy");
    let run = store.run(None).await.expect("run");
    let copied = store.exchanges(run.id).await.expect("exchanges");
    store.close().await;
    assert_eq!(copied[0].ws_frames, ex.ws_frames);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_socket_of_5000_frames_of_64_kib_each_way_stays_within_the_queue_budget_and_counts_what_it_drops()
 {
    const FRAMES: usize = 5000;
    const SIZE: usize = 64 * 1024;
    const QUEUE: u64 = 8 * MIB;
    let upstream = upstream().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let capture = dir.path().join("large.db");
    // The default 64 MiB per socket keeps 1,024 of the 10,000 frames:
    // eight times the queue, so holding them until the close would not
    // fit the budget below.
    let rec = Recorder::start(&upstream, &capture, &["--queue-bytes", "8MiB"]).await;
    let config = WebSocketConfig::default().max_frame_size(Some(SIZE));
    let (ws, _) = tokio_tungstenite::connect_async_with_config(rec.url(), Some(config), false)
        .await
        .expect("handshake");
    let (mut tx, mut rx) = ws.split();
    let echoes = tokio::spawn(async move {
        let mut n = 0;
        while let Some(Ok(msg)) = rx.next().await {
            if let Message::Binary(b) = msg {
                assert_eq!(b.len(), SIZE);
                assert_eq!(b[..8], (n as u64).to_be_bytes(), "echo {n} in order");
                n += 1;
            }
        }
        n
    });
    for i in 0..FRAMES {
        let mut payload = vec![(i % 251) as u8; SIZE];
        payload[..8].copy_from_slice(&(i as u64).to_be_bytes());
        tx.send(Message::binary(payload)).await.expect("send");
    }
    tx.send(Message::Close(Some(CloseFrame {
        code: CloseCode::Normal,
        reason: "done".into(),
    })))
    .await
    .expect("close");
    assert_eq!(echoes.await.expect("reader"), FRAMES);
    drop(tx);
    let (metrics, over_idle) = rec.settled().await;
    assert!(
        over_idle < budget(QUEUE),
        "peak RSS {} MiB over the idle process's with an 8 MiB queue",
        over_idle / MIB
    );
    let ex = rec.stop(&capture).await;

    let frames = &ex.ws_frames;
    let (data, closes) = frames.split_at(frames.len() - 2);
    let closes: Vec<(&str, Option<u16>)> = closes
        .iter()
        .map(|f| (f.op.as_str(), f.close_code))
        .collect();
    assert_eq!(closes, [("close", Some(1000)), ("close", Some(1000))]);
    // Stored + counted = sent, whether a frame was past the bound or in a
    // part the 8 MiB queue had no room for.
    let sent = 2 * FRAMES as i64;
    assert_eq!(
        data.len() as i64 + ex.ws_frames_dropped,
        sent,
        "stored + counted = sent"
    );
    assert!(
        data.len() <= 1024 && ex.ws_frames_dropped >= sent - 1024,
        "at most 64 MiB of payload kept: {} frames",
        data.len()
    );
    assert_eq!(
        metrics.get("tapedeck_ws_frames_dropped_total"),
        Some(&(ex.ws_frames_dropped as f64))
    );
    // What is stored is each direction's frames in order, whole.
    let mut next: HashMap<&str, u64> = HashMap::new();
    for f in data {
        assert_eq!(
            (f.op.as_str(), f.len, f.truncated),
            ("binary", SIZE as u64, false)
        );
        let payload = base64::engine::general_purpose::STANDARD
            .decode(&f.data)
            .expect("base64");
        let index = u64::from_be_bytes(payload[..8].try_into().expect("8 bytes"));
        let last = next.entry(f.dir.as_str()).or_insert(0);
        assert!(index >= *last, "{} frame {index} after {last}", f.dir);
        *last = index + 1;
    }
    assert!(frames.windows(2).all(|w| w[0].t_us <= w[1].t_us));
}
