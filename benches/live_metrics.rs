//! What `replay --admin` adds per request: a stage's collector fed the
//! same outcomes with and without live metrics (24 routes, 0.5 % errors,
//! a long-tailed latency), and what one scrape of the result costs.
//!
//! The collector is the one task that counts outcomes, so its time per
//! outcome is what the series add to a replay's hot path; the engine's
//! tasks are not touched.
//!
//! `cargo bench --bench live_metrics [-- ROUNDS]` (default 5).

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tapedeck::report::StageData;
use tapedeck::report::collect::Collector;
use tapedeck::report::live::LiveMetrics;
use tapedeck::report::outcome::{Event, LiveStats, Outcome};
use tapedeck::shutdown::Shutdown;

const ROUTES: usize = 24;
const OUTCOMES: usize = 1_000_000;

fn outcomes() -> Vec<Outcome> {
    let mut rng = StdRng::seed_from_u64(7);
    let routes: Vec<Arc<str>> = (0..ROUTES)
        .map(|r| Arc::from(format!("GET /api/route{r}/{{id}}")))
        .collect();
    let base = tokio::time::Instant::now();
    (0..OUTCOMES)
        .map(|k| {
            let u: f64 = rng.random();
            let latency = Duration::from_micros((2_000.0 + 400_000.0 * u.powi(6)) as u64);
            let error = rng.random_ratio(1, 200);
            Outcome {
                route: routes[k % ROUTES].clone(),
                planned: base,
                sent: base + Duration::from_micros(k as u64 % 5 * 1000),
                sent_at_us: 1_795_000_000_000_000 + k as i64 * 100 - latency.as_micros() as i64,
                ttfb: Some(latency / 2),
                finished: base + latency,
                finished_at_us: 1_795_000_000_000_000 + k as i64 * 100,
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
            }
        })
        .collect()
}

/// Nanoseconds per outcome through a fresh collector.
fn per_outcome(events: &[Event], metrics: Option<Arc<LiveMetrics>>) -> f64 {
    let live = Arc::new(LiveStats {
        metrics,
        ..LiveStats::default()
    });
    let data = StageData {
        name: "10x".into(),
        multiplier: 10,
        speed: 1.0,
        ..StageData::default()
    };
    let mut c = Collector::new(data, HashSet::new(), None, Shutdown::new(), live);
    let t = Instant::now();
    for e in events {
        c.observe(e.clone());
    }
    let elapsed = t.elapsed();
    std::hint::black_box(c.finish(0, 1));
    elapsed.as_nanos() as f64 / events.len() as f64
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
    let events: Vec<Event> = outcomes().into_iter().map(Event::Outcome).collect();
    let (mut without, mut with, mut scrape) = (Vec::new(), Vec::new(), Vec::new());
    let mut bytes = 0;
    for round in 0..rounds {
        without.push(per_outcome(&events, None));
        let metrics = Arc::new(LiveMetrics::default());
        with.push(per_outcome(&events, Some(metrics.clone())));
        let t = Instant::now();
        let text = metrics.encode(&AtomicU64::new(0), &AtomicU64::new(0));
        scrape.push(t.elapsed().as_secs_f64() * 1000.0);
        bytes = text.len();
        println!(
            "round {}: without {:.0} ns, with {:.0} ns per outcome; scrape {:.2} ms",
            round + 1,
            without.last().unwrap_or(&0.0),
            with.last().unwrap_or(&0.0),
            scrape.last().unwrap_or(&0.0)
        );
    }
    let (a, b) = (median(without), median(with));
    println!(
        "median of {rounds}, {OUTCOMES} outcomes over {ROUTES} routes: collector {a:.0} ns per outcome without --admin, {b:.0} ns with (+{:.0} ns); one scrape {:.2} ms, {bytes} bytes",
        b - a,
        median(scrape)
    );
}
