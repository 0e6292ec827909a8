//! Unit tests of frame redaction: each format redacted with no clear
//! password left (base64 forms included) and still well-formed.

use super::*;
use crate::capture::redact::RedactionConfig;

fn redactor() -> Redactor {
    Redactor::new([7; 32], &RedactionConfig::default()).expect("default config is valid")
}

fn frame(dir: &str, data: &str) -> WsFrame {
    WsFrame::text(dir, data)
}

/// Every base64 run that encodes `secret` alone, at each of the three
/// alignments it can have inside a longer payload.
fn base64_forms(secret: &str) -> Vec<String> {
    (0..3)
        .map(|shift| {
            let mut bytes = vec![0u8; shift];
            bytes.extend_from_slice(secret.as_bytes());
            let encoded = STANDARD.encode(&bytes);
            let start = if shift == 0 { 0 } else { 4 };
            let end = 4 * (bytes.len() / 3);
            encoded[start..end].to_string()
        })
        .collect()
}

/// Redacts one frame and checks that neither `secret` nor any base64
/// form of it is left.
fn redacted(data: &str, secret: &str) -> String {
    let mut f = frame("client", data);
    redactor().redact_frames(std::slice::from_mut(&mut f), &[]);
    assert!(!f.data.contains(secret), "{}", f.data);
    for form in base64_forms(secret) {
        assert!(!f.data.contains(&form), "{form} in {}", f.data);
    }
    f.data
}

#[test]
fn sasl_plain_keeps_the_user_and_marks_the_password_in_valid_base64() {
    let r = redactor();
    let payload = sasl_plain_payload("", "alice@example.com", "Hunter2-sasl!");
    let sent = format!(
        "<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>{payload}</auth>"
    );
    // The password's base64 is in what was sent, at its alignment.
    assert!(
        base64_forms("Hunter2-sasl!")
            .iter()
            .any(|f| sent.contains(f))
    );
    let stored = redacted(&sent, "Hunter2-sasl!");
    let auth = sasl_auth(&stored).expect("still an <auth>");
    assert_eq!(auth.mechanism, "PLAIN");
    assert!(
        stored.starts_with("<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>")
    );
    assert!(stored.ends_with("</auth>"));
    let (authzid, user, password) =
        sasl_plain_parts(&stored[auth.payload]).expect("valid base64 of three parts");
    assert_eq!(
        (authzid.as_str(), user.as_str(), password),
        ("", "alice@example.com", r.marker(b"Hunter2-sasl!"))
    );
    assert_eq!(
        login_parts(&stored),
        Some(("alice@example.com".into(), r.marker(b"Hunter2-sasl!")))
    );
}

#[test]
fn other_sasl_payloads_are_marked_whole_and_anonymous_is_kept() {
    let r = redactor();
    let token = STANDARD.encode("n,a=ann,\x01auth=Bearer tok_Sasl_0123456789\x01\x01");
    let sent = format!(
        r#"<auth xmlns="urn:ietf:params:xml:ns:xmpp-sasl" mechanism="OAUTHBEARER">{token}</auth>"#
    );
    let stored = redacted(&sent, "tok_Sasl_0123456789");
    assert_eq!(
        stored,
        format!(
            r#"<auth xmlns="urn:ietf:params:xml:ns:xmpp-sasl" mechanism="OAUTHBEARER">{}</auth>"#,
            r.marker(token.as_bytes())
        )
    );
    for kept in [
        "<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='ANONYMOUS'>dHJhY2U=</auth>",
        "<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'/>",
        "<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>=</auth>",
        "<authorize/>",
    ] {
        let mut f = frame("client", kept);
        r.redact_frames(std::slice::from_mut(&mut f), &[]);
        assert_eq!(f.data, kept);
    }
}

#[test]
fn stomp_marks_passcode_and_credential_headers_and_keeps_login() {
    let r = redactor();
    let sent = "CONNECT\naccept-version:1.2\nhost:chat\nlogin:alice\npasscode:Hunter2-stomp\n\
                Authorization:Bearer tok_Stomp_0123456789\nX-Room:r1\n\n\0";
    let stored = redacted(sent, "Hunter2-stomp");
    assert!(!stored.contains("tok_Stomp_0123456789"));
    assert_eq!(
        stored,
        format!(
            "CONNECT\naccept-version:1.2\nhost:chat\nlogin:alice\npasscode:{}\n\
             Authorization:Bearer {}\nX-Room:r1\n\n\0",
            r.marker(b"Hunter2-stomp"),
            r.marker(b"tok_Stomp_0123456789")
        )
    );
    assert_eq!(
        login_parts(&stored),
        Some(("alice".into(), r.marker(b"Hunter2-stomp")))
    );
    // CRLF lines and heart-beats before the command.
    let crlf = "\n\r\nSTOMP\r\nlogin:bob\r\npasscode:Hunter2-crlf\r\n\r\n\0";
    assert_eq!(
        redacted(crlf, "Hunter2-crlf"),
        format!(
            "\n\r\nSTOMP\r\nlogin:bob\r\npasscode:{}\r\n\r\n\0",
            r.marker(b"Hunter2-crlf")
        )
    );
}

#[test]
fn a_stomp_body_is_scanned_as_json_and_its_content_length_follows() {
    let r = redactor();
    let body = r#"{"text":"hi","token":"tok_Body_0123456789"}"#;
    let sent = format!(
        "SEND\ndestination:/app/chat\ncontent-type:application/json\ncontent-length:{}\n\n{body}\0",
        body.len()
    );
    let stored = redacted(&sent, "tok_Body_0123456789");
    let frame = stomp(&stored).expect("still STOMP");
    let new_body = &stored[frame.body.clone()];
    assert_eq!(
        new_body,
        format!(
            r#"{{"text":"hi","token":"{}"}}"#,
            r.marker(b"tok_Body_0123456789")
        )
    );
    assert_eq!(
        frame.header(&stored, "content-length"),
        Some(new_body.len().to_string().as_str())
    );
    assert!(stored.ends_with('\0'));
}

#[test]
fn json_behind_a_packet_prefix_is_scanned_and_plain_json_still_is() {
    let r = redactor();
    for (sent, secret, prefix) in [
        (
            r#"40{"token":"tok_Sio_0123456789"}"#,
            "tok_Sio_0123456789",
            "40",
        ),
        (
            r#"40/chat,{"token":"tok_Ns_0123456789"}"#,
            "tok_Ns_0123456789",
            "40/chat,",
        ),
        (
            r#"42["login",{"user":"ann","password":"Hunter2-sio"}]"#,
            "Hunter2-sio",
            "42",
        ),
        (
            r#"430[{"access_token":"tok_Ack_0123456789"}]"#,
            "tok_Ack_0123456789",
            "430",
        ),
        (
            r#"{"type":"auth","password":"Hunter2-json"}"#,
            "Hunter2-json",
            "",
        ),
    ] {
        let stored = redacted(sent, secret);
        assert_eq!(stored, sent.replace(secret, &r.marker(secret.as_bytes())));
        assert_eq!(packet_json(&stored), Some(prefix.len()), "{stored}");
        let json: serde_json::Value =
            serde_json::from_str(&stored[prefix.len()..]).expect("still JSON");
        assert!(json.is_object() || json.is_array());
    }
    // A chat line that only starts like a STOMP frame is read as text.
    let line = r#"ERROR
{"token":"tok_Line_0123456789"}"#;
    assert_eq!(
        redacted(line, "tok_Line_0123456789"),
        line.replace("tok_Line_0123456789", &r.marker(b"tok_Line_0123456789"))
    );
    assert_eq!(packet_json("2"), None);
    assert_eq!(packet_json("3probe"), None);
    assert_eq!(packet_json("hello {\"a\":1}"), None);
}

#[test]
fn a_frames_secret_is_replaced_where_a_later_frame_echoes_it() {
    let r = redactor();
    let mut frames = vec![
        frame(
            "client",
            "CONNECT\nlogin:alice\npasscode:Hunter2-echo\n\n\0",
        ),
        frame("server", "ERROR\nmessage:bad passcode Hunter2-echo\n\n\0"),
        frame("server", "the handshake's tok_Handshake_01 again"),
    ];
    r.redact_frames(&mut frames, &[b"tok_Handshake_01".to_vec()]);
    assert_eq!(
        frames[1].data,
        format!(
            "ERROR\nmessage:bad passcode {}\n\n\0",
            r.marker(b"Hunter2-echo")
        )
    );
    assert_eq!(
        frames[2].data,
        format!("the handshake's {} again", r.marker(b"tok_Handshake_01"))
    );
}

#[test]
fn cut_and_garbled_frames_are_read_without_panicking() {
    use rand::{Rng, SeedableRng};
    let samples = [
        format!(
            "<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism=\"PLAIN\">{}</auth>",
            sasl_plain_payload("é", "ünïcode", "pässword-1234")
        ),
        "CONNECT\r\nlogin:é\r\npasscode:pässword-1234\r\ncontent-length:9\r\n\r\n{\"é\":1}\0\n"
            .into(),
        r#"451-/ns/é,7[{"token":"pässword-1234"},{"_placeholder":true,"num":0}]"#.into(),
    ];
    let mut texts: Vec<String> = samples
        .iter()
        .flat_map(|s| (0..=s.len()).filter_map(|i| s.get(..i).map(str::to_string)))
        .collect();
    let alphabet: Vec<char> = "<auth mechanism='PLAIN'>/:\n\r\0{}[]\"42,-é=ABCONECT"
        .chars()
        .collect();
    let mut rng = rand::rngs::StdRng::seed_from_u64(17);
    for _ in 0..2000 {
        let len = rng.random_range(0..40);
        texts.push(
            (0..len)
                .map(|_| alphabet[rng.random_range(0..alphabet.len())])
                .collect(),
        );
    }
    let r = redactor();
    for text in texts {
        let _ = (
            sasl_auth(&text),
            stomp(&text),
            packet_json(&text),
            login_parts(&text),
        );
        let mut f = frame("client", &text);
        r.redact_frames(
            std::slice::from_mut(&mut f),
            &["pässword-1234".as_bytes().to_vec()],
        );
        assert!(
            !f.data.contains("pässword-1234"),
            "{text:?} -> {:?}",
            f.data
        );
    }
}

#[test]
fn keep_credentials_and_other_opcodes_leave_frames_alone() {
    let keep = Redactor::new(
        [1; 32],
        &RedactionConfig {
            keep_credentials: true,
            ..RedactionConfig::default()
        },
    )
    .expect("valid");
    let sent = "CONNECT\nlogin:alice\npasscode:Hunter2-keep\n\n\0";
    let mut f = frame("client", sent);
    keep.redact_frames(std::slice::from_mut(&mut f), &[]);
    assert_eq!(f.data, sent);
    let mut binary = frame("client", sent);
    binary.op = "binary".into();
    redactor().redact_frames(std::slice::from_mut(&mut binary), &[]);
    assert_eq!(binary.data, sent);
}
