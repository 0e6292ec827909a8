//! Recording with default redaction against an upstream that echoes each
//! request back: a credential placed anywhere a chat client puts one is
//! absent from every byte of the capture's files, and what is not a
//! credential (an idempotency key) is kept for replay to regenerate.

use bytes::Bytes;
use http::Method;

use crate::support::thirdparty::basic;
use crate::support::{TestProxy, TestUpstream, client, send};

/// Every secret below contains this, so one search finds any of them.
const SECRET: &str = "QsEcReT";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credentials_anywhere_in_a_request_never_reach_the_capture_files() {
    let upstream = TestUpstream::start().await;
    let mut proxy = TestProxy::start(&upstream.url()).await;
    let c = client();
    let json = ("content-type", "application/json");
    let basic = basic("ann", &format!("{SECRET}-basic-08"));
    type Headers<'a> = Vec<(&'a str, String)>;
    let sends: Vec<(Method, String, Headers, String)> = vec![
        (
            Method::GET,
            format!("/echo?room=r1&access_token={SECRET}-query-01&v=2"),
            vec![],
            String::new(),
        ),
        (
            Method::GET,
            "/echo".into(),
            vec![
                ("x-api-key", format!("{SECRET}-apikey-02")),
                ("x-auth-token", format!("{SECRET}-auth-03")),
                ("x-session-id", format!("{SECRET}-session-04")),
                ("authorization", basic),
                ("idempotency-key", "idem-KeEp-0009".into()),
            ],
            String::new(),
        ),
        (
            Method::POST,
            "/echo".into(),
            vec![(json.0, json.1.into())],
            format!(
                r#"{{"user":"ann","id_token":"{SECRET}-idtoken-05","client":{{"client_secret":"{SECRET}-client-06"}}}}"#
            ),
        ),
        (
            Method::POST,
            "/echo".into(),
            vec![(
                "content-type",
                "multipart/form-data; boundary=b0undary".into(),
            )],
            format!(
                "--b0undary\r\nContent-Disposition: form-data; name=\"user\"\r\n\r\nann\r\n\
                 --b0undary\r\nContent-Disposition: form-data; name=\"password\"\r\n\r\n{SECRET}-multi-07\r\n\
                 --b0undary--\r\n"
            ),
        ),
    ];
    for (method, path, headers, body) in sends {
        let headers: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let (status, _, answer) =
            send(&c, method, &proxy.url(&path), &headers, Bytes::from(body)).await;
        assert_eq!(status, 200);
        // The client got its echo in clear: recording changes nothing on
        // the wire.
        assert!(String::from_utf8_lossy(&answer).contains(SECRET));
    }
    let summary = proxy.stop().await;
    assert_eq!((summary.exchanges, summary.dropped), (4, 0));
    let mut seen_idempotency_key = false;
    for entry in std::fs::read_dir(proxy._dir.path())
        .expect("capture folder")
        .flatten()
    {
        let bytes = std::fs::read(entry.path()).expect("read capture file");
        let name = entry.file_name().to_string_lossy().into_owned();
        assert!(
            !contains(&bytes, SECRET.as_bytes()),
            "a credential in clear in {name}"
        );
        seen_idempotency_key |= contains(&bytes, b"idem-KeEp-0009");
    }
    assert!(
        seen_idempotency_key,
        "an idempotency key is not a credential"
    );
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}
