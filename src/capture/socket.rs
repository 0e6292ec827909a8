//! A WebSocket's frames on their way to the store, and back.
//!
//! A socket can stay open for hours and carry millions of frames, so its
//! frames do not wait for the socket to close: the proxy hands them to the
//! capture writer in parts ([`FramePart`], at most [`PART_FRAMES`] frames
//! or [`PART_BYTES`] of payload) while the socket is open, and the
//! handshake's record, queued when it closes, carries only the frames after
//! the last part and the count of frames not kept. The store keys parts by
//! the handshake exchange's identity (run, session, seq: known when the
//! socket opens) and a part number; reading an exchange gives its frames
//! as one ordered list again ([`assemble`]).
//!
//! Plain types and arithmetic only: the proxy fills parts, the writer
//! queues and redacts them, the store writes and reads them.

use std::sync::Arc;

use http::HeaderMap;

use super::WsFrame;

/// Payload bytes kept per frame (unmasked); the true length is always
/// kept.
pub const MAX_FRAME_PAYLOAD: usize = 64 * 1024;

/// Most frames in one part.
pub const PART_FRAMES: usize = 1000;

/// Most payload bytes in one part (kept payload, before base64): a part
/// closes at the frame that reaches it.
pub const PART_BYTES: usize = 1024 * 1024;

/// What a queued frame holds besides its payload: the frame itself (96
/// bytes), its direction and opcode strings and the allocator's headers
/// of its three allocations.
pub const FRAME_OVERHEAD: usize = 160;

/// The handshake a socket's frames belong to, as redaction needs it: the
/// clear values its request carried (credential headers, secret query
/// parameters) are replaced wherever a frame repeats them. Shared by every
/// part of the socket.
#[derive(Debug, Clone)]
pub struct Handshake {
    /// The request target (origin form, with query), as the client sent it.
    pub uri: String,
    /// The request headers, hop-by-hop headers removed.
    pub request_headers: HeaderMap,
}

impl Handshake {
    /// The handshake of a socket, its header values copied out of the
    /// connection's read buffers (which a handle would keep alive for as
    /// long as the socket is open).
    pub fn new(uri: &str, request_headers: &HeaderMap) -> Self {
        let mut request_headers = request_headers.clone();
        super::own_headers(&mut request_headers);
        Handshake {
            uri: uri.to_string(),
            request_headers,
        }
    }
}

/// A part of a socket's frames, written while the socket is open.
#[derive(Debug, Clone)]
pub struct FramePart {
    /// The handshake exchange's session.
    pub session_no: i64,
    /// The handshake exchange's position in its session.
    pub seq: i64,
    /// The part's number within the socket, from 1.
    pub part_no: i64,
    /// The frames, in the order the proxy kept them.
    pub frames: Vec<WsFrame>,
    /// The handshake, for redaction.
    pub handshake: Arc<Handshake>,
}

impl FramePart {
    /// Approximate memory held by the part, to bound the writer queue (the
    /// shared handshake is not counted: one per socket, not per part).
    pub fn weight(&self) -> usize {
        256 + frames_weight(&self.frames)
    }
}

/// Approximate memory held by frames in a queue.
pub fn frames_weight(frames: &[WsFrame]) -> usize {
    frames.iter().map(|f| f.data.len() + FRAME_OVERHEAD).sum()
}

/// The payload bytes a frame keeps (at most [`MAX_FRAME_PAYLOAD`]).
pub fn kept_payload(frame: &WsFrame) -> usize {
    usize::try_from(frame.len)
        .unwrap_or(usize::MAX)
        .min(MAX_FRAME_PAYLOAD)
}

/// Counts a part as frames join it, and says when it is full.
#[derive(Debug, Clone, Copy, Default)]
pub struct PartFill {
    frames: usize,
    bytes: usize,
}

impl PartFill {
    /// Adds a frame; `true` when the part is full with it.
    pub fn add(&mut self, frame: &WsFrame) -> bool {
        self.frames += 1;
        self.bytes += kept_payload(frame);
        self.frames >= PART_FRAMES || self.bytes >= PART_BYTES
    }
}

/// Frames cut the way recording cuts them: full parts, and the rest (less
/// than a part), which stays with the exchange.
pub fn split_parts(frames: &[WsFrame]) -> (Vec<&[WsFrame]>, &[WsFrame]) {
    let mut parts = Vec::new();
    let (mut start, mut fill) = (0, PartFill::default());
    for (i, frame) in frames.iter().enumerate() {
        if fill.add(frame) {
            parts.push(&frames[start..=i]);
            start = i + 1;
            fill = PartFill::default();
        }
    }
    (parts, &frames[start..])
}

/// A socket's frames as one list: its parts in part order, then the
/// frames the exchange's row holds, ordered by time. The two directions
/// are read by two tasks and a frame joins a part when its last byte has
/// passed, so a large frame can land in a part after a later one from the
/// other direction; the sort is stable, so frames of equal time keep the
/// order they were kept in.
pub fn assemble(parts: Vec<Vec<WsFrame>>, tail: Vec<WsFrame>) -> Vec<WsFrame> {
    if parts.is_empty() {
        return tail;
    }
    let mut all: Vec<WsFrame> = parts.into_iter().flatten().collect();
    all.extend(tail);
    all.sort_by_key(|f| f.t_us);
    all
}

/// What a run's WebSockets hold, for `captures show`.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct SocketSummary {
    /// Handshakes recorded (status 101).
    pub sockets: i64,
    /// Frames stored.
    pub frames: i64,
    /// Frames not stored: past the bounds, or in a part the writer's queue
    /// had no room for.
    pub frames_dropped: i64,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(t_us: u64, len: u64) -> WsFrame {
        WsFrame {
            t_us,
            dir: "client".into(),
            op: "binary".into(),
            fin: true,
            len,
            data: String::new(),
            truncated: len > MAX_FRAME_PAYLOAD as u64,
            close_code: None,
        }
    }

    #[test]
    fn parts_close_at_a_thousand_frames_or_a_mebibyte_of_payload() {
        let tiny: Vec<WsFrame> = (0..2500).map(|t| frame(t, 7)).collect();
        let (parts, rest) = split_parts(&tiny);
        let sizes: Vec<usize> = parts.iter().map(|p| p.len()).collect();
        assert_eq!((sizes, rest.len()), (vec![1000, 1000], 500));
        // 64 KiB each (and larger ones count as the 64 KiB they keep):
        // 16 make a MiB.
        let big: Vec<WsFrame> = (0..40).map(|t| frame(t, 1 << 20)).collect();
        let (parts, rest) = split_parts(&big);
        let sizes: Vec<usize> = parts.iter().map(|p| p.len()).collect();
        assert_eq!((sizes, rest.len()), (vec![16, 16], 8));
    }

    #[test]
    fn assembled_frames_are_in_time_order_and_stable() {
        let parts = vec![
            vec![frame(1, 1), frame(5, 2)],
            vec![frame(3, 3), frame(5, 4)],
        ];
        let all = assemble(parts, vec![frame(6, 5)]);
        let order: Vec<(u64, u64)> = all.iter().map(|f| (f.t_us, f.len)).collect();
        assert_eq!(order, [(1, 1), (3, 3), (5, 2), (5, 4), (6, 5)]);
    }
}
