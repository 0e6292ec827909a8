//! Replay on a JSON storage server nobody here wrote: Kinto, installed from
//! PyPI by tests/run.sh (`TAPEDECK_KINTO` names its `kinto` program). Two
//! users, authenticated with HTTP Basic against Kinto's accounts (recorded
//! redacted), each make a room (a collection under a client UUID), post
//! messages (server-made ids), put one under a client UUID, edit one with
//! `If-Match`, page through the room (the cursor handed out in a
//! `Next-Page` header, with a one-time nonce inside), fetch two messages
//! by an `in_id=` list and delete one with `If-Match`. Replayed at 1x and
//! 5x on the same server, Kinto must hold exactly 1x and 5x the recorded
//! rooms and messages per user, every message written by the user who
//! owns its room, as Kinto's own permissions say.

use std::collections::BTreeMap;
use std::process::Stdio;
use std::time::Duration;

use bytes::Bytes;
use http::Method;
use serde_json::{Value, json};

use crate::support::thirdparty::{
    basic, etag, free_port, replay_1x_5x_and_verbatim, uuid, wait_until_answers,
};
use crate::support::{TestProxy, client, send};

const USERS: [(&str, &str); 2] = [("alice", "alice-Pw-1"), ("bob", "bob-Pw-2")];
const ADMIN: (&str, &str) = ("admin", "admin-Pw-0");
const BUCKET: &str = "/v1/buckets/chat";

/// A Kinto server (memory backend) on a free loopback port; stopped when
/// dropped.
struct Kinto {
    url: String,
    child: tokio::process::Child,
    _dir: tempfile::TempDir,
}

impl Kinto {
    async fn start() -> Kinto {
        let kinto = std::env::var("TAPEDECK_KINTO").expect(
            "TAPEDECK_KINTO names Kinto's `kinto` program: run the tests with `bash tests/run.sh`",
        );
        let dir = tempfile::tempdir().expect("tempdir");
        let ini = dir.path().join("kinto.ini");
        let init = tokio::process::Command::new(&kinto)
            .args(["init", "--backend", "memory", "--cache-backend", "memory"])
            .args(["--host", "127.0.0.1", "--ini"])
            .arg(&ini)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .await
            .expect("run kinto init");
        assert!(init.success(), "kinto init failed");
        let port = free_port();
        let log = std::fs::File::create(dir.path().join("kinto.log")).expect("log file");
        let child = tokio::process::Command::new(&kinto)
            .args(["start", "--port", &port.to_string(), "--ini"])
            .arg(&ini)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .expect("start kinto");
        let kinto = Kinto {
            url: format!("http://127.0.0.1:{port}"),
            child,
            _dir: dir,
        };
        let heartbeat = format!("{}/v1/__heartbeat__", kinto.url);
        wait_until_answers(&heartbeat, Duration::from_secs(60), |s| s == 200).await;
        kinto
    }

    /// A request to Kinto itself (not through the proxy) as `who`.
    async fn call(&self, who: (&str, &str), method: Method, path: &str, body: Value) -> Value {
        let auth = basic(who.0, who.1);
        let (status, _, answer) = send(
            &client(),
            method,
            &format!("{}{path}", self.url),
            &[
                ("authorization", &auth),
                ("content-type", "application/json"),
            ],
            json_body(&body),
        )
        .await;
        assert!(
            status.is_success(),
            "{path}: {status} {}",
            String::from_utf8_lossy(&answer)
        );
        serde_json::from_slice(&answer).expect("json answer")
    }

    /// The accounts and the shared bucket any account may make rooms in.
    async fn set_up(&self) {
        for (user, password) in [ADMIN].iter().chain(&USERS) {
            let account = json!({"data": {"password": password}});
            let (status, _, _) = send(
                &client(),
                Method::PUT,
                &format!("{}/v1/accounts/{user}", self.url),
                &[("content-type", "application/json")],
                Bytes::from(account.to_string()),
            )
            .await;
            assert_eq!(status, 201);
        }
        let perms = json!({"permissions": {"collection:create": ["system.Authenticated"]}});
        self.call(ADMIN, Method::PUT, BUCKET, perms).await;
    }

    /// Per user, per room that user owns: the texts of its messages; and
    /// how many rooms or messages the user can see but someone else
    /// wrote. As Kinto's own permissions say (an object's writer is who
    /// made it; a user sees only what they may read).
    async fn stored(&self) -> Stored {
        let mut s = Stored::default();
        for who in USERS {
            let account = format!("account:{}", who.0);
            let mut made_by_them = |object: &Value| {
                let writers = &object["permissions"]["write"];
                if writers
                    .as_array()
                    .is_none_or(|w| w.len() != 1 || w[0] != account.as_str())
                {
                    s.foreign += 1;
                }
            };
            let mut rooms = Vec::new();
            let listed = self
                .call(
                    who,
                    Method::GET,
                    &format!("{BUCKET}/collections"),
                    Value::Null,
                )
                .await;
            for room in listed["data"].as_array().expect("rooms") {
                let at = format!("{BUCKET}/collections/{}", room["id"].as_str().expect("id"));
                made_by_them(&self.call(who, Method::GET, &at, Value::Null).await);
                let list = self
                    .call(who, Method::GET, &format!("{at}/records"), Value::Null)
                    .await;
                let mut texts = Vec::new();
                for message in list["data"].as_array().expect("messages") {
                    let path = format!("{at}/records/{}", message["id"].as_str().expect("id"));
                    let full = self.call(who, Method::GET, &path, Value::Null).await;
                    made_by_them(&full);
                    texts.push(full["data"]["text"].as_str().expect("text").to_string());
                }
                texts.sort();
                rooms.push(texts);
            }
            s.rooms.insert(who.0.to_string(), rooms);
        }
        s
    }
}

impl Drop for Kinto {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
    }
}

#[derive(Debug, Default, PartialEq)]
struct Stored {
    /// Per user, per room: the sorted texts of its messages.
    rooms: BTreeMap<String, Vec<Vec<String>>>,
    /// Rooms or messages a user sees that someone else wrote.
    foreign: usize,
}

impl Stored {
    /// What `copies` runs of the recording leave: that many rooms per
    /// user, each holding the edited message and the one put under a
    /// client id (the other posted one was deleted).
    fn expected(copies: usize) -> Stored {
        let room = vec!["edited".to_string(), "put by id".to_string()];
        Stored {
            rooms: USERS
                .iter()
                .map(|(u, _)| (u.to_string(), vec![room.clone(); copies]))
                .collect(),
            foreign: 0,
        }
    }
}

/// A JSON request body; none for `null`.
fn json_body(body: &Value) -> Bytes {
    if body.is_null() {
        Bytes::new()
    } else {
        Bytes::from(body.to_string())
    }
}

/// The recorded traffic: each user's session, one after the other.
async fn record(proxy: &TestProxy) {
    let c = client();
    for (user, password) in USERS {
        // Each user's own client: the session key when no credential is
        // sent yet (`X-Session-Id` would be redacted as a credential).
        let session = format!("{user}-client/1.0");
        let auth = basic(user, password);
        let go = async |method: Method, path: &str, extra: &[(&str, &str)], body: Value| {
            let mut headers = vec![
                ("user-agent", session.as_str()),
                ("authorization", auth.as_str()),
                ("content-type", "application/json"),
            ];
            headers.extend_from_slice(extra);
            let (status, headers, answer) =
                send(&c, method, &proxy.url(path), &headers, json_body(&body)).await;
            assert!(
                status.is_success(),
                "{path}: {status} {}",
                String::from_utf8_lossy(&answer)
            );
            let json = serde_json::from_slice::<Value>(&answer).unwrap_or(Value::Null);
            (headers, json)
        };
        let room = format!("{BUCKET}/collections/{}", uuid());
        let title = json!({"data": {"title": format!("{user}'s room")}});
        go(Method::PUT, &room, &[], title).await;
        let records = format!("{room}/records");
        let mut posted = Vec::new();
        for i in 0..2 {
            let message = json!({"data": {"text": format!("hello {i}")}});
            let (headers, answer) = go(Method::POST, &records, &[], message).await;
            let id = answer["data"]["id"].as_str().expect("server-made id");
            posted.push((format!("{records}/{id}"), id.to_string(), etag(&headers)));
        }
        let by_id = json!({"data": {"text": "put by id"}});
        let mine = format!("{records}/{}", uuid());
        go(Method::PUT, &mine, &[("if-none-match", "*")], by_id).await;
        let (first, first_id, first_tag) = &posted[0];
        let edit = json!({"data": {"text": "edited"}});
        go(Method::PATCH, first, &[("if-match", first_tag)], edit).await;
        let (headers, page) = go(
            Method::GET,
            &format!("{records}?_limit=2&_sort=last_modified"),
            &[],
            Value::Null,
        )
        .await;
        assert_eq!(page["data"].as_array().map(Vec::len), Some(2));
        let next = headers
            .get("next-page")
            .and_then(|v| v.to_str().ok())
            .expect("a Next-Page header");
        let next = &next[next.find("/v1/").expect("a Kinto path")..];
        let (_, page) = go(Method::GET, next, &[], Value::Null).await;
        assert_eq!(page["data"].as_array().map(Vec::len), Some(1));
        let (second, second_id, second_tag) = &posted[1];
        let (_, both) = go(
            Method::GET,
            &format!("{records}?in_id={first_id},{second_id}"),
            &[],
            Value::Null,
        )
        .await;
        assert_eq!(both["data"].as_array().map(Vec::len), Some(2));
        go(
            Method::DELETE,
            second,
            &[("if-match", second_tag)],
            Value::Null,
        )
        .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kinto_stores_exactly_n_times_the_recorded_rooms_and_messages_each_from_its_owner() {
    let kinto = Kinto::start().await;
    kinto.set_up().await;
    let mut proxy = TestProxy::start(&kinto.url).await;
    record(&proxy).await;
    proxy.stop().await;
    assert_eq!(kinto.stored().await, Stored::expected(1));
    // Sent verbatim, the marker goes out as the password: every request
    // is refused and nothing more is stored.
    replay_1x_5x_and_verbatim(&proxy.store, &kinto.url, &USERS, async |copies| {
        assert_eq!(
            kinto.stored().await,
            Stored::expected(copies as usize),
            "{copies} copies"
        );
    })
    .await;
}
