//! The demo chat backend's API contract.

use std::sync::Arc;
use std::time::Duration;

use http::{Method, StatusCode};
use http_body_util::BodyExt;
use serde_json::{Value, json};
use tapedeck::demo::backend::{BackendConfig, DemoBackend, Stats};
use tapedeck::demo::script::ChatClient;
use tapedeck::shutdown::Shutdown;
use tokio::net::TcpListener;

use crate::support::demo_login;

async fn start(config: BackendConfig) -> (DemoBackend, ChatClient) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let backend = DemoBackend::start(listener, config, Shutdown::new()).expect("start backend");
    let client = ChatClient::new(&backend.url(), "contract-test");
    (backend, client)
}

async fn conversation(client: &ChatClient, token: &str) -> String {
    let r = client
        .call(
            Method::POST,
            "/api/conversations",
            Some(token),
            &[],
            Some(json!({"title": "t"})),
        )
        .await
        .expect("create");
    assert_eq!(r.status, StatusCode::CREATED);
    r.json()["id"].as_str().expect("id").to_string()
}

async fn stats(client: &ChatClient) -> Stats {
    let r = client
        .call(Method::GET, "/api/stats", None, &[], None)
        .await
        .expect("stats");
    serde_json::from_slice(&r.body).expect("stats json")
}

#[tokio::test]
async fn login_hands_out_distinct_tokens_and_other_routes_need_one() {
    let (_backend, client) = start(BackendConfig::default()).await;
    let a = demo_login(&client, "ann").await;
    let b = demo_login(&client, "ann").await;
    assert_ne!(a, b, "a token is random per login");
    let r = client
        .call(Method::POST, "/api/conversations", None, &[], None)
        .await
        .expect("call");
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    let r = client
        .call(
            Method::POST,
            "/api/conversations",
            Some("forged"),
            &[],
            None,
        )
        .await
        .expect("call");
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    let r = client
        .call(
            Method::POST,
            "/api/login",
            None,
            &[],
            Some(json!({"user": "ann"})),
        )
        .await
        .expect("call");
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    let s = stats(&client).await;
    assert_eq!((s.users, s.logins), (1, 2));
}

#[tokio::test]
async fn with_accounts_only_their_users_log_in_and_only_with_their_passwords() {
    let accounts = [("ann".to_string(), "pw-ann".to_string())].into();
    let (_backend, client) = start(BackendConfig {
        accounts: Some(Arc::new(accounts)),
        ..BackendConfig::default()
    })
    .await;
    let login = |user: &str, password: &str| {
        client.call(
            Method::POST,
            "/api/login",
            None,
            &[],
            Some(json!({"user": user, "password": password})),
        )
    };
    let r = login("ann", "pw-ann").await.expect("call");
    assert_eq!(r.status, StatusCode::OK);
    for (user, password, why) in [
        ("ann", "redacted:0123456789abcdef", "wrong password"),
        ("bob", "pw-ann", "no such user"),
    ] {
        let r = login(user, password).await.expect("call");
        assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{user}");
        assert_eq!(r.json()["error"], why);
    }
    let s = stats(&client).await;
    assert_eq!((s.users, s.logins), (1, 1));
}

#[tokio::test]
async fn idempotent_sends_return_the_same_message_and_store_it_once() {
    let (_backend, client) = start(BackendConfig::default()).await;
    let token = demo_login(&client, "ann").await;
    let conv = conversation(&client, &token).await;
    let path = format!("/api/conversations/{conv}/messages");
    let key = [("idempotency-key", "k-1")];
    let first = client
        .call(
            Method::POST,
            &path,
            Some(&token),
            &key,
            Some(json!({"text": "hi"})),
        )
        .await
        .expect("send");
    let again = client
        .call(
            Method::POST,
            &path,
            Some(&token),
            &key,
            Some(json!({"text": "hi"})),
        )
        .await
        .expect("resend");
    assert_eq!(
        (first.status, again.status),
        (StatusCode::CREATED, StatusCode::CREATED)
    );
    assert_eq!(first.json()["message"]["id"], again.json()["message"]["id"]);

    let put = format!("{path}/txn-1");
    let p1 = client
        .call(
            Method::PUT,
            &put,
            Some(&token),
            &[],
            Some(json!({"text": "yo"})),
        )
        .await
        .expect("put");
    let p2 = client
        .call(
            Method::PUT,
            &put,
            Some(&token),
            &[],
            Some(json!({"text": "yo"})),
        )
        .await
        .expect("put again");
    assert_eq!((p1.status, p2.status), (StatusCode::OK, StatusCode::OK));
    assert_eq!(p1.json()["message_id"], p2.json()["message_id"]);

    let s = stats(&client).await;
    assert_eq!((s.messages, s.duplicate_sends_suppressed), (2, 2));

    let missing = client
        .call(
            Method::POST,
            "/api/conversations/c_nope/messages",
            Some(&token),
            &[],
            Some(json!({"text": "x"})),
        )
        .await
        .expect("call");
    assert_eq!(missing.status, StatusCode::NOT_FOUND);
    let bad = client
        .call(
            Method::POST,
            &path,
            Some(&token),
            &[("content-type", "application/json")],
            None,
        )
        .await
        .expect("call");
    assert_eq!(
        bad.status,
        StatusCode::BAD_REQUEST,
        "an empty body is not JSON"
    );
}

#[tokio::test]
async fn history_pages_follow_server_cursors_and_reject_bad_or_foreign_ones() {
    let (_backend, client) = start(BackendConfig::default()).await;
    let token = demo_login(&client, "ann").await;
    let conv = conversation(&client, &token).await;
    let other = conversation(&client, &token).await;
    let path = format!("/api/conversations/{conv}/messages");
    for i in 0..5 {
        let r = client
            .call(
                Method::POST,
                &path,
                Some(&token),
                &[],
                Some(json!({"text": format!("m{i}")})),
            )
            .await
            .expect("send");
        assert_eq!(r.status, StatusCode::CREATED);
    }
    let mut texts = Vec::new();
    let mut url = format!("{path}?limit=2");
    let mut first_cursor = None;
    loop {
        let page = client
            .call(Method::GET, &url, Some(&token), &[], None)
            .await
            .expect("page");
        assert_eq!(page.status, StatusCode::OK);
        let v = page.json();
        for m in v["messages"].as_array().expect("messages") {
            texts.push(m["text"].as_str().expect("text").to_string());
        }
        match v["next_cursor"].as_str() {
            Some(c) => {
                first_cursor.get_or_insert(c.to_string());
                url = format!("{path}?limit=2&cursor={c}");
            }
            None => break,
        }
    }
    assert_eq!(texts, ["m0", "m1", "m2", "m3", "m4"]);
    let cursor = first_cursor.expect("a cursor was handed out");
    let bad = client
        .call(
            Method::GET,
            &format!("{path}?cursor=cur_made_up"),
            Some(&token),
            &[],
            None,
        )
        .await
        .expect("call");
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
    let foreign = client
        .call(
            Method::GET,
            &format!("/api/conversations/{other}/messages?cursor={cursor}"),
            Some(&token),
            &[],
            None,
        )
        .await
        .expect("call");
    assert_eq!(
        foreign.status,
        StatusCode::BAD_REQUEST,
        "a cursor belongs to its conversation"
    );
}

#[tokio::test]
async fn the_bot_reply_streams_event_by_event() {
    let config = BackendConfig {
        reply_tokens: 4,
        token_interval: Duration::from_millis(30),
        ..BackendConfig::default()
    };
    let (backend, client) = start(config).await;
    let token = demo_login(&client, "ann").await;
    let conv = conversation(&client, &token).await;
    let http = crate::support::client();
    let req = http::Request::get(format!("{}/api/conversations/{conv}/reply", backend.url()))
        .header("authorization", format!("Bearer {token}"))
        .body(http_body_util::Full::new(bytes::Bytes::new()))
        .expect("request");
    let resp = http.request(req).await.expect("response");
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.headers()["content-type"], "text/event-stream");
    let mut body = resp.into_body();
    let first = body
        .frame()
        .await
        .expect("frame")
        .expect("ok")
        .into_data()
        .expect("data");
    let first = String::from_utf8(first.to_vec()).expect("utf8");
    assert!(first.starts_with("data: {"), "{first}");
    assert!(
        !first.contains("[DONE]"),
        "the first event arrives before the stream ends"
    );
    let rest = body.collect().await.expect("rest").to_bytes();
    let rest = String::from_utf8(rest.to_vec()).expect("utf8");
    assert!(rest.ends_with("data: [DONE]\n\n"), "{rest}");
    let events = first.matches("data: ").count() + rest.matches("data: ").count();
    assert_eq!(events, 5, "four tokens and [DONE]");
    assert_eq!(stats(&client).await.replies_streamed, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_slow_worker_answers_503_past_the_queue_timeout() {
    let config = BackendConfig {
        workers: 1,
        service_time: Duration::from_millis(800),
        queue_timeout: Duration::from_millis(50),
        ..BackendConfig::default()
    };
    let (_backend, client) = start(config).await;
    let body = || Some(json!({"user": "ann", "password": "pw"}));
    let (a, b) = tokio::join!(
        client.call(Method::POST, "/api/login", None, &[], body()),
        client.call(Method::POST, "/api/login", None, &[], body()),
    );
    let mut statuses = [a.expect("a").status.as_u16(), b.expect("b").status.as_u16()];
    statuses.sort_unstable();
    assert_eq!(statuses, [200, 503]);
    assert_eq!(stats(&client).await.overloaded, 1);
}

#[tokio::test]
async fn a_token_past_its_rate_limit_gets_429_with_retry_after() {
    let config = BackendConfig {
        // One request, then one every two seconds.
        rate_limit: Some(0.5),
        ..BackendConfig::default()
    };
    let (backend, client) = start(config).await;
    let token = demo_login(&client, "ann").await;
    let mut statuses = Vec::new();
    for _ in 0..4 {
        let r = client
            .call(Method::POST, "/api/conversations", Some(&token), &[], None)
            .await
            .expect("call");
        statuses.push(r.status.as_u16());
    }
    assert_eq!(statuses[0], 201);
    assert!(statuses[1..].contains(&429), "{statuses:?}");
    let http = crate::support::client();
    let req = http::Request::post(format!("{}/api/conversations", backend.url()))
        .header("authorization", format!("Bearer {token}"))
        .body(http_body_util::Full::new(bytes::Bytes::new()))
        .expect("request");
    let resp = http.request(req).await.expect("response");
    assert_eq!(resp.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(resp.headers().contains_key("retry-after"));
    assert!(stats(&client).await.rate_limited >= 2);
}

#[tokio::test]
async fn garbage_input_gets_4xx_and_the_backend_keeps_serving() {
    let (backend, client) = start(BackendConfig::default()).await;
    let raw = crate::support::raw_status(
        backend.local_addr(),
        b"POST /api/login HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\n{{{{{",
    )
    .await;
    assert_eq!(raw, 400);
    let r = client
        .call(Method::GET, "/nope", None, &[], None)
        .await
        .expect("call");
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    let v: Value = r.json();
    assert!(v["error"].is_string());
    demo_login(&client, "still-up").await;
}

#[tokio::test]
async fn json_is_gzipped_for_clients_that_take_it_and_encoded_bodies_are_read() {
    use tapedeck::codec::Coding;

    let (backend, _) = start(BackendConfig::default()).await;
    let http = crate::support::client();
    let url = format!("{}/api/login", backend.url());
    let login = json!({"user": "ann", "password": "pw"}).to_string();
    let post = |accept: &'static str, encoding: &'static str, body: Vec<u8>| {
        let (http, url) = (&http, &url);
        async move {
            let mut headers = vec![("content-type", "application/json")];
            headers.extend([("accept-encoding", accept), ("content-encoding", encoding)]);
            crate::support::send(http, Method::POST, url, &headers, body.into()).await
        }
    };

    // Asked for gzip: gzip, and Vary says it depends on the asking.
    let (status, headers, body) = post("gzip, br", "identity", login.clone().into()).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(headers["content-encoding"], "gzip");
    assert_eq!(headers["vary"], "accept-encoding");
    let body = Coding::Gzip.decode(&body).expect("gzip");
    let answer: Value = serde_json::from_slice(&body).expect("json");
    assert_eq!(answer["user"], "ann");

    // gzip refused with q=0: plain JSON.
    let (_, headers, body) = post("gzip;q=0", "identity", login.clone().into()).await;
    assert!(!headers.contains_key("content-encoding"));
    assert!(serde_json::from_slice::<Value>(&body).is_ok());

    // Request bodies in gzip, deflate, br or zstd are read; others are
    // refused.
    for coding in ["gzip", "deflate", "br", "zstd"] {
        let c = Coding::parse(coding.as_bytes())
            .expect("known")
            .expect("a coding");
        let (status, ..) = post("identity", coding, c.encode(login.as_bytes())).await;
        assert_eq!(status, StatusCode::OK, "{coding}");
    }
    let (status, ..) = post("identity", "compress", login.clone().into()).await;
    assert_eq!(status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    let (status, ..) = post("identity", "gzip", login.into()).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "not gzip at all");
}

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn socket(backend: &DemoBackend, token: &str) -> Socket {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let mut request = format!("ws://{}/api/ws", backend.local_addr())
        .into_client_request()
        .expect("request");
    request.headers_mut().insert(
        http::header::AUTHORIZATION,
        format!("Bearer {token}").parse().expect("header"),
    );
    tokio_tungstenite::connect_async(request)
        .await
        .expect("handshake")
        .0
}

async fn say(socket: &mut Socket, command: Value) -> Value {
    use futures_util::SinkExt;
    socket
        .send(tokio_tungstenite::tungstenite::Message::text(
            command.to_string(),
        ))
        .await
        .expect("send");
    heard(socket).await
}

async fn heard(socket: &mut Socket) -> Value {
    use futures_util::StreamExt;
    use tokio_tungstenite::tungstenite::Message;
    loop {
        match socket.next().await {
            Some(Ok(Message::Text(t))) => return serde_json::from_str(&t).expect("json frame"),
            Some(Ok(Message::Close(frame))) => {
                return json!({ "closed": frame.map(|f| u16::from(f.code)) });
            }
            Some(Ok(_)) => continue,
            other => panic!("socket ended: {other:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_websocket_joins_pushes_typing_and_messages_and_acks_sends_once() {
    let (backend, client) = start(BackendConfig::default()).await;
    let ann = demo_login(&client, "ann").await;
    let bob = demo_login(&client, "bob").await;
    let room = conversation(&client, &ann).await;

    // The handshake needs a token, and is a handshake.
    let url = format!("ws://{}/api/ws", backend.local_addr());
    match tokio_tungstenite::connect_async(url.as_str()).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => {
            assert_eq!(resp.status(), StatusCode::UNAUTHORIZED)
        }
        other => panic!("expected a 401 handshake, got {other:?}"),
    }
    let r = client
        .call(Method::GET, "/api/ws", Some(&ann), &[], None)
        .await
        .expect("call");
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert!(String::from_utf8_lossy(&r.body).contains("Upgrade: websocket"));

    let mut a = socket(&backend, &ann).await;
    let mut b = socket(&backend, &bob).await;
    let join = json!({"type": "join", "conversation": room});
    assert_eq!(say(&mut a, join.clone()).await["members"], 1);
    assert_eq!(say(&mut b, join).await["members"], 2);

    let typing = say(&mut a, json!({"type": "typing", "conversation": room})).await;
    assert_eq!(
        (&typing["type"], &typing["told"]),
        (&json!("typing_sent"), &json!(1))
    );
    let pushed = heard(&mut b).await;
    assert_eq!(
        (&pushed["type"], &pushed["user"]),
        (&json!("typing"), &json!("ann"))
    );

    let send = json!({"type": "send", "conversation": room, "client_id": "cl_1", "text": "hello"});
    let ack = say(&mut a, send.clone()).await;
    assert_eq!(
        (&ack["type"], &ack["client_id"]),
        (&json!("ack"), &json!("cl_1"))
    );
    let id = ack["message_id"].as_str().expect("message id").to_string();
    let pushed = heard(&mut b).await;
    assert_eq!(
        (&pushed["type"], &pushed["message"]["id"]),
        (&json!("message"), &json!(id))
    );
    // The same client id again: the same message, stored once, no push.
    assert_eq!(say(&mut a, send).await["message_id"], json!(id));

    // A message sent over REST reaches the sockets of the conversation.
    let r = client
        .call(
            Method::POST,
            &format!("/api/conversations/{room}/messages"),
            Some(&bob),
            &[],
            Some(json!({"text": "from rest"})),
        )
        .await
        .expect("post");
    assert_eq!(r.status, StatusCode::CREATED);
    for s in [&mut a, &mut b] {
        assert_eq!(heard(s).await["message"]["text"], "from rest");
    }

    // Errors are frames; the socket keeps serving.
    for (bad, says) in [
        (
            json!({"type": "join", "conversation": "c_nope"}),
            "no such conversation",
        ),
        (
            json!({"type": "dance", "conversation": room}),
            "unknown type",
        ),
        (json!({"type": "send", "conversation": room}), "client_id"),
        (json!("not an object"), "conversation"),
    ] {
        let answer = say(&mut a, bad).await;
        assert_eq!(answer["type"], "error");
        assert!(
            answer["error"].as_str().is_some_and(|e| e.contains(says)),
            "{answer}"
        );
    }

    // Read marks take an id the conversation holds.
    let read_path = format!("/api/conversations/{room}/read");
    let read = |id: &str| {
        client.call(
            Method::POST,
            &read_path,
            Some(&ann),
            &[],
            Some(json!({"message_id": id})),
        )
    };
    let r = read(&id).await.expect("read");
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.json()["unread"], 1);
    assert_eq!(
        read("m_stale").await.expect("read").status,
        StatusCode::NOT_FOUND
    );

    let s = stats(&client).await;
    assert_eq!((s.sockets, s.messages, s.reads), (2, 2, 1));
    assert_eq!(s.duplicate_sends_suppressed, 1);
    // typing to b, ann's message to b, the REST message to both.
    assert_eq!(s.pushes, 4);
    assert_eq!(s.socket_frames, 2 + 1 + 2 + 4);

    // Stopping the backend closes open sockets with 1001 (going away).
    let stopping = tokio::spawn(backend.stop());
    assert_eq!(heard(&mut a).await["closed"], 1001);
    stopping.await.expect("stopped");
}
