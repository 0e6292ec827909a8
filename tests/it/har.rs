//! HAR 1.2 in and out (`captures import`, `captures export`), through the
//! real binary: malformed files are refused naming the entry and field
//! with nothing written, a 200 MB body is read in bounded memory and
//! stored cut at the cap with its true length, a HAR mitmproxy wrote in
//! front of the demo backend imports and replays with no error, and a
//! capture exported and imported back replays the same requests.

use std::io::Write;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use serde_json::{Value, json};
use tokio::sync::mpsc;

use crate::support::thirdparty::free_port;
use crate::support::{
    demo_backend, demo_stats, digest, output, output_with_peak_rss, sqlite_count,
};
use tapedeck::capture::Store;
use tapedeck::demo::script::Population;

/// A HAR entry as DevTools writes one.
fn entry(i: usize, page: &str) -> Value {
    json!({
        "pageref": page,
        "startedDateTime": format!("2024-05-01T10:00:{:02}.000Z", i),
        "time": 12.5,
        "request": {
            "method": "POST",
            "url": format!("http://127.0.0.1:9/api/conversations/{i}/messages?x=1"),
            "httpVersion": "HTTP/1.1",
            "headers": [{"name": "Content-Type", "value": "application/json"}],
            "queryString": [{"name": "x", "value": "1"}],
            "cookies": [],
            "headersSize": -1,
            "bodySize": 11,
            "postData": {"mimeType": "application/json", "text": "{\"text\":1}"}
        },
        "response": {
            "status": 201, "statusText": "Created", "httpVersion": "HTTP/1.1",
            "headers": [], "cookies": [],
            "content": {"size": 2, "mimeType": "application/json", "text": "{}"},
            "redirectURL": "", "headersSize": -1, "bodySize": -1
        },
        "cache": {},
        "timings": {"send": 1, "wait": 10, "receive": 1.5}
    })
}

fn har(entries: Vec<Value>) -> String {
    let doc = json!({"log": {
        "version": "1.2",
        "creator": {"name": "test", "version": "1"},
        "pages": [{"id": "page_1", "startedDateTime": "2024-05-01T10:00:00.000Z",
                   "title": "t", "pageTimings": {}}],
        "entries": entries
    }});
    serde_json::to_string_pretty(&doc).expect("json")
}

/// Every file in `dir`, by name.
fn listing(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .expect("read dir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

async fn import(har: &Path, capture: &Path) -> (i32, String, String) {
    output(&[
        "captures",
        "import",
        har.to_str().expect("utf8"),
        "--capture",
        capture.to_str().expect("utf8"),
    ])
    .await
}

#[tokio::test]
async fn malformed_har_files_exit_2_naming_the_entry_and_field_and_write_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let good = har((0..3).map(|i| entry(i, "page_1")).collect());

    // An existing capture, made by importing a whole HAR: bad imports into
    // it must leave every byte of it as it was.
    let good_path = dir.path().join("good.har");
    std::fs::write(&good_path, &good).expect("write");
    let existing = dir.path().join("existing.db");
    let (code, out, err) = import(&good_path, &existing).await;
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("3 exchanges in 1 sessions"), "{out}");
    let before = digest(&std::fs::read(&existing).expect("read capture"));

    let mut wrong_type = (0..3).map(|i| entry(i, "page_1")).collect::<Vec<_>>();
    wrong_type[2]["request"]["method"] = json!(5);
    let mut no_request = (0..3).map(|i| entry(i, "page_1")).collect::<Vec<_>>();
    no_request[1]
        .as_object_mut()
        .expect("object")
        .remove("request");
    let mut bad_headers = (0..3).map(|i| entry(i, "page_1")).collect::<Vec<_>>();
    bad_headers[1]["response"]["headers"] = json!({"name": "x"});
    // Cut inside the second entry's request.
    let second = good.match_indices("\"pageref\"").nth(1).expect("second").0;
    let truncated = good[..second + 200].to_string();

    let cases = [
        (
            "truncated",
            truncated,
            1,
            "request",
            "ends inside this entry",
        ),
        (
            "wrong-type",
            har(wrong_type),
            2,
            "request.method",
            "expected a string, found a number",
        ),
        ("no-request", har(no_request), 1, "request", "missing"),
        (
            "bad-headers",
            har(bad_headers),
            1,
            "response.headers",
            "expected an array, found an object",
        ),
    ];
    for (name, text, index, field, problem) in cases {
        let path = dir.path().join(format!("{name}.har"));
        std::fs::write(&path, text).expect("write");
        let files_before = listing(dir.path());
        let fresh = dir.path().join(format!("{name}.db"));
        for capture in [&fresh, &existing] {
            let (code, out, err) = import(&path, capture).await;
            assert_eq!(code, 2, "{name}: {out}{err}");
            assert!(
                err.contains(&format!("HAR entry {index} (log.entries[{index}])"))
                    && err.contains(&format!("field `{field}"))
                    && err.contains(problem),
                "{name}: {err}"
            );
            assert_eq!(err.matches("HAR entry").count(), 1, "said once: {err}");
        }
        assert_eq!(listing(dir.path()), files_before, "{name}: no file made");
        assert_eq!(
            digest(&std::fs::read(&existing).expect("read capture")),
            before,
            "{name}: the existing capture is unchanged"
        );
    }
    assert_eq!(sqlite_count(&existing, "SELECT count(*) FROM captures"), 1);

    // Not a HAR at all.
    let path = dir.path().join("other.json");
    std::fs::write(&path, r#"{"entries": []}"#).expect("write");
    let (code, _, err) = import(&path, &dir.path().join("other.db")).await;
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("is not a HAR 1.2 file") && err.contains("log"),
        "{err}"
    );
}

/// Writes `len` bytes of `byte` as a JSON string's content.
fn write_repeated(out: &mut impl Write, byte: u8, len: usize) {
    let chunk = vec![byte; 1 << 20];
    let mut left = len;
    while left > 0 {
        let n = left.min(chunk.len());
        out.write_all(&chunk[..n]).expect("write");
        left -= n;
    }
}

#[tokio::test]
async fn a_200_mb_body_is_stored_cut_at_the_cap_with_its_true_length_in_bounded_memory() {
    const BODY: usize = 200 * 1024 * 1024;
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("big.har");
    {
        // Streamed to disk: a 200 MB text request body and a 200 MB
        // binary answer as base64 (267 MB of text).
        let mut out = std::io::BufWriter::new(std::fs::File::create(&path).expect("create"));
        let head = r#"{"log":{"version":"1.2","creator":{"name":"t","version":"1"},"entries":[{"startedDateTime":"2024-05-01T10:00:00Z","time":900,"request":{"method":"POST","url":"http://127.0.0.1:9/upload","httpVersion":"HTTP/1.1","headers":[],"bodySize":-1,"postData":{"mimeType":"text/plain","text":""#;
        out.write_all(head.as_bytes()).expect("write");
        write_repeated(&mut out, b'a', BODY);
        out.write_all(br#""}},"response":{"status":200,"headers":[],"content":{"size":"#)
            .expect("write");
        out.write_all(format!("{BODY}").as_bytes()).expect("write");
        out.write_all(br#","mimeType":"application/octet-stream","text":""#)
            .expect("write");
        // base64 of 0xFF bytes is all `/`.
        write_repeated(&mut out, b'/', BODY / 3 * 4);
        out.write_all(br#"","encoding":"base64"}},"timings":{"wait":5}}]}}"#)
            .expect("write");
        out.flush().expect("flush");
    }
    let capture = dir.path().join("big.db");
    let (code, out, err, peak) = output_with_peak_rss(&[
        "captures",
        "import",
        path.to_str().expect("utf8"),
        "--capture",
        capture.to_str().expect("utf8"),
    ])
    .await;
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("2 bodies cut at the cap"), "{out}");
    let mib = peak / (1024 * 1024);
    eprintln!("peak RSS importing a 467 MB HAR with two 200 MB bodies: {mib} MiB");
    assert!(peak < 300 * 1024 * 1024, "peak RSS {mib} MiB");
    let row = |sql: &str| sqlite_count(&capture, sql);
    assert_eq!(row("SELECT request_body_len FROM exchanges"), BODY as i64);
    assert_eq!(row("SELECT length(request_body) FROM exchanges"), 1 << 20);
    assert_eq!(row("SELECT request_truncated FROM exchanges"), 1);
    assert_eq!(row("SELECT response_body_len FROM exchanges"), BODY as i64);
    assert_eq!(row("SELECT length(response_body) FROM exchanges"), 1 << 20);
    assert_eq!(row("SELECT response_truncated FROM exchanges"), 1);
    assert_eq!(
        row("SELECT count(*) FROM exchanges WHERE hex(substr(response_body, 1, 4)) = 'FFFFFFFF'"),
        1,
        "the base64 answer is stored decoded"
    );
}

/// A small demo population: logins, conversations, messages, edits,
/// streamed replies and WebSocket sends.
fn population() -> Population {
    Population {
        users: 3,
        messages_per_user: 3,
        ramp: Duration::from_millis(50),
        think: (Duration::from_millis(5), Duration::from_millis(20)),
        seed: 5,
    }
}

/// Waits until something listens on `port` (a connect, no request: a
/// request would be recorded).
async fn wait_for_listener(port: u16, limit: Duration) {
    let poll = async {
        while tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_err()
        {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    tokio::time::timeout(limit, poll)
        .await
        .unwrap_or_else(|_| panic!("nothing listens on {port} after {limit:?}"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_har_mitmproxy_wrote_imports_and_replays_with_no_errors() {
    let mitmdump = std::env::var("TAPEDECK_MITMDUMP").expect(
        "TAPEDECK_MITMDUMP names mitmproxy's mitmdump: run the tests with `bash tests/run.sh`",
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let backend = demo_backend().await;
    let har = dir.path().join("mitmproxy.har");
    let port = free_port();
    let mut mitm = tokio::process::Command::new(&mitmdump)
        .args(["--mode", &format!("reverse:{}", backend.url())])
        .args([
            "--listen-host",
            "127.0.0.1",
            "--listen-port",
            &port.to_string(),
        ])
        .args(["--set", &format!("hardump={}", har.display())])
        .args([
            "--set",
            &format!("confdir={}", dir.path().join("conf").display()),
        ])
        .arg("--quiet")
        .stdout(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("start mitmdump");
    wait_for_listener(port, Duration::from_secs(60)).await;
    let (tx, _rx) = mpsc::unbounded_channel();
    let addr = format!("127.0.0.1:{port}").parse().expect("addr");
    let script = tapedeck::demo::script::drive(addr, population(), tx).await;
    assert!(script.mismatches.is_empty(), "{:?}", script.mismatches);
    // mitmproxy writes the HAR as it shuts down.
    crate::support::terminate(&mut mitm).await;
    let written = std::fs::read(&har).expect("mitmproxy wrote its HAR");
    let doc: Value = serde_json::from_slice(&written).expect("a JSON HAR");
    let entries = doc["log"]["entries"].as_array().expect("entries").len();
    assert_eq!(
        entries as u64, script.requests,
        "one entry per scripted request"
    );

    let capture = dir.path().join("imported.db");
    let (code, out, err) = import(&har, &capture).await;
    assert_eq!(code, 0, "{out}{err}");
    let store = Store::open(&capture).await.expect("open");
    let run = store.run(None).await.expect("run");
    assert_eq!(run.exchanges as usize, entries, "{out}");
    assert_eq!(run.upstream, backend.url());
    assert!(run.sessions >= population().users as i64, "{out}");
    // Redacted as recording redacts: no clear password or token is kept.
    assert_eq!(
        sqlite_count(
            &capture,
            "SELECT count(*) FROM exchanges WHERE instr(request_body, 'password') > 0 \
             AND instr(request_body, 'redacted:') = 0"
        ),
        0
    );

    let before = demo_stats(&backend).await;
    let report = crate::support::replay_with(
        &store,
        &backend.url(),
        tapedeck::profile::Profile::single(1, 4.0),
        |_| {},
    )
    .await;
    store.close().await;
    let after = demo_stats(&backend).await;
    let stage = &report.stages[0];
    assert_eq!(stage.errors, 0, "{:?}", stage.error_kinds);
    assert_eq!(stage.status_mismatches, 0);
    assert_eq!(stage.requests as usize, entries);
    // Judged by the server: every imported request reached it, and it did
    // the recorded work once more.
    assert_eq!(after.requests - before.requests, entries as u64);
    assert_eq!(after.logins - before.logins, before.logins);
    assert_eq!(after.messages - before.messages, before.messages);
    assert_eq!(
        after.conversations - before.conversations,
        before.conversations
    );
}
