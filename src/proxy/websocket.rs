//! A switched connection (WebSocket) through the proxy: bytes are copied
//! both ways untouched, and the WebSocket frames passing by are read
//! (tungstenite's header parser) and kept with their offset, direction,
//! opcode and payload, capped per frame. The handshake exchange is
//! recorded when the socket closes, with its frames.

use std::io::Cursor;
use std::net::SocketAddr;
use std::sync::Mutex;

use base64::Engine;
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::protocol::frame::FrameHeader;
use tokio_tungstenite::tungstenite::protocol::frame::coding::{Control, Data, OpCode};

use super::tap::Pending;
use crate::capture::{CapturedBody, WsFrame};
use crate::shutdown::Shutdown;

/// Payload bytes kept per frame; the true length is always kept.
const MAX_FRAME_BYTES: usize = 64 * 1024;

/// Frames kept per socket; later ones are counted in the log only.
const MAX_FRAMES: usize = 100_000;

/// Relays an upgraded connection until both sides close. With `pending`
/// (the handshake being recorded) and a WebSocket, the frames are read on
/// the way and the exchange is recorded at the end.
/// When the proxy stops (`stop` fires) the sockets are cut and what was
/// seen is recorded.
pub(crate) async fn relay(
    client: OnUpgrade,
    upstream: OnUpgrade,
    peer: SocketAddr,
    pending: Option<Box<Pending>>,
    stop: Shutdown,
) {
    let switched = tokio::select! {
        pair = async { tokio::try_join!(client, upstream) } => pair,
        () = stop.wait() => {
            if let Some(p) = pending {
                p.complete(CapturedBody::default(), None);
            }
            return;
        }
    };
    let (client, upstream) = match switched {
        Ok(pair) => pair,
        Err(e) => {
            tracing::debug!(%peer, error = %e, "upgrade did not complete");
            if let Some(p) = pending {
                p.complete(CapturedBody::default(), None);
            }
            return;
        }
    };
    let started = Instant::now();
    let log = Mutex::new(Vec::new());
    let (client_read, client_write) = tokio::io::split(TokioIo::new(client));
    let (upstream_read, upstream_write) = tokio::io::split(TokioIo::new(upstream));
    let record = pending.is_some().then_some((&log, started));
    let pumps = async {
        tokio::join!(
            pump(client_read, upstream_write, "client", record),
            pump(upstream_read, client_write, "server", record),
        )
    };
    tokio::select! {
        (up, down) = pumps => tracing::debug!(%peer, up, down, "switched connection closed"),
        () = stop.wait() => tracing::debug!(%peer, "switched connection cut: the proxy is stopping"),
    }
    if let Some(mut p) = pending {
        let mut frames = log.into_inner().unwrap_or_else(|e| e.into_inner());
        frames.sort_by_key(|f: &WsFrame| f.t_us);
        p.ws_frames = frames;
        p.complete(CapturedBody::default(), None);
    }
}

/// Copies one direction; returns the bytes copied.
async fn pump<R, W>(
    mut from: R,
    mut to: W,
    dir: &'static str,
    log: Option<(&Mutex<Vec<WsFrame>>, Instant)>,
) -> u64
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut buf = vec![0u8; 16 * 1024];
    let mut reader = FrameReader::default();
    let mut copied = 0u64;
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        if to.write_all(&buf[..n]).await.is_err() {
            break;
        }
        copied += n as u64;
        if let Some((log, started)) = log {
            let t_us = started.elapsed().as_micros() as u64;
            let frames = reader.feed(&buf[..n], t_us, dir);
            if !frames.is_empty() {
                let mut log = log.lock().unwrap_or_else(|e| e.into_inner());
                let room = MAX_FRAMES.saturating_sub(log.len());
                log.extend(frames.into_iter().take(room));
            }
        }
    }
    let _ = to.shutdown().await;
    copied
}

/// Reads WebSocket frames out of one direction's bytes as they pass.
#[derive(Debug, Default)]
struct FrameReader {
    /// Bytes of a header not yet complete.
    head: Vec<u8>,
    /// The frame whose payload is arriving.
    current: Option<Partial>,
    /// Set when the stream is not WebSocket framing: stop reading.
    lost: bool,
}

#[derive(Debug)]
struct Partial {
    header: FrameHeader,
    len: u64,
    remaining: u64,
    kept: Vec<u8>,
    /// Where the mask stands for the next payload byte.
    offset: usize,
    t_us: u64,
}

impl FrameReader {
    fn feed(&mut self, mut bytes: &[u8], t_us: u64, dir: &'static str) -> Vec<WsFrame> {
        let mut out = Vec::new();
        while !bytes.is_empty() && !self.lost {
            match &mut self.current {
                Some(p) => {
                    let take = bytes
                        .len()
                        .min(usize::try_from(p.remaining).unwrap_or(usize::MAX));
                    let keep = take.min(MAX_FRAME_BYTES.saturating_sub(p.kept.len()));
                    for (i, b) in bytes[..keep].iter().enumerate() {
                        let m = p.header.mask.map_or(0, |m| m[(p.offset + i) % 4]);
                        p.kept.push(b ^ m);
                    }
                    p.offset += take;
                    p.remaining -= take as u64;
                    bytes = &bytes[take..];
                    if p.remaining == 0
                        && let Some(done) = self.current.take()
                    {
                        out.push(done.finish(dir));
                    }
                }
                None => {
                    self.head.extend_from_slice(bytes);
                    bytes = &[];
                    let mut cursor = Cursor::new(&self.head[..]);
                    match FrameHeader::parse(&mut cursor) {
                        Ok(Some((header, len))) => {
                            let used = usize::try_from(cursor.position()).unwrap_or(0);
                            let rest = self.head.split_off(used);
                            self.head.clear();
                            self.current = Some(Partial {
                                header,
                                len,
                                remaining: len,
                                kept: Vec::new(),
                                offset: 0,
                                t_us,
                            });
                            if len == 0
                                && let Some(done) = self.current.take()
                            {
                                out.push(done.finish(dir));
                            }
                            // Continue with the bytes after the header.
                            out.extend(self.feed(&rest, t_us, dir));
                        }
                        Ok(None) => {}
                        Err(e) => {
                            tracing::debug!(error = %e, "not WebSocket framing; frames not recorded");
                            self.lost = true;
                        }
                    }
                }
            }
        }
        out
    }
}

impl Partial {
    fn finish(self, dir: &'static str) -> WsFrame {
        let op = match self.header.opcode {
            OpCode::Data(Data::Text) => "text",
            OpCode::Data(Data::Binary) => "binary",
            OpCode::Data(Data::Continue) => "continuation",
            OpCode::Control(Control::Close) => "close",
            OpCode::Control(Control::Ping) => "ping",
            OpCode::Control(Control::Pong) => "pong",
            _ => "reserved",
        };
        let truncated = (self.kept.len() as u64) < self.len;
        let close_code = (op == "close" && self.kept.len() >= 2)
            .then(|| u16::from_be_bytes([self.kept[0], self.kept[1]]));
        let data = match std::str::from_utf8(&self.kept) {
            Ok(text) if op != "binary" => text.to_string(),
            _ => base64::engine::general_purpose::STANDARD.encode(&self.kept),
        };
        WsFrame {
            t_us: self.t_us,
            dir: dir.to_string(),
            op: op.to_string(),
            fin: self.header.is_final,
            len: self.len,
            data,
            truncated,
            close_code,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A masked client text frame.
    fn masked(text: &str) -> Vec<u8> {
        let mask = [1u8, 2, 3, 4];
        let mut out = vec![0x81, 0x80 | text.len() as u8];
        out.extend_from_slice(&mask);
        out.extend(text.bytes().enumerate().map(|(i, b)| b ^ mask[i % 4]));
        out
    }

    #[test]
    fn frames_are_read_across_any_split_of_the_bytes() {
        let mut bytes = masked("hello");
        bytes.extend(masked("{\"typing\":true}"));
        bytes.extend([0x88, 0x02, 0x03, 0xe8]); // close 1000, unmasked
        for split in 1..bytes.len() {
            let mut reader = FrameReader::default();
            let mut frames = reader.feed(&bytes[..split], 1, "client");
            frames.extend(reader.feed(&bytes[split..], 2, "client"));
            let got: Vec<(&str, &str)> = frames
                .iter()
                .map(|f| (f.op.as_str(), f.data.as_str()))
                .collect();
            assert_eq!(
                got[..2],
                [("text", "hello"), ("text", "{\"typing\":true}")],
                "split {split}"
            );
            assert_eq!(frames[2].close_code, Some(1000), "split {split}");
        }
    }

    #[test]
    fn a_stream_that_is_not_websocket_is_let_alone() {
        let mut reader = FrameReader::default();
        // RSV bits set and a reserved opcode: not a frame tungstenite accepts.
        let frames = reader.feed(b"\xff\xffGET / HTTP/1.1", 1, "client");
        assert!(frames.is_empty());
        assert!(reader.lost);
    }
}
