//! What redaction costs on a large answer, on and off the client's path.
//!
//! Builds a 10 MiB chat-history JSON answer (messages with ids, text and
//! reactions, one `token` field; about 4:1 under gzip, as
//! `bench/large_answer.sh` serves it) and times, per round:
//! - on the path: the credential scan recording does before an answer's
//!   last bytes go out (`Redactor::secrets_in_head`, the first 64 KiB of
//!   content), on the gzip answer (decoding included) and on the plain one;
//! - off the path: what the capture writer's redaction thread does with
//!   the stored answer (decode it whole, scan it, replace the token,
//!   re-encode it: `scannable` and `Redactor::redact_content`).
//!
//! Prints the median of each and its throughput.
//!
//! `cargo bench --bench redact [-- ROUNDS]` (default 50 for the path
//! scans, a tenth of that for the whole answer).

use std::io::Write;
use std::time::{Duration, Instant};

use http::{HeaderMap, HeaderValue, header};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tapedeck::capture::redact::{Redactor, scannable};

/// How much of an answer recording scans on the client's path (the
/// proxy's `BIND_SCAN`).
const HEAD: usize = 64 * 1024;
const SIZE: usize = 10 * 1024 * 1024;

fn history(rng: &mut StdRng) -> Vec<u8> {
    const WORDS: [&str; 22] = [
        "the", "proxy", "replay", "capture", "session", "token", "latency", "message", "channel",
        "user", "bot", "answer", "stream", "socket", "backend", "staging", "load", "report",
        "cursor", "page", "chat", "send",
    ];
    let mut out = String::with_capacity(SIZE + 4096);
    out.push_str(r#"{"token":"tok_bench_3f9a2c71d0e84b65","messages":["#);
    let mut i = 0u64;
    while out.len() < SIZE {
        if i > 0 {
            out.push(',');
        }
        let words = rng.random_range(8..40);
        let text: Vec<&str> = (0..words)
            .map(|_| WORDS[rng.random_range(0..WORDS.len())])
            .collect();
        let reactions: Vec<String> = (0..rng.random_range(0..4))
            .map(|_| format!("\"{}\"", WORDS[rng.random_range(0..WORDS.len())]))
            .collect();
        out.push_str(&format!(
            r#"{{"id":"msg_{i:08}_{:010x}","channel":"ch_{}","author":"user_{}","ts":{},"text":"{}","reactions":[{}]}}"#,
            rng.random::<u64>() & 0xff_ffff_ffff,
            rng.random_range(0..500),
            rng.random_range(0..5000),
            1_700_000_000 + i * 7,
            text.join(" "),
            reactions.join(",")
        ));
        i += 1;
    }
    out.push_str(r#"],"next_cursor":"c_0000000000"}"#);
    out.into_bytes()
}

fn median(mut xs: Vec<Duration>) -> Duration {
    xs.sort();
    xs[xs.len() / 2]
}

fn time(rounds: usize, mut f: impl FnMut()) -> Duration {
    f();
    median(
        (0..rounds)
            .map(|_| {
                let t = Instant::now();
                f();
                t.elapsed()
            })
            .collect(),
    )
}

fn main() {
    let rounds: usize = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(50);
    let plain = history(&mut StdRng::seed_from_u64(7));
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::new(6));
    gz.write_all(&plain).expect("gzip into memory");
    let gz = gz.finish().expect("gzip into memory");
    let redactor = Redactor::new([7; 32], &Default::default()).expect("default redaction");

    let mut json = HeaderMap::new();
    json.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    let mut gzip = json.clone();
    gzip.insert(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));

    // Every figure is checked to have found the token: a scan that finds
    // nothing fast measures nothing.
    let found = |tokens: Vec<Vec<u8>>| {
        assert_eq!(tokens, [b"tok_bench_3f9a2c71d0e84b65".to_vec()]);
    };
    let head_gz = time(rounds, || found(redactor.secrets_in_head(&gzip, &gz, HEAD)));
    let head_plain = time(rounds, || {
        found(redactor.secrets_in_head(&json, &plain, HEAD))
    });
    let whole = time(rounds.div_ceil(10), || {
        let body = scannable(&gzip, &gz).expect("gzip JSON is scannable");
        let redacted = redactor.redact_content(&body, &[]).expect("the token");
        assert!(redacted.len() > 1024);
    });

    let mib_s = |bytes: usize, d: Duration| bytes as f64 / d.as_secs_f64() / (1024.0 * 1024.0);
    println!(
        "answer: {} bytes of JSON, {} bytes gzip; {rounds} rounds, medians",
        plain.len(),
        gz.len()
    );
    println!("| work | where | median | content MiB/s |");
    println!("|---|---|---|---|");
    println!(
        "| scan of the first 64 KiB, gzip answer (decode + scan) | client's path | {:.0} µs | {:.0} |",
        head_gz.as_secs_f64() * 1e6,
        mib_s(HEAD, head_gz)
    );
    println!(
        "| scan of the first 64 KiB, plain answer | client's path | {:.0} µs | {:.0} |",
        head_plain.as_secs_f64() * 1e6,
        mib_s(HEAD, head_plain)
    );
    println!(
        "| whole answer: decode, scan, redact, re-encode (gzip level 1) | redaction thread | {:.1} ms | {:.0} |",
        whole.as_secs_f64() * 1e3,
        mib_s(plain.len(), whole)
    );
}
