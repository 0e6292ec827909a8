//! Dynamic values end to end: demo traffic recorded through the proxy and
//! replayed against demo backends, checked on the server side.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use http::{Method, StatusCode};
use serde_json::json;
use tapedeck::capture::Store;
use tapedeck::demo::backend::{BackendConfig, DemoBackend};
use tapedeck::demo::script::{ChatClient, Population};
use tapedeck::profile::Profile;
use tapedeck::proxy::Recording;
use tapedeck::replay::correlate::Credentials;
use tapedeck::report::Report;

use crate::support::{
    demo_backend, demo_backend_with, demo_recording, demo_stats, record_population, replay_with,
};

mod versions;

/// A proxy in front of `upstream` recording into `dir/capture.db`.
async fn recording(
    upstream: &DemoBackend,
    dir: &tempfile::TempDir,
    keep_credentials: bool,
) -> (Recording, PathBuf) {
    let capture = dir.path().join("capture.db");
    let rec = demo_recording(upstream, &capture, keep_credentials).await;
    (rec, capture)
}

fn population() -> Population {
    Population {
        users: 4,
        messages_per_user: 4,
        ramp: Duration::from_millis(50),
        think: (Duration::from_millis(5), Duration::from_millis(20)),
        seed: 3,
    }
}

async fn record_demo(
    upstream: &DemoBackend,
    dir: &tempfile::TempDir,
    keep_credentials: bool,
) -> PathBuf {
    let capture = dir.path().join("capture.db");
    record_population(upstream, &capture, population(), keep_credentials).await;
    capture
}

async fn replay_5x(capture: &Path, target: &DemoBackend, correlate: bool, speed: f64) -> Report {
    replay_5x_with(capture, target, correlate, speed, Credentials::default()).await
}

async fn replay_5x_with(
    capture: &Path,
    target: &DemoBackend,
    correlate: bool,
    speed: f64,
    credentials: Credentials,
) -> Report {
    let store = Store::open(capture).await.expect("open");
    replay_with(&store, &target.url(), Profile::single(5, speed), |c| {
        c.seed = Some(11);
        c.correlate = correlate;
        c.credentials = Arc::new(credentials);
    })
    .await
}

/// A demo backend where only the scripted users log in, with their
/// passwords.
async fn backend_with_accounts() -> DemoBackend {
    demo_backend_with(BackendConfig {
        accounts: Some(Arc::new(population().accounts())),
        ..BackendConfig::default()
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_5x_every_world_does_its_own_work_with_no_4xx() {
    let dir = tempfile::tempdir().expect("tempdir");
    let recorded_on = backend_with_accounts().await;
    let capture = record_demo(&recorded_on, &dir, false).await;
    let recorded = demo_stats(&recorded_on).await;

    // The backend gzips its JSON for the script, as a web server does; the
    // capture keeps the login's answer gzip-encoded, with the token inside
    // redacted.
    let store = Store::open(&capture).await.expect("open");
    let run = store.run(None).await.expect("run");
    let login = store
        .session_exchanges(run.id, 1)
        .await
        .expect("session")
        .into_iter()
        .find(|e| e.uri == "/api/login")
        .expect("a login");
    assert_eq!(login.response_header("content-encoding"), Some("gzip"));
    let body = tapedeck::codec::Coding::Gzip
        .decode(&login.response_body)
        .expect("gzip");
    let body: serde_json::Value = serde_json::from_slice(&body).expect("json");
    assert!(
        body["token"]
            .as_str()
            .is_some_and(|t| t.starts_with("redacted:")),
        "{body}"
    );

    // The capture holds the passwords redacted: without them every world's
    // login is refused, and nothing that needs its token is sent.
    let refusing = backend_with_accounts().await;
    let report = replay_5x(&capture, &refusing, true, 4.0).await;
    let s = &report.stages[0];
    assert_eq!(
        s.status_counts,
        [("401".to_string(), 20)].into(),
        "only the logins went out"
    );
    let exchanges = run.exchanges as u64;
    assert_eq!(s.dependent_skipped, 5 * (exchanges - 4));
    // The report says what they waited for: first the token the refused
    // logins would have handed out, then what the requests skipped for it
    // would have.
    assert!(
        s.dependent_skips
            .iter()
            .any(|d| d.from == "POST /api/login" && d.waited_for.starts_with("redacted:")),
        "{:?}",
        s.dependent_skips
    );
    assert_eq!(
        s.dependent_skips.iter().map(|d| d.count).sum::<u64>(),
        s.dependent_skipped
    );
    assert_eq!(demo_stats(&refusing).await.logins, 0);

    let fresh = backend_with_accounts().await;
    let credentials = Credentials {
        users: population().accounts(),
        ..Credentials::default()
    };
    let report = replay_5x_with(&capture, &fresh, true, 4.0, credentials).await;
    let s = &report.stages[0];
    assert_eq!(s.errors, 0, "{:?}", s.error_kinds);
    assert_eq!(s.unresolved_values, 0, "every recorded value had a source");
    assert_eq!(s.status_mismatches, 0, "{:?}", s.status_counts);
    assert!(
        s.status_counts.keys().all(|k| !k.starts_with('4')),
        "{:?}",
        s.status_counts
    );
    assert_eq!((s.dependent_skipped, s.suspected_dedup), (0, 0));
    for kind in ["correlated", "credential", "nonce"] {
        assert!(
            s.substitutions_by_kind.get(kind).is_some_and(|n| *n > 0),
            "{kind}: {:?}",
            s.substitutions_by_kind
        );
    }
    let live = demo_stats(&fresh).await;
    assert_eq!(live.logins, 5 * recorded.logins);
    assert_eq!(
        live.users, recorded.users,
        "a user of the credentials file stays one account in every world"
    );
    assert_eq!(live.conversations, 5 * recorded.conversations);
    assert_eq!(
        live.messages,
        5 * recorded.messages,
        "every world's sends were stored"
    );
    // The script's one client retry per user is replayed per world, and is
    // the only duplicate the backend suppresses: no world's send is taken for
    // another's.
    assert_eq!(
        live.duplicate_sends_suppressed,
        5 * recorded.duplicate_sends_suppressed
    );
    // Each user's socket send is acknowledged with a message id that only
    // the socket hands out; the read mark after it names that id. Every
    // world's read mark found its own world's message: the id was learned
    // from a server frame.
    assert_eq!((recorded.sockets, recorded.reads), (4, 4));
    assert_eq!((live.sockets, live.reads), (20, 20));
    let ws = s
        .routes
        .iter()
        .find(|r| r.route == "GET /api/ws")
        .and_then(|r| r.websocket.as_ref())
        .expect("websocket route");
    assert_eq!(
        (ws.sockets, ws.frames_sent, ws.frames_received),
        (20, 80, 80)
    );
    assert_eq!(
        ws.close_codes.get("1000"),
        Some(&20),
        "{:?}",
        ws.close_codes
    );

    // What backends nobody here wrote do, done by every world on its own:
    // the login names its user in `identity.login_id`; each user's first
    // message carries a UUID of its client's, and its edit addresses that
    // UUID with the ETag the send answered with (a world that reused the
    // recorded UUID would get 409, a recorded ETag 412); the search names
    // the conversation inside a filter expression and lists its hits in
    // this backend's own order.
    assert_eq!((recorded.edits, recorded.searches), (4, 4));
    assert_eq!(
        live.edits,
        5 * recorded.edits,
        "every world's edit was stored"
    );
    assert_eq!(live.searches, 5 * recorded.searches);
    assert_eq!(
        (
            live.edit_conflicts,
            live.edits_refused,
            live.duplicate_client_ids
        ),
        (0, 0, 0)
    );
    assert_eq!(
        live.per_user.keys().collect::<Vec<_>>(),
        recorded.per_user.keys().collect::<Vec<_>>()
    );
    for (user, did) in &recorded.per_user {
        let live = &live.per_user[user];
        assert_eq!(did.edits, 1, "{user}");
        assert_eq!(
            (live.logins, live.messages, live.edits),
            (5 * did.logins, 5 * did.messages, 5 * did.edits),
            "{user}: each edit by its message's author, in every world"
        );
    }
    assert_eq!((s.conflicting_values, s.shape_mismatches), (0, 0));
    let route = |name: &str| {
        s.routes
            .iter()
            .find(|r| r.route == name)
            .unwrap_or_else(|| panic!("route {name}"))
    };
    assert_eq!(
        route("PATCH /api/conversations/{id}/messages/{id}").requests,
        20
    );
    assert_eq!(route("GET /api/messages").requests, 20);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verbatim_replay_is_deduplicated_live_and_rejected_fresh() {
    let dir = tempfile::tempdir().expect("tempdir");
    let recorded_on = demo_backend().await;
    let capture = record_demo(&recorded_on, &dir, true).await;
    let before = demo_stats(&recorded_on).await;

    // Against the backend that was recorded (tokens and ids still valid):
    // the sends succeed, but the backend deduplicates them; the sends that
    // name a client-chosen id are refused (the sender used it already),
    // and so are the edits (their ETag is the recorded one, made stale by
    // the recorded edit).
    let report = replay_5x(&capture, &recorded_on, false, 4.0).await;
    let s = &report.stages[0];
    let refused = |status: &str| s.status_counts.get(status).copied().unwrap_or(0);
    assert_eq!(
        (refused("409"), refused("412")),
        (20, 20),
        "{:?}",
        s.status_counts
    );
    assert_eq!(s.errors, 40, "{:?}", s.error_kinds);
    assert_eq!(s.error_kinds["http_4xx"], 40);
    let after = demo_stats(&recorded_on).await;
    assert_eq!(after.edits, before.edits, "no edit went through");
    assert_eq!(after.edit_conflicts, before.edit_conflicts + 20);
    assert_eq!(after.duplicate_client_ids, before.duplicate_client_ids + 20);
    assert_eq!(after.messages, before.messages, "no new message was stored");
    // Every send but the one with a client-chosen id per user.
    assert!(
        after.duplicate_sends_suppressed
            > before.duplicate_sends_suppressed + 5 * (before.messages - 4) - 1
    );
    let dedup = |route: &str| {
        s.routes
            .iter()
            .find(|r| r.route == route)
            .map_or(0, |r| r.suspected_dedup)
    };
    assert!(
        dedup("POST /api/conversations/{id}/messages") > 0,
        "{:?}",
        s.routes
    );
    assert!(
        dedup("PUT /api/conversations/{id}/messages/{id}") > 0,
        "{:?}",
        s.routes
    );

    // Verbatim against a fresh backend: stale tokens and ids.
    let fresh = demo_backend().await;
    let report = replay_5x(&capture, &fresh, false, 4.0).await;
    let s = &report.stages[0];
    assert!(s.error_kinds["http_4xx"] > 0, "{:?}", s.status_counts);
    assert!(s.status_counts.contains_key("401"), "{:?}", s.status_counts);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_room_one_user_creates_is_the_room_the_others_of_its_world_post_to() {
    let dir = tempfile::tempdir().expect("tempdir");
    let recorded_on = demo_backend().await;
    let (rec, capture) = recording(&recorded_on, &dir, false).await;
    let base = format!("http://{}", rec.local_addr());
    let (alice, bob) = (
        ChatClient::new(&base, "alice-app"),
        ChatClient::new(&base, "bob-app"),
    );
    let a = crate::support::demo_login(&alice, "alice-01").await;
    let room = alice
        .call(
            Method::POST,
            "/api/conversations",
            Some(&a),
            &[],
            Some(json!({"title": "team"})),
        )
        .await
        .expect("create")
        .json()["id"]
        .as_str()
        .expect("id")
        .to_string();
    // Bob joins a while later, as people do (recorded think time).
    tokio::time::sleep(Duration::from_millis(300)).await;
    let b = crate::support::demo_login(&bob, "bob-0002").await;
    let path = format!("/api/conversations/{room}/messages");
    let sent = bob
        .call(
            Method::POST,
            &path,
            Some(&b),
            &[("idempotency-key", "idem-7c1e2a9b4d")],
            Some(json!({"text": "hi"})),
        )
        .await
        .expect("post");
    assert_eq!(sent.status, StatusCode::CREATED);
    rec.stop().await.expect("stop");

    let fresh = demo_backend().await;
    let report = replay_5x(&capture, &fresh, true, 1.0).await;
    let s = &report.stages[0];
    assert_eq!(s.errors, 0, "{:?}", s.status_counts);
    let live = demo_stats(&fresh).await;
    assert_eq!((live.conversations, live.messages), (5, 5));
    assert_eq!(
        live.conversations_with_messages, 5,
        "each world's Bob posted to his world's room"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streamed_replies_are_timed_chunk_by_chunk_when_recorded_and_replayed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let recorded_on = demo_backend().await;
    let capture = record_demo(&recorded_on, &dir, false).await;
    let store = Store::open(&capture).await.expect("open");
    let run = store.run(None).await.expect("run");
    let (_, exchanges) = crate::support::first_session(&store, run.id).await;
    let reply = exchanges
        .iter()
        .find(|e| e.uri.ends_with("/reply"))
        .expect("a streamed reply");
    // The demo backend streams 12 tokens 15 ms apart, and a final event.
    let chunks = &reply.response_chunks;
    assert!(chunks.len() >= 12, "{chunks:?}");
    assert!(
        chunks.windows(2).all(|w| w[0].0 <= w[1].0),
        "offsets in order"
    );
    assert!(chunks.last().expect("chunks").0 >= 100_000, "{chunks:?}");
    let bytes: i64 = chunks.iter().map(|c| c.1).sum();
    assert_eq!(bytes, reply.response_body_len);
    assert!(
        exchanges
            .iter()
            .filter(|e| !e.uri.ends_with("/reply"))
            .all(|e| e.response_chunks.is_empty())
    );

    let fresh = demo_backend().await;
    let report = replay_5x(&capture, &fresh, true, 4.0).await;
    let routes = &report.stages[0].routes;
    let reply = routes
        .iter()
        .find(|r| r.route.ends_with("/reply"))
        .expect("reply route");
    let stream = reply.stream.as_ref().expect("stream statistics");
    assert_eq!(stream.responses, reply.requests);
    assert!(stream.ttfb_ms.p50 < stream.total_ms.p50, "{stream:?}");
    assert!(
        stream.gap_ms.p50 >= 5.0,
        "tokens come ~15 ms apart: {stream:?}"
    );
    assert!(
        routes
            .iter()
            .filter(|r| !r.route.ends_with("/reply"))
            .all(|r| r.stream.is_none())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn content_encoded_bodies_are_decoded_to_correlate_and_encoded_again() {
    use tapedeck::codec::Coding;

    let dir = tempfile::tempdir().expect("tempdir");
    let recorded_on = demo_backend().await;
    let (rec, capture) = recording(&recorded_on, &dir, false).await;
    let base = format!("http://{}", rec.local_addr());
    // The script's client takes gzip: the login, the room and the send come
    // back gzip-encoded.
    let app = ChatClient::new(&base, "br-app");
    let token = crate::support::demo_login(&app, "carol-01").await;
    let call = |path: String, body: serde_json::Value| {
        let (app, token) = (&app, &token);
        async move {
            let r = app
                .call(Method::POST, &path, Some(token), &[], Some(body))
                .await
                .expect("call");
            assert!(r.status.is_success(), "{path}: {}", r.status);
            r.json()
        }
    };
    let room = call("/api/conversations".into(), json!({"title": "t"})).await["id"]
        .as_str()
        .expect("id")
        .to_string();
    let sent = call(
        format!("/api/conversations/{room}/messages"),
        json!({"text": "hi"}),
    )
    .await;
    let message = sent["message"]["id"].as_str().or(sent["id"].as_str());
    let message = message.expect("message id").to_string();
    // The read mark goes out with a brotli-encoded body naming the message.
    let body = Coding::Brotli.encode(json!({ "message_id": message }).to_string().as_bytes());
    let bearer = format!("Bearer {token}");
    let (status, _, _) = crate::support::send(
        &crate::support::client(),
        Method::POST,
        &format!("{base}/api/conversations/{room}/read"),
        &[
            ("user-agent", "br-app"),
            ("authorization", &bearer),
            ("content-type", "application/json"),
            ("content-encoding", "br"),
        ],
        body.into(),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    rec.stop().await.expect("stop");

    let fresh = demo_backend().await;
    let store = Store::open(&capture).await.expect("open");
    let report = replay_with(&store, &fresh.url(), Profile::single(3, 4.0), |_| {}).await;
    let s = &report.stages[0];
    assert_eq!((s.requests, s.errors), (12, 0), "{:?}", s.status_counts);
    assert_eq!(
        s.unresolved_values, 3,
        "only the redacted password, per world"
    );
    // Each world's read mark named its own world's message: the recorded id
    // was found in the decoded body, replaced, and the body sent brotli
    // again (the backend answers 400 to a body that does not decode).
    let live = demo_stats(&fresh).await;
    assert_eq!((live.messages, live.reads), (3, 3));
}

/// What the paging API saw.
#[derive(Default)]
struct Paging {
    /// Tokens and cursors handed out and not used yet.
    issued: std::collections::HashSet<String>,
    sessions: u64,
    pages: u64,
    refused: u64,
}

/// `POST /session` hands out a token in `X-Auth-Token`; `GET /feed` and
/// `GET /threads` need it, and page with single-use cursors handed out in a
/// `next` link (`links.next`, an absolute URL) and in a `Link` header.
fn paging_api(
    req: &http::Request<hyper::body::Incoming>,
    state: &std::sync::Mutex<Paging>,
) -> http::Response<http_body_util::Full<bytes::Bytes>> {
    let mut s = state.lock().expect("state");
    let fresh = |prefix: &str| format!("{prefix}{:016x}", rand::random::<u64>());
    let host = req
        .headers()
        .get("host")
        .and_then(|h| h.to_str().ok())
        .unwrap_or("")
        .to_string();
    let mut resp = http::Response::builder().header("content-type", "application/json");
    let query: std::collections::HashMap<&str, &str> = req
        .uri()
        .query()
        .unwrap_or("")
        .split('&')
        .filter_map(|p| p.split_once('='))
        .collect();
    let take = |s: &mut Paging, v: Option<&str>| v.is_some_and(|v| s.issued.remove(v));
    let authorized = req
        .headers()
        .get("x-auth-token")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|t| s.issued.contains(t));
    let (status, body) = match (req.method().as_str(), req.uri().path()) {
        ("POST", "/session") => {
            let token = fresh("at_");
            s.issued.insert(token.clone());
            s.sessions += 1;
            resp = resp.header("x-auth-token", token);
            (StatusCode::OK, "{}".to_string())
        }
        (_, "/feed" | "/threads") if !authorized => (StatusCode::UNAUTHORIZED, "{}".into()),
        ("GET", "/feed") => match query.get("page_token") {
            None => {
                let next = fresh("pt_");
                s.issued.insert(next.clone());
                s.pages += 1;
                let link = format!("http://{host}/feed?limit=2&page_token={next}");
                (
                    StatusCode::OK,
                    json!({"items": [1, 2], "links": {"next": link}}).to_string(),
                )
            }
            Some(t) if take(&mut s, Some(t)) => {
                s.pages += 1;
                (
                    StatusCode::OK,
                    json!({"items": [3], "links": {"next": null}}).to_string(),
                )
            }
            Some(_) => (StatusCode::BAD_REQUEST, "{}".into()),
        },
        ("GET", "/threads") => match query.get("after") {
            None => {
                let after = fresh("ta_");
                s.issued.insert(after.clone());
                s.pages += 1;
                resp = resp.header("link", format!("</threads?after={after}>; rel=\"next\""));
                (StatusCode::OK, "[]".into())
            }
            Some(t) if take(&mut s, Some(t)) => {
                s.pages += 1;
                (StatusCode::OK, "[]".into())
            }
            Some(_) => (StatusCode::BAD_REQUEST, "{}".into()),
        },
        _ => (StatusCode::NOT_FOUND, "{}".into()),
    };
    if !status.is_success() {
        s.refused += 1;
    }
    resp.status(status)
        .body(http_body_util::Full::new(body.into()))
        .expect("response")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_in_headers_and_cursors_in_next_links_are_learned() {
    use crate::support::{TestProxy, client, send, serve};
    use std::sync::Mutex;

    let start = || async {
        let state = Arc::new(Mutex::new(Paging::default()));
        let st = state.clone();
        (serve(move |req| paging_api(req, &st)).await, state)
    };
    let (recorded_on, _) = start().await;
    let mut proxy = TestProxy::start(&recorded_on.url).await;
    let http = client();
    let (_, headers, _) = send(
        &http,
        Method::POST,
        &proxy.url("/session"),
        &[],
        Default::default(),
    )
    .await;
    let token = headers["x-auth-token"].to_str().expect("token").to_string();
    let get = |path: String| {
        let (http, url, token) = (&http, proxy.url(&path), token.clone());
        async move {
            let (status, headers, body) = send(
                http,
                Method::GET,
                &url,
                &[("x-auth-token", &token)],
                Default::default(),
            )
            .await;
            assert_eq!(status, StatusCode::OK, "{url}");
            (headers, body)
        }
    };
    let (_, body) = get("/feed?limit=2".into()).await;
    let next: serde_json::Value = serde_json::from_slice(&body).expect("json");
    let next = next["links"]["next"]
        .as_str()
        .expect("next link")
        .to_string();
    let path = &next[next.find("/feed").expect("path")..];
    get(path.to_string()).await;
    let (headers, _) = get("/threads".into()).await;
    let link = headers["link"].to_str().expect("link").to_string();
    get(link[1..link.find('>').expect("<url>")].to_string()).await;
    proxy.stop().await;

    let (fresh, state) = start().await;
    let store = Store::open(&proxy.capture).await.expect("open");
    let report = replay_with(&store, &fresh.url, Profile::single(3, 4.0), |_| {}).await;
    let s = &report.stages[0];
    assert_eq!((s.requests, s.errors), (15, 0), "{:?}", s.status_counts);
    let st = state.lock().expect("state");
    // Every world used its own token (from a header) and its own
    // single-use cursors (from a JSON link and a Link header).
    assert_eq!((st.sessions, st.pages, st.refused), (3, 12, 0));
}
