//! The PostgreSQL capture store: proxy replicas writing one capture at
//! once, replay from it, copies between SQLite and PostgreSQL, and a long
//! WebSocket's frames in parts.

use std::collections::BTreeSet;
use std::path::Path;
use std::time::Duration;

use tapedeck::capture::Store;
use tapedeck::demo::script::{self, Population};

use crate::support::{demo_backend, demo_stats, output, pg_capture, record_process, terminate};

/// Load clients per replica, and requests each.
const LOAD_CLIENTS: usize = 8;
const LOAD_REQUESTS: usize = 150;

/// Every exchange of every run, content only (row and run ids left out),
/// hashed: equal hashes, equal captures.
async fn exchange_hashes(capture: &str) -> Vec<Vec<String>> {
    let store = Store::open(Path::new(capture)).await.expect("open");
    let mut runs = Vec::new();
    for run in store.runs().await.expect("runs") {
        let hashes = store
            .exchanges(run.id)
            .await
            .expect("exchanges")
            .into_iter()
            .map(|mut e| {
                e.id = 0;
                blake3::hash(format!("{e:?}").as_bytes())
                    .to_hex()
                    .to_string()
            })
            .collect();
        runs.push(hashes);
    }
    store.close().await;
    runs
}

/// `replay --run all` of a capture against a fresh demo backend, at the
/// recorded pace (the load clients went as fast as this machine let them);
/// the stage's report, after checking that every world logged in.
async fn replay_all(capture: &str, report: &Path) -> tapedeck::report::StageReport {
    let target = demo_backend().await;
    let (code, out, err) = output(&[
        "replay",
        capture,
        "--run",
        "all",
        "--target",
        &target.url(),
        "--report",
        report.to_str().expect("utf8"),
    ])
    .await;
    assert_eq!(code, 0, "stdout:\n{out}\nstderr:\n{err}");
    assert_eq!(demo_stats(&target).await.logins, 20);
    let r: tapedeck::report::Report =
        serde_json::from_str(&std::fs::read_to_string(report).expect("report")).expect("json");
    r.stages.into_iter().next().expect("one stage")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_record_replicas_write_one_postgres_capture_and_it_replays_and_copies() {
    let capture = pg_capture().await;
    let backend = demo_backend().await;

    // Two proxy replicas in front of one backend, one PostgreSQL capture,
    // each driven by its own population at once.
    // (Their stdout stays open until they have printed their summaries.)
    let (mut a, addr_a, _out_a) = record_process(&backend.url(), capture.as_ref()).await;
    let (mut b, addr_b, _out_b) = record_process(&backend.url(), capture.as_ref()).await;
    let population = |seed| Population {
        users: 10,
        messages_per_user: 4,
        ramp: Duration::from_millis(100),
        think: (Duration::from_millis(2), Duration::from_millis(10)),
        seed,
    };
    let drive = |addr: String, seed| async move {
        let (tx, _rx) = tokio::sync::mpsc::unbounded_channel();
        let addr = addr.parse().expect("addr");
        script::drive(addr, population(seed), tx).await
    };
    // Beside the users, load: 8 clients per replica sending back to back.
    let load = |addr: String| async move {
        let client = crate::support::client();
        let workers = (0..LOAD_CLIENTS).map(|w| {
            let (client, addr) = (client.clone(), addr.clone());
            async move {
                let session = format!("load-{w}");
                for _ in 0..LOAD_REQUESTS {
                    let (status, _, _) = crate::support::send(
                        &client,
                        http::Method::GET,
                        &format!("http://{addr}/api/stats"),
                        &[("x-session-id", session.as_str())],
                        bytes::Bytes::new(),
                    )
                    .await;
                    assert_eq!(status, http::StatusCode::OK);
                }
            }
        });
        futures_util::future::join_all(workers).await;
    };
    let (out_a, out_b, (), ()) = tokio::join!(
        drive(addr_a.clone(), 1),
        drive(addr_b.clone(), 2),
        load(addr_a),
        load(addr_b)
    );
    assert!(out_a.mismatches.is_empty(), "{:?}", out_a.mismatches);
    assert!(out_b.mismatches.is_empty(), "{:?}", out_b.mismatches);
    assert_eq!(terminate(&mut a).await, Some(0));
    assert_eq!(terminate(&mut b).await, Some(0));

    let store = Store::open(Path::new(&capture)).await.expect("open");
    let runs = store.runs().await.expect("runs");
    assert_eq!(runs.len(), 2, "one run per replica");
    let mut written: Vec<i64> = runs.iter().map(|r| r.exchanges).collect();
    written.sort_unstable();
    let loaded = (LOAD_CLIENTS * LOAD_REQUESTS) as i64;
    let mut sent = vec![
        out_a.requests as i64 + loaded,
        out_b.requests as i64 + loaded,
    ];
    sent.sort_unstable();
    assert_eq!(written, sent, "every exchange from both replicas is there");
    let mut keys = Vec::new();
    for run in &runs {
        assert_eq!((run.sessions, run.dropped), (10 + LOAD_CLIENTS as i64, 0));
        assert!(run.stopped_at_us.is_some(), "each replica closed its run");
        let sessions = store.sessions(run.id).await.expect("sessions");
        // Each user's session is its whole script in order, each load
        // client's session its requests.
        for s in &sessions {
            let exchanges = store
                .session_exchanges(run.id, s.session_no)
                .await
                .expect("ex");
            let seqs: Vec<i64> = exchanges.iter().map(|e| e.seq).collect();
            assert_eq!(seqs, (1..=exchanges.len() as i64).collect::<Vec<_>>());
            assert_eq!(exchanges.len() as i64, s.exchanges);
            if s.key_kind == "header" {
                assert_eq!(s.exchanges, LOAD_REQUESTS as i64, "{}", s.key);
            } else {
                assert_eq!(exchanges[0].uri, "/api/login");
            }
        }
        keys.push(sessions.into_iter().map(|s| s.key).collect::<BTreeSet<_>>());
    }
    // The session key comes from the request and the shared redaction
    // key, not from the replica: the same users got the same keys.
    assert_eq!(keys[0], keys[1]);
    let total: i64 = runs.iter().map(|r| r.exchanges).sum();
    store.close().await;

    // Replay from PostgreSQL: both runs on one timeline.
    let dir = tempfile::tempdir().expect("tempdir");
    let from_pg = replay_all(&capture, &dir.path().join("pg.json")).await;
    assert_eq!(
        (from_pg.requests, from_pg.errors),
        (total as u64, 0),
        "{:?} {:?}",
        from_pg.error_kinds,
        from_pg
            .routes
            .iter()
            .filter(|r| r.errors > 0)
            .map(|r| (&r.route, r.errors))
            .collect::<Vec<_>>()
    );

    // PostgreSQL -> SQLite -> PostgreSQL -> SQLite keeps every exchange
    // as it was.
    let first = dir.path().join("first.db");
    let second = dir.path().join("second.db");
    let again = pg_capture().await;
    for (from, to) in [
        (capture.as_str(), first.to_str().expect("utf8")),
        (first.to_str().expect("utf8"), again.as_str()),
        (again.as_str(), second.to_str().expect("utf8")),
    ] {
        let (code, out, err) = output(&["captures", "copy", from, to]).await;
        assert_eq!(code, 0, "copy {from} {to}\nstdout:\n{out}\nstderr:\n{err}");
        assert!(out.contains(&format!("{total} exchanges")), "{out}");
    }
    // The SQLite copy replays like the PostgreSQL capture did.
    let from_file = replay_all(first.to_str().expect("utf8"), &dir.path().join("file.json")).await;
    assert_eq!(
        (
            from_file.requests,
            from_file.errors,
            &from_file.status_counts
        ),
        (from_pg.requests, from_pg.errors, &from_pg.status_counts)
    );

    let original = exchange_hashes(&capture).await;
    assert_eq!(original.iter().map(Vec::len).sum::<usize>() as i64, total);
    assert_eq!(
        exchange_hashes(first.to_str().expect("utf8")).await,
        original
    );
    assert_eq!(exchange_hashes(&again).await, original);
    assert_eq!(
        exchange_hashes(second.to_str().expect("utf8")).await,
        original
    );

    // A copy into a capture that already holds runs adds to it; copying a
    // capture onto itself is refused.
    let (code, _, err) = output(&["captures", "copy", &capture, &capture]).await;
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("same capture"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_postgres_capture_is_a_clear_error() {
    // A port nothing listens on (bound, then released).
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port();
    let url = format!("postgres://tapedeck:s3cret@127.0.0.1:{port}/nowhere");
    let (code, _, err) = output(&["captures", "list", &url]).await;
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("is the server running"), "{err}");
    assert!(
        !err.contains("s3cret"),
        "the password is never printed: {err}"
    );
    assert!(err.contains("tapedeck:***@"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_postgres_capture_can_require_a_verified_tls_connection() {
    use sqlx::Connection;
    let ca = std::env::var("TAPEDECK_TEST_PG_CA").unwrap_or_else(|_| {
        panic!("set TAPEDECK_TEST_PG_CA to the test server's CA certificate (tests/run.sh does)")
    });
    let capture = pg_capture().await;
    let database = capture.rsplit('/').next().expect("database").to_string();
    let verified = format!("{capture}?sslmode=verify-full&sslrootcert={ca}");
    let store = Store::create(Path::new(&verified))
        .await
        .expect("TLS capture");
    store.runs().await.expect("reads over TLS");
    // The server says tapedeck's connections are encrypted.
    let admin = std::env::var("TAPEDECK_TEST_PG").expect("TAPEDECK_TEST_PG");
    let mut conn = sqlx::PgConnection::connect(&admin).await.expect("admin");
    let (connections, encrypted): (i64, bool) = sqlx::query_as(
        "SELECT count(*), coalesce(bool_and(s.ssl), false) FROM pg_stat_ssl s \
         JOIN pg_stat_activity a ON a.pid = s.pid \
         WHERE a.application_name = 'tapedeck' AND a.datname = $1",
    )
    .bind(&database)
    .fetch_one(&mut conn)
    .await
    .expect("pg_stat_ssl");
    assert!(
        connections > 0 && encrypted,
        "{connections} connections, all TLS: {encrypted}"
    );
    store.close().await;

    // A CA that did not sign the server's certificate: refused, and said.
    let other = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).expect("cert");
    let dir = tempfile::tempdir().expect("tempdir");
    let wrong = dir.path().join("other-ca.pem");
    std::fs::write(&wrong, other.cert.pem()).expect("write");
    let url = format!(
        "{capture}?sslmode=verify-full&sslrootcert={}",
        wrong.display()
    );
    let err = Store::open(Path::new(&url))
        .await
        .expect_err("an untrusted server");
    assert!(err.to_string().contains("certificate"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_socket_is_stored_in_parts_in_postgres_and_copied_to_sqlite_whole() {
    use crate::websocket_bounds as ws;
    let capture = pg_capture().await;
    let upstream = ws::upstream().await;
    let rec =
        ws::Recorder::start(&upstream, Path::new(&capture), &["--ws-max-frames", "2500"]).await;
    ws::tiny_frames(&rec.url(), 3000).await;
    rec.settled().await;
    let ex = rec.stop(Path::new(&capture)).await;
    // Two parts of 1,000 frames, and 500 frames and the closes in the row.
    ws::check_tiny(&ex, 2500);
    assert_eq!(ex.ws_frames_dropped, 500);
    let shown = ws::shown(Path::new(&capture)).await;
    assert_eq!(
        (
            &shown["sockets"],
            &shown["frames"],
            &shown["frames_dropped"]
        ),
        (&1.into(), &2502.into(), &500.into()),
        "{shown}"
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("copy.db");
    let (code, _, err) =
        output(&["captures", "copy", &capture, file.to_str().expect("utf8")]).await;
    assert_eq!(code, 0, "{err}");
    let store = Store::open(&file).await.expect("copy");
    let run = store.run(None).await.expect("run");
    let copied = store.exchanges(run.id).await.expect("exchanges");
    store.close().await;
    assert_eq!(
        (&copied[0].ws_frames, copied[0].ws_frames_dropped),
        (&ex.ws_frames, 500)
    );
}
