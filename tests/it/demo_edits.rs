//! The demo chat backend's contract for what replays of other people's
//! backends trip over: a login naming its user in a nested identity,
//! client-chosen message ids (once per sender), edits guarded by an ETag,
//! and a filter query whose hits come in an order of the backend's own.

use std::collections::HashMap;
use std::sync::Arc;

use http::{Method, StatusCode};
use serde_json::{Value, json};
use tapedeck::demo::backend::{BackendConfig, DemoBackend};
use tapedeck::demo::script::ChatClient;

use crate::support::{demo_backend, demo_backend_with, demo_login, demo_stats};

fn client(backend: &DemoBackend) -> ChatClient {
    ChatClient::new(&backend.url(), "contract-test")
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

#[tokio::test]
async fn a_login_names_its_user_in_a_nested_identity_or_the_older_user_field() {
    let accounts = HashMap::from([("ann".to_string(), "pw-ann".to_string())]);
    let backend = demo_backend_with(BackendConfig {
        accounts: Some(Arc::new(accounts)),
        ..BackendConfig::default()
    })
    .await;
    let client = client(&backend);
    let login = |body: Value| client.call(Method::POST, "/api/login", None, &[], Some(body));
    let nested = json!({"identity": {"login_id": "ann"}, "password": "pw-ann"});
    let r = login(nested).await.expect("call");
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.json());
    assert_eq!(r.json()["user"], "ann");
    let r = login(json!({"user": "ann", "password": "pw-ann"}))
        .await
        .expect("call");
    assert_eq!(r.status, StatusCode::OK);
    let wrong = json!({"identity": {"login_id": "ann"}, "password": "nope"});
    assert_eq!(
        login(wrong).await.expect("call").status,
        StatusCode::UNAUTHORIZED
    );
    let r = login(json!({"identity": {}, "password": "pw-ann"}))
        .await
        .expect("call");
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    let s = demo_stats(&backend).await;
    assert_eq!((s.users, s.logins), (1, 2));
    assert_eq!(s.per_user["ann"].logins, 2);
}

#[tokio::test]
async fn a_client_msg_id_is_its_senders_once_and_an_edit_needs_the_current_etag() {
    let backend = demo_backend().await;
    let client = client(&backend);
    let ann = demo_login(&client, "ann").await;
    let bob = demo_login(&client, "bob").await;
    let room = conversation(&client, &ann).await;
    let path = format!("/api/conversations/{room}/messages");
    let id = "0c6f3e58-8d1e-4b5a-9f3e-1a2b3c4d5e6f";
    let send = |token: &str| {
        let body = json!({"text": "hi", "client_msg_id": id});
        let (client, path, token) = (client.clone(), path.clone(), token.to_string());
        async move {
            client
                .call(Method::POST, &path, Some(&token), &[], Some(body))
                .await
                .expect("send")
        }
    };
    let sent = send(&ann).await;
    assert_eq!(sent.status, StatusCode::CREATED);
    assert_eq!(sent.json()["message"]["client_msg_id"], id);
    let etag = sent.etag().expect("an ETag").to_string();
    assert!(etag.starts_with("\"r1-") && etag.ends_with('"'), "{etag}");
    // The same id again from its sender is a conflict; from another
    // sender it is that sender's own.
    let again = send(&ann).await;
    assert_eq!(again.status, StatusCode::CONFLICT);
    assert_eq!(again.json()["message_id"], sent.json()["message"]["id"]);
    assert_eq!(send(&bob).await.status, StatusCode::CREATED);

    let edit = |token: &str, if_match: Option<&str>| {
        let (client, token) = (client.clone(), token.to_string());
        let path = format!("{path}/{id}");
        let headers: Vec<(&'static str, String)> = if_match
            .map(|e| ("if-match", e.to_string()))
            .into_iter()
            .collect();
        async move {
            let headers: Vec<(&str, &str)> =
                headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
            let body = json!({"text": "hi, edited"});
            client
                .call(Method::PATCH, &path, Some(&token), &headers, Some(body))
                .await
                .expect("edit")
        }
    };
    assert_eq!(
        edit(&ann, None).await.status,
        StatusCode::PRECONDITION_REQUIRED
    );
    assert_eq!(
        edit(&ann, Some("\"r1-stale00000\"")).await.status,
        StatusCode::PRECONDITION_FAILED
    );
    // Bob's message with this id is his; Ann's stays hers.
    let edited = edit(&ann, Some(&etag)).await;
    assert_eq!(edited.status, StatusCode::OK, "{:?}", edited.json());
    assert_eq!(edited.json()["message"]["text"], "hi, edited");
    assert_eq!(edited.json()["message"]["edited"], true);
    let next = edited.etag().expect("a new ETag").to_string();
    assert!(next.starts_with("\"r2-"), "{next}");
    assert_eq!(
        edit(&ann, Some(&etag)).await.status,
        StatusCode::PRECONDITION_FAILED,
        "the send's ETag is stale after the edit"
    );
    // By the server's id too; not by someone else.
    let by_id = format!(
        "{path}/{}",
        sent.json()["message"]["id"].as_str().expect("id")
    );
    let r = client
        .call(
            Method::PATCH,
            &by_id,
            Some(&bob),
            &[("if-match", next.as_str())],
            Some(json!({"text": "mine now"})),
        )
        .await
        .expect("edit");
    assert_eq!(r.status, StatusCode::FORBIDDEN);

    let s = demo_stats(&backend).await;
    assert_eq!(s.messages, 2);
    assert_eq!(s.duplicate_client_ids, 1);
    assert_eq!((s.edits, s.edit_conflicts, s.edits_refused), (1, 2, 1));
    assert_eq!(
        (s.per_user["ann"].edits, s.per_user["ann"].messages),
        (1, 1)
    );
    assert_eq!(
        (s.per_user["bob"].edits, s.per_user["bob"].messages),
        (0, 1)
    );
}

#[tokio::test]
async fn the_filter_query_finds_a_conversation_by_id_in_an_order_of_the_backends_own() {
    let mut orders = Vec::new();
    for _ in 0..2 {
        let backend = demo_backend().await;
        let client = client(&backend);
        let ann = demo_login(&client, "ann").await;
        let bob = demo_login(&client, "bob").await;
        let room = conversation(&client, &ann).await;
        let path = format!("/api/conversations/{room}/messages");
        for i in 0..8 {
            let token = if i % 2 == 0 { &ann } else { &bob };
            let body = json!({"text": format!("m{i}")});
            let r = client
                .call(Method::POST, &path, Some(token), &[], Some(body))
                .await
                .expect("send");
            assert_eq!(r.status, StatusCode::CREATED);
        }
        let search = |filter: String| {
            let (client, token) = (client.clone(), ann.clone());
            async move {
                let uri = format!("/api/messages?filter={filter}");
                client
                    .call(Method::GET, &uri, Some(&token), &[], None)
                    .await
                    .expect("search")
            }
        };
        let texts = |r: &tapedeck::demo::script::Reply| -> Vec<String> {
            r.json()["messages"]
                .as_array()
                .expect("messages")
                .iter()
                .map(|m| m["text"].as_str().expect("text").to_string())
                .collect()
        };
        // Percent-encoded, as a URL builder sends it.
        let r = search(format!("%28conversation%3D%27{room}%27%29")).await;
        assert_eq!(r.status, StatusCode::OK, "{:?}", r.json());
        assert_eq!(r.json()["total"], 8);
        let order = texts(&r);
        let mut sorted = order.clone();
        sorted.sort();
        assert_eq!(sorted, (0..8).map(|i| format!("m{i}")).collect::<Vec<_>>());
        let again = search(format!("(conversation='{room}')")).await;
        assert_eq!(texts(&again), order, "one backend, one order");
        let bobs = search(format!(
            "(conversation='{room}'%20and%20author='bob')&limit=2"
        ))
        .await;
        assert_eq!(bobs.json()["total"], 4);
        assert_eq!(texts(&bobs).len(), 2);
        for bad in ["conversation='x'", "(room='x')", "(conversation=x)"] {
            let r = search(bad.to_string()).await;
            assert_eq!(r.status, StatusCode::BAD_REQUEST, "{bad}");
        }
        let r = search("(conversation='c_NoSuchRoom00')".to_string()).await;
        assert_eq!(r.status, StatusCode::NOT_FOUND);
        assert_eq!(demo_stats(&backend).await.searches, 3);
        orders.push(order);
    }
    // 8 hits in the same order on two backends happens once in 40,320.
    assert_ne!(orders[0], orders[1], "each backend its own order");
}
