//! Profile rules override the heuristics where the heuristics alone are
//! wrong: a short numeric id they refuse to map, and a client value they
//! take for a nonce. Recorded through the proxy from an in-process items
//! API, replayed at 5x against a fresh one, checked on the server side.

use std::collections::HashSet;
use std::path::Path;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use tapedeck::capture::Store;
use tapedeck::profile::Profile;
use tapedeck::report::Report;

use crate::support::{Served, TestProxy, client, replay_with, send, serve};

/// The one device the items API knows.
const DEVICE: &str = "dev-8f3k2m9q";

#[derive(Default)]
struct Items {
    next: u64,
    live: HashSet<u64>,
    deleted: u64,
    deletes_seen: u64,
    unknown_devices: u64,
    /// Answer 503 to every create.
    refuse_creates: bool,
}

/// `GET /api/me` needs the registered `X-Device-Id`; `POST /api/items`
/// answers `{"id": n}` with n = 1, 2, 3…; `DELETE /api/items/{n}` answers
/// 204 once and 404 after.
struct ItemsApi {
    url: String,
    state: Arc<Mutex<Items>>,
    _served: Served,
}

impl ItemsApi {
    async fn start() -> ItemsApi {
        let state = Arc::new(Mutex::new(Items::default()));
        let st = state.clone();
        let served = serve(move |req| answer(req, &st)).await;
        ItemsApi {
            url: served.url.clone(),
            state,
            _served: served,
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, Items> {
        self.state.lock().expect("state")
    }
}

fn answer(req: &Request<Incoming>, state: &Mutex<Items>) -> Response<Full<Bytes>> {
    let mut s = state.lock().expect("state");
    let reply = |status: StatusCode, body: String| {
        Response::builder()
            .status(status)
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(body)))
            .expect("response")
    };
    let path = req.uri().path();
    match (req.method(), path) {
        (&Method::GET, "/api/me") => {
            let device = req
                .headers()
                .get("x-device-id")
                .and_then(|v| v.to_str().ok());
            if device == Some(DEVICE) {
                reply(StatusCode::OK, r#"{"me":"ok"}"#.into())
            } else {
                s.unknown_devices += 1;
                reply(
                    StatusCode::FORBIDDEN,
                    r#"{"error":"unknown device"}"#.into(),
                )
            }
        }
        (&Method::POST, "/api/items") if s.refuse_creates => reply(
            StatusCode::SERVICE_UNAVAILABLE,
            r#"{"error":"overloaded"}"#.into(),
        ),
        (&Method::POST, "/api/items") => {
            s.next += 1;
            let id = s.next;
            s.live.insert(id);
            reply(StatusCode::CREATED, format!(r#"{{"id":{id}}}"#))
        }
        (&Method::DELETE, p) => {
            s.deletes_seen += 1;
            let id = p.strip_prefix("/api/items/").and_then(|n| n.parse().ok());
            if id.is_some_and(|id| s.live.remove(&id)) {
                s.deleted += 1;
                reply(StatusCode::NO_CONTENT, String::new())
            } else {
                reply(StatusCode::NOT_FOUND, r#"{"error":"no such item"}"#.into())
            }
        }
        _ => reply(StatusCode::NOT_FOUND, "{}".into()),
    }
}

/// The rules a user of this API writes: the item id is a short number the
/// heuristics will not map, and the device id is a stable value that looks
/// like a nonce (sent once, never handed out).
const RULES: &str = r#"
[[rules.extract]]
var = "item"
route = "POST /api/items"
json = "$.id"

[[rules.inject]]
var = "item"
route = "DELETE /api/items/{id}"
path = 3

[[rules.keep]]
route = "/api/me"
header = "x-device-id"
"#;

fn profile(rules: &str) -> Profile {
    let text =
        format!("version = 1\n[[stage]]\nname = \"5x\"\nmultiplier = 5\nspeed = 4.0\n{rules}");
    Profile::parse(&text, Path::new("rules.toml")).expect("profile")
}

async fn replay_5x(capture: &Path, target: &str, profile: Profile, correlate: bool) -> Report {
    let store = Store::open(capture).await.expect("open");
    replay_with(&store, target, profile, |c| {
        c.seed = Some(5);
        c.correlate = correlate;
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rules_override_heuristics_that_would_be_wrong() {
    let recorded_on = ItemsApi::start().await;
    let mut proxy = TestProxy::start(&recorded_on.url).await;
    let c = client();
    let me = send(
        &c,
        Method::GET,
        &proxy.url("/api/me"),
        &[("x-device-id", DEVICE)],
        Bytes::new(),
    )
    .await;
    assert_eq!(me.0, StatusCode::OK);
    let created = send(
        &c,
        Method::POST,
        &proxy.url("/api/items"),
        &[],
        Bytes::new(),
    )
    .await;
    assert_eq!(&created.2[..], br#"{"id":1}"#);
    let deleted = send(
        &c,
        Method::DELETE,
        &proxy.url("/api/items/1"),
        &[],
        Bytes::new(),
    )
    .await;
    assert_eq!(deleted.0, StatusCode::NO_CONTENT);
    proxy.stop().await;

    // Heuristics alone: "1" is too short to map, so every world deletes
    // item 1 (one succeeds); the device id is sent once and never handed
    // out, so it is regenerated as a nonce and refused.
    let fresh = ItemsApi::start().await;
    let report = replay_5x(&proxy.capture, &fresh.url, profile(""), true).await;
    let s = &report.stages[0];
    assert_eq!(
        s.status_counts.get("404"),
        Some(&4),
        "{:?}",
        s.status_counts
    );
    assert_eq!(
        s.status_counts.get("403"),
        Some(&5),
        "{:?}",
        s.status_counts
    );
    {
        let st = fresh.state();
        assert_eq!((st.deleted, st.unknown_devices), (1, 5));
    }

    // With the rules, each world deletes the item it created and keeps the
    // device id: no 4xx, and the server deleted five items.
    for correlate in [true, false] {
        let fresh = ItemsApi::start().await;
        let report = replay_5x(&proxy.capture, &fresh.url, profile(RULES), correlate).await;
        let s = &report.stages[0];
        assert!(
            s.status_counts.keys().all(|k| !k.starts_with('4')),
            "correlate {correlate}: {:?}",
            s.status_counts
        );
        assert_eq!(s.status_mismatches, 0);
        assert_eq!(s.dependent_skipped, 0);
        let st = fresh.state();
        assert_eq!((st.next, st.deleted, st.live.len()), (5, 5, 0));
        assert_eq!(st.unknown_devices, 0);
        // Four of five worlds got an id other than the recorded 1.
        assert_eq!(
            s.substitutions_by_kind.get("rule"),
            Some(&4),
            "{:?}",
            s.substitutions_by_kind
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_inject_whose_extract_failed_is_skipped_not_sent() {
    let recorded_on = ItemsApi::start().await;
    let mut proxy = TestProxy::start(&recorded_on.url).await;
    let c = client();
    send(
        &c,
        Method::POST,
        &proxy.url("/api/items"),
        &[],
        Bytes::new(),
    )
    .await;
    send(
        &c,
        Method::DELETE,
        &proxy.url("/api/items/1"),
        &[],
        Bytes::new(),
    )
    .await;
    proxy.stop().await;

    // The id is short, so only the rule ties the delete to the create.
    let refusing = ItemsApi::start().await;
    refusing.state().refuse_creates = true;
    let report = replay_5x(&proxy.capture, &refusing.url, profile(RULES), true).await;
    let s = &report.stages[0];
    assert_eq!(
        s.status_counts.get("503"),
        Some(&5),
        "{:?}",
        s.status_counts
    );
    assert_eq!(s.dependent_skipped, 5);
    assert_eq!(
        refusing.state().deletes_seen,
        0,
        "no delete reached the server"
    );
}
