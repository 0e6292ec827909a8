//! Version numbers in bodies: a notes API with optimistic concurrency
//! (one version counter for all notes, as etcd's revisions or
//! Elasticsearch's sequence numbers) rejects a stale version with 409 in
//! a body and 412 in `If-Match`; recorded through the proxy and replayed
//! at 5x against a fresh one.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::{Value, json};
use tapedeck::capture::Store;
use tapedeck::profile::Profile;
use tapedeck::shutdown::Shutdown;
use tokio::net::TcpListener;

use crate::support::{TestProxy, client, replay_with, send};

/// What the notes API holds and saw.
#[derive(Default)]
struct Notes {
    /// Id → (text, version).
    notes: HashMap<String, (String, u64)>,
    /// The last version handed out, for any note.
    counter: u64,
    /// Writes that named the current version and were applied.
    applied: u64,
    /// Writes refused for a stale version (409, 412).
    stale: u64,
}

impl Notes {
    fn next(&mut self) -> u64 {
        self.counter += 1;
        self.counter
    }
}

/// The version an `If-Match` names: `"3"`, `W/"3"` or `3`.
fn if_match(req: &http::request::Parts) -> Option<u64> {
    let v = req.headers.get("if-match")?.to_str().ok()?.trim();
    let v = v.strip_prefix("W/").unwrap_or(v);
    v.trim_matches('"').parse().ok()
}

fn notes_api(req: &http::request::Parts, body: &[u8], state: &Mutex<Notes>) -> (StatusCode, Value) {
    let mut s = state.lock().expect("state");
    let body: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    let path: Vec<&str> = req.uri.path().split('/').skip(1).collect();
    match (req.method.as_str(), path.as_slice()) {
        ("POST", ["notes"]) => {
            let id = format!("n_{:016x}", rand::random::<u64>());
            let version = s.next();
            let text = body["text"].as_str().unwrap_or("").to_string();
            s.notes.insert(id.clone(), (text.clone(), version));
            (
                StatusCode::CREATED,
                json!({"id": id, "text": text, "version": version}),
            )
        }
        (method, ["notes", id]) => {
            let Some(&(_, current)) = s.notes.get(*id) else {
                return (StatusCode::NOT_FOUND, json!({"error": "no such note"}));
            };
            let (sent, refused) = match method {
                "GET" => return (StatusCode::OK, json!({"id": id, "version": current})),
                "PATCH" => (body["version"].as_u64(), StatusCode::CONFLICT),
                "PUT" | "DELETE" => (if_match(req), StatusCode::PRECONDITION_FAILED),
                _ => return (StatusCode::METHOD_NOT_ALLOWED, json!({})),
            };
            if sent != Some(current) {
                s.stale += 1;
                return (
                    refused,
                    json!({"error": "stale version", "version": current}),
                );
            }
            s.applied += 1;
            if method == "DELETE" {
                s.notes.remove(*id);
                return (StatusCode::OK, json!({"deleted": id}));
            }
            let version = s.next();
            let text = body["text"].as_str().unwrap_or("").to_string();
            s.notes.insert(id.to_string(), (text, version));
            (StatusCode::OK, json!({"id": id, "version": version}))
        }
        _ => (StatusCode::NOT_FOUND, json!({})),
    }
}

/// The notes API on an ephemeral loopback port, and its state; it stops
/// accepting when the returned [`Shutdown`] is triggered.
async fn serve_notes() -> (String, Arc<Mutex<Notes>>, Shutdown) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    let state = Arc::new(Mutex::new(Notes::default()));
    let stop = Shutdown::new();
    let (halt, st) = (stop.clone(), state.clone());
    tokio::spawn(async move {
        loop {
            let stream = tokio::select! {
                r = listener.accept() => match r { Ok((s, _)) => s, Err(_) => continue },
                () = halt.wait() => break,
            };
            let st = st.clone();
            tokio::spawn(async move {
                let service =
                    hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
                        let st = st.clone();
                        async move {
                            let (parts, body) = req.into_parts();
                            let body = body.collect().await.map(|b| b.to_bytes());
                            let (status, json) = notes_api(&parts, &body.unwrap_or_default(), &st);
                            let resp = Response::builder()
                                .status(status)
                                .header("content-type", "application/json")
                                .body(Full::new(Bytes::from(json.to_string())))
                                .expect("response");
                            Ok::<_, Infallible>(resp)
                        }
                    });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    (url, state, stop)
}

/// One user's session: two notes created, each edited with the version
/// its last answer gave (in the body, in `If-Match`), read, edited again
/// and deleted.
async fn edit_notes(proxy: &TestProxy, user: &str) {
    let http = client();
    let call = |method: Method, path: String, if_match: Option<String>, body: Value| {
        let (http, url) = (&http, proxy.url(&path));
        async move {
            let mut headers = vec![("x-session-id", user), ("content-type", "application/json")];
            if let Some(v) = &if_match {
                headers.push(("if-match", v.as_str()));
            }
            let body = if body.is_null() {
                Bytes::new()
            } else {
                Bytes::from(body.to_string())
            };
            let (status, _, body) = send(http, method.clone(), &url, &headers, body).await;
            assert!(status.is_success(), "{method} {url}: {status}");
            serde_json::from_slice::<Value>(&body).expect("json")
        }
    };
    let create = |text: &str| call(Method::POST, "/notes".into(), None, json!({ "text": text }));
    let (one, two) = (create("one").await, create("two").await);
    let id = |v: &Value| v["id"].as_str().expect("id").to_string();
    let version = |v: &Value| v["version"].as_u64().expect("version");
    let (a, b) = (id(&one), id(&two));
    let path = |id: &str| format!("/notes/{id}");
    let edited = call(
        Method::PATCH,
        path(&a),
        None,
        json!({"text": "one, edited", "version": version(&one)}),
    )
    .await;
    let put = call(
        Method::PUT,
        path(&b),
        Some(format!("\"{}\"", version(&two))),
        json!({"text": "two, edited"}),
    )
    .await;
    let read = call(Method::GET, path(&a), None, Value::Null).await;
    assert_eq!(version(&read), version(&edited));
    call(
        Method::PATCH,
        path(&a),
        None,
        json!({"text": "one, again", "version": version(&read)}),
    )
    .await;
    call(
        Method::DELETE,
        path(&b),
        Some(version(&put).to_string()),
        Value::Null,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn numeric_versions_in_bodies_are_learned_and_sent_back_at_5x() {
    let (recorded_on, recorded, stop) = serve_notes().await;
    let mut proxy = TestProxy::start(&recorded_on).await;
    edit_notes(&proxy, "alice").await;
    edit_notes(&proxy, "bob").await;
    proxy.stop().await;
    stop.trigger();
    assert_eq!(recorded.lock().expect("state").applied, 8);

    let store = Store::open(&proxy.capture).await.expect("open");
    let replay = |correlate: bool| {
        let store = store.clone();
        async move {
            let (target, state, stop) = serve_notes().await;
            let report = replay_with(&store, &target, Profile::single(5, 4.0), |c| {
                c.correlate = correlate;
            })
            .await;
            stop.trigger();
            let st = state.lock().expect("state");
            (report, st.applied, st.stale)
        }
    };

    let (report, applied, stale) = replay(true).await;
    let s = &report.stages[0];
    assert_eq!((s.requests, s.errors), (70, 0), "{:?}", s.status_counts);
    assert!(
        s.status_counts.keys().all(|k| !k.starts_with('4')),
        "{:?}",
        s.status_counts
    );
    // Each world's writes named its own notes' live versions: every
    // edit and delete of every world was applied, none was stale.
    assert_eq!((applied, stale), (40, 0));

    let (report, applied, _) = replay(false).await;
    let s = &report.stages[0];
    assert!(s.errors > 0, "{:?}", s.status_counts);
    assert!(applied < 40, "recorded ids and versions are stale");
}
