//! Golden-file tests of the human renderings (terminal and Markdown) on
//! hand-built, fully deterministic reports. `UPDATE_GOLDEN=1 cargo test
//! golden` rewrites the files after an intended change; review the diff.

use std::path::PathBuf;
use std::time::Duration;

use tapedeck::profile::{RouteSlo, Slo};
use tapedeck::report::accumulate::{StageData, WindowData};
use tapedeck::report::compare::{self, Thresholds};
use tapedeck::report::model::{self, CaptureRef, ProfileRef, Report, Verdict};
use tapedeck::report::render::{markdown, terminal};
use tapedeck::report::verdict;

fn stage(name: &str, multiplier: u32, base_ms: f64, errors: u64) -> StageData {
    let mut d = StageData {
        name: name.into(),
        multiplier,
        speed: 1.0,
        started_at_us: 1_700_000_000_000_000,
        finished_at_us: 1_700_000_010_000_000,
        slo: Slo {
            p95_ms: Some(250.0),
            error_rate: Some(0.01),
            // A pattern and an exact template: at 5x the first holds and
            // the second does not.
            route: vec![
                RouteSlo {
                    p95_ms: Some(200.0),
                    ..RouteSlo::new("GET /api/conversations/*/messages")
                },
                RouteSlo {
                    p95_ms: Some(150.0),
                    error_rate: Some(0.01),
                    ..RouteSlo::new("POST /api/conversations/{id}/messages")
                },
            ],
            ..Slo::default()
        },
        ..StageData::default()
    };
    for w in 0..10i64 {
        let mut window = WindowData::default();
        for i in 0..40u64 {
            let ms = base_ms * (0.5 + i as f64 / 40.0) * (1.0 + (w % 3) as f64 * 0.02);
            let v = Duration::from_secs_f64(ms / 1000.0);
            window.latency.record(v);
            window.requests += 1;
            d.latency.record(v);
            d.corrected.record(v + Duration::from_millis(1));
            d.ttfb.record(v / 2);
            d.send_lag.record(Duration::from_micros(800));
            let route = if i % 4 == 0 {
                "POST /api/conversations/{id}/messages"
            } else {
                "GET /api/conversations/{id}/messages"
            };
            let r = d.routes.entry(route.into()).or_default();
            r.requests += 1;
            r.latency.record(v);
            d.requests += 1;
            *d.status_counts.entry("200".into()).or_insert(0) += 1;
        }
        d.windows.insert(1_700_000_000 + w, window);
    }
    d.vus = 20 * u64::from(multiplier);
    if errors > 0 {
        d.error_kinds.insert("http_5xx".into(), errors);
        *d.status_counts.entry("503".into()).or_insert(0) += errors;
    }
    d.substitutions_by_kind.insert("correlated".into(), 120);
    d
}

fn report(stages: Vec<StageData>, target: &str) -> Report {
    let stages: Vec<_> = stages.iter().map(StageData::report).collect();
    Report {
        format: model::FORMAT.into(),
        tool_version: "golden".into(),
        capture: CaptureRef {
            path: "captures/staging.db".into(),
            run: "1".into(),
            exchanges: 400,
            sessions: 20,
            fingerprint: String::new(),
        },
        target: target.into(),
        profile: ProfileRef {
            name: "capacity".into(),
            fingerprint: "golden".into(),
        },
        shard: None,
        seed: 7,
        started_at: "2023-11-14T22:13:20Z".into(),
        finished_at: "2023-11-14T22:13:50Z".into(),
        verdict: verdict::overall(&stages, false),
        capacity: verdict::capacity(&stages, Some(0.05)),
        stages,
        interrupted: false,
        max_invalid: tapedeck::profile::DEFAULT_MAX_INVALID,
    }
}

fn check(name: &str, actual: &str) {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/golden")
        .join(name);
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::write(&path, actual).expect("write golden file");
        return;
    }
    let expected = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "{}: {e}; run with UPDATE_GOLDEN=1 to create it",
            path.display()
        )
    });
    assert_eq!(
        actual, expected,
        "{name} changed; rerun with UPDATE_GOLDEN=1 if intended"
    );
}

#[test]
fn report_renderings_match_their_golden_files() {
    // 10x also has what the warnings name: sends a backend deduplicated,
    // requests skipped after failures, values without a live source.
    let mut broke = stage("10x", 10, 600.0, 40);
    if let Some(route) = broke
        .routes
        .get_mut("POST /api/conversations/{id}/messages")
    {
        route.suspected_dedup = 12;
    }
    broke.dependent_skipped = 30;
    broke.unresolved_values = 4;
    let r = report(
        vec![stage("1x", 1, 40.0, 0), stage("5x", 5, 120.0, 0), broke],
        "http://chat-next:8000",
    );
    assert_eq!(r.verdict, Verdict::Fail);
    let mut text = terminal::stages_table(&r);
    text.push('\n');
    for s in &r.stages {
        text.push_str(&terminal::stage_details(s, 10));
    }
    text.push('\n');
    text.push_str(&terminal::capacity(&r));
    text.push_str(&terminal::warnings_text(&r));
    check("report.txt", &text);
    check("report.md", &markdown::report_markdown(&r));
}

#[test]
fn comparison_renderings_match_their_golden_files() {
    let base = report(
        vec![stage("1x", 1, 40.0, 0), stage("5x", 5, 120.0, 0)],
        "http://chat:8000",
    );
    let cand = report(
        vec![stage("5x", 5, 180.0, 0), stage("10x", 10, 600.0, 40)],
        "http://chat-next:8000",
    );
    let diff = compare::compare(&base, &cand, &Thresholds::default());
    assert!(diff.regression);
    check("compare.txt", &terminal::comparison(&diff, 10));
    check("compare.md", &markdown::comparison_markdown(&diff));
}

fn exchange(
    seq: i64,
    method: &str,
    uri: &str,
    headers: &[(&str, &str)],
    body: &str,
    response: &str,
) -> tapedeck::capture::StoredExchange {
    tapedeck::capture::StoredExchange {
        id: seq,
        session_no: 1,
        seq,
        started_at_us: 0,
        offset_us: seq * 1000,
        method: method.into(),
        uri: uri.into(),
        http_version: "HTTP/1.1".into(),
        request_headers: headers
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        request_body: body.as_bytes().to_vec(),
        request_body_len: body.len() as i64,
        request_truncated: false,
        status: Some(200),
        response_headers: vec![("content-type".into(), "application/json".into())],
        response_body: response.as_bytes().to_vec(),
        response_body_len: response.len() as i64,
        response_truncated: false,
        ttfb_us: Some(100),
        duration_us: 200,
        error_kind: None,
        error_message: None,
        response_chunks: Vec::new(),
        ws_frames: Vec::new(),
        ws_frames_dropped: 0,
    }
}

#[test]
fn explain_output_matches_its_golden_file() {
    const TOKEN: &str = "redacted:0123456789abcdef0123456789abcdef";
    const PASSWORD: &str = "redacted:fedcba9876543210fedcba9876543210";
    let bearer = format!("Bearer {TOKEN}");
    let auth = [("authorization", bearer.as_str())];
    let session = vec![
        exchange(
            1,
            "POST",
            "/api/login",
            &[],
            &format!(r#"{{"user":"user-07","password":"{PASSWORD}"}}"#),
            &format!(r#"{{"token":"{TOKEN}"}}"#),
        ),
        exchange(
            2,
            "POST",
            "/api/conversations",
            &auth,
            "{}",
            r#"{"id":"c_Ab12Cd34Ef56"}"#,
        ),
        exchange(
            3,
            "POST",
            "/api/conversations/c_Ab12Cd34Ef56/messages",
            &[auth[0], ("idempotency-key", "idem-4f2a9c01d3e5b7a8")],
            r#"{"text":"hi"}"#,
            r#"{"message":{"id":"m_Qw12Er34Ty56Ui78"},"next_cursor":"cur_Pq12Rs34Tu56Vw78"}"#,
        ),
        exchange(
            4,
            "GET",
            "/api/conversations/c_Ab12Cd34Ef56/messages?limit=2&cursor=cur_Pq12Rs34Tu56Vw78",
            &auth,
            "",
            "{}",
        ),
        exchange(
            5,
            "PUT",
            "/api/conversations/c_Ab12Cd34Ef56/messages/txn0a1b2c3d4e5f",
            &auth,
            r#"{"text":"yo"}"#,
            "{}",
        ),
    ];
    let mut explanation = tapedeck::replay::explain::Explanation::default();
    explanation.add_session(session.clone(), &Default::default());
    explanation.add_session(session, &Default::default());
    check("explain.txt", &explanation.render());
}
