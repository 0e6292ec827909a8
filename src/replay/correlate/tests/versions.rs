//! Version fields in bodies (`version`, `_rev`, `lock_version`, …):
//! learned per field and per object from answers, numbers included, and
//! sent back in later bodies and conditional headers.

use bytes::Bytes;
use serde_json::{Value, json};

use super::super::values::{rewrite_conditional, version_field};
use super::super::{Answer, Correlation, Rules, SessionValues, World, analyze};
use super::ex;
use crate::capture::StoredExchange;

const NOTE_A: &str = "n_Ab12Cd34Ef56";
const NOTE_B: &str = "n_Zx98Cv76Bn54";

/// Learns the live answer `body` to `recorded` into `world`, correlating.
fn learn(recorded: &StoredExchange, body: Value, world: &World) {
    let body = Bytes::from(body.to_string());
    let answer = Answer {
        status: Some(200),
        failure: None,
        headers: &[],
        body: &body,
    };
    Correlation::new(true, Default::default(), Rules::default()).learn(
        "route",
        recorded,
        recorded,
        answer,
        &SessionValues::default(),
        world,
    );
}

/// Request `index` of `session` as it is sent in `world`.
fn send(session: &[StoredExchange], index: usize, world: &World) -> StoredExchange {
    let values = analyze(session);
    Correlation::new(true, Default::default(), Rules::default())
        .prepare(&session[index], index, &values, world)
        .expect("correlating")
        .exchange
}

fn body(ex: &StoredExchange) -> Value {
    serde_json::from_slice(&ex.request_body).expect("json body")
}

#[test]
fn numeric_versions_are_learned_per_object_and_sent_back_in_bodies_and_if_match() {
    // A backend with one version counter for all its notes: the recording
    // got versions 1, 2 and 3, the replayed world 11, 12 and 13; a stale
    // version gets 409.
    let session = vec![
        ex(
            "POST",
            "/api/notes",
            &[],
            r#"{"text":"a"}"#,
            &json!({"id": NOTE_A, "version": 1}).to_string(),
        ),
        ex(
            "POST",
            "/api/notes",
            &[],
            r#"{"text":"b"}"#,
            &json!({"note": {"id": NOTE_B, "version": 2, "lock_version": "2"}}).to_string(),
        ),
        ex(
            "PATCH",
            &format!("/api/notes/{NOTE_A}"),
            &[],
            r#"{"text":"a2","version":1,"position":1}"#,
            &json!({"id": NOTE_A, "version": 3}).to_string(),
        ),
        ex(
            "PUT",
            &format!("/api/notes/{NOTE_B}"),
            &[("if-match", "W/\"2\"")],
            r#"{"text":"b2","lockVersion":2}"#,
            "{}",
        ),
        ex(
            "DELETE",
            &format!("/api/notes/{NOTE_A}"),
            &[("if-match", "3")],
            &json!({"id": NOTE_A, "version": "3"}).to_string(),
            "{}",
        ),
    ];
    let world = World::default();
    learn(
        &session[0],
        json!({"id": "n_Live0000Aaaa", "version": 11}),
        &world,
    );
    learn(
        &session[1],
        json!({"note": {"id": "n_Live0000Bbbb", "version": 12, "lock_version": "12"}}),
        &world,
    );
    let edit = send(&session, 2, &world);
    assert_eq!(edit.uri, "/api/notes/n_Live0000Aaaa");
    assert_eq!(
        body(&edit),
        json!({"text": "a2", "version": 11, "position": 1}),
        "the version field follows the world; a 1 in another field stays"
    );
    learn(
        &session[2],
        json!({"id": "n_Live0000Aaaa", "version": 13}),
        &world,
    );
    let put = send(&session, 3, &world);
    assert_eq!(put.request_header("if-match"), Some("W/\"12\""));
    assert_eq!(
        body(&put),
        json!({"text": "b2", "lockVersion": 12}),
        "`lock_version` and `lockVersion` are one field"
    );
    let delete = send(&session, 4, &world);
    assert_eq!(delete.request_header("if-match"), Some("13"));
    assert_eq!(
        body(&delete),
        json!({"id": "n_Live0000Aaaa", "version": "13"}),
        "a version sent as a string stays a string"
    );
}

#[test]
fn a_version_is_only_replaced_for_its_field_and_never_taken_from_another_object() {
    let create = |id: &str, version: u64| {
        ex(
            "POST",
            "/api/notes",
            &[],
            "{}",
            &json!({"id": id, "version": version, "_rev": format!("{version}-abc")}).to_string(),
        )
    };
    let session = vec![
        create(NOTE_A, 1),
        create(NOTE_B, 1),
        // Names note B, whose version came back as recorded.
        ex(
            "PATCH",
            &format!("/api/notes/{NOTE_B}"),
            &[("if-match", "1")],
            r#"{"version":1,"revision":1}"#,
            "{}",
        ),
        // Names no note: versions 1 of A and B went different ways.
        ex("POST", "/api/notes/bulk", &[], r#"{"version":1}"#, "{}"),
        // The CouchDB way: the document's `_id` and `_rev` in the body.
        ex(
            "PUT",
            "/db/notes",
            &[],
            &json!({"_id": NOTE_A, "_rev": "1-abc", "count": 1}).to_string(),
            "{}",
        ),
    ];
    let world = World::default();
    learn(
        &session[0],
        json!({"id": "n_Live0000Aaaa", "version": 7, "_rev": "7-zzz"}),
        &world,
    );
    learn(
        &session[1],
        json!({"id": "n_Live0000Bbbb", "version": 1, "_rev": "1-abc"}),
        &world,
    );
    let patch = send(&session, 2, &world);
    assert_eq!(patch.request_header("if-match"), Some("1"));
    assert_eq!(
        body(&patch),
        json!({"version": 1, "revision": 1}),
        "B's version is still 1, and `revision` was never learned"
    );
    let bulk = send(&session, 3, &world);
    assert_eq!(bulk.request_body, br#"{"version":1}"#, "ambiguous: kept");
    let put = send(&session, 4, &world);
    assert_eq!(
        body(&put),
        json!({"_id": "n_Live0000Aaaa", "_rev": "7-zzz", "count": 1}),
        "`_rev` of document A, found by its `_id`"
    );
}

#[test]
fn a_version_without_an_object_id_belongs_to_the_object_in_the_path() {
    let session = vec![
        ex(
            "GET",
            "/api/notes/4711",
            &[],
            "",
            r#"{"data":{"version":5}}"#,
        ),
        ex("PATCH", "/api/notes/4711", &[], r#"{"version":5}"#, "{}"),
        ex("PATCH", "/api/notes/4712", &[], r#"{"version":5}"#, "{}"),
    ];
    let world = World::default();
    learn(&session[0], json!({"data": {"version": 9}}), &world);
    assert_eq!(send(&session, 1, &world).request_body, br#"{"version":9}"#);
    assert_eq!(
        send(&session, 2, &world).request_body,
        br#"{"version":5}"#,
        "another note's version is not this one's"
    );
}

#[test]
fn concurrency_field_names_are_compared_without_case_underscores_or_dashes() {
    for name in [
        "version",
        "_version",
        "Version",
        "rev",
        "_rev",
        "revision",
        "etag",
        "_etag",
        "lock_version",
        "lockVersion",
        "lock-version",
        "last_modified",
        "lastModified",
        "updated_at",
        "updatedAt",
        "_seq_no",
        "_primary_term",
    ] {
        assert!(version_field(name).is_some(), "{name}");
    }
    for name in [
        "id",
        "count",
        "position",
        "versions",
        "api_version",
        "created_at",
    ] {
        assert!(version_field(name).is_none(), "{name}");
    }
}

#[test]
fn conditional_headers_keep_their_wrapping_and_lists() {
    let mut live = |v: &str| (v == "3").then(|| "8".to_string());
    assert_eq!(
        rewrite_conditional("If-Match", "W/\"3\", \"4\"", &mut live).as_deref(),
        Some("W/\"8\", \"4\"")
    );
    assert_eq!(
        rewrite_conditional("if-none-match", "3", &mut live).as_deref(),
        Some("8")
    );
    assert_eq!(rewrite_conditional("if-match", "*", &mut live), None);
    assert_eq!(rewrite_conditional("x-version", "3", &mut live), None);
    let mut date = |v: &str| {
        (v == "Mon, 07 Dec 2026 05:00:00 GMT").then(|| "Mon, 07 Dec 2026 06:00:00 GMT".into())
    };
    assert_eq!(
        rewrite_conditional(
            "If-Unmodified-Since",
            "Mon, 07 Dec 2026 05:00:00 GMT",
            &mut date
        )
        .as_deref(),
        Some("Mon, 07 Dec 2026 06:00:00 GMT"),
        "a date is one value, comma and all"
    );
}

#[test]
fn a_version_learned_for_no_object_serves_only_requests_that_name_none() {
    let session = vec![
        ex("GET", "/api/settings", &[], "", r#"{"version":1}"#),
        ex("PUT", "/api/settings", &[], r#"{"version":1}"#, "{}"),
        ex("PATCH", "/api/notes/4711", &[], r#"{"version":1}"#, "{}"),
    ];
    let world = World::default();
    learn(&session[0], json!({"version": 6}), &world);
    assert_eq!(send(&session, 1, &world).request_body, br#"{"version":6}"#);
    assert_eq!(
        send(&session, 2, &world).request_body,
        br#"{"version":1}"#,
        "a note's version is not the settings'"
    );
}
