//! Writes a synthetic capture for the replay benchmarks, through the real
//! store: SESSIONS sessions of REQUESTS small GETs each, spaced GAP_US
//! apart within a session, sessions starting SPREAD_US apart.
//!
//! `cargo bench --bench synth_capture -- OUT SESSIONS REQUESTS GAP_US SPREAD_US`

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use http::{HeaderMap, HeaderValue};
use tapedeck::capture::{CapturedBody, ExchangeRecord, NewRun, SessionInfo, SessionKeyKind, Store};

fn main() {
    // cargo bench passes `--bench` first; skip flags.
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    let out = PathBuf::from(args.first().map_or("bench-capture.db", String::as_str));
    let num = |i: usize, default: u64| args.get(i).and_then(|a| a.parse().ok()).unwrap_or(default);
    let (sessions, requests, gap_us, spread_us) =
        (num(1, 1000), num(2, 100), num(3, 1_000_000), num(4, 10_000));
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async move {
        let _ = std::fs::remove_file(&out);
        let store = Store::create(&out).await.expect("create capture");
        let run = store
            .begin_run(&NewRun {
                upstream: "http://synthetic",
                listen: "-",
                max_body_bytes: 1 << 20,
                redaction: "none",
                sample_fraction: 1.0,
            })
            .await
            .expect("run");
        let started = Instant::now();
        let mut headers = HeaderMap::new();
        headers.insert("accept", HeaderValue::from_static("application/json"));
        headers.insert("user-agent", HeaderValue::from_static("synthetic/1"));
        let body = CapturedBody {
            bytes: bytes::Bytes::from_static(br#"{"id":"msg_01HZX3K9Q2","ok":true}"#),
            len: 33,
            truncated: false,
        };
        let mut batch = Vec::with_capacity(1024);
        let mut infos = Vec::new();
        for s in 0..sessions {
            let info = Arc::new(SessionInfo {
                session_no: s as i64 + 1,
                key_kind: SessionKeyKind::Header,
                key: format!("synthetic-{s}"),
                client_addr: "127.0.0.1".into(),
                user_agent: None,
                started_at_us: 0,
            });
            infos.push(info.clone());
            for r in 0..requests {
                let offset = Duration::from_micros(s * spread_us + r * gap_us);
                batch.push(ExchangeRecord {
                    session: info.clone(),
                    seq: r as i64 + 1,
                    started_at_us: 1_700_000_000_000_000 + offset.as_micros() as i64,
                    offset,
                    method: "GET".into(),
                    uri: format!("/v1/chat/messages/{}", r % 50),
                    http_version: "HTTP/1.1",
                    request_headers: headers.clone(),
                    request_body: CapturedBody::default(),
                    status: Some(200),
                    response_headers: HeaderMap::new(),
                    response_body: body.clone(),
                    ttfb: Some(Duration::from_micros(400)),
                    duration: Duration::from_micros(500),
                    failure: None,
                    response_chunks: Vec::new(),
                    ws_frames: Vec::new(),
                    ws_frames_dropped: 0,
                });
                if batch.len() == 1024 {
                    store
                        .insert_batch(run, &infos, &batch, &[], 0)
                        .await
                        .expect("insert");
                    batch.clear();
                    infos.clear();
                }
            }
        }
        store
            .insert_batch(run, &infos, &batch, &[], 0)
            .await
            .expect("insert");
        let summary = store.finish_run(run, 0).await.expect("finish");
        println!(
            "synthetic capture {}: {} exchanges in {} sessions, written in {:.1} s",
            out.display(),
            summary.exchanges,
            summary.sessions,
            started.elapsed().as_secs_f64()
        );
    });
}
