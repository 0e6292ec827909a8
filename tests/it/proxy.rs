//! The recording proxy against an in-process upstream.

use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use bytes::Bytes;
use http::Method;
use http_body_util::BodyExt;
use tapedeck::capture::redact::MARKER_PREFIX;

use crate::support::{self, TestProxy, TestUpstream, digest, pattern, raw_status, send};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_sessions_of_twenty_requests_are_recorded_in_send_order_byte_for_byte() {
    let mut upstream = TestUpstream::start().await;
    let mut proxy = TestProxy::start(&upstream.url()).await;
    let client = support::client();
    let sizes = [0usize, 1, 100, 1000, 4096, 16 * 1024, 65536];
    let tasks: Vec<_> = (0..50u64)
        .map(|s| {
            let client = client.clone();
            let base = proxy.url("");
            tokio::spawn(async move {
                for i in 0..20u64 {
                    let id = format!("{s}-{i}");
                    let seed = s * 100 + i;
                    let resp_len = sizes[((s + i * 3) % 7) as usize];
                    let url = format!("{base}/api/items/{i}?resp={resp_len}&seed={seed}");
                    let (method, body) = if i % 2 == 0 {
                        (Method::GET, Bytes::new())
                    } else {
                        (
                            Method::POST,
                            pattern(seed, sizes[((s * 7 + i) % 7) as usize]),
                        )
                    };
                    let session = format!("sess-{s}");
                    let headers = [
                        ("x-session-id", session.as_str()),
                        ("x-test-id", id.as_str()),
                    ];
                    let (status, _, got) = send(&client, method, &url, &headers, body).await;
                    assert_eq!(status, 200);
                    assert_eq!(
                        got,
                        pattern(seed ^ 0xabcdef, resp_len),
                        "client got the upstream's bytes"
                    );
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.expect("client task");
    }
    let run = proxy.stop().await;
    assert_eq!((run.exchanges, run.sessions, run.dropped), (1000, 50, 0));

    let seen = upstream.drain();
    assert_eq!(seen.len(), 1000);
    let by_id: std::collections::HashMap<String, _> = seen
        .into_iter()
        .map(|s| {
            (
                s.headers["x-test-id"].to_str().expect("ascii").to_string(),
                s,
            )
        })
        .collect();
    let stored = proxy.store.exchanges(run.id).await.expect("read back");
    let sessions = support::group(stored.iter().map(|e| (e.session_no, e)));
    assert_eq!(sessions.len(), 50);
    for (_, exchanges) in sessions {
        // A session header is a credential: stored as its marker, the
        // same for every request of the session.
        let session_key = exchanges[0]
            .request_header("x-session-id")
            .expect("header kept")
            .to_string();
        assert!(session_key.starts_with("redacted:"), "{session_key}");
        let first = exchanges[0].request_header("x-test-id").expect("test id");
        let s = first.split('-').next().expect("session number").to_string();
        for (i, e) in exchanges.iter().enumerate() {
            // Sequence numbers follow send order within the session.
            assert_eq!(e.seq, i as i64 + 1);
            assert_eq!(e.request_header("x-session-id"), Some(session_key.as_str()));
            let id = e.request_header("x-test-id").expect("test id");
            assert_eq!(id, format!("{s}-{i}"));
            let upstream_saw = &by_id[id];
            assert_eq!(
                digest(&e.request_body),
                digest(&upstream_saw.body),
                "request body of {id}"
            );
            assert_eq!(e.request_body_len as usize, upstream_saw.body.len());
            assert_eq!(
                digest(&e.response_body),
                digest(&upstream_saw.answered),
                "response body of {id}"
            );
            assert!(
                !e.request_truncated && !e.response_truncated,
                "{} {} req {} {} resp {} {}",
                e.method,
                e.uri,
                e.request_body_len,
                e.request_truncated,
                e.response_body_len,
                e.response_truncated
            );
            assert_eq!(e.status, Some(200));
            assert!(e.ttfb_us.is_some_and(|t| t <= e.duration_us));
        }
    }
}

#[tokio::test]
async fn a_body_over_the_cap_is_forwarded_whole_and_stored_truncated() {
    let mut upstream = TestUpstream::start().await;
    let mut proxy = TestProxy::start_with(&upstream.url(), |c| c.max_body = 1000).await;
    let body = pattern(9, 5000);
    let (status, _, got) = send(
        &support::client(),
        Method::POST,
        &proxy.url("/upload?resp=3000&seed=1"),
        &[],
        body.clone(),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(got.len(), 3000, "client got the whole response");
    let seen = upstream.drain();
    assert_eq!(seen[0].body, body, "upstream got the whole request");

    let run = proxy.stop().await;
    let e = &proxy.store.exchanges(run.id).await.expect("read")[0];
    assert_eq!(
        (
            e.request_body.len(),
            e.request_body_len,
            e.request_truncated
        ),
        (1000, 5000, true)
    );
    assert_eq!(&e.request_body[..], &body[..1000]);
    assert_eq!(
        (
            e.response_body.len(),
            e.response_body_len,
            e.response_truncated
        ),
        (1000, 3000, true)
    );
    assert_eq!(&e.response_body[..], &got[..1000]);
}

#[tokio::test]
async fn sse_chunks_reach_the_client_before_the_upstream_finishes() {
    let upstream = TestUpstream::start().await;
    let mut proxy = TestProxy::start(&upstream.url()).await;
    let req = http::Request::get(proxy.url("/sse"))
        .body(http_body_util::Full::new(Bytes::new()))
        .expect("request");
    let resp = support::client().request(req).await.expect("response");
    assert_eq!(resp.status(), 200);
    let mut body = resp.into_body();
    // The upstream holds the rest of the stream until released, so this
    // frame can only arrive if the proxy streams instead of buffering.
    let first = body.frame().await.expect("a frame").expect("ok");
    assert_eq!(
        first.data_ref().map(|b| &b[..]),
        Some(&b"data: first\n\n"[..])
    );
    upstream.release();
    let rest = body.collect().await.expect("rest").to_bytes();
    assert_eq!(&rest[..], b"data: rest\n\n");

    let run = proxy.stop().await;
    let e = &proxy.store.exchanges(run.id).await.expect("read")[0];
    assert_eq!(&e.response_body[..], b"data: first\n\ndata: rest\n\n");
    let ttfb = e.ttfb_us.expect("ttfb recorded");
    assert!(
        ttfb < e.duration_us,
        "ttfb {ttfb} µs < duration {} µs",
        e.duration_us
    );
    assert!(e.error_kind.is_none());
}

#[tokio::test]
async fn upstream_down_is_502_and_slow_upstream_is_504_both_recorded() {
    // A port that was just free: bind, note it, close.
    let dead = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr")
    };
    let mut down = TestProxy::start(&format!("http://{dead}")).await;
    let (status, _, body) = send(
        &support::client(),
        Method::GET,
        &down.url("/api/x"),
        &[],
        Bytes::new(),
    )
    .await;
    assert_eq!(status, 502);
    let v: serde_json::Value = serde_json::from_slice(&body).expect("json body");
    assert_eq!(v["error"], "upstream_unreachable");
    let run = down.stop().await;
    let e = &down.store.exchanges(run.id).await.expect("read")[0];
    assert_eq!(
        (e.status, e.error_kind.as_deref()),
        (Some(502), Some("upstream_unreachable"))
    );

    let upstream = TestUpstream::start().await;
    let mut slow = TestProxy::start_with(&upstream.url(), |c| {
        c.upstream_timeout = Duration::from_millis(200);
        c.drain_timeout = Duration::from_secs(2);
    })
    .await;
    let (status, _, body) = send(
        &support::client(),
        Method::GET,
        &slow.url("/hang"),
        &[],
        Bytes::new(),
    )
    .await;
    assert_eq!(status, 504);
    let v: serde_json::Value = serde_json::from_slice(&body).expect("json body");
    assert_eq!(v["error"], "upstream_timeout");
    let run = slow.stop().await;
    let e = &slow.store.exchanges(run.id).await.expect("read")[0];
    assert_eq!(
        (e.status, e.error_kind.as_deref()),
        (Some(504), Some("upstream_timeout"))
    );
    assert_eq!(e.response_body, body.to_vec());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_locked_store_drops_records_but_never_requests() {
    let upstream = TestUpstream::start().await;
    let mut proxy = TestProxy::start_with(&upstream.url(), |c| {
        c.writer.queue_bytes = 64 * 1024;
    })
    .await;
    let client = support::client();
    // Another process-like holder takes the write lock and keeps it.
    let mut blocker = sqlx::sqlite::SqliteConnectOptions::new()
        .filename(&proxy.capture)
        .busy_timeout(Duration::from_secs(5));
    blocker = blocker.pragma("locking_mode", "NORMAL");
    let mut lock = sqlx::ConnectOptions::connect(&blocker)
        .await
        .expect("second connection");
    sqlx::query("BEGIN IMMEDIATE")
        .execute(&mut lock)
        .await
        .expect("take write lock");

    for i in 0..200u64 {
        let (status, _, got) = send(
            &client,
            Method::POST,
            &proxy.url(&format!("/api/fill?resp=100&seed={i}")),
            &[],
            pattern(i, 8 * 1024),
        )
        .await;
        assert_eq!(
            status, 200,
            "request {i} succeeds while the store is locked"
        );
        assert_eq!(got, pattern(i ^ 0xabcdef, 100));
    }
    let metrics = proxy.recording.as_ref().expect("running").metrics();
    assert!(
        metrics.writer.dropped_total() > 0,
        "drops are counted while the store is locked"
    );
    let text = metrics.encode();
    assert!(
        text.contains("tapedeck_records_dropped_total{reason="),
        "{text}"
    );

    sqlx::query("ROLLBACK")
        .execute(&mut lock)
        .await
        .expect("release");
    drop(lock);
    let run = proxy.stop().await;
    assert!(run.dropped > 0, "the run's summary counts the drops");
    assert_eq!(
        run.exchanges + run.dropped,
        200,
        "every exchange is stored or counted as dropped"
    );
}

#[tokio::test]
async fn malformed_oversized_foreign_and_connect_requests_get_4xx_and_the_proxy_keeps_serving() {
    let upstream = TestUpstream::start().await;
    let mut proxy = TestProxy::start(&upstream.url()).await;
    let addr = proxy.addr;
    assert_eq!(raw_status(addr, b"GARBAGE\r\n\r\n").await, 400);
    assert_eq!(
        raw_status(addr, b"GET /x HTTP/1.1\r\nHost\r\n\r\n").await,
        400
    );
    let mut huge = b"GET /x HTTP/1.1\r\nHost: a\r\nX-Big: ".to_vec();
    huge.extend(std::iter::repeat_n(b'a', 64 * 1024));
    huge.extend_from_slice(b"\r\n\r\n");
    assert_eq!(raw_status(addr, &huge).await, 431);
    assert_eq!(
        raw_status(
            addr,
            b"GET http://example.com/ HTTP/1.1\r\nHost: example.com\r\n\r\n"
        )
        .await,
        403
    );
    assert_eq!(
        raw_status(
            addr,
            b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n"
        )
        .await,
        405
    );
    let (status, _, _) = send(
        &support::client(),
        Method::GET,
        &proxy.url("/still/alive"),
        &[],
        Bytes::new(),
    )
    .await;
    assert_eq!(status, 200);
    let run = proxy.stop().await;
    assert_eq!(run.exchanges, 1, "only the forwarded request is recorded");
}

#[tokio::test]
async fn credentials_are_redacted_by_default_with_equal_markers_and_the_file_is_private() {
    let upstream = TestUpstream::start().await;
    let mut proxy = TestProxy::start(&upstream.url()).await;
    let client = support::client();
    let login = Bytes::from_static(br#"{"user":"ann","password":"hunter2"}"#);
    let json = [("content-type", "application/json")];
    send(
        &client,
        Method::POST,
        &proxy.url("/login"),
        &json,
        login.clone(),
    )
    .await;
    let auth = [
        ("authorization", "Bearer tok-123"),
        ("cookie", "session=cookie-secret"),
    ];
    send(
        &client,
        Method::GET,
        &proxy.url("/api/a"),
        &auth,
        Bytes::new(),
    )
    .await;
    send(
        &client,
        Method::GET,
        &proxy.url("/api/b"),
        &auth,
        Bytes::new(),
    )
    .await;
    let run = proxy.stop().await;
    let all = proxy.store.exchanges(run.id).await.expect("read");
    assert_eq!(all.len(), 3);

    let raw = std::fs::read(&proxy.capture).expect("read file");
    for secret in ["hunter2", "tok-123", "cookie-secret"] {
        assert!(
            !raw.windows(secret.len()).any(|w| w == secret.as_bytes()),
            "{secret} must not be in the capture file"
        );
    }
    let login_ex = all.iter().find(|e| e.uri == "/login").expect("login");
    let req = String::from_utf8(login_ex.request_body.clone()).expect("utf8");
    assert!(
        req.starts_with(r#"{"user":"ann","password":"redacted:"#),
        "{req}"
    );
    let resp = String::from_utf8(login_ex.response_body.clone()).expect("utf8");
    let token_marker = resp
        .split('"')
        .find(|s| s.starts_with(MARKER_PREFIX))
        .expect("token marker")
        .to_string();
    let set_cookie = login_ex.response_header("set-cookie").expect("set-cookie");
    assert!(
        set_cookie.starts_with("session=redacted:") && set_cookie.ends_with("; Path=/; HttpOnly")
    );

    let a = all.iter().find(|e| e.uri == "/api/a").expect("a");
    let b = all.iter().find(|e| e.uri == "/api/b").expect("b");
    // The token in the login response and in later headers has one marker.
    assert_eq!(
        a.request_header("authorization"),
        Some(format!("Bearer {token_marker}").as_str())
    );
    assert_eq!(
        a.request_header("authorization"),
        b.request_header("authorization")
    );
    assert_eq!(a.request_header("cookie"), b.request_header("cookie"));
    // The login handed out the token, so the later requests continue its session.
    assert_eq!(a.session_no, login_ex.session_no);

    let mode = std::fs::metadata(&proxy.capture)
        .expect("stat")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
}

#[tokio::test]
async fn keep_credentials_stores_clear_values() {
    let upstream = TestUpstream::start().await;
    let mut proxy =
        TestProxy::start_with(&upstream.url(), |c| c.redaction.keep_credentials = true).await;
    let json = [
        ("content-type", "application/json"),
        ("authorization", "Bearer tok-9"),
    ];
    let login = Bytes::from_static(br#"{"user":"ann","password":"hunter2"}"#);
    send(
        &support::client(),
        Method::POST,
        &proxy.url("/login"),
        &json,
        login.clone(),
    )
    .await;
    let run = proxy.stop().await;
    let e = &proxy.store.exchanges(run.id).await.expect("read")[0];
    assert_eq!(e.request_body, login.to_vec());
    assert_eq!(e.request_header("authorization"), Some("Bearer tok-9"));
    assert_eq!(&e.response_body[..], br#"{"token":"tok-123","user":"ann"}"#);
}

#[tokio::test]
async fn excluded_paths_are_forwarded_but_not_recorded_and_hop_headers_are_handled() {
    let mut upstream = TestUpstream::start().await;
    let mut proxy = TestProxy::start_with(&upstream.url(), |c| {
        c.filter.exclude = vec!["/health*".into()]
    })
    .await;
    let client = support::client();
    let (status, _, _) = send(
        &client,
        Method::GET,
        &proxy.url("/healthz"),
        &[],
        Bytes::new(),
    )
    .await;
    assert_eq!(status, 200);
    let headers = [
        ("connection", "x-private"),
        ("x-private", "1"),
        ("x-kept", "2"),
    ];
    send(
        &client,
        Method::GET,
        &proxy.url("/api/y"),
        &headers,
        Bytes::new(),
    )
    .await;
    let seen = upstream.drain();
    assert_eq!(seen.len(), 2, "both requests were forwarded");
    let y = &seen[1];
    assert!(
        y.headers.get("x-private").is_none(),
        "a header named by Connection is hop-by-hop"
    );
    assert_eq!(y.headers["x-kept"], "2");
    assert_eq!(y.headers["x-forwarded-for"], "127.0.0.1");
    assert_eq!(y.headers["x-forwarded-proto"], "http");
    assert_eq!(y.headers["host"], upstream.addr.to_string().as_str());
    assert_eq!(
        y.headers["x-forwarded-host"],
        proxy.addr.to_string().as_str()
    );
    let run = proxy.stop().await;
    let all = proxy.store.exchanges(run.id).await.expect("read");
    assert_eq!(all.len(), 1);
    assert_eq!(all[0].uri, "/api/y");
}

#[tokio::test]
async fn admin_serves_health_and_prometheus_metrics() {
    let upstream = TestUpstream::start().await;
    let mut proxy = TestProxy::start(&upstream.url()).await;
    let recording = proxy.recording.as_ref().expect("running");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind admin");
    let admin = listener.local_addr().expect("addr");
    let stop = tapedeck::shutdown::Shutdown::new();
    tokio::spawn(tapedeck::proxy::admin::serve(
        listener,
        recording.metrics(),
        stop.clone(),
    ));
    let client = support::client();
    send(
        &client,
        Method::GET,
        &proxy.url("/api/z"),
        &[],
        Bytes::new(),
    )
    .await;
    let (status, _, body) = send(
        &client,
        Method::GET,
        &format!("http://{admin}/healthz"),
        &[],
        Bytes::new(),
    )
    .await;
    assert_eq!((status.as_u16(), &body[..]), (200, &b"ok\n"[..]));
    let (_, _, body) = send(
        &client,
        Method::GET,
        &format!("http://{admin}/metrics"),
        &[],
        Bytes::new(),
    )
    .await;
    let text = String::from_utf8(body.to_vec()).expect("utf8");
    for name in [
        "tapedeck_requests_total 1",
        "tapedeck_records_dropped_total{reason=\"disk_full\"} 0",
        "tapedeck_records_dropped_total{reason=\"queue_full\"} 0",
        "tapedeck_writer_queue_bytes",
        "tapedeck_request_duration_seconds_count 1",
        "tapedeck_live_sessions 1",
    ] {
        assert!(text.contains(name), "{name} missing from\n{text}");
    }
    stop.trigger();
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_upgrades_pass_through_and_the_handshake_is_recorded() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    // An upstream that switches /ws to an echo that upper-cases bytes.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let upstream = format!("http://{}", listener.local_addr().expect("addr"));
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let service = hyper::service::service_fn(
                    |mut req: http::Request<hyper::body::Incoming>| async move {
                        let upgraded = hyper::upgrade::on(&mut req);
                        tokio::spawn(async move {
                            let Ok(io) = upgraded.await else { return };
                            let mut io = hyper_util::rt::TokioIo::new(io);
                            let mut buf = [0u8; 64];
                            while let Ok(n) = io.read(&mut buf).await {
                                if n == 0
                                    || io.write_all(&buf[..n].to_ascii_uppercase()).await.is_err()
                                {
                                    break;
                                }
                            }
                        });
                        Ok::<_, std::convert::Infallible>(
                            http::Response::builder()
                                .status(101)
                                .header("connection", "upgrade")
                                .header("upgrade", "websocket")
                                .body(http_body_util::Empty::<Bytes>::new())
                                .expect("101"),
                        )
                    },
                );
                let _ = hyper_util::server::conn::auto::Builder::new(
                    hyper_util::rt::TokioExecutor::new(),
                )
                .serve_connection_with_upgrades(hyper_util::rt::TokioIo::new(stream), service)
                .await;
            });
        }
    });
    let mut proxy = TestProxy::start(&upstream).await;
    let mut socket = tokio::net::TcpStream::connect(proxy.addr)
        .await
        .expect("connect");
    socket
        .write_all(
            b"GET /ws HTTP/1.1\r\nHost: chat\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
              Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
        )
        .await
        .expect("handshake");
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        assert_eq!(
            socket.read(&mut byte).await.expect("read head"),
            1,
            "head cut short"
        );
        head.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&head).to_ascii_lowercase();
    assert!(head.starts_with("http/1.1 101"), "{head}");
    assert!(head.contains("upgrade: websocket"), "{head}");
    for word in ["hello", "typing"] {
        socket.write_all(word.as_bytes()).await.expect("write");
        let mut echo = vec![0u8; word.len()];
        socket.read_exact(&mut echo).await.expect("echo");
        assert_eq!(echo, word.to_ascii_uppercase().as_bytes());
    }
    // Stopping the proxy with the socket still open cuts it and still
    // records the handshake.
    let run = proxy.stop().await;
    assert_eq!(run.exchanges, 1);
    let mut rest = Vec::new();
    let _ = socket.read_to_end(&mut rest).await;
    assert!(rest.is_empty(), "the proxy closed the socket");
    let ex = &crate::support::first_session(&proxy.store, run.id).await.1[0];
    assert_eq!((ex.uri.as_str(), ex.status), ("/ws", Some(101)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_frames_are_recorded_both_ways_with_secrets_redacted() {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    use tokio_tungstenite::tungstenite::protocol::frame::CloseFrame;
    use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
    let (upstream, _) = crate::support::ws_echo_upstream().await;
    let mut proxy = TestProxy::start(&upstream).await;
    let url = format!("ws://{}/api/ws", proxy.addr);
    let (mut ws, resp) = tokio_tungstenite::connect_async(url)
        .await
        .expect("handshake");
    assert_eq!(resp.status(), 101);
    let typing = r#"{"type":"typing","password":"hunter2"}"#;
    for text in ["hello", typing] {
        ws.send(Message::text(text)).await.expect("send");
        match ws.next().await {
            Some(Ok(Message::Text(t))) => assert_eq!(t.as_str(), text.to_uppercase()),
            other => panic!("expected an echo, got {other:?}"),
        }
    }
    ws.close(Some(CloseFrame {
        code: CloseCode::Normal,
        reason: "bye".into(),
    }))
    .await
    .expect("close");
    while let Some(Ok(_)) = ws.next().await {}
    drop(ws);
    let run = proxy.stop().await;
    assert_eq!(run.exchanges, 1);
    let ex = &crate::support::first_session(&proxy.store, run.id).await.1[0];
    assert_eq!((ex.uri.as_str(), ex.status), ("/api/ws", Some(101)));
    let frames: Vec<(&str, &str, &str)> = ex
        .ws_frames
        .iter()
        .map(|f| (f.dir.as_str(), f.op.as_str(), f.data.as_str()))
        .collect();
    assert_eq!(frames[0], ("client", "text", "hello"));
    assert_eq!(frames[1], ("server", "text", "HELLO"));
    assert_eq!(frames[2].0, "client");
    assert!(
        frames[2].2.contains(r#""type":"typing""#) && !frames[2].2.contains("hunter2"),
        "{frames:?}"
    );
    let closes: Vec<(&str, Option<u16>)> = ex
        .ws_frames
        .iter()
        .filter(|f| f.op == "close")
        .map(|f| (f.dir.as_str(), f.close_code))
        .collect();
    assert_eq!(
        closes,
        [("client", Some(1000)), ("server", Some(1000))],
        "{frames:?}"
    );
    assert!(ex.ws_frames.windows(2).all(|w| w[0].t_us <= w[1].t_us));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websockets_over_h2_streams_are_relayed_recorded_and_replayed() {
    use futures_util::{SinkExt, StreamExt};
    use http::{Request, StatusCode};
    use http_body_util::Empty;
    use hyper_util::rt::{TokioExecutor, TokioIo};
    use tokio_tungstenite::tungstenite::Message;
    use tokio_tungstenite::tungstenite::protocol::Role;
    let (upstream, sockets) = crate::support::ws_echo_upstream().await;
    let mut proxy = TestProxy::start(&upstream).await;
    let tcp = tokio::net::TcpStream::connect(proxy.addr)
        .await
        .expect("connect");
    let (mut sender, conn) = hyper::client::conn::http2::Builder::new(TokioExecutor::new())
        .handshake::<_, Empty<Bytes>>(TokioIo::new(tcp))
        .await
        .expect("h2c");
    tokio::spawn(conn);
    // A plain CONNECT is still refused. Its answer also means the proxy's
    // SETTINGS (which enable extended CONNECT) have arrived.
    let plain = Request::connect("127.0.0.1:1")
        .body(Empty::new())
        .expect("request");
    let resp = sender.send_request(plain).await.expect("answer");
    assert_eq!(resp.status(), StatusCode::METHOD_NOT_ALLOWED);

    let mut req = Request::connect(format!("http://{}/api/ws", proxy.addr))
        .header("sec-websocket-version", "13")
        .body(Empty::new())
        .expect("request");
    req.extensions_mut()
        .insert(hyper::ext::Protocol::from_static("websocket"));
    let mut resp = sender.send_request(req).await.expect("extended CONNECT");
    assert_eq!(resp.status(), StatusCode::OK);
    let io = hyper::upgrade::on(&mut resp).await.expect("switched");
    let mut ws =
        tokio_tungstenite::WebSocketStream::from_raw_socket(TokioIo::new(io), Role::Client, None)
            .await;
    for text in ["hello", "again"] {
        ws.send(Message::text(text)).await.expect("send");
        match ws.next().await {
            Some(Ok(Message::Text(t))) => assert_eq!(t.as_str(), text.to_uppercase()),
            other => panic!("expected an echo, got {other:?}"),
        }
    }
    ws.close(None).await.expect("close");
    while let Some(Ok(_)) = ws.next().await {}
    drop(ws);
    let run = proxy.stop().await;
    assert_eq!(
        run.exchanges, 1,
        "the socket; a refused CONNECT is not recorded"
    );
    let (_, exchanges) = crate::support::first_session(&proxy.store, run.id).await;
    let socket = &exchanges[0];
    assert_eq!(socket.status, Some(101));
    // Recorded as the upstream saw it: an HTTP/1.1 handshake, from an h2
    // client.
    assert_eq!(
        (socket.method.as_str(), socket.uri.as_str()),
        ("GET", "/api/ws")
    );
    assert_eq!(socket.http_version, "HTTP/2");
    let frames: Vec<(&str, &str)> = socket
        .ws_frames
        .iter()
        .filter(|f| f.op == "text")
        .map(|f| (f.dir.as_str(), f.data.as_str()))
        .collect();
    assert_eq!(
        frames,
        [
            ("client", "hello"),
            ("server", "HELLO"),
            ("client", "again"),
            ("server", "AGAIN")
        ]
    );
    // Replayed like any recorded socket.
    let report = crate::support::replay_with(
        &proxy.store,
        &upstream,
        tapedeck::profile::Profile::single(2, 1.0),
        |_| {},
    )
    .await;
    let sent_sockets = sockets.lock().expect("log").clone();
    assert_eq!(sent_sockets.len(), 3, "{sent_sockets:?}");
    assert!(
        sent_sockets[1..]
            .iter()
            .all(|s| *s == ["hello".to_string(), "again".to_string()]),
        "{sent_sockets:?}"
    );
    let stage = &report.stages[0];
    assert_eq!(
        (stage.requests, stage.errors),
        (2, 0),
        "{:?}",
        stage.error_kinds
    );
}
