//! The floor under the replay generator: how many requests/s the HTTP
//! client tapedeck is built on sends with no replay logic at all — 32 tasks
//! looping GET and reading the body, through the pooled hyper-util client
//! the replay uses, and through bare hyper HTTP/1 connections (one per
//! task, no pool). bench/replay_generator.sh runs it beside wrk.
//!
//! `cargo bench --bench client_floor -- URL [SECONDS] [CONNECTIONS]`

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper::Request;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};

async fn pooled(url: hyper::Uri, conns: usize, until: Instant) -> u64 {
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    let client: Client<_, Empty<Bytes>> = Client::builder(TokioExecutor::new()).build(connector);
    let done = Arc::new(AtomicU64::new(0));
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..conns {
        let (client, url, done) = (client.clone(), url.clone(), done.clone());
        tasks.spawn(async move {
            while Instant::now() < until {
                let Ok(resp) = client.get(url.clone()).await else {
                    continue;
                };
                if resp.into_body().collect().await.is_ok() {
                    done.fetch_add(1, Ordering::Relaxed);
                }
            }
        });
    }
    while tasks.join_next().await.is_some() {}
    done.load(Ordering::Relaxed)
}

async fn bare(url: hyper::Uri, conns: usize, until: Instant) -> u64 {
    let addr = format!(
        "{}:{}",
        url.host().unwrap_or("127.0.0.1"),
        url.port_u16().unwrap_or(80)
    );
    let done = Arc::new(AtomicU64::new(0));
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..conns {
        let (url, done, addr) = (url.clone(), done.clone(), addr.clone());
        tasks.spawn(async move {
            let Ok(stream) = tokio::net::TcpStream::connect(&addr).await else {
                return;
            };
            let _ = stream.set_nodelay(true);
            let Ok((mut send, conn)) =
                hyper::client::conn::http1::handshake::<_, Empty<Bytes>>(TokioIo::new(stream))
                    .await
            else {
                return;
            };
            tokio::spawn(conn);
            while Instant::now() < until {
                let req = Request::get(url.clone())
                    .header("host", addr.as_str())
                    .body(Empty::new());
                let Ok(req) = req else { return };
                let Ok(resp) = send.send_request(req).await else {
                    return;
                };
                if resp.into_body().collect().await.is_ok() {
                    done.fetch_add(1, Ordering::Relaxed);
                }
            }
        });
    }
    while tasks.join_next().await.is_some() {}
    done.load(Ordering::Relaxed)
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    let Some(url) = args.first().and_then(|u| u.parse::<hyper::Uri>().ok()) else {
        eprintln!("usage: client_floor URL [SECONDS] [CONNECTIONS]");
        std::process::exit(2);
    };
    let secs: u64 = args.get(1).and_then(|s| s.parse().ok()).unwrap_or(5);
    let conns: usize = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(32);
    for (name, pool) in [
        ("hyper-util pooled client", true),
        ("bare hyper http1", false),
    ] {
        let start = Instant::now();
        let until = start + Duration::from_secs(secs);
        let n = if pool {
            pooled(url.clone(), conns, until).await
        } else {
            bare(url.clone(), conns, until).await
        };
        let rps = n as f64 / start.elapsed().as_secs_f64();
        println!(
            "{{\"scenario\": \"{}\", \"requests\": {n}, \"rps\": {rps:.0}}}",
            name.replace(' ', "_")
        );
    }
}
