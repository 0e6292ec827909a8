//! What `tapedeck report merge` costs for 100 shard reports.
//!
//! Builds 100 shard reports of one replay the way replay does (a
//! `Collector` fed with outcomes, `StageData::report`): the capacity
//! profile's three stages, each 120 one-second windows and 24 routes,
//! 36,000 requests per shard per stage with a long-tailed latency; writes
//! them as JSON, then times, per round, the merge alone (`report::merge`
//! over the parsed reports) and the whole command (`tapedeck report merge`
//! on the 100 files: read, parse, merge, write), and reports the medians.
//!
//! `cargo bench --bench merge [-- ROUNDS]` (default 5).

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tapedeck::report::collect::Collector;
use tapedeck::report::model::{self, CaptureRef, ProfileRef, Shard};
use tapedeck::report::outcome::{Event, LiveStats, Outcome};
use tapedeck::report::verdict;
use tapedeck::report::{Report, StageData};
use tapedeck::shutdown::Shutdown;

const SHARDS: u32 = 100;
const WINDOWS: i64 = 120;
const ROUTES: usize = 24;
const PER_STAGE: usize = 36_000;
const START_US: i64 = 1_795_000_000_000_000;

fn stage(name: &str, multiplier: u32, index: usize, rng: &mut StdRng) -> model::StageReport {
    let data = StageData {
        name: name.into(),
        multiplier,
        speed: 1.0,
        ..StageData::default()
    };
    let mut c = Collector::new(
        data,
        HashSet::new(),
        None,
        Shutdown::new(),
        Arc::new(LiveStats::default()),
    );
    let routes: Vec<Arc<str>> = (0..ROUTES)
        .map(|r| Arc::from(format!("GET /api/route{r}/{{id}}")))
        .collect();
    let base = tokio::time::Instant::now();
    let stage_start = START_US + index as i64 * WINDOWS * 1_000_000;
    for k in 0..PER_STAGE {
        let u: f64 = rng.random();
        let latency = Duration::from_micros((2_000.0 + 400_000.0 * u.powi(6)) as u64);
        let error = rng.random_ratio(1, 200);
        c.observe(Event::Outcome(Outcome {
            route: routes[k % ROUTES].clone(),
            planned: base,
            sent: base,
            sent_at_us: stage_start + (k as i64 * WINDOWS * 1_000_000) / PER_STAGE as i64
                - latency.as_micros() as i64,
            ttfb: Some(latency / 2),
            finished: base + latency,
            finished_at_us: stage_start + (k as i64 * WINDOWS * 1_000_000) / PER_STAGE as i64,
            status: Some(if error { 503 } else { 200 }),
            recorded_status: Some(200),
            failure: None,
            suspected_dedup: false,
            conflicting_values: 0,
            shape_mismatch: false,
            stream: None,
            ws: None,
            by_header: Vec::new(),
            trace_id: Some(rng.random_range(1..=u128::MAX)),
        }));
    }
    c.finish(stage_start, stage_start + WINDOWS * 1_000_000)
        .report()
}

fn shard_report(index: u32) -> Report {
    let mut rng = StdRng::seed_from_u64(u64::from(index));
    let stages: Vec<_> = [("1x", 1), ("5x", 5), ("10x", 10)]
        .iter()
        .enumerate()
        .map(|(i, (name, m))| stage(name, *m, i, &mut rng))
        .collect();
    Report {
        format: model::FORMAT.into(),
        tool_version: env!("CARGO_PKG_VERSION").into(),
        capture: CaptureRef {
            path: "captures/staging.db".into(),
            run: "1".into(),
            exchanges: 1_000_000,
            sessions: 20_000,
            fingerprint: "0123456789abcdef".into(),
        },
        target: "http://127.0.0.1:8080".into(),
        profile: ProfileRef {
            name: "capacity".into(),
            fingerprint: "fedcba9876543210".into(),
        },
        shard: Some(Shard {
            index,
            count: SHARDS,
        }),
        seed: 7,
        started_at: "2026-11-22T23:00:00Z".into(),
        finished_at: "2026-11-22T23:06:00Z".into(),
        verdict: verdict::overall(&stages, false),
        capacity: verdict::capacity(&stages, None),
        stages,
        interrupted: false,
        max_invalid: tapedeck::profile::DEFAULT_MAX_INVALID,
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    let rounds: usize = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(5);
    let dir = tempfile::tempdir().expect("tempdir");
    let built = Instant::now();
    let reports: Vec<(PathBuf, Report)> = (0..SHARDS)
        .map(|i| {
            let path = dir.path().join(format!("shard-{i:03}.json"));
            let report = shard_report(i);
            tapedeck::report::save(&report, &path).expect("write report");
            (path, report)
        })
        .collect();
    let bytes: u64 = reports
        .iter()
        .map(|(p, _)| std::fs::metadata(p).map_or(0, |m| m.len()))
        .sum();
    println!(
        "{SHARDS} shard reports: {} stages × {WINDOWS} windows × {ROUTES} routes, {} requests each; {:.1} MiB of JSON (built in {:.1} s)",
        reports[0].1.stages.len(),
        3 * PER_STAGE,
        bytes as f64 / (1024.0 * 1024.0),
        built.elapsed().as_secs_f64()
    );

    let mut merge_only = Vec::new();
    let mut command = Vec::new();
    for round in 0..rounds {
        let t = Instant::now();
        let merged = tapedeck::report::merge(&reports, None).expect("merge");
        merge_only.push(t.elapsed().as_secs_f64() * 1000.0);
        assert_eq!(
            merged.stages[0].requests,
            u64::from(SHARDS) * PER_STAGE as u64
        );

        let out = dir.path().join(format!("merged-{round}.json"));
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_tapedeck"));
        cmd.args(["report", "merge"])
            .args(reports.iter().map(|(p, _)| p))
            .arg("-o")
            .arg(&out)
            .stdout(std::process::Stdio::null());
        let t = Instant::now();
        let status = cmd.status().expect("run tapedeck");
        command.push(t.elapsed().as_secs_f64() * 1000.0);
        assert!(status.success(), "tapedeck report merge failed");
        println!(
            "round {}: merge {:.0} ms, command {:.0} ms",
            round + 1,
            merge_only.last().unwrap_or(&0.0),
            command.last().unwrap_or(&0.0)
        );
    }
    println!(
        "median of {rounds}: merge alone {:.0} ms ({:.2} ms per report); `tapedeck report merge` {:.0} ms",
        median(merge_only.clone()),
        median(merge_only) / f64::from(SHARDS),
        median(command)
    );
}
