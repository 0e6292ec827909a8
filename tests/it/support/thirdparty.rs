//! What the tests on third-party backends share: a free loopback port,
//! waiting for a server to answer, client-made UUIDs, Basic credentials and
//! the clean-stage check.

use std::time::Duration;

use bytes::Bytes;
use tapedeck::report::StageReport;

use super::client;

/// A loopback port free right now, for a server started by a test.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port()
}

/// Waits (at most `limit`) until `url` answers with a status `ready`
/// accepts.
pub async fn wait_until_answers(url: &str, limit: Duration, ready: impl Fn(u16) -> bool) {
    let c = client();
    let poll = async {
        loop {
            let req = http::Request::get(url)
                .body(http_body_util::Full::new(Bytes::new()))
                .expect("request");
            if c.request(req)
                .await
                .is_ok_and(|r| ready(r.status().as_u16()))
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    tokio::time::timeout(limit, poll)
        .await
        .unwrap_or_else(|_| panic!("{url} did not answer within {limit:?}"));
}

/// A random version-4 UUID, as clients make them.
pub fn uuid() -> String {
    let b: [u8; 16] = rand::random();
    let h: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!(
        "{}-{}-4{}-a{}-{}",
        &h[..8],
        &h[8..12],
        &h[13..16],
        &h[17..20],
        &h[20..32]
    )
}

/// The `ETag` an answer carries.
pub fn etag(headers: &http::HeaderMap) -> String {
    headers
        .get("etag")
        .and_then(|v| v.to_str().ok())
        .expect("an ETag")
        .to_string()
}

/// An `Authorization` value for HTTP Basic.
pub fn basic(user: &str, password: &str) -> String {
    use base64::Engine;
    let encoded = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
    format!("Basic {encoded}")
}

/// A replayed stage that did the recorded work: no error, no 4xx, and no
/// value it could not resolve, skip, wrong shape or conflict.
pub fn assert_clean(stage: &StageReport) {
    assert_eq!(
        stage.error_kinds.get("http_4xx").copied().unwrap_or(0),
        0,
        "{:?}",
        stage.status_counts
    );
    assert_eq!(stage.errors, 0, "{:?}", stage.error_kinds);
    assert_eq!(
        (
            stage.dependent_skipped,
            stage.shape_mismatches,
            stage.conflicting_values,
            stage.unresolved_values,
        ),
        (0, 0, 0, 0)
    );
}

/// What every third-party test checks after recording: replayed at 1x and
/// then 5x on the same server, with the users' passwords under `[users]`,
/// each stage is clean and `holds(copies)` sees the server hold `copies`
/// copies of the recorded work (2, then 7: the recording's own included);
/// replayed verbatim (`--no-correlation`) the logins or credentials fail
/// with 4xx and the server holds nothing more.
pub async fn replay_1x_5x_and_verbatim(
    store: &tapedeck::capture::Store,
    target: &str,
    users: &[(&str, &str)],
    holds: impl AsyncFn(i64),
) {
    use std::sync::Arc;
    use tapedeck::profile::Profile;
    use tapedeck::replay::correlate::Credentials;

    let credentials = Arc::new(Credentials {
        users: users
            .iter()
            .map(|(u, p)| (u.to_string(), p.to_string()))
            .collect(),
        ..Credentials::default()
    });
    for (multiplier, copies) in [(1, 2), (5, 7)] {
        let report = super::replay_with(store, target, Profile::single(multiplier, 10.0), |c| {
            c.credentials = credentials.clone();
        })
        .await;
        assert_clean(&report.stages[0]);
        holds(copies).await;
    }
    let report = super::replay_with(store, target, Profile::single(1, 10.0), |c| {
        c.credentials = credentials.clone();
        c.correlate = false;
    })
    .await;
    let stage = &report.stages[0];
    assert!(
        stage.error_kinds.get("http_4xx").copied().unwrap_or(0) >= 2,
        "{:?}",
        stage.status_counts
    );
    holds(7).await;
}
