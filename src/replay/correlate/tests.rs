//! Unit tests of correlation as a whole: analysis, substitution and
//! learning over small recorded sessions.

use bytes::Bytes;
use serde_json::Value;

use super::learn::{FrameAligner, align_urls, header_pairs, poison};
use super::values::{is_dynamic, is_token, may_hand_out, percent_decode, percent_encode};
use super::*;
use crate::capture::StoredExchange;

mod frames;
mod versions;

/// A recorded exchange: request line, headers, body and response body.
pub(crate) fn ex(
    method: &str,
    uri: &str,
    headers: &[(&str, &str)],
    body: &str,
    resp: &str,
) -> StoredExchange {
    StoredExchange {
        id: 1,
        session_no: 1,
        seq: 1,
        started_at_us: 0,
        offset_us: 0,
        method: method.into(),
        uri: uri.into(),
        http_version: "HTTP/1.1".into(),
        request_headers: headers
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        request_body: body.as_bytes().to_vec(),
        request_body_len: body.len() as i64,
        request_truncated: false,
        status: Some(200),
        response_headers: vec![("content-type".into(), "application/json".into())],
        response_body: resp.as_bytes().to_vec(),
        response_body_len: resp.len() as i64,
        response_truncated: false,
        ttfb_us: Some(1),
        duration_us: 1,
        error_kind: None,
        error_message: None,
        response_chunks: Vec::new(),
        ws_frames: Vec::new(),
        ws_frames_dropped: 0,
    }
}

/// Learns from a live response into the world; returns the pairs learned.
fn learn(
    recorded: &StoredExchange,
    live_headers: &[(String, String)],
    live_body: &Bytes,
    world: &World,
) -> Vec<(String, String)> {
    let mut pairs = learned_pairs(recorded, live_headers, live_body);
    pairs.extend(header_pairs(recorded, live_headers));
    world.absorb(&pairs);
    pairs
}

const MARK: &str = "redacted:0123456789abcdef0123456789abcdef";

fn chat_session() -> Vec<StoredExchange> {
    let send = ex(
        "POST",
        "/api/conversations/c_Ab12Cd34Ef56/messages",
        &[
            ("authorization", &format!("Bearer {MARK}")),
            ("idempotency-key", "idem-4f2a9c01d3e5b7a8"),
        ],
        r#"{"text":"hi"}"#,
        r#"{"message":{"id":"m_Qw12Er34Ty56Ui78"}}"#,
    );
    vec![
        ex(
            "POST",
            "/api/login",
            &[],
            r#"{"user":"user-07"}"#,
            &format!(r#"{{"token":"{MARK}"}}"#),
        ),
        ex(
            "POST",
            "/api/conversations",
            &[("authorization", &format!("Bearer {MARK}"))],
            "{}",
            r#"{"id":"c_Ab12Cd34Ef56"}"#,
        ),
        send.clone(),
        // The client's retry of the same send: same key, same answer.
        send,
        ex(
            "PUT",
            "/api/conversations/c_Ab12Cd34Ef56/messages/txn0a1b2c3d4e5f",
            &[("authorization", &format!("Bearer {MARK}"))],
            r#"{"text":"yo"}"#,
            r#"{"message_id":"m_Zx98Cv76Bn54Mm32"}"#,
        ),
        ex(
            "GET",
            "/api/conversations/c_Ab12Cd34Ef56/messages?limit=2&cursor=cur_Pq12Rs34Tu56Vw78Xy90",
            &[("authorization", &format!("Bearer {MARK}"))],
            "",
            r#"{"messages":[],"next_cursor":null}"#,
        ),
    ]
}

#[test]
fn nonces_are_values_sent_once_or_retried_and_never_handed_out() {
    let s = analyze(&chat_session());
    assert!(
        s.nonces.contains("idem-4f2a9c01d3e5b7a8"),
        "a retried idempotency key is a nonce"
    );
    assert!(
        s.nonces.contains("txn0a1b2c3d4e5f"),
        "a client transaction id in a PUT path is a nonce"
    );
    assert!(s.nonces.contains("user-07"));
    assert!(
        !s.nonces.contains("c_Ab12Cd34Ef56"),
        "a server-made id is correlated, not regenerated"
    );
    assert!(!s.nonces.contains(MARK), "markers are credentials");
    assert!(s.handed_out[2].contains("c_Ab12Cd34Ef56"));
    assert!(s.handed_out[1].contains(MARK));
}

#[test]
fn live_values_flow_into_later_requests_of_the_world() {
    let session = chat_session();
    let values = analyze(&session);
    let world = World::default();
    // Login: the live token is learned for the recorded marker.
    let login = prepare(&session[0], 0, &values, &world, &Rules::default(), true);
    assert_eq!(
        login.substitutions,
        ["nonce"],
        "the user name is regenerated per world"
    );
    learn(
        &session[0],
        &[],
        &Bytes::from_static(br#"{"token":"tok_LIVE123456"}"#),
        &world,
    );
    let create = prepare(&session[1], 1, &values, &world, &Rules::default(), true);
    assert_eq!(
        create.exchange.request_header("authorization"),
        Some("Bearer tok_LIVE123456")
    );
    assert_eq!(create.substitutions, ["credential"]);
    learn(
        &session[1],
        &[],
        &Bytes::from_static(br#"{"id":"c_LiveConv9876"}"#),
        &world,
    );
    let post = prepare(&session[2], 2, &values, &world, &Rules::default(), true);
    assert_eq!(
        post.exchange.uri,
        "/api/conversations/c_LiveConv9876/messages"
    );
    let key = post
        .exchange
        .request_header("idempotency-key")
        .expect("key")
        .to_string();
    assert_ne!(key, "idem-4f2a9c01d3e5b7a8");
    assert_eq!(key.len(), "idem-4f2a9c01d3e5b7a8".len());
    let retry = prepare(&session[3], 3, &values, &world, &Rules::default(), true);
    assert_eq!(
        retry.exchange.request_header("idempotency-key"),
        Some(key.as_str()),
        "one nonce per world"
    );
    let put = prepare(&session[4], 4, &values, &world, &Rules::default(), true);
    assert!(
        put.exchange
            .uri
            .starts_with("/api/conversations/c_LiveConv9876/messages/txn")
    );
    assert!(!put.exchange.uri.ends_with("txn0a1b2c3d4e5f"));
    // Another world regenerates its own nonces.
    let other = World::default();
    let other_post = prepare(&session[2], 2, &values, &other, &Rules::default(), true);
    assert_ne!(
        other_post.exchange.request_header("idempotency-key"),
        Some(key.as_str())
    );
}

#[test]
fn a_token_handed_out_in_a_response_header_is_learned_and_sent() {
    let mut login = ex("POST", "/api/session", &[], "{}", "{}");
    login.response_headers.extend([
        (
            "date".to_string(),
            "Mon, 23 Nov 2026 02:00:00 GMT".to_string(),
        ),
        ("x-auth-token".to_string(), "hdr_Rec0rded77Tok".to_string()),
    ]);
    let me = ex(
        "GET",
        "/api/me",
        &[("x-auth-token", "hdr_Rec0rded77Tok")],
        "",
        "{}",
    );
    let session = vec![login, me.clone(), me];
    let values = analyze(&session);
    assert!(
        values.handed_out[1].contains("hdr_Rec0rded77Tok"),
        "the header handed it out: not a nonce"
    );
    let world = World::default();
    let live = [
        (
            "date".to_string(),
            "Mon, 23 Nov 2026 03:00:00 GMT".to_string(),
        ),
        ("x-auth-token".to_string(), "hdr_L1veL1ve42Tok".to_string()),
    ];
    assert_eq!(
        header_pairs(&session[0], &live),
        [(
            "hdr_Rec0rded77Tok".to_string(),
            "hdr_L1veL1ve42Tok".to_string()
        )],
        "the date is not learned"
    );
    learn(&session[0], &live, &Bytes::new(), &world);
    let me = prepare(&session[1], 1, &values, &world, &Rules::default(), true);
    assert_eq!(
        me.exchange.request_header("x-auth-token"),
        Some("hdr_L1veL1ve42Tok")
    );
    assert!(!may_hand_out("Access-Control-Allow-Origin") && may_hand_out("X-Request-Id"));
}

#[test]
fn cursors_inside_next_page_links_are_handed_out_and_learned() {
    let feed = |token: &str| {
        format!(
            r#"{{"items":[],"links":{{"next":"https://chat.example/api/feed?limit=2&page_token={token}"}}}}"#
        )
    };
    let first = ex(
        "GET",
        "/api/feed?limit=2",
        &[],
        "",
        &feed("pt_R3c0rdedPage1"),
    );
    let mut second = ex(
        "GET",
        "/api/feed?limit=2&page_token=pt_R3c0rdedPage1",
        &[],
        "",
        "{}",
    );
    second.response_headers.push((
        "link".into(),
        r#"</api/threads?after=ta_R3c0rdedAfter9>; rel="next""#.into(),
    ));
    let third = ex("GET", "/api/threads?after=ta_R3c0rdedAfter9", &[], "", "{}");
    let session = vec![first, second, third];
    let values = analyze(&session);
    for cursor in ["pt_R3c0rdedPage1", "ta_R3c0rdedAfter9"] {
        assert!(
            !values.nonces.contains(cursor),
            "{cursor} was handed out in a link"
        );
    }
    let world = World::default();
    learn(
        &session[0],
        &[],
        &Bytes::from(feed("pt_L1vePage1xyz")),
        &world,
    );
    let page = prepare(&session[1], 1, &values, &world, &Rules::default(), true);
    assert_eq!(
        page.exchange.uri,
        "/api/feed?limit=2&page_token=pt_L1vePage1xyz"
    );
    let link = r#"<https://chat.example/api/threads?after=ta_L1veAfter77>; rel="next""#;
    learn(
        &session[1],
        &[("link".into(), link.into())],
        &Bytes::new(),
        &world,
    );
    let threads = prepare(&session[2], 2, &values, &world, &Rules::default(), true);
    assert_eq!(threads.exchange.uri, "/api/threads?after=ta_L1veAfter77");
    // Free text that mentions a path is not a link.
    let mut pairs = Vec::new();
    align_urls("see /api/m/m_Rec12345", "see /api/m/m_Live6789", &mut pairs);
    assert!(pairs.is_empty());
}

#[test]
fn a_repeated_query_name_pairs_values_in_order() {
    // Found by the correlate fuzz target: the second recorded `cursor` was
    // paired with the first live one, so an answer identical to the
    // recording mapped one of its own values to another.
    let link = "/api/search?cursor=cur_Zz11Yy22Xx33&cursor=cur_Aa99Bb88Cc77";
    let mut pairs = Vec::new();
    align_urls(link, link, &mut pairs);
    assert!(pairs.is_empty(), "{pairs:?}");
    let live = "/api/search?cursor=cur_L1ve11Yy22Xx&cursor=cur_L1ve99Bb88Cc";
    align_urls(link, live, &mut pairs);
    assert_eq!(
        pairs,
        [
            (
                "cur_Zz11Yy22Xx33".to_string(),
                "cur_L1ve11Yy22Xx".to_string()
            ),
            (
                "cur_Aa99Bb88Cc77".to_string(),
                "cur_L1ve99Bb88Cc".to_string()
            ),
        ]
    );
}

#[test]
fn form_bodies_are_read_and_rewritten_like_json_ones() {
    const FORM: (&str, &str) = ("content-type", "application/x-www-form-urlencoded");
    let auth = ("authorization", "Bearer xoxb-R3c0rded-T0ken");
    let session = vec![
        ex(
            "POST",
            "/api/auth.login",
            &[FORM],
            &format!("username=ann%40example.com&password={MARK}"),
            r#"{"ok":true,"token":"xoxb-R3c0rded-T0ken"}"#,
        ),
        ex(
            "POST",
            "/api/conversations.create",
            &[FORM, auth],
            "name=general",
            r#"{"channel":{"id":"C0R3C0RD3D"}}"#,
        ),
        ex(
            "POST",
            "/api/chat.postMessage",
            &[FORM, auth],
            "channel=C0R3C0RD3D&text=hello+there&client_msg_id=cm_9f8e7d6c5b4a",
            r#"{"ok":true}"#,
        ),
    ];
    let credentials = Credentials {
        users: [("ann@example.com".to_string(), "hunter 2".to_string())].into(),
        ..Credentials::default()
    };
    let values = analyze_with(&session, &credentials);
    assert!(values.nonces.contains("cm_9f8e7d6c5b4a"));
    let world = World::seeded(&credentials);
    let login = prepare(&session[0], 0, &values, &world, &Rules::default(), true);
    assert_eq!(
        login.exchange.request_body, b"username=ann%40example.com&password=hunter%202",
        "the user is kept and the password comes from the credentials file"
    );
    let live = |body: &'static [u8]| Bytes::from_static(body);
    learn(
        &session[0],
        &[],
        &live(br#"{"ok":true,"token":"xoxb-L1ve-T0ken99"}"#),
        &world,
    );
    learn(
        &session[1],
        &[],
        &live(br#"{"channel":{"id":"C0L1VE0001"}}"#),
        &world,
    );
    let post = prepare(&session[2], 2, &values, &world, &Rules::default(), true);
    let body = String::from_utf8(post.exchange.request_body.clone()).expect("utf8");
    assert!(
        body.starts_with("channel=C0L1VE0001&text=hello+there&client_msg_id=cm_"),
        "{body}"
    );
    assert!(
        !body.ends_with("cm_9f8e7d6c5b4a"),
        "a fresh client id per world"
    );
    assert_eq!(
        post.exchange.request_header("authorization"),
        Some("Bearer xoxb-L1ve-T0ken99")
    );
}

#[test]
fn a_failed_response_skips_the_requests_that_need_its_values() {
    let session = chat_session();
    let values = analyze(&session);
    let world = World::default();
    poison(&session[1], &world);
    learn(
        &session[0],
        &[],
        &Bytes::from_static(br#"{"token":"tok_LIVE123456"}"#),
        &world,
    );
    let post = prepare(&session[2], 2, &values, &world, &Rules::default(), true);
    assert!(
        post.skip,
        "the conversation was never created in this world"
    );
}

#[test]
fn a_credentials_file_supplies_passwords_and_keeps_real_users() {
    let session = chat_session();
    let creds: Credentials = toml::from_str(
        "[users]\n\"user-07\" = \"hunter2\"\n[markers]\n\"redacted:ffffffffffffffffffffffffffffffff\" = \"k\"\n",
    )
    .expect("valid");
    let values = analyze_with(&session, &creds);
    assert!(
        !values.nonces.contains("user-07"),
        "a listed user keeps its name"
    );
    let mut login = session[0].clone();
    login.request_body =
        br#"{"user":"user-07","password":"redacted:0123456789abcdef0123456789abcdef"}"#.to_vec();
    let values = analyze_with(&[login.clone()], &creds);
    let p = prepare(
        &login,
        0,
        &values,
        &World::seeded(&creds),
        &Rules::default(),
        true,
    );
    let body: Value = serde_json::from_slice(&p.exchange.request_body).expect("json");
    assert_eq!(
        body,
        serde_json::json!({"user": "user-07", "password": "hunter2"})
    );
    assert_eq!(
        World::seeded(&creds)
            .live("redacted:ffffffffffffffffffffffffffffffff")
            .as_deref(),
        Some("k")
    );
}

#[test]
fn only_whole_values_are_replaced_and_short_or_common_ones_never_mapped() {
    let world = World::default();
    let recorded = ex(
        "POST",
        "/x",
        &[],
        "",
        r#"{"id":"c_Ab12Cd34Ef56","n":"1","ok":"true","items":[{"id":"m_Zx98Cv76Bn54"}]}"#,
    );
    let pairs = learn(
        &recorded,
        &[],
        &Bytes::from_static(
            br#"{"id":"c_Live99Live99","n":"2","ok":"false","items":[{"id":"m_LiveNested12"}]}"#,
        ),
        &world,
    );
    let learned: Vec<&str> = pairs.iter().map(|(r, _)| r.as_str()).collect();
    assert_eq!(
        learned,
        ["c_Ab12Cd34Ef56", "m_Zx98Cv76Bn54"],
        "\"1\" and \"true\" are never mapped"
    );
    // The whole value is replaced, in nested JSON, arrays, path segments
    // and query values; a long opaque id inside a longer string is
    // replaced as a whole token (an id in a filter or a message); "1"
    // never is.
    let send = ex(
        "POST",
        "/c/c_Ab12Cd34Ef56/m?ref=m_Zx98Cv76Bn54&q=1",
        &[],
        r#"{"text":"see c_Ab12Cd34Ef56 please","refs":["m_Zx98Cv76Bn54"],"n":"1"}"#,
        "{}",
    );
    let p = prepare(
        &send,
        0,
        &SessionValues::default(),
        &world,
        &Rules::default(),
        true,
    );
    assert_eq!(p.exchange.uri, "/c/c_Live99Live99/m?ref=m_LiveNested12&q=1");
    let body: Value = serde_json::from_slice(&p.exchange.request_body).expect("json");
    assert_eq!(
        body,
        serde_json::json!({"text": "see c_Live99Live99 please", "refs": ["m_LiveNested12"], "n": "1"})
    );
}

#[test]
fn a_digitless_cursor_is_still_learned_but_never_invented() {
    assert!(is_token("cur_mldrbMhhbcbmvmvlSScX"));
    assert!(!is_token("messages") && !is_token("nextCursor") && !is_token("created_by"));
    assert!(!is_dynamic("conversations"), "a path word is not a nonce");
    let world = World::default();
    let recorded = ex(
        "GET",
        "/m",
        &[],
        "",
        r#"{"next_cursor":"cur_mldrbMhhbcbmvmvlSScX"}"#,
    );
    learn(
        &recorded,
        &[],
        &Bytes::from_static(br#"{"next_cursor":"cur_LIVEabcdefghijklmn"}"#),
        &world,
    );
    let next = ex(
        "GET",
        "/m?limit=2&cursor=cur_mldrbMhhbcbmvmvlSScX",
        &[],
        "",
        "{}",
    );
    let p = prepare(
        &next,
        0,
        &analyze(std::slice::from_ref(&next)),
        &world,
        &Rules::default(),
        true,
    );
    assert_eq!(p.exchange.uri, "/m?limit=2&cursor=cur_LIVEabcdefghijklmn");
}

#[test]
fn percent_encoded_ids_and_object_keys_are_matched() {
    let world = World::default();
    let recorded = ex(
        "GET",
        "/sync",
        &[],
        "",
        r#"{"rooms":{"!abc123:host":{"n":1}}}"#,
    );
    learn(
        &recorded,
        &[],
        &Bytes::from_static(br#"{"rooms":{"!live987:host":{"n":1}}}"#),
        &world,
    );
    let values = SessionValues::default();
    let send = ex("PUT", "/rooms/%21abc123%3Ahost/send/txn1", &[], "", "{}");
    let p = prepare(&send, 0, &values, &world, &Rules::default(), true);
    assert_eq!(p.exchange.uri, "/rooms/%21live987%3Ahost/send/txn1");
    assert_eq!(percent_decode("%21a%3Ab"), "!a:b");
}

fn text_frame(dir: &str, data: &str) -> crate::capture::WsFrame {
    crate::capture::WsFrame::text(dir, data)
}

#[test]
fn learned_ids_reach_the_json_text_frames_a_websocket_client_sends() {
    let frame = text_frame;
    let mut socket = ex("GET", "/api/ws", &[], "", "");
    socket.status = Some(101);
    socket.ws_frames = vec![
        frame("client", r#"{"type":"join","conversation":"c_9f8e7d6c"}"#),
        frame("server", r#"{"type":"joined","conversation":"c_9f8e7d6c"}"#),
        frame("client", "c_9f8e7d6c is not JSON"),
    ];
    let world = World::default();
    world.absorb(&[("c_9f8e7d6c".to_string(), "c_live1234".to_string())]);
    let p = prepare(
        &socket,
        0,
        &SessionValues::default(),
        &world,
        &Rules::default(),
        true,
    );
    let data: Vec<&str> = p
        .exchange
        .ws_frames
        .iter()
        .map(|f| f.data.as_str())
        .collect();
    assert_eq!(
        data,
        [
            r#"{"type":"join","conversation":"c_live1234"}"#,
            r#"{"type":"joined","conversation":"c_9f8e7d6c"}"#,
            "c_9f8e7d6c is not JSON",
        ]
    );
    assert_eq!(p.substitutions, ["correlated"]);
}

#[test]
fn server_frames_are_learned_from_by_shape_whatever_order_they_come_in() {
    let mut socket = ex("GET", "/api/ws", &[], "", "");
    socket.status = Some(101);
    socket.ws_frames = vec![
        text_frame("client", r#"{"type":"join","conversation":"c_9f8e7d6c"}"#),
        text_frame(
            "server",
            r#"{"type":"joined","conversation":"c_9f8e7d6c","members":1}"#,
        ),
        text_frame(
            "client",
            r#"{"type":"send","client_id":"cl_00aa11bb22cc","text":"hi"}"#,
        ),
        text_frame(
            "server",
            r#"{"type":"message","message":{"id":"m_R3c0rded0ther","author":"user-01"}}"#,
        ),
        text_frame(
            "server",
            r#"{"type":"ack","client_id":"cl_00aa11bb22cc","message_id":"m_R3c0rdedAck1"}"#,
        ),
    ];
    // The client id is sent once and handed out by nothing before:
    // a nonce; the server's ids count as handed out.
    let values = analyze(std::slice::from_ref(&socket));
    assert!(values.nonces.contains("cl_00aa11bb22cc"), "{values:?}");
    assert!(response_values(&socket).contains(&"m_R3c0rdedAck1".to_string()));

    let mut aligner = FrameAligner::new(&socket);
    // The ack comes before the push this time.
    let ack = aligner
        .pairs(r#"{"type":"ack","client_id":"cl_99ff88ee77dd","message_id":"m_L1veAck00001"}"#);
    assert!(
        ack.contains(&("m_R3c0rdedAck1".into(), "m_L1veAck00001".into())),
        "{ack:?}"
    );
    let push = aligner
        .pairs(r#"{"type":"message","message":{"id":"m_L1ve0ther001","author":"user-01-w2"}}"#);
    assert!(
        push.contains(&("m_R3c0rded0ther".into(), "m_L1ve0ther001".into())),
        "{push:?}"
    );
    // Each recorded frame is used once; a frame of no recorded shape
    // teaches nothing.
    assert!(
        aligner
            .pairs(r#"{"type":"ack","client_id":"cl_1","message_id":"m_L1veAck00002"}"#)
            .is_empty()
    );
    assert!(aligner.pairs(r#"{"type":"typing","user":"x"}"#).is_empty());
    assert!(aligner.pairs("not json").is_empty());

    // What was learned reaches the next client frame when it is sent.
    let world = World::default();
    world.absorb(&ack);
    assert_eq!(
        world
            .substitute_json(r#"{"type":"read","message_id":"m_R3c0rdedAck1"}"#)
            .as_deref(),
        Some(r#"{"type":"read","message_id":"m_L1veAck00001"}"#)
    );
    assert_eq!(world.substitute_json(r#"{"type":"read"}"#), None);
}

#[test]
fn a_clear_password_is_a_credential_never_a_nonce() {
    // Recorded with --keep-credentials: the password and the Basic
    // credential are sent once and never handed out, like a nonce, but
    // regenerating them fails every login. The idempotency key stays one.
    let login = ex(
        "POST",
        "/api/login",
        &[
            ("authorization", "Basic YWxpY2U6SHVudGVyMnh5ejk5"),
            ("idempotency-key", "idem-4f2a9c01d3e5b7a8"),
        ],
        r#"{"auth":{"username":"alice","Password":"Hunter2xyz99"}}"#,
        r#"{"token":"tok_Ab12Cd34Ef56Gh78"}"#,
    );
    let session = vec![login];
    let values = analyze(&session);
    assert!(!values.nonces.contains("Hunter2xyz99"));
    assert!(!values.nonces.contains("YWxpY2U6SHVudGVyMnh5ejk5"));
    assert!(values.nonces.contains("idem-4f2a9c01d3e5b7a8"));
    let world = World::default();
    let p = prepare(&session[0], 0, &values, &world, &Rules::default(), true);
    let body: Value = serde_json::from_slice(&p.exchange.request_body).expect("json");
    assert_eq!(body["auth"]["Password"], "Hunter2xyz99");
    assert_eq!(
        p.exchange.request_header("authorization"),
        Some("Basic YWxpY2U6SHVudGVyMnh5ejk5")
    );
    assert_eq!(p.substitutions, ["nonce"]);
}

#[test]
fn concurrency_tokens_are_learned_and_sent_in_conditional_requests() {
    // The edit of a note sends back the validators the create handed out;
    // stale, every edit of every world gets 412.
    let mut create = ex(
        "POST",
        "/api/notes",
        &[],
        r#"{"text":"a"}"#,
        r#"{"id":"n_Ab12Cd34Ef56"}"#,
    );
    create
        .response_headers
        .push(("ETag".into(), "\"r1-8f3k2m9q\"".into()));
    create.response_headers.push((
        "Last-Modified".into(),
        "Mon, 07 Dec 2026 05:00:00 GMT".into(),
    ));
    let edit = ex(
        "PATCH",
        "/api/notes/n_Ab12Cd34Ef56",
        &[
            ("if-match", "\"r1-8f3k2m9q\""),
            ("if-unmodified-since", "Mon, 07 Dec 2026 05:00:00 GMT"),
        ],
        r#"{"text":"b"}"#,
        "{}",
    );
    let session = vec![create, edit];
    let values = analyze(&session);
    let world = World::default();
    let live_headers = vec![
        ("etag".to_string(), "\"r7-zz99yy88\"".to_string()),
        (
            "last-modified".to_string(),
            "Mon, 07 Dec 2026 06:00:00 GMT".to_string(),
        ),
    ];
    learn(
        &session[0],
        &live_headers,
        &Bytes::from_static(br#"{"id":"n_Live1234Abcd"}"#),
        &world,
    );
    let p = prepare(&session[1], 1, &values, &world, &Rules::default(), true);
    assert_eq!(p.exchange.uri, "/api/notes/n_Live1234Abcd");
    assert_eq!(
        p.exchange.request_header("if-match"),
        Some("\"r7-zz99yy88\"")
    );
    assert_eq!(
        p.exchange.request_header("if-unmodified-since"),
        Some("Mon, 07 Dec 2026 06:00:00 GMT")
    );
    assert!(may_hand_out("ETag"), "the client keeps it for learning");
}

#[test]
fn a_value_that_came_back_as_recorded_is_resolved_and_never_skipped_for() {
    // The login hands out the user's id, live as recorded; the create
    // fails, and its answer would have named the same id: the profile
    // read that carries it is still sent.
    let session = vec![
        ex(
            "POST",
            "/api/login",
            &[],
            r#"{"user":"alice"}"#,
            r#"{"user_id":"u_Ab12Cd34Ef56","token":"tok_Qw12Er34Ty56"}"#,
        ),
        ex(
            "POST",
            "/api/rooms",
            &[],
            "{}",
            r#"{"id":"r_Zx98Cv76Bn54","owner":"u_Ab12Cd34Ef56"}"#,
        ),
        ex("GET", "/api/users/u_Ab12Cd34Ef56/profile", &[], "", "{}"),
    ];
    let values = analyze(&session);
    let world = World::default();
    learn(
        &session[0],
        &[],
        &Bytes::from_static(br#"{"user_id":"u_Ab12Cd34Ef56","token":"tok_Live9876Abcd"}"#),
        &world,
    );
    poison(&session[1], &world);
    let p = prepare(&session[2], 2, &values, &world, &Rules::default(), true);
    assert!(!p.skip, "the user id is known, not lost");
    assert_eq!(p.exchange.uri, "/api/users/u_Ab12Cd34Ef56/profile");
}

#[test]
fn cursors_inside_a_next_page_header_are_handed_out_and_learned() {
    // A cursor handed out inside a URL in a header other than Location or
    // Link: taken for a nonce, it would be replaced with random
    // characters and every page follow would get 400.
    let mut first = ex("GET", "/api/feed?limit=20", &[], "", r#"{"items":[]}"#);
    first.response_headers.push((
        "X-Next-Page".into(),
        "/api/feed?page_token=pt_Ab12Cd34Ef56&limit=20".into(),
    ));
    let next = ex(
        "GET",
        "/api/feed?page_token=pt_Ab12Cd34Ef56&limit=20",
        &[],
        "",
        r#"{"items":[]}"#,
    );
    let session = vec![first, next];
    let values = analyze(&session);
    assert!(!values.nonces.contains("pt_Ab12Cd34Ef56"));
    let world = World::default();
    let live = [(
        "x-next-page".to_string(),
        "https://chat.example/api/feed?page_token=pt_Live9876Zyxw&limit=20".to_string(),
    )];
    learn(
        &session[0],
        &live,
        &Bytes::from_static(br#"{"items":[]}"#),
        &world,
    );
    let p = prepare(&session[1], 1, &values, &world, &Rules::default(), true);
    assert_eq!(
        p.exchange.uri,
        "/api/feed?page_token=pt_Live9876Zyxw&limit=20"
    );
    assert_eq!(p.substitutions, ["correlated"]);
}

#[test]
fn a_login_names_its_user_anywhere_and_gets_its_password() {
    // Real login bodies name the user under other keys, nested, or in a
    // form: the user is found by value, and the redacted password is
    // replaced with the user's from the credentials file.
    let creds: Credentials =
        toml::from_str("[users]\n\"alice@example.com\" = \"pw-Alice-1\"\n").expect("valid");
    let nested = ex(
        "POST",
        "/api/session",
        &[],
        &format!(r#"{{"identity":{{"login_id":"alice@example.com"}},"password":"{MARK}"}}"#),
        r#"{"token":"tok_Ab12Cd34Ef56Gh78"}"#,
    );
    let form = ex(
        "POST",
        "/oauth/token",
        &[("content-type", "application/x-www-form-urlencoded")],
        &format!(
            "grant_type=password&phone=alice%40example.com&password={}",
            percent_encode(MARK)
        ),
        r#"{"access_token":"tok_Qw12Er34Ty56Ui78"}"#,
    );
    for login in [nested, form] {
        let values = analyze_with(std::slice::from_ref(&login), &creds);
        let p = prepare(
            &login,
            0,
            &values,
            &World::default(),
            &Rules::default(),
            true,
        );
        let body = String::from_utf8_lossy(&p.exchange.request_body).into_owned();
        assert!(body.contains("pw-Alice-1"), "{body}");
        assert!(!body.contains(MARK), "{body}");
        assert_eq!(p.substitutions, ["credential"]);
    }
    // A request that names the user but sends no secret is no login.
    let invite = ex(
        "POST",
        "/api/invites",
        &[("authorization", &format!("Bearer {MARK}"))],
        r#"{"email":"alice@example.com"}"#,
        "{}",
    );
    let values = analyze_with(std::slice::from_ref(&invite), &creds);
    assert_eq!(values.secrets, [None]);
}

#[test]
fn a_redacted_basic_credential_gets_its_users_password_back() {
    use crate::capture::redact::{basic_credential, basic_parts};
    // Recording keeps a Basic credential's user name and marks only the
    // password: the credentials file's `[users]` (or `[markers]`) gives
    // the password back, every request of the session, no login needed.
    let stored = format!("Basic {}", basic_credential("alice", MARK));
    let get = ex(
        "GET",
        "/alice/calendar/",
        &[("authorization", &stored)],
        "",
        "{}",
    );
    let sent = |creds: &Credentials| {
        let values = analyze_with(std::slice::from_ref(&get), creds);
        let p = prepare(
            &get,
            0,
            &values,
            &World::seeded(creds),
            &Rules::default(),
            true,
        );
        let (_, value) = p
            .exchange
            .request_headers
            .iter()
            .find(|(k, _)| k == "authorization")
            .expect("kept")
            .clone();
        let (scheme, credential) = value.split_once(' ').expect("scheme");
        assert_eq!(scheme, "Basic");
        (basic_parts(credential).expect("Basic"), p.unresolved)
    };
    let by_user: Credentials = toml::from_str("[users]\nalice = \"pw:Alice-1\"\n").expect("valid");
    assert_eq!(
        sent(&by_user),
        (("alice".to_string(), "pw:Alice-1".to_string()), 0)
    );
    let by_marker: Credentials =
        toml::from_str(&format!("[markers]\n\"{MARK}\" = \"pw-2\"\n")).expect("valid");
    assert_eq!(
        sent(&by_marker),
        (("alice".to_string(), "pw-2".to_string()), 0)
    );
    // Another user's password is not hers: sent as recorded, counted.
    let other: Credentials = toml::from_str("[users]\nbob = \"pw-3\"\n").expect("valid");
    assert_eq!(sent(&other), (("alice".to_string(), MARK.to_string()), 1));
}

#[test]
fn a_client_made_id_reused_later_is_regenerated_everywhere_in_its_world() {
    // The client chose the record's id (a PUT target), then edited and
    // listed it: every world must create its own record and edit that
    // one, not collide with the first world's (412/409).
    let uuid = "3f2b8c1e-9a4d-4e6f-8b7a-1c2d3e4f5a6b";
    let session = vec![
        ex(
            "PUT",
            &format!("/api/records/{uuid}"),
            &[],
            r#"{"text":"a"}"#,
            &format!(r#"{{"id":"{uuid}","rev":"1"}}"#),
        ),
        ex(
            "PATCH",
            &format!("/api/records/{uuid}"),
            &[("x-device", "dev-8f3k2m9q")],
            r#"{"text":"b"}"#,
            "{}",
        ),
        ex(
            "GET",
            &format!("/api/records?ids={uuid}"),
            &[("x-device", "dev-8f3k2m9q")],
            "",
            "{}",
        ),
    ];
    let values = analyze(&session);
    assert!(values.nonces.contains(uuid));
    assert!(
        !values.nonces.contains("dev-8f3k2m9q"),
        "a device sent with every request is a stable identifier"
    );
    let world = World::default();
    let put = prepare(&session[0], 0, &values, &world, &Rules::default(), true);
    let fresh = put
        .exchange
        .uri
        .trim_start_matches("/api/records/")
        .to_string();
    assert_ne!(fresh, uuid);
    assert_eq!(fresh.len(), uuid.len());
    let patch = prepare(&session[1], 1, &values, &world, &Rules::default(), true);
    assert_eq!(patch.exchange.uri, format!("/api/records/{fresh}"));
    assert_eq!(
        patch.exchange.request_header("x-device"),
        Some("dev-8f3k2m9q")
    );
    let list = prepare(&session[2], 2, &values, &world, &Rules::default(), true);
    assert_eq!(list.exchange.uri, format!("/api/records?ids={fresh}"));
    let other = prepare(
        &session[0],
        0,
        &values,
        &World::default(),
        &Rules::default(),
        true,
    );
    assert_ne!(other.exchange.uri, put.exchange.uri, "each world its own");
}

#[test]
fn client_made_collections_and_file_names_are_regenerated_into_text_bodies() {
    // WebDAV: a collection made under a client UUID (MKCALENDAR, trailing
    // slash), an entry put as `<uuid>.ics` whose iCalendar body carries
    // the same UID, then found by an XML query naming it.
    let cal = "6a1f0e2d-3c4b-4a59-8e7d-6c5b4a392817";
    let uid = "0f9e8d7c-6b5a-4c3d-9e1f-2a3b4c5d6e7f";
    let ics = &[("content-type", "text/calendar; charset=utf-8")];
    let xml = &[("content-type", "application/xml")];
    let session = vec![
        ex("MKCALENDAR", &format!("/alice/{cal}/"), &[], "", ""),
        ex(
            "PUT",
            &format!("/alice/{cal}/{uid}.ics"),
            ics,
            &format!("BEGIN:VEVENT\r\nUID:{uid}\r\nEND:VEVENT\r\n"),
            "",
        ),
        ex(
            "REPORT",
            &format!("/alice/{cal}/"),
            xml,
            &format!("<C:text-match>{uid}</C:text-match>"),
            "",
        ),
    ];
    let values = analyze(&session);
    assert!(values.nonces.contains(cal) && values.nonces.contains(uid));
    let world = World::default();
    let sent: Vec<_> = (0..3)
        .map(|i| prepare(&session[i], i, &values, &world, &Rules::default(), true).exchange)
        .collect();
    let fresh_cal = sent[0].uri.trim_matches('/').trim_start_matches("alice/");
    assert_ne!(fresh_cal, cal);
    let put = sent[1].uri.rsplit('/').next().expect("file");
    let fresh_uid = put.strip_suffix(".ics").expect("extension kept");
    assert_ne!(fresh_uid, uid);
    assert_eq!(sent[1].uri, format!("/alice/{fresh_cal}/{fresh_uid}.ics"));
    assert_eq!(
        String::from_utf8_lossy(&sent[1].request_body),
        format!("BEGIN:VEVENT\r\nUID:{fresh_uid}\r\nEND:VEVENT\r\n")
    );
    assert_eq!(
        String::from_utf8_lossy(&sent[2].request_body),
        format!("<C:text-match>{fresh_uid}</C:text-match>")
    );
}

#[test]
fn ids_inside_expressions_are_replaced_as_whole_tokens() {
    // A room id learned from its create travels inside a filter, a search
    // and a GraphQL query: every world must read its own room.
    let session = vec![
        ex(
            "POST",
            "/api/rooms",
            &[],
            "{}",
            r#"{"id":"c_Ab12Cd34Ef56"}"#,
        ),
        ex(
            "GET",
            "/api/messages?filter=(room%3D%27c_Ab12Cd34Ef56%27)&q=room:c_Ab12Cd34Ef56+near:room-7",
            &[],
            "",
            "{}",
        ),
        ex(
            "POST",
            "/graphql",
            &[],
            r#"{"query":"{ room(id: \"c_Ab12Cd34Ef56\") { name } }","variables":{"where":"roomId eq 'c_Ab12Cd34Ef56'"}}"#,
            "{}",
        ),
    ];
    let values = analyze(&session);
    let world = World::default();
    learn(
        &session[0],
        &[],
        &Bytes::from_static(br#"{"id":"c_Liv98Zy76Xw54"}"#),
        &world,
    );
    // A short value the world knows stays whole-value only.
    world.absorb(&[("room-7".to_string(), "room-9".to_string())]);
    let read = prepare(&session[1], 1, &values, &world, &Rules::default(), true);
    let uri = percent_decode(&read.exchange.uri);
    assert!(!uri.contains("c_Ab12Cd34Ef56"), "{uri}");
    assert_eq!(uri.matches("c_Liv98Zy76Xw54").count(), 2, "{uri}");
    assert!(uri.contains("room-7"), "{uri}");
    let graphql = prepare(&session[2], 2, &values, &world, &Rules::default(), true);
    let body: Value = serde_json::from_slice(&graphql.exchange.request_body).expect("json");
    assert_eq!(body["query"], "{ room(id: \"c_Liv98Zy76Xw54\") { name } }");
    assert_eq!(body["variables"]["where"], "roomId eq 'c_Liv98Zy76Xw54'");
}

#[test]
fn lists_are_aligned_by_identity_and_a_second_mapping_is_a_conflict() {
    // The live page lists the same messages in another order (by
    // recency): paired by position, alice's id would map to bob's.
    let recorded = ex(
        "GET",
        "/api/messages",
        &[],
        "",
        r#"{"items":[{"id":"m_Aa11Bb22Cc33","author":"alice","text":"one"},{"id":"m_Dd44Ee55Ff66","author":"bob","text":"two"}]}"#,
    );
    let live = Bytes::from_static(
        br#"{"items":[{"id":"m_Yy99Xx88Ww77","author":"bob","text":"two"},{"id":"m_Vv66Uu55Tt44","author":"alice","text":"one"}]}"#,
    );
    let mut pairs = learned_pairs(&recorded, &[], &live);
    pairs.sort();
    assert_eq!(
        pairs,
        [
            ("m_Aa11Bb22Cc33".to_string(), "m_Vv66Uu55Tt44".to_string()),
            ("m_Dd44Ee55Ff66".to_string(), "m_Yy99Xx88Ww77".to_string()),
        ]
    );
    // Items that cannot be told apart are not paired at all.
    let twins = ex(
        "GET",
        "/api/m",
        &[],
        "",
        r#"{"items":[{"id":"m_Aa11Bb22Cc33"},{"id":"m_Dd44Ee55Ff66"}]}"#,
    );
    let live_twins =
        Bytes::from_static(br#"{"items":[{"id":"m_Yy99Xx88Ww77"},{"id":"m_Vv66Uu55Tt44"}]}"#);
    assert!(learned_pairs(&twins, &[], &live_twins).is_empty());
    // A second live value for a recorded one is dropped and counted.
    let world = World::default();
    assert_eq!(world.absorb_aligned(&pairs), 0);
    let other = [("m_Aa11Bb22Cc33".to_string(), "m_Ss33Rr22Qq11".to_string())];
    assert_eq!(world.absorb_aligned(&other), 1);
    assert_eq!(
        world.live("m_Aa11Bb22Cc33").as_deref(),
        Some("m_Vv66Uu55Tt44")
    );
}

/// Whether a live 200 answer with `body` is a shape mismatch against
/// `recorded` (correlation off: the check runs either way).
fn shape_mismatch(recorded: &StoredExchange, body: &'static [u8]) -> bool {
    let correlation = Correlation::new(false, Default::default(), Rules::default());
    let answer = Answer {
        status: Some(200),
        failure: None,
        headers: &[],
        body: &Bytes::from_static(body),
    };
    correlation
        .learn(
            "GET /x",
            recorded,
            recorded,
            answer,
            &SessionValues::default(),
            &World::default(),
        )
        .shape_mismatch
}

#[test]
fn a_success_whose_json_lacks_what_the_recording_had_is_a_shape_mismatch() {
    let recorded = ex(
        "GET",
        "/api/rooms/c_Ab12Cd34Ef56/messages",
        &[],
        "",
        r#"{"items":[{"id":"m_Aa11Bb22Cc33","text":"hi"}],"next":null}"#,
    );
    let shape = |body: &'static [u8]| shape_mismatch(&recorded, body);
    assert!(!shape(
        br#"{"items":[{"id":"m_Zz99Yy88Xx77","text":"yo","seen":true}],"next":"c_1"}"#
    ));
    assert!(!shape(
        br#"{"items":[{"id":"m_Zz99Yy88Xx77","text":null}],"next":null}"#
    ));
    assert!(shape(br#"{"items":[],"next":null}"#), "an empty list");
    assert!(shape(br#"{"error":"not a member"}"#), "a missing key");
    assert!(shape(br#"{"items":"none","next":null}"#), "another type");
}

#[test]
fn a_skipped_request_says_which_value_it_waited_for_and_whose_answer_failed() {
    let session = chat_session();
    let values = analyze(&session);
    let world = World::default();
    poison(&session[1], &world);
    let post = prepare(&session[2], 2, &values, &world, &Rules::default(), true);
    assert!(post.skip);
    let (value, from) = post.waited_for.expect("what it waited for");
    assert_eq!(
        (value.as_str(), &*from),
        ("c_Ab12Cd34Ef56", "POST /api/conversations")
    );
}

#[test]
fn a_learned_id_with_few_digits_is_replaced_inside_an_expression() {
    // A server's random ids need not hold two digits (`c_bdhgNTJNUbzM`,
    // a Matrix room id of letters only). Learned from the create's answer,
    // it is an id wherever it recurs, a filter expression included.
    let session = vec![
        ex(
            "POST",
            "/api/conversations",
            &[],
            "{}",
            r#"{"id":"c_bdhgNTJNUbzM"}"#,
        ),
        ex(
            "GET",
            "/api/messages?filter=%28conversation%3D%27c_bdhgNTJNUbzM%27%29&limit=50",
            &[],
            "",
            "{}",
        ),
    ];
    let values = analyze(&session);
    let world = World::default();
    learn(
        &session[0],
        &[],
        &Bytes::from_static(br#"{"id":"c_RtFMhFc9hyjn"}"#),
        &world,
    );
    let search = prepare(&session[1], 1, &values, &world, &Rules::default(), true);
    assert_eq!(
        percent_decode(&search.exchange.uri),
        "/api/messages?filter=(conversation='c_RtFMhFc9hyjn')&limit=50"
    );
    assert_eq!(search.substitutions, ["correlated"]);
    // A word the world happens to know as a value is still no id.
    world.absorb(&[("ConversationId".to_string(), "Other".to_string())]);
    let words = ex(
        "GET",
        "/api/search?q=ConversationId%20eq%201",
        &[],
        "",
        "{}",
    );
    let kept = prepare(&words, 0, &values, &world, &Rules::default(), true);
    assert_eq!(kept.exchange.uri, words.uri);
}

#[test]
fn a_list_in_another_order_whose_items_differ_in_keys_keeps_its_shape() {
    // Search hits in an order of the backend's own; only one item carries
    // the id its client chose. The recorded first item has a key the live
    // first item lacks, and the answer is still the same answer.
    let recorded = ex(
        "GET",
        "/api/messages?filter=x",
        &[],
        "",
        r#"{"messages":[{"id":"m_Aa11Bb22Cc33","text":"one","client_msg_id":"0c6f3e58-8d1e-4b5a-9f3e-1a2b3c4d5e6f"},{"id":"m_Dd44Ee55Ff66","text":"two"}],"total":2}"#,
    );
    let shape = |body: &'static [u8]| shape_mismatch(&recorded, body);
    assert!(!shape(
        br#"{"messages":[{"id":"m_Yy99Xx88Ww77","text":"two"},{"id":"m_Vv66Uu55Tt44","text":"one","client_msg_id":"9d1b2c3e-8d1e-4b5a-9f3e-1a2b3c4d5e6f"}],"total":2}"#
    ));
    // No live item has what the recorded one had: a mismatch still.
    assert!(shape(
        br#"{"messages":[{"id":"m_Yy99Xx88Ww77","text":"two"},{"id":"m_Vv66Uu55Tt44","text":"one"}],"total":2}"#
    ));
    assert!(shape(
        br#"{"messages":[{"id":"m_Yy99Xx88Ww77"}],"total":1}"#
    ));
}
