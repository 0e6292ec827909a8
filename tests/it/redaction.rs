//! Recording with default redaction against an upstream that echoes each
//! request back: a credential placed anywhere a chat client puts one (a
//! request, or a WebSocket frame) is absent from every byte of the
//! capture's files, and what is not a credential (an idempotency key, a
//! user name) is kept for replay; a replay with a credentials file sends
//! the clear values again.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http::Method;
use tapedeck::capture::Store;
use tapedeck::capture::redact::frames::{login_parts, packet_json};
use tokio_tungstenite::tungstenite::Message;

use crate::support::thirdparty::basic;
use crate::support::{
    TestProxy, TestUpstream, client, output, record_process, send, terminate, ws_echo_upstream,
};

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

/// A SASL PLAIN password, a STOMP passcode and a Socket.IO token, as a
/// chat client sends them over its sockets.
const SASL_PASSWORD: &str = "QsEcReT-sasl-00001";
const STOMP_PASSCODE: &str = "QsEcReT-stomp-0002";
const SOCKET_IO_TOKEN: &str = "QsEcReT-socketio-03";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credentials_in_websocket_frames_never_reach_the_capture_and_replay_sends_them_back() {
    let (upstream, sockets) = ws_echo_upstream().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let capture = dir.path().join("captures/frames.db");
    let (mut child, addr, _out) = record_process(&upstream, capture.as_os_str()).await;
    let sasl_payload = STANDARD.encode(format!("\0sasl-user\0{SASL_PASSWORD}"));
    let sent = [
        format!(
            "<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>{sasl_payload}</auth>"
        ),
        format!(
            "CONNECT\naccept-version:1.2\nhost:chat\nlogin:stomp-user\npasscode:{STOMP_PASSCODE}\n\n\0"
        ),
        format!(r#"40{{"token":"{SOCKET_IO_TOKEN}"}}"#),
    ];
    // One socket per protocol, as clients open them.
    for frame in &sent {
        let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://{addr}/ws"))
            .await
            .expect("handshake through the proxy");
        ws.send(Message::text(frame.as_str())).await.expect("send");
        match ws.next().await {
            Some(Ok(Message::Text(echo))) => assert_eq!(echo.as_str(), frame.to_uppercase()),
            other => panic!("expected an echo, got {other:?}"),
        }
        ws.close(None).await.expect("close");
        while let Some(Ok(_)) = ws.next().await {}
    }
    assert_eq!(terminate(&mut child).await, Some(0), "record exits 0");
    assert_eq!(
        sockets.lock().expect("log").clone(),
        sent.iter().map(|f| vec![f.clone()]).collect::<Vec<_>>(),
        "recording changes nothing on the wire"
    );

    // Not one byte of a clear value, nor of its base64 at any alignment.
    let secrets = [SASL_PASSWORD, STOMP_PASSCODE, SOCKET_IO_TOKEN];
    let mut files = Vec::new();
    for entry in std::fs::read_dir(capture.parent().expect("folder"))
        .expect("capture folder")
        .flatten()
    {
        let bytes = std::fs::read(entry.path()).expect("read capture file");
        let name = entry.file_name().to_string_lossy().into_owned();
        for secret in secrets {
            assert!(!contains(&bytes, secret.as_bytes()), "{secret} in {name}");
            for form in base64_forms(secret) {
                assert!(
                    !contains(&bytes, form.as_bytes()),
                    "{secret} as {form} in {name}"
                );
            }
        }
        assert!(
            !contains(&bytes, sasl_payload.as_bytes()),
            "the SASL payload in {name}"
        );
        files.push(name);
    }
    assert!(files.iter().any(|f| f == "frames.db"), "{files:?}");

    // Stored well-formed, the user names kept.
    let store = Store::open(&capture).await.expect("capture opens");
    let run = store.run(None).await.expect("run");
    let frames: Vec<String> = store
        .exchanges(run.id)
        .await
        .expect("exchanges")
        .into_iter()
        .flat_map(|ex| ex.ws_frames)
        .filter(|f| f.dir == "client" && f.op == "text")
        .map(|f| f.data)
        .collect();
    assert_eq!(frames.len(), 3, "{frames:?}");
    let (user, password) = login_parts(&frames[0]).expect("a SASL PLAIN <auth>");
    assert!(
        user == "sasl-user" && password.starts_with("redacted:"),
        "{frames:?}"
    );
    let (user, password) = login_parts(&frames[1]).expect("a STOMP CONNECT");
    assert!(
        user == "stomp-user" && password.starts_with("redacted:"),
        "{frames:?}"
    );
    let at = packet_json(&frames[2]).expect("a Socket.IO packet");
    let connect: serde_json::Value = serde_json::from_str(&frames[2][at..]).expect("JSON");
    let token_marker = connect["token"].as_str().expect("token").to_string();
    assert!(token_marker.starts_with("redacted:"), "{frames:?}");
    store.close().await;

    // Replayed with the clear values: the upstream gets the frames the
    // client sent, byte for byte.
    let credentials = dir.path().join("credentials.toml");
    std::fs::write(
        &credentials,
        format!(
            "[users]\n\"sasl-user\" = \"{SASL_PASSWORD}\"\n\"stomp-user\" = \"{STOMP_PASSCODE}\"\n\
             [markers]\n\"{token_marker}\" = \"{SOCKET_IO_TOKEN}\"\n"
        ),
    )
    .expect("write credentials file");
    let capture = capture.to_string_lossy().into_owned();
    let credentials = credentials.to_string_lossy().into_owned();
    let report = dir
        .path()
        .join("report.json")
        .to_string_lossy()
        .into_owned();
    let replay = [
        "replay",
        capture.as_str(),
        "--target",
        upstream.as_str(),
        "--credentials-file",
        credentials.as_str(),
    ];
    let (code, explained, stderr) = output(&[&replay[..], &["--explain"]].concat()).await;
    assert_eq!(code, 0, "{stderr}");
    for place in [
        "frame 0 sasl password",
        "frame 0 stomp passcode",
        "body frame 0 $.token",
    ] {
        assert!(
            explained
                .lines()
                .any(|l| l.contains(place) && l.contains("credential, from the credentials file")),
            "{place} in\n{explained}"
        );
    }
    let (code, _, stderr) = output(&[&replay[..], &["--report", report.as_str()]].concat()).await;
    assert_eq!(code, 0, "{stderr}");
    let mut replayed = sockets.lock().expect("log")[3..].to_vec();
    replayed.sort();
    let mut expected: Vec<Vec<String>> = sent.iter().map(|f| vec![f.clone()]).collect();
    expected.sort();
    assert_eq!(replayed, expected);
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&report).expect("report")).expect("report JSON");
    assert_eq!(report["stages"][0]["unresolved_values"], 0, "{report}");
    assert_eq!(report["stages"][0]["errors"], 0, "{report}");
}

/// Every base64 run that encodes `secret` alone, at each of the three
/// alignments it can have inside a longer payload.
fn base64_forms(secret: &str) -> Vec<String> {
    (0..3)
        .map(|shift| {
            let mut bytes = vec![0u8; shift];
            bytes.extend_from_slice(secret.as_bytes());
            let encoded = STANDARD.encode(&bytes);
            let start = if shift == 0 { 0 } else { 4 };
            encoded[start..4 * (bytes.len() / 3)].to_string()
        })
        .collect()
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}
