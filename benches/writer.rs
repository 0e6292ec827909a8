//! Capture writer throughput: synthetic ~2 KB exchanges pushed through the
//! real sink and writer into a fresh capture, as fast as the writer takes
//! them (the producer waits while the queue is over half full, so nothing
//! is dropped). Prints exchanges/s and MB/s of stored bodies.
//!
//! `cargo bench --bench writer [-- EXCHANGES [ROUNDS]]` (default 200000, 1)
//! writes SQLite captures. With `TAPEDECK_BENCH_PG=postgres://…/db` (a
//! server where the user may create databases; `bench/capture_stores.sh`
//! starts one) each round also writes a fresh PostgreSQL database, SQLite
//! and PostgreSQL alternating, and the medians are compared.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderMap, HeaderValue};
use tapedeck::capture::redact::Redactor;
use tapedeck::capture::writer::{self, WriterConfig, WriterMetrics};
use tapedeck::capture::{
    CapturedBody, ExchangeRecord, NewRun, SessionInfo, SessionKeyKind, Store, now_epoch_us,
};

fn record(
    session: &Arc<SessionInfo>,
    seq: i64,
    body: &Bytes,
    headers: &HeaderMap,
) -> ExchangeRecord {
    ExchangeRecord {
        session: session.clone(),
        seq,
        started_at_us: now_epoch_us(),
        offset: Duration::from_micros(seq as u64 * 100),
        method: "POST".into(),
        uri: format!("/api/conversations/c_{}/messages", seq % 977),
        http_version: "HTTP/1.1",
        request_headers: headers.clone(),
        request_body: CapturedBody {
            bytes: body.slice(..700),
            len: 700,
            truncated: false,
        },
        status: Some(201),
        response_headers: headers.clone(),
        response_body: CapturedBody {
            bytes: body.slice(700..),
            len: 900,
            truncated: false,
        },
        ttfb: Some(Duration::from_micros(800)),
        duration: Duration::from_micros(950),
        failure: None,
        response_chunks: Vec::new(),
        ws_frames: Vec::new(),
        ws_frames_dropped: 0,
    }
}

async fn measure(capture: &std::path::Path, n: i64) -> f64 {
    let store = Store::create(capture).await.expect("store");
    let run = store
        .begin_run(&NewRun {
            upstream: "http://bench",
            listen: "-",
            max_body_bytes: 1 << 20,
            redaction: "default",
            sample_fraction: 1.0,
        })
        .await
        .expect("run");
    let config = WriterConfig::default();
    let half = (config.queue_bytes / 2) as i64;
    let metrics = WriterMetrics::default();
    let lock = store.lock_run(run).await.expect("run lock");
    // Records are redacted in the writer, as when recording with defaults.
    let redactor = Redactor::new(
        store.redaction_key().await.expect("key"),
        &Default::default(),
    )
    .expect("default redaction");
    let (sink, handle) = writer::spawn(store.clone(), run, lock, config, metrics.clone(), redactor);
    let body: Bytes = (0..1600u32)
        .map(|i| b'a' + (i % 26) as u8)
        .collect::<Vec<u8>>()
        .into();
    let mut headers = HeaderMap::new();
    for (k, v) in [
        ("content-type", "application/json"),
        ("user-agent", "bench-client/1.0 (x86_64)"),
        ("accept", "application/json"),
        ("x-request-id", "0f8fad5b-d9cb-469f-a165-70867728950e"),
        (
            "authorization",
            "Bearer redacted:0123456789abcdef0123456789abcdef",
        ),
    ] {
        headers.insert(k, HeaderValue::from_static(v));
    }
    let sessions: Vec<Arc<SessionInfo>> = (1..=1000)
        .map(|no| {
            Arc::new(SessionInfo {
                session_no: no,
                key_kind: SessionKeyKind::Header,
                key: format!("s{no}"),
                client_addr: "127.0.0.1".into(),
                user_agent: None,
                started_at_us: now_epoch_us(),
            })
        })
        .collect();
    let weight = record(&sessions[0], 1, &body, &headers).weight();
    let started = Instant::now();
    for i in 0..n {
        while metrics.queue_bytes.get() > half {
            tokio::time::sleep(Duration::from_micros(200)).await;
        }
        let s = &sessions[(i % 1000) as usize];
        assert!(
            sink.try_send(record(s, i / 1000 + 1, &body, &headers)),
            "queue had room"
        );
    }
    let summary = handle.close().await.expect("close");
    let secs = started.elapsed().as_secs_f64();
    let rate = n as f64 / secs;
    let mb = (n as f64 * 1600.0) / secs / 1e6;
    println!(
        "{}: {n} exchanges of ~{weight} B in {secs:.2} s = {rate:.0} exchanges/s ({mb:.1} MB/s of bodies); stored {}, dropped {}",
        if store.is_postgres() {
            "postgres"
        } else {
            "sqlite"
        },
        summary.exchanges,
        summary.dropped
    );
    if let Ok(m) = std::fs::metadata(capture) {
        println!("  capture file: {:.1} MB", m.len() as f64 / 1e6);
    }
    store.close().await;
    rate
}

/// A fresh database on the benchmark's PostgreSQL server, as a capture URL.
async fn fresh_database(server: &str, round: usize) -> String {
    use sqlx::Connection;
    let name = format!("tapedeck_bench_{}_{round}", std::process::id());
    let mut conn = sqlx::PgConnection::connect(server)
        .await
        .expect("connect to TAPEDECK_BENCH_PG");
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .execute(&mut conn)
        .await
        .expect("create database");
    let base = server.rsplit_once('/').map_or(server, |(b, _)| b);
    format!("{base}/{name}")
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(0.0)
}

fn main() {
    let mut args = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse::<i64>().ok());
    let n = args.next().unwrap_or(200_000);
    let rounds = args.next().unwrap_or(1).max(1) as usize;
    let pg = std::env::var("TAPEDECK_BENCH_PG").ok();
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async move {
        let dir = tempfile::tempdir().expect("tempdir");
        let (mut sqlite, mut postgres) = (Vec::new(), Vec::new());
        for round in 0..rounds {
            let path = dir.path().join(format!("bench-{round}.db"));
            sqlite.push(measure(&path, n).await);
            let _ = std::fs::remove_file(&path);
            if let Some(server) = &pg {
                let url = fresh_database(server, round).await;
                postgres.push(measure(std::path::Path::new(&url), n).await);
            }
        }
        let lite = median(sqlite);
        if postgres.is_empty() {
            println!("median of {rounds}: sqlite {lite:.0} exchanges/s");
        } else {
            let pg = median(postgres);
            println!(
                "median of {rounds}: sqlite {lite:.0}, postgres {pg:.0} exchanges/s (postgres/sqlite {:.2}x)",
                pg / lite
            );
        }
    });
}
