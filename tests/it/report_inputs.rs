//! Reports under bad input, through the real binary: forged histograms
//! (a 4 GiB declared payload, zlib bombs, text that is not base64) are
//! refused by `compare`, `report merge` and `report render` with exit 2, a
//! message naming the file, the stage (and route or window) and the fault,
//! and a peak RSS under 200 MB; `compare` refuses reports with no stage in
//! common; `report merge` refuses a shard twice or a missing shard, unless
//! `--allow-partial`, which marks the merged report.
//!
//! Valid reports are built in-process from exact stage data, as the golden
//! tests build theirs, and written with `report::save`; forgeries edit
//! their JSON.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use flate2::Compression;
use flate2::write::ZlibEncoder;
use tapedeck::profile::Slo;
use tapedeck::report::accumulate::{StageData, WindowData};
use tapedeck::report::model::{self, CaptureRef, ProfileRef, Report, Shard};
use tapedeck::report::verdict;

use crate::support::{output, output_with_peak_rss};

/// Peak RSS allowed to any run on a forged report.
const MAX_PEAK_RSS: u64 = 200 * 1024 * 1024;

/// The route every report has.
const ROUTE: &str = "GET /api/conversations/{id}/messages";

/// A stage of 40 requests a second for 5 seconds, latencies around `ms`.
fn stage(name: &str, multiplier: u32, ms: f64) -> StageData {
    let mut d = StageData {
        name: name.into(),
        multiplier,
        speed: 1.0,
        started_at_us: 1_700_000_000_000_000,
        finished_at_us: 1_700_000_005_000_000,
        slo: Slo {
            p95_ms: Some(250.0),
            ..Slo::default()
        },
        ..StageData::default()
    };
    for w in 0..5i64 {
        let mut window = WindowData::default();
        for i in 0..40u64 {
            let v = Duration::from_secs_f64(ms * (0.5 + i as f64 / 40.0) / 1000.0);
            window.latency.record(v);
            window.requests += 1;
            d.latency.record(v);
            d.corrected.record(v);
            d.ttfb.record(v / 2);
            d.send_lag.record(Duration::from_micros(500));
            let r = d.routes.entry(ROUTE.into()).or_default();
            r.requests += 1;
            r.latency.record(v);
            d.requests += 1;
            *d.status_counts.entry("200".into()).or_insert(0) += 1;
        }
        d.windows.insert(1_700_000_000 + w, window);
    }
    d.vus = 10 * u64::from(multiplier);
    d
}

/// A valid report of stages `names`, shard `shard` of one replay.
fn report(names: &[&str], shard: Option<(u32, u32)>, fingerprint: &str) -> Report {
    let stages: Vec<_> = names
        .iter()
        .enumerate()
        .map(|(i, n)| stage(n, i as u32 + 1, 20.0).report())
        .collect();
    Report {
        format: model::FORMAT.into(),
        tool_version: "test".into(),
        capture: CaptureRef {
            path: "captures/staging.db".into(),
            run: "1".into(),
            exchanges: 400,
            sessions: 20,
            fingerprint: fingerprint.into(),
        },
        target: "http://chat-next:8000".into(),
        profile: ProfileRef {
            name: "capacity".into(),
            fingerprint: "p".into(),
        },
        shard: shard.map(|(index, count)| Shard { index, count }),
        seed: 7,
        started_at: "2023-11-14T22:13:20Z".into(),
        finished_at: "2023-11-14T22:13:25Z".into(),
        verdict: verdict::overall(&stages, false),
        capacity: verdict::capacity(&stages, None),
        stages,
        interrupted: false,
        max_invalid: tapedeck::profile::DEFAULT_MAX_INVALID,
    }
}

fn save(dir: &Path, name: &str, r: &Report) -> PathBuf {
    let path = dir.join(name);
    tapedeck::report::save(r, &path).expect("save report");
    path
}

/// Where a forged histogram goes.
#[derive(Clone, Copy)]
enum Place {
    /// The first stage's `hdr`.
    Stage,
    /// The first stage's route's `hdr`.
    Route,
    /// The first stage's third timeline window's `hdr`.
    Window,
}

/// A valid one-stage report (shard 0 of 1 replay) whose histogram at
/// `place` is `blob`.
fn forged(dir: &Path, name: &str, place: Place, blob: &str) -> PathBuf {
    let path = save(dir, name, &report(&["1x"], None, "f"));
    let mut json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).expect("read")).expect("json");
    let stage = &mut json["stages"][0];
    let slot = match place {
        Place::Stage => &mut stage["hdr"],
        Place::Route => &mut stage["routes"][0]["hdr"],
        Place::Window => &mut stage["timeline"][2]["hdr"],
    };
    assert!(slot.is_string(), "the report has that histogram");
    *slot = serde_json::Value::String(blob.to_string());
    std::fs::write(&path, serde_json::to_string(&json).expect("json")).expect("write");
    path
}

/// The 40-byte HDR V2 header: 3 significant digits, values 1..=2^22 µs,
/// declaring `payload_len` bytes of counts.
fn v2_header(payload_len: u32) -> Vec<u8> {
    let mut h = Vec::with_capacity(40);
    h.extend_from_slice(&(0x1c84_9303u32 | 0x10).to_be_bytes());
    h.extend_from_slice(&payload_len.to_be_bytes());
    h.extend_from_slice(&0u32.to_be_bytes()); // normalizing offset
    h.extend_from_slice(&3u32.to_be_bytes()); // significant digits
    h.extend_from_slice(&1u64.to_be_bytes()); // lowest
    h.extend_from_slice(&(1u64 << 22).to_be_bytes()); // highest
    h.extend_from_slice(&1.0f64.to_be_bytes()); // integer to double ratio
    h
}

/// base64 of a V2 deflate blob: `header` then `zeros` zero bytes, zlib at
/// best compression, streamed (1 GiB of zeros becomes about 1 MiB).
fn deflate_blob(header: &[u8], zeros: u64) -> String {
    let mut z = ZlibEncoder::new(Vec::new(), Compression::best());
    z.write_all(header).expect("compress");
    let chunk = vec![0u8; 1 << 20];
    let mut left = zeros;
    while left > 0 {
        let n = left.min(chunk.len() as u64) as usize;
        z.write_all(&chunk[..n]).expect("compress");
        left -= n as u64;
    }
    let compressed = z.finish().expect("compress");
    let mut blob = Vec::with_capacity(compressed.len() + 8);
    blob.extend_from_slice(&(0x1c84_9304u32 | 0x10).to_be_bytes());
    blob.extend_from_slice(&(compressed.len() as u32).to_be_bytes());
    blob.extend_from_slice(&compressed);
    STANDARD.encode(blob)
}

/// `compare`, `report merge` and `report render --html` of `bad` each exit
/// 2 with one error naming the file and every part of `expect`, no panic,
/// under [`MAX_PEAK_RSS`].
async fn refused_everywhere(dir: &Path, bad: &Path, expect: &[&str]) {
    let good = save(dir, "good.json", &report(&["1x"], None, "f"));
    let (bad_s, good_s) = (bad.to_str().expect("utf8"), good.to_str().expect("utf8"));
    let merged = dir.join("merged.json");
    let page = dir.join("page.html");
    let runs: [Vec<&str>; 3] = [
        vec!["compare", good_s, bad_s],
        vec![
            "report",
            "merge",
            bad_s,
            "-o",
            merged.to_str().expect("utf8"),
        ],
        vec![
            "report",
            "render",
            bad_s,
            "--html",
            page.to_str().expect("utf8"),
        ],
    ];
    for args in runs {
        let (code, out, err, peak) = output_with_peak_rss(&args).await;
        eprintln!("{args:?}: exit {code}, peak RSS {} KiB", peak / 1024);
        assert_eq!(code, 2, "{args:?}\nstdout:\n{out}\nstderr:\n{err}");
        assert!(!err.contains("panicked"), "{args:?}: {err}");
        assert!(err.contains(bad_s), "names the file: {err}");
        for part in expect {
            assert!(err.contains(part), "{args:?}: lacks {part:?}: {err}");
        }
        assert_eq!(err.matches("error:").count(), 1, "said once: {err}");
        assert!(
            peak > 0 && peak < MAX_PEAK_RSS,
            "{args:?}: peak RSS {peak} bytes"
        );
    }
    assert!(!merged.exists() && !page.exists(), "nothing written");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_histogram_declaring_a_4_gib_payload_is_refused_before_allocating() {
    let dir = tempfile::tempdir().expect("tempdir");
    let blob = deflate_blob(&v2_header(u32::MAX), 0);
    let bad = forged(dir.path(), "window.json", Place::Window, &blob);
    refused_everywhere(
        dir.path(),
        &bad,
        &[
            "stage \"1x\"",
            "timeline window at 2 s",
            "payload of 4294967295 bytes",
        ],
    )
    .await;
    let bad = forged(dir.path(), "route.json", Place::Route, &blob);
    refused_everywhere(
        dir.path(),
        &bad,
        &[&format!("route {ROUTE:?}"), "payload of 4294967295 bytes"],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_zlib_bomb_histogram_is_refused_without_inflating_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    // 1 GiB of zeros declared as the payload: refused at the header.
    let blob = deflate_blob(&v2_header(1 << 30), 1 << 30);
    let bad = forged(dir.path(), "bomb.json", Place::Stage, &blob);
    refused_everywhere(
        dir.path(),
        &bad,
        &["stage \"1x\", hdr", "payload of 1073741824 bytes"],
    )
    .await;
    // A small declared payload with 256 MiB more behind it: inflating
    // stops one byte past what the header declared.
    let blob = deflate_blob(&v2_header(1024), 1 << 28);
    let bad = forged(dir.path(), "trailing.json", Place::Window, &blob);
    refused_everywhere(
        dir.path(),
        &bad,
        &["timeline window", "inflates past the 1024 payload bytes"],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_histogram_that_is_not_base64_is_refused_not_skipped() {
    let dir = tempfile::tempdir().expect("tempdir");
    let bad = forged(dir.path(), "text.json", Place::Window, "not base64 at all!");
    refused_everywhere(
        dir.path(),
        &bad,
        &["stage \"1x\"", "timeline window at 2 s", "not base64"],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compare_of_reports_with_no_stage_in_common_exits_2_naming_both_sides() {
    let dir = tempfile::tempdir().expect("tempdir");
    let base = save(dir.path(), "base.json", &report(&["1x", "5x"], None, "f"));
    let cand = save(dir.path(), "cand.json", &report(&["smoke"], None, "f"));
    let (code, out, err) = output(&[
        "compare",
        base.to_str().expect("utf8"),
        cand.to_str().expect("utf8"),
    ])
    .await;
    assert_eq!(code, 2, "stdout:\n{out}\nstderr:\n{err}");
    assert!(
        err.contains("no stage in common")
            && err.contains("base: 1x, 5x")
            && err.contains("candidate: smoke"),
        "{err}"
    );
    assert!(out.is_empty(), "no comparison printed: {out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compare_warns_once_when_the_captures_differ() {
    let dir = tempfile::tempdir().expect("tempdir");
    let base = save(dir.path(), "base.json", &report(&["1x"], None, "aaaa"));
    let cand = save(dir.path(), "cand.json", &report(&["1x"], None, "bbbb"));
    let same = save(dir.path(), "same.json", &report(&["1x"], None, "aaaa"));
    let (b, c, s) = (
        base.to_str().expect("utf8"),
        cand.to_str().expect("utf8"),
        same.to_str().expect("utf8"),
    );
    let (code, out, err) = output(&["compare", b, c]).await;
    assert_eq!(code, 0, "stdout:\n{out}\nstderr:\n{err}");
    assert_eq!(
        err.matches("replayed different captures").count(),
        1,
        "{err}"
    );
    assert!(err.contains("aaaa") && err.contains("bbbb"), "{err}");
    let (code, _, err) = output(&["compare", b, s]).await;
    assert_eq!(code, 0);
    assert!(!err.contains("different captures"), "{err}");
}

/// Saves shards `indexes` of a 4-shard replay.
fn shards(dir: &Path, indexes: &[u32]) -> Vec<PathBuf> {
    indexes
        .iter()
        .enumerate()
        .map(|(n, k)| {
            save(
                dir,
                &format!("shard-{n}-{k}.json"),
                &report(&["1x"], Some((*k, 4)), "f"),
            )
        })
        .collect()
}

async fn merge(files: &[PathBuf], out: &Path, extra: &[&str]) -> (i32, String, String) {
    let mut args = vec!["report", "merge"];
    args.extend(files.iter().map(|p| p.to_str().expect("utf8")));
    args.extend(["-o", out.to_str().expect("utf8")]);
    args.extend_from_slice(extra);
    output(&args).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn merge_refuses_the_same_shard_twice_naming_both_files() {
    let dir = tempfile::tempdir().expect("tempdir");
    let files = shards(dir.path(), &[0, 1, 1, 2, 3]);
    let out = dir.path().join("merged.json");
    let (code, stdout, err) = merge(&files, &out, &[]).await;
    assert_eq!(code, 2, "stdout:\n{stdout}\nstderr:\n{err}");
    assert!(
        err.contains(files[1].to_str().expect("utf8"))
            && err.contains(files[2].to_str().expect("utf8"))
            && err.contains("shard 1/4"),
        "{err}"
    );
    assert!(!out.exists());
    // --allow-partial does not make a duplicate acceptable.
    let (code, _, err) = merge(&files, &out, &["--allow-partial"]).await;
    assert_eq!(code, 2, "{err}");
    // Two whole (unsharded) reports are one replay twice.
    let whole = save(dir.path(), "whole.json", &report(&["1x"], None, "f"));
    let (code, _, err) = merge(&[whole.clone(), whole], &out, &[]).await;
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("the whole replay"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn merge_names_missing_shards_and_merges_them_marked_partial_only_when_allowed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let files = shards(dir.path(), &[0, 1, 3]);
    let out = dir.path().join("merged.json");
    let (code, stdout, err) = merge(&files, &out, &[]).await;
    assert_eq!(code, 2, "stdout:\n{stdout}\nstderr:\n{err}");
    assert!(
        err.contains("shard 2 of 4 missing") && err.contains("--allow-partial"),
        "{err}"
    );
    assert!(!out.exists());

    let (code, stdout, err) = merge(&files, &out, &["--allow-partial"]).await;
    assert_eq!(code, 0, "stdout:\n{stdout}\nstderr:\n{err}");
    assert!(stdout.contains("partial report"), "{stdout}");
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&out).expect("merged")).expect("json");
    assert_eq!(
        json["capacity"]["partial"],
        serde_json::json!({"missing_shards": [2], "of": 4})
    );
    assert_eq!(json["stages"][0]["requests"], 3 * 200);
    let out_s = out.to_str().expect("utf8");
    let (code, text, _) = output(&["report", "render", out_s]).await;
    assert_eq!(code, 0);
    assert!(text.contains("merged without shard 2 of 4"), "{text}");
    let (code, md, _) = output(&["report", "render", out_s, "--markdown"]).await;
    assert_eq!(code, 0);
    assert!(md.contains("merged without shard 2 of 4"), "{md}");

    // A partial merge is not a shard: merging it again is refused.
    let all = shards(dir.path(), &[2]);
    let (code, _, err) = merge(
        &[out.clone(), all[0].clone()],
        &dir.path().join("again.json"),
        &[],
    )
    .await;
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("itself a partial merge"), "{err}");

    // Every shard: no mark.
    let files = shards(dir.path(), &[3, 1, 0, 2]);
    let (code, _, err) = merge(&files, &out, &[]).await;
    assert_eq!(code, 0, "{err}");
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&out).expect("merged")).expect("json");
    assert!(json["capacity"].get("partial").is_none(), "{json}");
}
