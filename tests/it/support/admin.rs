//! The admin endpoint of a `tapedeck record` process, read the way a
//! monitor reads it: its address from the banner, its metrics scraped and
//! polled until a condition holds.

use std::collections::HashMap;
use std::time::Duration;

use bytes::Bytes;
use http::Method;

use super::{client, send};

/// Every sample of a Prometheus text exposition, by name with labels.
pub async fn scrape(admin: &str) -> HashMap<String, f64> {
    let (status, _, body) = send(
        &client(),
        Method::GET,
        &format!("http://{admin}/metrics"),
        &[],
        Bytes::new(),
    )
    .await;
    assert_eq!(status, 200);
    String::from_utf8_lossy(&body)
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.rsplit_once(' '))
        .filter_map(|(k, v)| Some((k.to_string(), v.parse().ok()?)))
        .collect()
}

/// The sum of `tapedeck_records_dropped_total` over its reasons.
pub fn dropped(m: &HashMap<String, f64>) -> u64 {
    m.iter()
        .filter(|(k, _)| k.starts_with("tapedeck_records_dropped_total{"))
        .map(|(_, v)| *v as u64)
        .sum()
}

/// One sample, 0 when missing.
pub fn get(m: &HashMap<String, f64>, name: &str) -> u64 {
    m.get(name).copied().unwrap_or(0.0) as u64
}

/// Polls the admin endpoint (every 20 ms, at most `limit`) until `ready`.
pub async fn wait_for(
    admin: &str,
    limit: Duration,
    what: &str,
    ready: impl Fn(&HashMap<String, f64>) -> bool,
) -> HashMap<String, f64> {
    let until = tokio::time::Instant::now() + limit;
    loop {
        let m = scrape(admin).await;
        if ready(&m) {
            return m;
        }
        assert!(
            tokio::time::Instant::now() < until,
            "{what}: never; last metrics {m:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The admin address a `record --admin 127.0.0.1:0` process prints as the
/// line after its banner.
pub async fn admin_address(
    lines: &mut tokio::io::Lines<tokio::io::BufReader<tokio::process::ChildStdout>>,
) -> String {
    let line = lines.next_line().await.expect("read").expect("admin line");
    address_in(&line)
}

/// The `host:port` after the first `http://` of a line the binary printed
/// (a banner, an admin line).
pub fn address_in(line: &str) -> String {
    line.split("http://")
        .nth(1)
        .and_then(|s| s.split_whitespace().next())
        .unwrap_or_else(|| panic!("no address in {line:?}"))
        .to_string()
}
