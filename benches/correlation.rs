//! What correlation costs per request, on the demo capture at 5x.
//!
//! Records the demo population (100 users) through the proxy into a
//! temporary capture, credentials kept in clear so that a verbatim replay
//! can be answered, then in one run:
//!
//! 1. the substitution work alone: for 5 worlds, every session analyzed and
//!    every request prepared, with its recorded response absorbed as the
//!    live one — µs of one core per request;
//! 2. end to end: one pass at 5x with everything due at once (speed 1000,
//!    32 in flight), alternating correlation on (against a fresh in-process
//!    demo backend with no service time) and off (against the backend the
//!    capture was recorded on, still running, so the recorded tokens and
//!    ids stay valid and the verbatim replay is answered too) —
//!    requests/s and CPU per request of the whole process (generator and
//!    backend together).
//!
//! `cargo bench --bench correlation [-- ROUNDS]` (default 3).

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use tapedeck::capture::{Store, StoredExchange};
use tapedeck::codec;
use tapedeck::demo::backend::{BackendConfig, DemoBackend};
use tapedeck::demo::script::{self, Population};
use tapedeck::profile::Profile;
use tapedeck::proxy::{RecordConfig, Recording};
use tapedeck::replay::correlate::{self, Rules, World};
use tapedeck::replay::{self, ReplayConfig};
use tapedeck::report::outcome::LiveStats;
use tapedeck::shutdown::Shutdown;
use tapedeck::upstream::Upstream;
use tokio::net::TcpListener;

const WORLDS: u32 = 5;

async fn backend() -> DemoBackend {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let config = BackendConfig {
        workers: 256,
        service_time: Duration::ZERO,
        token_interval: Duration::ZERO,
        ..BackendConfig::default()
    };
    DemoBackend::start(listener, config, Shutdown::new()).expect("backend")
}

/// CPU seconds this process has used (user + system).
fn cpu_s() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the command name (which may hold spaces): utime is the
    // 12th, stime the 13th.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<f64> = rest
        .split_whitespace()
        .skip(11)
        .take(2)
        .filter_map(|x| x.parse().ok())
        .collect();
    f.iter().sum::<f64>() / 100.0
}

/// Prepares every request of every session in `WORLDS` worlds and learns
/// from the recorded responses; returns µs per request.
fn substitution_cost(sessions: &[Vec<StoredExchange>]) -> (f64, u64) {
    let rules = Rules::default();
    // As a loaded session is: bodies decoded once per load.
    let decoded: Vec<Vec<StoredExchange>> = sessions
        .iter()
        .map(|s| {
            let mut s = s.clone();
            s.iter_mut().for_each(correlate::decode_bodies);
            s
        })
        .collect();
    let started = Instant::now();
    let mut requests = 0u64;
    let mut substitutions = 0usize;
    for _ in 0..WORLDS {
        let world = World::default();
        for (exchanges, raw) in decoded.iter().zip(sessions) {
            let values = correlate::analyze(exchanges);
            for (i, (ex, raw)) in exchanges.iter().zip(raw).enumerate() {
                let p = correlate::prepare(ex, i, &values, &world, &rules, true);
                substitutions += p.substitutions.len();
                // The live answer arrives encoded like the recorded one, and
                // the client decodes it.
                let live = match codec::coding_of(&raw.response_headers) {
                    Ok(Some(c)) => c.decode(&raw.response_body).unwrap_or_default(),
                    _ => raw.response_body.clone(),
                };
                let body = Bytes::from(live);
                world.absorb(&correlate::learned_pairs(ex, &ex.response_headers, &body));
                requests += 1;
            }
        }
    }
    let us = started.elapsed().as_secs_f64() * 1e6 / requests as f64;
    std::hint::black_box(substitutions);
    (us, requests)
}

async fn replay_once(
    capture: &std::path::Path,
    target: &DemoBackend,
    correlate: bool,
) -> (f64, u64, u64, f64) {
    let store = Store::open(capture).await.expect("open");
    let mut profile = Profile::single(WORLDS, 1000.0);
    profile.safety.max_inflight = 32;
    let config = ReplayConfig {
        seed: Some(1),
        correlate,
        ..ReplayConfig::new(
            Upstream::parse(&target.url()).expect("url"),
            profile,
            capture.display().to_string(),
        )
    };
    let cpu0 = cpu_s();
    let report = replay::run(&store, config, Arc::new(LiveStats::default()))
        .await
        .expect("replay")
        .report;
    let cpu = cpu_s() - cpu0;
    store.close().await;
    let s = &report.stages[0];
    let fourxx: u64 = s
        .status_counts
        .iter()
        .filter(|(k, _)| k.starts_with('4'))
        .map(|(_, n)| n)
        .sum();
    let cpu_us = cpu * 1e6 / s.requests.max(1) as f64;
    (s.throughput_rps, s.requests, fourxx, cpu_us)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let rounds: usize = std::env::args()
        .skip(1)
        .find(|a| !a.starts_with('-'))
        .and_then(|a| a.parse().ok())
        .unwrap_or(3);
    let dir = tempfile::tempdir().expect("tempdir");
    let recorded_on = backend().await;
    let population = Population {
        users: 100,
        think: (Duration::from_millis(5), Duration::from_millis(40)),
        ramp: Duration::from_millis(500),
        ..Population::default()
    };
    let capture = dir.path().join("capture.db");
    let store = Store::create(&capture).await.expect("capture");
    let mut config = RecordConfig::new(Upstream::parse(&recorded_on.url()).expect("url"));
    config.redaction.keep_credentials = true;
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let recording = Recording::start(listener, store.clone(), config, Shutdown::new())
        .await
        .expect("record");
    let (tx, _rx) = tokio::sync::mpsc::unbounded_channel();
    let script = script::drive(recording.local_addr(), population, tx).await;
    assert!(script.mismatches.is_empty(), "{:?}", script.mismatches);
    let run = recording.stop().await.expect("stop");
    let mut sessions = Vec::new();
    for s in store.sessions(run.id).await.expect("sessions") {
        sessions.push(
            store
                .session_exchanges(run.id, s.session_no)
                .await
                .expect("session"),
        );
    }
    store.close().await;
    let exchanges: usize = sessions.iter().map(Vec::len).sum();
    println!(
        "demo capture: {} sessions, {exchanges} exchanges; {rounds} rounds",
        sessions.len()
    );

    let mut cost = Vec::new();
    let (mut on, mut off) = (Vec::new(), Vec::new());
    for round in 1..=rounds {
        let (us, n) = substitution_cost(&sessions);
        println!("round {round}: substitution work {us:.1} µs/request over {n} requests");
        cost.push(us);
        for correlate in [true, false] {
            let fresh = backend().await;
            let target = if correlate { &fresh } else { &recorded_on };
            let (rps, n, fourxx, cpu_us) = replay_once(&capture, target, correlate).await;
            fresh.stop().await;
            println!(
                "round {round}: correlation {:<3} {rps:>8.0} requests/s  {n} requests  {fourxx} 4xx  {cpu_us:.0} µs CPU/request (generator + backend)",
                if correlate { "on" } else { "off" }
            );
            let row = (rps, cpu_us);
            if correlate {
                on.push(row)
            } else {
                off.push(row)
            }
        }
    }
    recorded_on.stop().await;
    let rps = |v: &[(f64, f64)]| median(v.iter().map(|r| r.0).collect());
    let cpu = |v: &[(f64, f64)]| median(v.iter().map(|r| r.1).collect());
    println!(
        "median: substitution work {:.1} µs/request; requests/s on {:.0} vs off {:.0} ({:.2}x); CPU/request on {:.0} µs vs off {:.0} µs",
        median(cost),
        rps(&on),
        rps(&off),
        rps(&on) / rps(&off),
        cpu(&on),
        cpu(&off)
    );
}
