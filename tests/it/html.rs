//! The HTML pages in a real headless Chromium: demo traffic recorded through
//! the proxy, replayed by the binary with `--html` against a fast and a slow
//! demo backend, compared with `--html`; each page must load without script
//! errors and hold its charts and tables. Screenshots land in
//! `target/html-screenshots/` to be looked at.

use std::path::{Path, PathBuf};
use std::time::Duration;

use tapedeck::demo::backend::{BackendConfig, DemoBackend};
use tapedeck::demo::script::{self, Population};
use tapedeck::shutdown::Shutdown;
use tokio::net::TcpListener;

use crate::support::{TestProxy, output};

/// Headless Chromium: `TAPEDECK_CHROMIUM`, or `chromium` /
/// `chromium-browser` on the PATH.
fn chromium() -> PathBuf {
    if let Some(path) = std::env::var_os("TAPEDECK_CHROMIUM") {
        return PathBuf::from(path);
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    for dir in std::env::split_paths(&path) {
        for name in ["chromium", "chromium-browser"] {
            let candidate = dir.join(name);
            if candidate.is_file() {
                return candidate;
            }
        }
    }
    panic!(
        "the HTML checks need headless Chromium: run the tests with `bash tests/run.sh` \
         (it installs Debian's chromium), or set TAPEDECK_CHROMIUM to a Chromium binary"
    );
}

/// Runs Chromium headless on a page: (DOM after scripts ran, console log).
async fn browse(page: &Path, extra: &[&str]) -> (String, String) {
    let profile = tempfile::tempdir().expect("profile dir");
    let mut cmd = tokio::process::Command::new(chromium());
    cmd.args([
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-extensions",
        "--no-first-run",
        "--enable-logging=stderr",
        "--v=0",
    ])
    .arg(format!("--user-data-dir={}", profile.path().display()))
    .args(extra)
    .arg(format!("file://{}", page.display()))
    .kill_on_drop(true);
    let out = tokio::time::timeout(Duration::from_secs(120), cmd.output())
        .await
        .expect("chromium finishes within 2 minutes")
        .expect("chromium runs");
    let log = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "chromium failed: {log}");
    (String::from_utf8_lossy(&out.stdout).into_owned(), log)
}

/// Loads the page, checks what every page must have, takes a screenshot;
/// returns the DOM.
async fn check_page(page: &Path, shot: &str) -> String {
    let (dom, log) = browse(page, &["--dump-dom"]).await;
    assert!(
        dom.contains(r#"data-ready="1""#),
        "the page script did not finish:\n{log}"
    );
    assert!(!dom.contains("data-errors"), "script errors: {dom}");
    let console: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("CONSOLE") || l.contains("Uncaught"))
        .collect();
    assert!(console.is_empty(), "console output: {console:#?}");
    assert!(
        !dom.contains("http://") || !dom.contains("<script src"),
        "no network resources"
    );
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .parent()
        .map_or_else(|| PathBuf::from("target"), Path::to_path_buf)
        .join("html-screenshots");
    std::fs::create_dir_all(&dir).expect("screenshot dir");
    let png = dir.join(shot);
    let _ = std::fs::remove_file(&png);
    let arg = format!("--screenshot={}", png.display());
    browse(
        page,
        &[&arg, "--window-size=1280,2600", "--hide-scrollbars"],
    )
    .await;
    let size = std::fs::metadata(&png).map(|m| m.len()).unwrap_or(0);
    assert!(
        size > 20_000,
        "screenshot {} has {size} bytes",
        png.display()
    );
    dom
}

/// The `data-v` values of one column in the rows of the first table with
/// this class, in DOM order.
fn column(dom: &str, table_class: &str, col: usize) -> Vec<f64> {
    let start = dom
        .find(&format!(r#"class="{table_class}""#))
        .unwrap_or_else(|| panic!("no table {table_class}"));
    let table = &dom[start..start + dom[start..].find("</table>").expect("table end")];
    let body = &table[table.find("<tbody>").expect("tbody")..];
    body.split("<tr")
        .skip(1)
        .filter_map(|row| {
            row.split("<td")
                .skip(1)
                .nth(col)
                .and_then(|cell| cell.split(r#"data-v=""#).nth(1))
                .and_then(|v| v.split('"').next())
                .and_then(|v| v.parse().ok())
        })
        .collect()
}

async fn backend(service_time: Duration) -> DemoBackend {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let config = BackendConfig {
        service_time,
        token_interval: Duration::from_millis(2),
        ..BackendConfig::default()
    };
    DemoBackend::start(listener, config, Shutdown::new()).expect("backend")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn report_and_compare_pages_render_in_headless_chromium() {
    let chromium_present = chromium();
    assert!(chromium_present.exists());
    let recorded_on = backend(Duration::from_millis(1)).await;
    let proxy = TestProxy::start(&recorded_on.url()).await;
    let population = Population {
        users: 6,
        messages_per_user: 3,
        ramp: Duration::from_millis(300),
        think: (Duration::from_millis(50), Duration::from_millis(250)),
        seed: 5,
    };
    let (tx, _rx) = tokio::sync::mpsc::unbounded_channel();
    let outcome = script::drive(proxy.addr, population, tx).await;
    assert!(outcome.mismatches.is_empty(), "{:?}", outcome.mismatches);
    let mut proxy = proxy;
    proxy.stop().await;

    let dir = tempfile::tempdir().expect("tempdir");
    let profile = dir.path().join("two.toml");
    std::fs::write(
        &profile,
        "version = 1\n[slo]\np99_ms = 40\n\
         [[stage]]\nname = \"1x\"\nmultiplier = 1\n\
         [[stage]]\nname = \"3x\"\nmultiplier = 3\n",
    )
    .expect("profile");
    let capture = proxy.capture.to_str().expect("utf8").to_string();
    let mut reports = Vec::new();
    let pid = std::process::id().to_string();
    for (name, ms) in [("fast", 1), ("slow", 12)] {
        let target = backend(Duration::from_millis(ms)).await;
        let report = dir.path().join(format!("{name}.json"));
        let page = dir.path().join(format!("{name}.html"));
        let args = [
            "replay",
            &capture,
            "--target",
            &target.url(),
            "--profile",
            profile.to_str().expect("utf8"),
            "--report",
            report.to_str().expect("utf8"),
            "--html",
            page.to_str().expect("utf8"),
            // The backend runs in this process: its CPU and memory.
            "--observe-pid",
            &pid,
        ];
        let (code, out, err) = output(&args).await;
        assert!(code == 0 || code == 1, "{out}{err}");
        // The passwords are redacted and no credentials file is given: the
        // summary warns and names the fix.
        assert!(
            out.contains("warning:") && out.contains("--credentials-file"),
            "{out}"
        );
        target.stop().await;
        reports.push((report, page));
    }

    let dom = check_page(&reports[0].1, "report.png").await;
    // The capacity charts over both stages, then per stage its three
    // charts and its observed CPU and memory.
    assert_eq!(dom.matches(r#"class="chart capacity-chart""#).count(), 3);
    assert_eq!(dom.matches(r#"class="chart resource-chart""#).count(), 4);
    assert_eq!(dom.matches("<svg").count(), 3 + 2 * (3 + 2));
    for text in ["service latency against load", "p99_ms bound", "1x", "3x"] {
        assert!(dom.contains(text), "{text} in the capacity charts");
    }
    assert!(dom.contains("process_cpu_cores{pid="), "the CPU chart");
    assert!(dom.contains(r#"id="capacity""#) && dom.contains(r#"id="verdict""#));
    assert!(
        dom.contains(r#"id="warnings""#) && dom.contains("--credentials-file"),
        "the page carries the summary's warnings"
    );
    assert_eq!(dom.matches(r#"class="sortable routes""#).count(), 2);
    assert!(dom.contains("POST /api/conversations/{id}/messages"));
    // The script sorted the route table by p99, highest first.
    let p99 = column(&dom, "sortable routes", 5);
    assert!(p99.len() >= 5, "{p99:?}");
    assert!(
        p99.windows(2).all(|w| w[0] >= w[1]),
        "sorted by p99: {p99:?}"
    );

    let compare_page = dir.path().join("compare.html");
    let (code, out, err) = output(&[
        "compare",
        reports[0].0.to_str().expect("utf8"),
        reports[1].0.to_str().expect("utf8"),
        "--html",
        compare_page.to_str().expect("utf8"),
    ])
    .await;
    assert_eq!(code, 1, "12 ms after 1 ms is a regression:\n{out}{err}");
    let dom = check_page(&compare_page, "compare.png").await;
    assert_eq!(dom.matches("<svg").count(), 6, "three overlays per stage");
    assert!(dom.contains(">regression</span>"));
    assert!(
        dom.contains(r#"<tr class="regression">"#),
        "regressions highlighted"
    );
    assert!(
        dom.contains(">base<") && dom.contains(">candidate<"),
        "both runs in the legends"
    );
    // Each route has 6 to 18 requests a side: past the threshold, but too
    // few to judge, and said so once per route.
    assert!(
        dom.contains(">too few requests to judge</td>"),
        "route verdicts"
    );
}
