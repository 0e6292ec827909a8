//! HAR import (`captures import`), through the real binary: malformed
//! files are refused naming the entry and field with nothing written, and
//! a 200 MB body is read in bounded memory and stored cut at the cap with
//! its true length.

use std::io::Write;
use std::path::Path;

use serde_json::{Value, json};

use crate::support::{digest, output, output_with_peak_rss, sqlite_count};

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
