//! Replay on a chat server nobody here wrote: Matrix Synapse, installed
//! from PyPI by tests/run.sh (`TAPEDECK_SYNAPSE` names its Python). Two
//! users log in through the recording proxy (passwords redacted), each
//! creates a room, sends messages under client-made transaction ids (PUT),
//! pages back through the room and marks the last message read. Replayed at
//! 1x and 5x on the same server, Synapse's own database must hold exactly
//! 1x and 5x the recorded messages, each sent by the user whose credential
//! sent it, into a room that user's copy created.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use bytes::Bytes;
use http::Method;
use sqlx::sqlite::SqliteConnectOptions;
use sqlx::{ConnectOptions, Connection};

use crate::support::thirdparty::{free_port, replay_1x_5x_and_verbatim, uuid, wait_until_answers};
use crate::support::{TestProxy, client, send};

const USERS: [(&str, &str); 2] = [("alice", "alice-Pw-1"), ("bob", "bob-Pw-2")];
const MESSAGES: usize = 3;

/// A Synapse homeserver on a free loopback port, with a SQLite database in
/// a temporary folder; stopped when dropped.
struct Synapse {
    url: String,
    db: PathBuf,
    child: tokio::process::Child,
    _dir: tempfile::TempDir,
}

impl Synapse {
    async fn start() -> Synapse {
        let python = std::env::var("TAPEDECK_SYNAPSE").expect(
            "TAPEDECK_SYNAPSE names the Python that runs Synapse: run the tests with `bash tests/run.sh`",
        );
        let dir = tempfile::tempdir().expect("tempdir");
        let port = free_port();
        let d = dir.path().display();
        let config = dir.path().join("homeserver.yaml");
        let limit = "{per_second: 100000, burst_count: 100000}";
        std::fs::write(
            &config,
            format!(
                "server_name: localhost
pid_file: {d}/homeserver.pid
listeners:
  - {{port: {port}, bind_addresses: ['127.0.0.1'], type: http, tls: false, x_forwarded: false,
     resources: [{{names: [client], compress: false}}]}}
database: {{name: sqlite3, args: {{database: {d}/homeserver.db}}}}
media_store_path: {d}/media
signing_key_path: {d}/signing.key
enable_registration: true
enable_registration_without_verification: true
registration_shared_secret: tapedeck-test
macaroon_secret_key: tapedeck-test
form_secret: tapedeck-test
report_stats: false
trusted_key_servers: []
suppress_key_server_warning: true
presence: {{enabled: false}}
rc_message: {limit}
rc_registration: {limit}
rc_login: {{address: {limit}, account: {limit}, failed_attempts: {limit}}}
rc_joins: {{local: {limit}}}
rc_room_creation: {limit}
rc_invites: {{per_room: {limit}, per_user: {limit}}}
"
            ),
        )
        .expect("write config");
        let keys = tokio::process::Command::new(&python)
            .args(["-m", "synapse.app.homeserver", "--generate-keys", "-c"])
            .arg(&config)
            .stdout(Stdio::null())
            .status()
            .await
            .expect("run synapse --generate-keys");
        assert!(keys.success(), "synapse --generate-keys failed");
        let log = std::fs::File::create(dir.path().join("synapse.log")).expect("log file");
        let child = tokio::process::Command::new(&python)
            .args(["-m", "synapse.app.homeserver", "-c"])
            .arg(&config)
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .expect("start synapse");
        let synapse = Synapse {
            url: format!("http://127.0.0.1:{port}"),
            db: dir.path().join("homeserver.db"),
            child,
            _dir: dir,
        };
        // Readiness: /health answers once the listener is up.
        let health = format!("{}/health", synapse.url);
        wait_until_answers(&health, Duration::from_secs(90), |s| s == 200).await;
        synapse
    }

    fn api(&self, path: &str) -> String {
        format!("{}/_matrix/client/v3{path}", self.url)
    }

    /// Message events per sender, and rooms per creator, from Synapse's
    /// own database.
    async fn stored(&self) -> Stored {
        let mut db = SqliteConnectOptions::new()
            .filename(&self.db)
            .read_only(true)
            .connect()
            .await
            .expect("open synapse db");
        let count = |sql: &'static str, user: String| sqlx::query_scalar::<_, i64>(sql).bind(user);
        let mut s = Stored::default();
        for (user, _) in USERS {
            let id = format!("@{user}:localhost");
            s.messages.push(
                count(
                    "select count(*) from events where type = 'm.room.message' and sender = ?",
                    id.clone(),
                )
                .fetch_one(&mut db)
                .await
                .expect("count messages"),
            );
            s.rooms.push(
                count("select count(*) from rooms where creator = ?", id)
                    .fetch_one(&mut db)
                    .await
                    .expect("count rooms"),
            );
        }
        s.foreign = sqlx::query_scalar(
            "select count(*) from events e join rooms r on e.room_id = r.room_id \
             where e.type = 'm.room.message' and e.sender != r.creator",
        )
        .fetch_one(&mut db)
        .await
        .expect("count foreign messages");
        let _ = db.close().await;
        s
    }
}

impl Drop for Synapse {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
    }
}

#[derive(Debug, Default, PartialEq)]
struct Stored {
    /// Messages sent by each user of [`USERS`].
    messages: Vec<i64>,
    /// Rooms each user created.
    rooms: Vec<i64>,
    /// Messages in a room their sender did not create.
    foreign: i64,
}

/// A path segment with everything but RFC 3986 unreserved characters
/// percent-encoded (`!room` as `%21room`, as Matrix clients send ids).
fn encode(segment: &str) -> String {
    segment
        .bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                char::from(b).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

fn json(body: &Bytes) -> serde_json::Value {
    serde_json::from_slice(body).expect("json answer")
}

/// The recorded traffic: each user's session, one after the other.
async fn record(proxy: &TestProxy) {
    let c = client();
    let at = |path: &str| proxy.url(&format!("/_matrix/client/v3{path}"));
    for (user, password) in USERS {
        // Each user's own client: the session key when no credential is
        // sent yet (`X-Session-Id` would be redacted as a credential).
        let session = format!("{user}-client/1.0");
        let login = serde_json::json!({
            "type": "m.login.password",
            "identifier": {"type": "m.id.user", "user": user},
            "password": password,
        });
        let (status, _, body) = send(
            &c,
            Method::POST,
            &at("/login"),
            &[
                ("user-agent", &session),
                ("content-type", "application/json"),
            ],
            Bytes::from(login.to_string()),
        )
        .await;
        assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
        let token = json(&body)["access_token"]
            .as_str()
            .expect("token")
            .to_string();
        let bearer = format!("Bearer {token}");
        let h = [
            ("user-agent", session.as_str()),
            ("authorization", bearer.as_str()),
            ("content-type", "application/json"),
        ];
        let create =
            serde_json::json!({"name": format!("{user}'s room"), "preset": "private_chat"});
        let (status, _, body) = send(
            &c,
            Method::POST,
            &at("/createRoom"),
            &h,
            Bytes::from(create.to_string()),
        )
        .await;
        assert_eq!(status, 200);
        let room = json(&body)["room_id"].as_str().expect("room").to_string();
        let room = encode(&room);
        let mut last = String::new();
        for i in 0..MESSAGES {
            let message = serde_json::json!({"msgtype": "m.text", "body": format!("hello {i}")});
            let (status, _, body) = send(
                &c,
                Method::PUT,
                &at(&format!("/rooms/{room}/send/m.room.message/{}", uuid())),
                &h,
                Bytes::from(message.to_string()),
            )
            .await;
            assert_eq!(status, 200);
            last = json(&body)["event_id"].as_str().expect("event").to_string();
        }
        let (status, _, body) = send(
            &c,
            Method::GET,
            &at(&format!("/rooms/{room}/messages?dir=b&limit=10")),
            &h,
            Bytes::new(),
        )
        .await;
        assert_eq!(status, 200);
        assert!(!json(&body)["chunk"].as_array().expect("chunk").is_empty());
        let event = encode(&last);
        let (status, _, _) = send(
            &c,
            Method::POST,
            &at(&format!("/rooms/{room}/receipt/m.read/{event}")),
            &h,
            Bytes::from_static(b"{}"),
        )
        .await;
        assert_eq!(status, 200);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn synapse_stores_exactly_n_times_the_recorded_messages_each_from_its_sender() {
    let synapse = Synapse::start().await;
    let c = client();
    for (user, password) in USERS {
        let register = serde_json::json!({
            "username": user, "password": password,
            "auth": {"type": "m.login.dummy"}, "inhibit_login": true,
        });
        let (status, _, body) = send(
            &c,
            Method::POST,
            &synapse.api("/register"),
            &[("content-type", "application/json")],
            Bytes::from(register.to_string()),
        )
        .await;
        assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    }
    let mut proxy = TestProxy::start(&synapse.url).await;
    record(&proxy).await;
    proxy.stop().await;
    let m = MESSAGES as i64;
    let recorded = synapse.stored().await;
    assert_eq!(
        recorded,
        Stored {
            messages: vec![m, m],
            rooms: vec![1, 1],
            foreign: 0
        }
    );
    // Sent verbatim, the redacted passwords fail every login and the
    // requests after them go out with a dead token: nothing more is stored.
    replay_1x_5x_and_verbatim(&proxy.store, &synapse.url, &USERS, async |copies| {
        assert_eq!(
            synapse.stored().await,
            Stored {
                messages: vec![m * copies, m * copies],
                rooms: vec![copies, copies],
                foreign: 0
            },
            "{copies} copies"
        );
    })
    .await;
}
