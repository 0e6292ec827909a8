//! Credentials in a socket's client frames: a SASL PLAIN `<auth>`, a STOMP
//! `CONNECT` and Socket.IO packets, as recording stores them (user names
//! kept, passwords and tokens as markers), go out with the clear values a
//! credentials file gives, encoded as their format wants.

use super::super::{Credentials, Rules, World, analyze_with, prepare};
use super::{MARK, ex, text_frame};
use crate::capture::StoredExchange;
use crate::capture::redact::frames::{
    login_parts, sasl_auth, sasl_plain_parts, sasl_plain_payload, stomp,
};

/// A recorded socket whose client sent `frames`, each answered.
fn socket(frames: &[&str]) -> StoredExchange {
    let mut socket = ex("GET", "/ws", &[], "", "");
    socket.status = Some(101);
    for data in frames {
        socket.ws_frames.push(text_frame("client", data));
        socket.ws_frames.push(text_frame("server", "ok"));
    }
    socket
}

/// The client frames `socket` goes out with under `creds`, and how many
/// values were left unresolved.
fn sent(socket: &StoredExchange, creds: &str) -> (Vec<String>, u64) {
    let creds: Credentials = toml::from_str(creds).expect("valid credentials");
    let values = analyze_with(std::slice::from_ref(socket), &creds);
    let p = prepare(
        socket,
        0,
        &values,
        &World::seeded(&creds),
        &Rules::default(),
        true,
    );
    let frames = p
        .exchange
        .ws_frames
        .iter()
        .filter(|f| f.dir == "client")
        .map(|f| f.data.clone())
        .collect();
    (frames, p.unresolved)
}

fn sasl(payload: &str) -> String {
    format!("<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>{payload}</auth>")
}

#[test]
fn a_sasl_plain_password_comes_back_by_user_or_marker_in_valid_base64() {
    let recorded = socket(&[&sasl(&sasl_plain_payload("", "alice", MARK))]);
    let parts = |frames: &[String]| {
        let auth = sasl_auth(&frames[0]).expect("an <auth>");
        assert_eq!(auth.mechanism, "PLAIN");
        assert!(frames[0].ends_with("</auth>"), "{}", frames[0]);
        sasl_plain_parts(&frames[0][auth.payload]).expect("valid base64 of three parts")
    };
    let (frames, unresolved) = sent(&recorded, "[users]\nalice = \"pw:Alice-1\"\n");
    assert_eq!(
        (parts(&frames), unresolved),
        (("".into(), "alice".into(), "pw:Alice-1".into()), 0)
    );
    assert_eq!(
        frames[0],
        sasl(&sasl_plain_payload("", "alice", "pw:Alice-1"))
    );
    let (frames, unresolved) = sent(&recorded, &format!("[markers]\n\"{MARK}\" = \"pw-2\"\n"));
    assert_eq!(
        (parts(&frames), unresolved),
        (("".into(), "alice".into(), "pw-2".into()), 0)
    );
    // Another user's password is not hers: sent as recorded, counted.
    let (frames, unresolved) = sent(&recorded, "[users]\nbob = \"pw-3\"\n");
    assert_eq!(
        (frames[0].as_str(), unresolved),
        (recorded.ws_frames[0].data.as_str(), 1)
    );
}

#[test]
fn a_whole_sasl_payload_marked_comes_back_from_the_markers() {
    let recorded = socket(&[&format!(
        "<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='X-TOKEN'>{MARK}</auth>"
    )]);
    let (frames, unresolved) = sent(
        &recorded,
        &format!("[markers]\n\"{MARK}\" = \"dG9rZW4=\"\n"),
    );
    assert_eq!(
        (frames[0].as_str(), unresolved),
        (
            "<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='X-TOKEN'>dG9rZW4=</auth>",
            0
        )
    );
}

#[test]
fn a_stomp_passcode_comes_back_by_login_and_a_bearer_by_marker() {
    let token = "redacted:ffffffffffffffffffffffffffffffff";
    let recorded = socket(&[&format!(
        "CONNECT\naccept-version:1.2\nhost:chat\nlogin:alice\npasscode:{MARK}\n\
         Authorization:Bearer {token}\n\n\0"
    )]);
    let (frames, unresolved) = sent(
        &recorded,
        &format!("[users]\nalice = \"Hunter2-stomp\"\n[markers]\n\"{token}\" = \"tok-live\"\n"),
    );
    assert_eq!(
        (frames[0].as_str(), unresolved),
        (
            "CONNECT\naccept-version:1.2\nhost:chat\nlogin:alice\npasscode:Hunter2-stomp\n\
             Authorization:Bearer tok-live\n\n\0",
            0
        )
    );
    assert_eq!(
        login_parts(&frames[0]),
        Some(("alice".into(), "Hunter2-stomp".into()))
    );
    // The user's password is for the passcode only: the token it does
    // not give stays as recorded, counted.
    let (frames, unresolved) = sent(&recorded, "[users]\nalice = \"Hunter2-stomp\"\n");
    assert_eq!(
        (frames[0].as_str(), unresolved),
        (
            recorded.ws_frames[0]
                .data
                .replace(MARK, "Hunter2-stomp")
                .as_str(),
            1
        )
    );
    // Unlisted: as recorded, both counted.
    let (frames, unresolved) = sent(&recorded, "[users]\nbob = \"x\"\n");
    assert_eq!(
        (frames[0].as_str(), unresolved),
        (recorded.ws_frames[0].data.as_str(), 2)
    );
}

#[test]
fn a_stomp_body_gets_live_values_and_its_content_length_follows() {
    let body = format!(r#"{{"token":"{MARK}"}}"#);
    let recorded = socket(&[&format!(
        "SEND\ndestination:/app/auth\ncontent-length:{}\n\n{body}\0",
        body.len()
    )]);
    let (frames, _) = sent(&recorded, &format!("[markers]\n\"{MARK}\" = \"t0k\"\n"));
    let frame = stomp(&frames[0]).expect("STOMP");
    assert_eq!(&frames[0][frame.body.clone()], r#"{"token":"t0k"}"#);
    assert_eq!(frame.header(&frames[0], "content-length"), Some("15"));
}

#[test]
fn socket_io_packets_get_clear_tokens_and_a_login_event_its_users_password() {
    let recorded = socket(&[
        &format!(r#"40{{"token":"{MARK}"}}"#),
        &format!(r#"40/chat,{{"token":"{MARK}"}}"#),
    ]);
    let (frames, unresolved) = sent(&recorded, &format!("[markers]\n\"{MARK}\" = \"tok-1\"\n"));
    assert_eq!(
        (frames, unresolved),
        (
            vec![
                r#"40{"token":"tok-1"}"#.to_string(),
                r#"40/chat,{"token":"tok-1"}"#.to_string()
            ],
            0
        )
    );
    let login = socket(&[&format!(
        r#"42["login",{{"user":"alice","password":"{MARK}"}}]"#
    )]);
    let (frames, unresolved) = sent(&login, "[users]\nalice = \"Hunter2-sio\"\n");
    assert_eq!(
        (frames[0].as_str(), unresolved),
        (
            r#"42["login",{"user":"alice","password":"Hunter2-sio"}]"#,
            0
        )
    );
}

#[test]
fn frames_are_substituted_at_send_time_behind_a_packet_prefix() {
    let world = World::default();
    world.absorb(&[("c_9f8e7d6c".to_string(), "c_live1234".to_string())]);
    assert_eq!(
        world
            .substitute_json(r#"42["join",{"room":"c_9f8e7d6c"}]"#)
            .as_deref(),
        Some(r#"42["join",{"room":"c_live1234"}]"#)
    );
    assert_eq!(world.substitute_json("c_9f8e7d6c"), None);
}
