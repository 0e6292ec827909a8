//! docs/grafana/tapedeck.json against the series tapedeck exports: a
//! Grafana dashboard with a Prometheus data-source variable whose every
//! query names series that `replay --admin` and `record --admin` serve, so
//! a renamed metric cannot leave a dashboard panel silently empty.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use serde_json::Value;
use tapedeck::proxy::metrics::ProxyMetrics;
use tapedeck::report::live::LiveMetrics;

/// Every `tapedeck_…` name in `text`.
fn names(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(i) = rest.find("tapedeck_") {
        let tail = &rest[i..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(tail.len());
        out.push(tail[..end].to_string());
        rest = &tail[end..];
    }
    out
}

/// The metric family a sample name belongs to (`# TYPE` names it so).
fn family(name: &str) -> &str {
    ["_bucket", "_count", "_sum", "_total"]
        .iter()
        .find_map(|s| name.strip_suffix(s))
        .unwrap_or(name)
}

#[test]
fn the_grafana_dashboard_queries_only_series_tapedeck_exports() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/docs/grafana/tapedeck.json");
    let text = std::fs::read_to_string(path).expect("the dashboard");
    let dashboard: Value = serde_json::from_str(&text).expect("dashboard JSON");
    let variables = dashboard["templating"]["list"]
        .as_array()
        .expect("templating variables");
    assert!(
        variables.iter().any(|v| v["name"] == "datasource"
            && v["type"] == "datasource"
            && v["query"] == "prometheus"),
        "a Prometheus data-source variable"
    );
    let panels = dashboard["panels"].as_array().expect("panels");
    let mut exprs = Vec::new();
    for p in panels.iter().filter(|p| p["type"] != "row") {
        assert_eq!(
            p["datasource"]["uid"], "${datasource}",
            "panel {} uses the variable",
            p["title"]
        );
        let targets = p["targets"].as_array().expect("targets");
        assert!(
            !targets.is_empty(),
            "panel {} queries something",
            p["title"]
        );
        exprs.extend(
            targets
                .iter()
                .map(|t| t["expr"].as_str().expect("expr").to_string()),
        );
    }
    exprs.extend(
        variables
            .iter()
            .filter_map(|v| v["definition"].as_str().map(str::to_string)),
    );

    // What the two endpoints expose, with a sample in every family (a
    // labelled family without one is not written at all).
    let live = Arc::new(LiveMetrics::default());
    let mut stage = live.stage_started(0, "1x", 1);
    let route: Arc<str> = Arc::from("GET /");
    stage.outcome(&route, Duration::from_millis(1), None, true);
    stage.outcome(&route, Duration::from_millis(1), Some("http_5xx"), false);
    stage.skipped("dependent");
    stage.vu_started();
    let proxy = ProxyMetrics::default();
    proxy.upstream_error("connect");
    let exported = format!(
        "{}{}",
        live.encode(&AtomicU64::new(0), &AtomicU64::new(0)),
        proxy.encode()
    );
    let families: BTreeSet<&str> = exported
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    let queried: BTreeSet<String> = exprs.iter().flat_map(|e| names(e)).collect();
    assert!(queried.len() >= 15, "{queried:?}");
    for name in &queried {
        assert!(
            families.contains(family(name)),
            "the dashboard queries {name}, which nothing exports (families: {families:?})"
        );
    }
    for wanted in [
        "tapedeck_replay_requests_total",
        "tapedeck_replay_errors_total",
        "tapedeck_replay_latency_seconds_bucket",
        "tapedeck_replay_in_flight",
        "tapedeck_replay_active_vus",
        "tapedeck_replay_late_sends_total",
        "tapedeck_replay_multiplier",
        "tapedeck_replay_current_stage",
        "tapedeck_requests_total",
        "tapedeck_request_duration_seconds_bucket",
        "tapedeck_records_dropped_total",
    ] {
        assert!(queried.contains(wanted), "no panel shows {wanted}");
    }
}
