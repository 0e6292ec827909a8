//! TLS on both sides with certificates made at test time (rcgen): a client
//! speaks HTTPS to the proxy, the proxy speaks HTTPS to an HTTPS upstream,
//! and replay speaks HTTPS to the target.

use std::convert::Infallible;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, ExtendedKeyUsagePurpose, IsCa, KeyPair,
};
use tapedeck::capture::Store;
use tapedeck::proxy::{RecordConfig, Recording};
use tapedeck::replay::{self, ReplayConfig};
use tapedeck::report::outcome::LiveStats;
use tapedeck::shutdown::Shutdown;
use tapedeck::tls::{ClientIdentity, ClientTls};
use tapedeck::upstream::Upstream;
use tokio::net::TcpListener;

use crate::support::output;

/// A CA, a `localhost` server certificate and a client certificate it
/// signed, as PEM files.
struct Pki {
    _dir: tempfile::TempDir,
    ca: PathBuf,
    cert: PathBuf,
    key: PathBuf,
    client_cert: PathBuf,
    client_key: PathBuf,
}

impl Pki {
    fn new() -> Pki {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("ca params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca =
            CertifiedIssuer::self_signed(params, KeyPair::generate().expect("ca key")).expect("ca");
        let key = KeyPair::generate().expect("key");
        let cert = CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()])
            .expect("params")
            .signed_by(&key, &ca)
            .expect("cert");
        let client_key = KeyPair::generate().expect("client key");
        let mut client = CertificateParams::new(Vec::<String>::new()).expect("client params");
        client.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        let client = client.signed_by(&client_key, &ca).expect("client cert");
        let write = |name: &str, text: String| {
            let path = dir.path().join(name);
            std::fs::write(&path, text).expect("write pem");
            path
        };
        Pki {
            ca: write("ca.pem", ca.pem()),
            cert: write("cert.pem", cert.pem()),
            key: write("key.pem", key.serialize_pem()),
            client_cert: write("client.pem", client.pem()),
            client_key: write("client-key.pem", client_key.serialize_pem()),
            _dir: dir,
        }
    }

    fn trusting(&self) -> ClientTls {
        ClientTls {
            ca_file: Some(self.ca.clone()),
            ..ClientTls::default()
        }
    }

    /// Trusting the CA and showing the client certificate.
    fn with_identity(&self) -> ClientTls {
        ClientTls {
            identity: Some(ClientIdentity {
                cert: self.client_cert.clone(),
                key: self.client_key.clone(),
            }),
            ..self.trusting()
        }
    }
}

/// An HTTPS upstream answering `{"path": …, "alpn": …, "client_cert": …}`;
/// with `mutual`, it refuses clients without a certificate the CA signed,
/// and speaks HTTP/1.1 only (see below).
async fn https_upstream(pki: &Pki, mutual: bool) -> (String, Shutdown) {
    let client_ca = mutual.then_some(pki.ca.as_path());
    let mut config =
        tapedeck::tls::server_config(&pki.cert, &pki.key, client_ca).expect("server config");
    if mutual {
        Arc::make_mut(&mut config).alpn_protocols = vec![b"http/1.1".to_vec()];
    }
    let acceptor = tokio_rustls::TlsAcceptor::from(config);
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let url = format!(
        "https://localhost:{}",
        listener.local_addr().expect("addr").port()
    );
    let stop = Shutdown::new();
    let halt = stop.clone();
    tokio::spawn(async move {
        loop {
            let stream = tokio::select! {
                r = listener.accept() => match r { Ok((s, _)) => s, Err(_) => continue },
                () = halt.wait() => break,
            };
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(stream).await else {
                    return;
                };
                let session = tls.get_ref().1;
                let alpn = session
                    .alpn_protocol()
                    .map(|p| String::from_utf8_lossy(p).into_owned())
                    .unwrap_or_default();
                let client_cert = session.peer_certificates().is_some();
                let service = hyper::service::service_fn(move |req: Request<_>| {
                    let body = format!(
                        r#"{{"path":"{}","alpn":"{alpn}","client_cert":{client_cert}}}"#,
                        req.uri().path()
                    );
                    async move {
                        Ok::<_, Infallible>(
                            Response::builder()
                                .header("content-type", "application/json")
                                .body(Full::new(Bytes::from(body)))
                                .expect("response"),
                        )
                    }
                });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(tls), service)
                    .await;
            });
        }
    });
    (url, stop)
}

async fn try_get(
    tls: &ClientTls,
    url: &str,
) -> Result<(StatusCode, String), hyper_util::client::legacy::Error> {
    let connector = tls
        .connector(std::time::Duration::from_secs(5))
        .expect("connector");
    let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new()).build(connector);
    let resp = client
        .request(Request::get(url).body(Full::default()).expect("request"))
        .await?;
    let status = resp.status();
    let body = resp.into_body().collect().await.expect("body").to_bytes();
    Ok((status, String::from_utf8_lossy(&body).into_owned()))
}

async fn get(tls: &ClientTls, url: &str) -> (StatusCode, String) {
    try_get(tls, url).await.expect("response")
}

/// A recording proxy serving HTTPS; with `mutual`, its clients must show a
/// certificate the CA signed.
async fn proxy(
    pki: &Pki,
    upstream: &str,
    upstream_tls: ClientTls,
    mutual: bool,
    dir: &Path,
) -> (Recording, Store) {
    let store = Store::create(&dir.join("c.db")).await.expect("capture");
    let mut config = RecordConfig::new(Upstream::parse(upstream).expect("upstream"));
    let client_ca = mutual.then_some(pki.ca.as_path());
    config.tls = Some(tapedeck::tls::server_config(&pki.cert, &pki.key, client_ca).expect("tls"));
    config.upstream_tls = upstream_tls;
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let rec = Recording::start(listener, store.clone(), config, Shutdown::new())
        .await
        .expect("record");
    (rec, store)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_in_https_out_recorded_and_replayed_over_https() {
    let pki = Pki::new();
    let (upstream, stop) = https_upstream(&pki, false).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let (rec, store) = proxy(&pki, &upstream, pki.trusting(), false, dir.path()).await;
    let url = format!("https://localhost:{}/api/me", rec.local_addr().port());
    let (status, body) = get(&pki.trusting(), &url).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(body.contains(r#""path":"/api/me""#), "{body}");
    // The client offered h2 and http/1.1; the proxy took h2 from it and
    // negotiated h2 with the upstream too.
    assert!(body.contains(r#""alpn":"h2""#), "{body}");
    let run = rec.stop().await.expect("stop");
    assert_eq!((run.exchanges, run.dropped), (1, 0));
    let (_, exchanges) = crate::support::first_session(&store, run.id).await;
    assert_eq!(exchanges[0].status, Some(200));
    assert_eq!(exchanges[0].http_version, "HTTP/2");
    assert_eq!(&exchanges[0].response_body[..], body.as_bytes());

    let replay_to = |tls: ClientTls| ReplayConfig {
        seed: Some(1),
        tls,
        ..ReplayConfig::new(
            Upstream::parse(&upstream).expect("target"),
            tapedeck::profile::Profile::single(2, 1.0),
            dir.path().join("c.db").display().to_string(),
        )
    };
    let trusted = replay::run(
        &store,
        replay_to(pki.trusting()),
        Arc::new(LiveStats::default()),
    )
    .await
    .expect("replay");
    let s = &trusted.report.stages[0];
    assert_eq!((s.requests, s.errors), (2, 0), "{:?}", s.error_kinds);
    let untrusted = replay::run(
        &store,
        replay_to(ClientTls::default()),
        Arc::new(LiveStats::default()),
    )
    .await
    .expect("replay");
    let s = &untrusted.report.stages[0];
    assert_eq!(s.error_kinds.get("tls"), Some(&2), "{:?}", s.error_kinds);
    stop.trigger();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_untrusted_upstream_certificate_is_a_502_that_says_why() {
    let pki = Pki::new();
    let (upstream, stop) = https_upstream(&pki, false).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let (rec, _store) = proxy(&pki, &upstream, ClientTls::default(), false, dir.path()).await;
    let url = format!("https://localhost:{}/api/me", rec.local_addr().port());
    let (status, body) = get(&pki.trusting(), &url).await;
    assert_eq!(status, StatusCode::BAD_GATEWAY);
    assert!(body.contains("upstream_tls"), "{body}");
    assert!(
        body.contains("certificate") && body.contains("--ca-file"),
        "{body}"
    );
    rec.stop().await.expect("stop");
    // --insecure-skip-verify gets through.
    let insecure = ClientTls {
        insecure_skip_verify: true,
        ..ClientTls::default()
    };
    let (rec, _store) = proxy(&pki, &upstream, insecure, false, &dir.path().join("b")).await;
    let url = format!("https://localhost:{}/x", rec.local_addr().port());
    assert_eq!(get(&pki.trusting(), &url).await.0, StatusCode::OK);
    rec.stop().await.expect("stop");
    stop.trigger();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_certificates_are_required_by_the_proxy_and_shown_to_upstream_and_target() {
    let pki = Pki::new();
    let (upstream, stop) = https_upstream(&pki, true).await;
    let dir = tempfile::tempdir().expect("tempdir");

    // The upstream asks for a certificate and the proxy has none: a 502.
    // In TLS 1.3 the refusal is an alert after the client's side of the
    // handshake is done. Mostly the request is on the connection by then
    // and the 502 names the alert and `--client-cert` (the words are unit
    // tested in tls.rs); when the alert ends the connection first, the
    // client library reports only a canceled request, or the request
    // meets a reset (over h2 that happens more often, so this upstream
    // speaks HTTP/1.1). Either way nothing gets through.
    let (rec, _store) = proxy(&pki, &upstream, pki.trusting(), true, &dir.path().join("a")).await;
    let url = format!("https://localhost:{}/api/me", rec.local_addr().port());
    let (status, body) = get(&pki.with_identity(), &url).await;
    assert_eq!(status, StatusCode::BAD_GATEWAY, "{body}");
    assert!(
        (body.contains("upstream_tls") && body.contains("--client-cert"))
            || body.contains("upstream_reset"),
        "{body}"
    );
    rec.stop().await.expect("stop");

    let (rec, store) = proxy(&pki, &upstream, pki.with_identity(), true, dir.path()).await;
    let url = format!("https://localhost:{}/api/me", rec.local_addr().port());
    let (status, body) = get(&pki.with_identity(), &url).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(body.contains(r#""client_cert":true"#), "{body}");
    // A client without a certificate does not get past the handshake, is
    // counted, and nothing of it is recorded.
    assert_eq!(rec.metrics().tls_handshake_failures.get(), 0);
    assert!(try_get(&pki.trusting(), &url).await.is_err());
    // The proxy counts it right after sending its alert, which the client
    // may have read first: wait for the count.
    let counted = async {
        while rec.metrics().tls_handshake_failures.get() == 0 {
            tokio::task::yield_now().await;
        }
    };
    tokio::time::timeout(std::time::Duration::from_secs(5), counted)
        .await
        .expect("the failed handshake is counted");
    let run = rec.stop().await.expect("stop");
    assert_eq!((run.exchanges, run.dropped), (1, 0));

    let replay = |tls: ClientTls| {
        crate::support::replay_with(
            &store,
            &upstream,
            tapedeck::profile::Profile::single(3, 1.0),
            move |c| c.tls = tls,
        )
    };
    let s = &replay(pki.with_identity()).await.stages[0];
    assert_eq!((s.requests, s.errors), (3, 0), "{:?}", s.error_kinds);
    let s = &replay(pki.trusting()).await.stages[0];
    let refused = s.error_kinds.get("tls").copied().unwrap_or(0);
    let reset = s.error_kinds.get("reset").copied().unwrap_or(0);
    assert!(refused >= 1 && refused + reset == 3, "{:?}", s.error_kinds);
    stop.trigger();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_certificate_or_key_paths_stop_record_at_start() {
    let pki = Pki::new();
    let dir = tempfile::tempdir().expect("tempdir");
    let capture = dir.path().join("c.db");
    let base = [
        "record",
        "--upstream",
        "http://127.0.0.1:9",
        "--listen",
        "127.0.0.1:0",
        "--capture",
    ];
    let run = |extra: Vec<String>| {
        let mut args: Vec<String> = base.iter().map(|s| s.to_string()).collect();
        args.push(capture.display().to_string());
        args.extend(extra);
        async move {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            output(&args).await
        }
    };
    let missing = dir.path().join("missing.pem").display().to_string();
    let key = pki.key.display().to_string();
    let cert = pki.cert.display().to_string();
    let (code, _, err) = run(vec![
        "--tls-cert".into(),
        missing.clone(),
        "--tls-key".into(),
        key.clone(),
    ])
    .await;
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("--tls-cert") && err.contains("missing.pem"),
        "{err}"
    );
    // A certificate where the key belongs.
    let (code, _, err) = run(vec![
        "--tls-cert".into(),
        cert.clone(),
        "--tls-key".into(),
        cert,
    ])
    .await;
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("--tls-key"), "{err}");
    let (code, _, err) = run(vec!["--ca-file".into(), missing.clone()]).await;
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("--ca-file"), "{err}");
    let (code, _, err) = run(vec![
        "--client-cert".into(),
        missing.clone(),
        "--client-key".into(),
        key,
    ])
    .await;
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("--client-cert") && err.contains("missing.pem"),
        "{err}"
    );
    let (code, _, err) = run(vec!["--tls-client-ca".into(), missing]).await;
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("--tls-cert"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_h2_streams_are_separate_exchanges_and_replay_concurrently() {
    use crate::support::{TestProxy, TestUpstream};
    let mut upstream = TestUpstream::start().await;
    let mut proxy = TestProxy::start(&upstream.url()).await;
    // An h2 client with prior knowledge (h2c): one connection, three
    // streams at once, each held 150 ms by the upstream.
    let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new())
        .http2_only(true)
        .build_http();
    let sends = (0..3).map(|i| {
        let req = Request::get(proxy.url(&format!("/slow?ms=150&n={i}")))
            .header("x-test-id", format!("stream-{i}"))
            .body(Full::default())
            .expect("request");
        client.request(req)
    });
    for resp in futures_util::future::join_all(sends).await {
        let resp = resp.expect("response");
        assert_eq!(
            (resp.status(), resp.version()),
            (StatusCode::OK, http::Version::HTTP_2)
        );
    }
    let run = proxy.stop().await;
    assert_eq!(run.exchanges, 3);
    let (sessions, exchanges) = crate::support::first_session(&proxy.store, run.id).await;
    assert_eq!(sessions, 1, "one client, one session");
    assert!(exchanges.iter().all(|e| e.http_version == "HTTP/2"));
    upstream.drain();

    let report = crate::support::replay_with(
        &proxy.store,
        &upstream.url(),
        tapedeck::profile::Profile::single(1, 1.0),
        |c| {
            c.seed = Some(1);
            c.http2 = true;
        },
    )
    .await;
    assert_eq!((report.stages[0].requests, report.stages[0].errors), (3, 0));
    let seen = upstream.drain();
    assert_eq!(seen.len(), 3);
    assert!(seen.iter().all(|s| s.version == http::Version::HTTP_2));
    // Recorded overlapping, replayed overlapping: every stream arrived
    // before the first answer left.
    let first_answer = seen.iter().map(|s| s.answered_at).min().expect("answers");
    assert!(seen.iter().all(|s| s.at < first_answer), "{seen:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websockets_reach_an_https_upstream_that_offers_h2_and_replay_over_wss() {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    let pki = Pki::new();
    // ALPN h2 and http/1.1, like an ingress with h2 on: the proxy's pooled
    // connections to it speak h2, which cannot carry an Upgrade, so the
    // handshake needs a connection of its own.
    let tls = tapedeck::tls::server_config(&pki.cert, &pki.key, None).expect("tls");
    let (upstream, sockets) = crate::support::ws_echo_upstream_with(Some(tls)).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let (rec, store) = proxy(&pki, &upstream, pki.trusting(), false, dir.path()).await;
    let port = rec.local_addr().port();

    let config = pki.trusting().config().expect("client config");
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("connect");
    let stream = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(
            rustls_pki_types::ServerName::try_from("localhost").expect("name"),
            tcp,
        )
        .await
        .expect("tls");
    let url = format!("wss://localhost:{port}/api/ws");
    let (mut ws, resp) = tokio_tungstenite::client_async(url, stream)
        .await
        .expect("handshake");
    assert_eq!(resp.status(), 101);
    ws.send(Message::text("hello")).await.expect("send");
    match ws.next().await {
        Some(Ok(Message::Text(t))) => assert_eq!(t.as_str(), "HELLO"),
        other => panic!("expected an echo, got {other:?}"),
    }
    ws.close(None).await.expect("close");
    while let Some(Ok(_)) = ws.next().await {}
    drop(ws);
    let run = rec.stop().await.expect("stop");
    assert_eq!(run.exchanges, 1);
    assert_eq!(*sockets.lock().expect("log"), [vec!["hello".to_string()]]);
    let (_, exchanges) = crate::support::first_session(&store, run.id).await;
    let socket = &exchanges[0];
    assert_eq!((socket.uri.as_str(), socket.status), ("/api/ws", Some(101)));
    assert!(
        socket
            .ws_frames
            .iter()
            .any(|f| f.dir == "server" && f.data == "HELLO"),
        "{:?}",
        socket.ws_frames
    );
    // Replayed over wss:// to the same upstream, trusting its CA.
    let report = crate::support::replay_with(
        &store,
        &upstream,
        tapedeck::profile::Profile::single(2, 1.0),
        |c| c.tls = pki.trusting(),
    )
    .await;
    let stage = &report.stages[0];
    assert_eq!(
        (stage.requests, stage.errors),
        (2, 0),
        "{:?}",
        stage.error_kinds
    );
    assert_eq!(sockets.lock().expect("log").len(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_upstream_probe_names_what_to_fix() {
    let pki = Pki::new();
    let (upstream, stop) = https_upstream(&pki, false).await;
    let upstream = Upstream::parse(&upstream).expect("upstream");
    let wait = std::time::Duration::from_secs(5);
    assert_eq!(upstream.probe(Some(&pki.trusting()), wait).await, Ok(()));
    let untrusted = upstream
        .probe(Some(&ClientTls::default()), wait)
        .await
        .expect_err("an untrusted certificate");
    assert!(
        untrusted.contains("UnknownIssuer") && untrusted.contains("--ca-file"),
        "{untrusted}"
    );
    // Without TLS settings, a TCP connect is all (what replay checks).
    assert_eq!(upstream.probe(None, wait).await, Ok(()));
    stop.trigger();
    let closed = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind")
        .local_addr()
        .expect("addr");
    let gone = Upstream::parse(&format!("https://{closed}")).expect("upstream");
    let refused = gone
        .probe(Some(&pki.trusting()), wait)
        .await
        .expect_err("nothing listens");
    assert!(refused.contains("refused"), "{refused}");
}
