//! A switched connection (WebSocket) through the proxy: bytes are copied
//! both ways untouched, and the WebSocket frames passing by are read
//! (tungstenite's header parser) and kept with their offset, direction,
//! opcode and payload, capped per frame.
//!
//! What a socket keeps is bounded ([`WsLimits`]: frames and payload bytes
//! per socket); frames past either bound are counted, not kept, except
//! close frames, which are always kept (with the handshake's record, never
//! in a part). Kept frames go to the capture
//! writer in parts while the socket is open ([`FramePart`], at most a
//! thousand frames or 1 MiB of payload each), so a socket holds at most one
//! part in memory however long it stays open; a part the writer's queue
//! has no room for is counted like the frames past the bounds. The
//! handshake exchange is recorded when the socket closes, with the frames
//! after the last part and the count of frames not stored.

use std::io::Cursor;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use base64::Engine;
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::protocol::frame::FrameHeader;
use tokio_tungstenite::tungstenite::protocol::frame::coding::{Control, Data, OpCode};

use super::tap::Pending;
use crate::capture::socket::{MAX_FRAME_PAYLOAD, PartFill, kept_payload};
use crate::capture::{CaptureSink, CapturedBody, FramePart, Handshake, WsFrame};
use crate::shutdown::Shutdown;

/// How much of each socket recording keeps (`--ws-max-frames`,
/// `--ws-max-bytes`). Past either bound, frames are counted in the
/// exchange's `ws_frames_dropped` instead of kept; close frames are kept
/// whatever the bounds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WsLimits {
    /// Frames kept per socket (default 100,000).
    pub max_frames: usize,
    /// Payload bytes kept per socket, each frame counting the at most
    /// 64 KiB it keeps (default 64 MiB).
    pub max_bytes: usize,
}

impl Default for WsLimits {
    fn default() -> Self {
        WsLimits {
            max_frames: 100_000,
            max_bytes: 64 * 1024 * 1024,
        }
    }
}

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
    let recorder = pending.as_deref().map(Recorder::new);
    let (client_read, client_write) = tokio::io::split(TokioIo::new(client));
    let (upstream_read, upstream_write) = tokio::io::split(TokioIo::new(upstream));
    let pumps = async {
        tokio::join!(
            pump(client_read, upstream_write, "client", recorder.as_ref()),
            pump(upstream_read, client_write, "server", recorder.as_ref()),
        )
    };
    tokio::select! {
        (up, down) = pumps => tracing::debug!(%peer, up, down, "switched connection closed"),
        () = stop.wait() => tracing::debug!(%peer, "switched connection cut: the proxy is stopping"),
    }
    if let Some(mut p) = pending {
        if let Some(recorder) = recorder {
            (p.ws_frames, p.ws_frames_dropped) = recorder.finish();
        }
        p.complete(CapturedBody::default(), None);
    }
}

/// Copies one direction; returns the bytes copied.
async fn pump<R, W>(mut from: R, mut to: W, dir: &'static str, record: Option<&Recorder>) -> u64
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
        if let Some(record) = record {
            let t_us = record.started.elapsed().as_micros() as u64;
            // Past the bounds only close frames are kept: the others'
            // payloads are not even copied.
            let frames = reader.feed(&buf[..n], t_us, dir, !record.full.load(Ordering::Relaxed));
            if !frames.is_empty() {
                record.observe(frames);
            }
        }
    }
    let _ = to.shutdown().await;
    copied
}

/// The frames of one recorded socket, as both directions' pumps keep them.
struct Recorder {
    started: Instant,
    log: Mutex<FrameLog>,
    /// Set once a bound is reached (it stays set).
    full: AtomicBool,
    sink: CaptureSink,
    session_no: i64,
    seq: i64,
    handshake: Arc<Handshake>,
}

/// Close frames held for the handshake's record; a peer that sends more
/// (after a close nothing else is allowed) has the rest treated like any
/// frame.
const HELD_CLOSES: usize = 4;

/// What a socket has kept so far, and the part being filled.
#[derive(Debug)]
struct FrameLog {
    limits: WsLimits,
    part: Vec<WsFrame>,
    /// Close frames, kept aside for the handshake's record rather than a
    /// part: a part can be dropped when the queue is full, and a recorded
    /// socket ends with its close whatever happened before.
    closes: Vec<WsFrame>,
    fill: PartFill,
    kept_frames: usize,
    kept_bytes: usize,
    full: bool,
    dropped: u64,
    parts: i64,
}

impl Recorder {
    fn new(p: &Pending) -> Recorder {
        Recorder {
            started: Instant::now(),
            log: Mutex::new(FrameLog::new(p.state.config.websocket)),
            full: AtomicBool::new(false),
            sink: p.state.sink.clone(),
            session_no: p.session.session_no,
            seq: p.seq,
            handshake: Arc::new(Handshake::new(&p.uri, &p.request_headers)),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, FrameLog> {
        self.log.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Keeps or counts frames as they complete, and hands each part that
    /// fills to the writer (outside the lock, without waiting).
    fn observe(&self, frames: Vec<WsFrame>) {
        let (mut ready, mut past) = (Vec::new(), 0);
        {
            let mut log = self.lock();
            for frame in frames {
                match log.keep(frame) {
                    Kept::Yes => {}
                    Kept::Part(part_no, frames) => ready.push((part_no, frames)),
                    Kept::No => past += 1,
                }
            }
            if log.full && !self.full.swap(true, Ordering::Relaxed) {
                tracing::debug!(
                    session = self.session_no,
                    seq = self.seq,
                    "a WebSocket reached its recording bounds; later frames but the close are counted, not kept"
                );
            }
        }
        // Frames past the bounds are in the log's count already; a part the
        // queue has no room for joins it here.
        let mut lost = 0;
        for (part_no, frames) in ready {
            let n = frames.len() as u64;
            let part = FramePart {
                session_no: self.session_no,
                seq: self.seq,
                part_no,
                frames,
                handshake: self.handshake.clone(),
            };
            if !self.sink.try_send_part(part) {
                lost += n;
            }
        }
        if lost > 0 {
            self.lock().dropped += lost;
        }
        self.sink.metrics().drop_frames(past + lost);
    }

    /// The frames after the last part, in time order, and the count of
    /// frames not stored.
    fn finish(self) -> (Vec<WsFrame>, u64) {
        self.log
            .into_inner()
            .unwrap_or_else(|e| e.into_inner())
            .into_tail()
    }
}

enum Kept {
    Yes,
    /// Kept, and it filled a part: the part's number and frames.
    Part(i64, Vec<WsFrame>),
    No,
}

impl FrameLog {
    fn new(limits: WsLimits) -> FrameLog {
        FrameLog {
            limits,
            part: Vec::new(),
            closes: Vec::new(),
            fill: PartFill::default(),
            kept_frames: 0,
            kept_bytes: 0,
            full: false,
            dropped: 0,
            parts: 0,
        }
    }

    /// The frames for the handshake's record (those after the last part,
    /// and the closes), in time order, and the count of frames not stored.
    fn into_tail(self) -> (Vec<WsFrame>, u64) {
        let mut frames = self.part;
        frames.extend(self.closes);
        frames.sort_by_key(|f| f.t_us);
        (frames, self.dropped)
    }

    /// Keeps a frame or counts it; returns a part when this frame fills
    /// one. Close frames are always kept.
    fn keep(&mut self, frame: WsFrame) -> Kept {
        if frame.op == "close" && self.closes.len() < HELD_CLOSES {
            self.closes.push(frame);
            return Kept::Yes;
        }
        let payload = kept_payload(&frame);
        let room = self.kept_frames < self.limits.max_frames
            && self.kept_bytes.saturating_add(payload) <= self.limits.max_bytes;
        // Bounds keep a prefix of the socket: once one is reached, nothing
        // later is kept, even a frame that would fit.
        if self.full || !room {
            self.full = true;
            self.dropped += 1;
            return Kept::No;
        }
        self.kept_frames += 1;
        self.kept_bytes += payload;
        let filled = self.fill.add(&frame);
        self.part.push(frame);
        if !filled {
            return Kept::Yes;
        }
        self.fill = PartFill::default();
        self.parts += 1;
        let mut part = std::mem::take(&mut self.part);
        part.sort_by_key(|f| f.t_us);
        Kept::Part(self.parts, part)
    }
}

/// Reads WebSocket frames out of one direction's bytes as they pass.
#[derive(Debug, Default)]
pub(crate) struct FrameReader {
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
    /// Whether the payload is kept (a frame past the bounds only counts).
    keep: bool,
    /// Where the mask stands for the next payload byte.
    offset: usize,
    t_us: u64,
}

/// The longest frame header: 2 bytes, an 8-byte length, a 4-byte mask.
const MAX_HEADER: usize = 14;

impl FrameReader {
    /// Reads `bytes`; returns the frames they complete. `keep` says
    /// whether the payloads of frames starting here are kept (a close
    /// frame's always is).
    pub(crate) fn feed(
        &mut self,
        mut bytes: &[u8],
        t_us: u64,
        dir: &'static str,
        keep: bool,
    ) -> Vec<WsFrame> {
        let mut out = Vec::new();
        while !bytes.is_empty() && !self.lost {
            if let Some(p) = &mut self.current {
                let take = bytes
                    .len()
                    .min(usize::try_from(p.remaining).unwrap_or(usize::MAX));
                if p.keep {
                    let keep = take.min(MAX_FRAME_PAYLOAD.saturating_sub(p.kept.len()));
                    let (mask, offset) = (p.header.mask, p.offset);
                    p.kept.extend(
                        bytes[..keep]
                            .iter()
                            .enumerate()
                            .map(|(i, b)| b ^ mask.map_or(0, |m| m[(offset + i) % 4])),
                    );
                }
                p.offset += take;
                p.remaining -= take as u64;
                bytes = &bytes[take..];
                if p.remaining == 0
                    && let Some(done) = self.current.take()
                {
                    out.push(done.finish(dir));
                }
                continue;
            }
            // A header: from these bytes alone, or completing one held back
            // from the last read (headers are short: no more is copied).
            let held = self.head.len();
            let parsed = if held == 0 {
                let mut cursor = Cursor::new(bytes);
                let parsed = FrameHeader::parse(&mut cursor);
                let used = usize::try_from(cursor.position()).unwrap_or(0);
                match parsed {
                    Ok(Some(_)) => bytes = &bytes[used.min(bytes.len())..],
                    Ok(None) => {
                        self.head.extend_from_slice(bytes);
                        bytes = &[];
                    }
                    Err(_) => {}
                }
                parsed
            } else {
                let add = bytes.len().min(MAX_HEADER.saturating_sub(held));
                self.head.extend_from_slice(&bytes[..add]);
                let mut cursor = Cursor::new(&self.head[..]);
                let parsed = FrameHeader::parse(&mut cursor);
                let used = usize::try_from(cursor.position()).unwrap_or(0);
                match parsed {
                    Ok(Some(_)) => {
                        bytes = &bytes[used.saturating_sub(held).min(bytes.len())..];
                        self.head.clear();
                    }
                    // Still short: wait for more.
                    Ok(None) if add == bytes.len() => bytes = &[],
                    // 14 bytes and no header: not WebSocket framing.
                    Ok(None) => {
                        tracing::debug!("no frame header in 14 bytes; frames not recorded");
                        self.lost = true;
                    }
                    Err(_) => {}
                }
                parsed
            };
            match parsed {
                Ok(Some((header, len))) => {
                    let close = header.opcode == OpCode::Control(Control::Close);
                    self.current = Some(Partial {
                        header,
                        len,
                        remaining: len,
                        kept: Vec::new(),
                        keep: keep || close,
                        offset: 0,
                        t_us,
                    });
                    if len == 0
                        && let Some(done) = self.current.take()
                    {
                        out.push(done.finish(dir));
                    }
                }
                Ok(None) => {}
                Err(e) => {
                    tracing::debug!(error = %e, "not WebSocket framing; frames not recorded");
                    self.lost = true;
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
        // (A frame past the bounds, kept only to be counted, has no payload.)
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
            let mut frames = reader.feed(&bytes[..split], 1, "client", true);
            frames.extend(reader.feed(&bytes[split..], 2, "client", true));
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

    fn frame(t_us: u64, op: &str, len: u64) -> WsFrame {
        WsFrame {
            t_us,
            dir: "client".into(),
            op: op.into(),
            fin: true,
            len,
            data: String::new(),
            truncated: false,
            close_code: None,
        }
    }

    #[test]
    fn bounds_keep_a_prefix_count_the_rest_and_always_keep_closes() {
        let mut log = FrameLog::new(WsLimits {
            max_frames: 3,
            max_bytes: 100,
        });
        let kept = [
            (1, "text", 10),
            (2, "ping", 0),
            (3, "binary", 100),
            (4, "text", 1),
        ]
        .into_iter()
        .map(|(t, op, len)| !matches!(log.keep(frame(t, op, len)), Kept::No))
        .collect::<Vec<_>>();
        // The third would pass 100 bytes: it and everything after it (even
        // a frame that would fit) are counted, not kept.
        assert_eq!(kept, [true, true, false, false]);
        assert!(matches!(log.keep(frame(5, "close", 2)), Kept::Yes));
        let (tail, dropped) = log.into_tail();
        let times: Vec<u64> = tail.iter().map(|f| f.t_us).collect();
        assert_eq!((times, dropped), (vec![1, 2, 5], 2));
    }

    #[test]
    fn closes_stay_with_the_handshakes_record_not_in_a_part() {
        let mut log = FrameLog::new(WsLimits::default());
        let mut parted = 0;
        for t in 0..1500 {
            let op = if t == 10 { "close" } else { "text" };
            if let Kept::Part(_, frames) = log.keep(frame(t, op, 5)) {
                assert!(frames.iter().all(|f| f.op != "close"));
                parted += frames.len();
            }
        }
        let (tail, _) = log.into_tail();
        assert_eq!((parted, tail.len()), (1000, 500));
        assert_eq!(tail[0].op, "close", "in time order");
    }

    #[test]
    fn a_part_goes_out_every_thousand_frames_or_mebibyte() {
        let mut log = FrameLog::new(WsLimits::default());
        let mut parts = Vec::new();
        for t in 0..2100 {
            if let Kept::Part(n, frames) = log.keep(frame(t, "text", 5)) {
                parts.push((n, frames.len()));
            }
        }
        for t in 0..20 {
            if let Kept::Part(n, frames) = log.keep(frame(t, "binary", 64 * 1024)) {
                parts.push((n, frames.len()));
            }
        }
        // The third part closes at 1 MiB: the 100 small frames left, and
        // 16 large ones.
        assert_eq!(parts, [(1, 1000), (2, 1000), (3, 116)]);
        assert_eq!(log.part.len(), 4);
    }

    #[test]
    fn a_stream_that_is_not_websocket_is_let_alone() {
        let mut reader = FrameReader::default();
        // RSV bits set and a reserved opcode: not a frame tungstenite accepts.
        let frames = reader.feed(b"\xff\xffGET / HTTP/1.1", 1, "client", true);
        assert!(frames.is_empty());
        assert!(reader.lost);
    }
}
