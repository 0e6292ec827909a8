-- WebSocket frames in parts, and the frames a socket did not keep.
--
-- A long socket's frames reach the store while it is open, in parts
-- (a JSON array of frames each, as in `exchanges.ws_frames`), keyed by the
-- handshake exchange's identity (run, session, seq), which is known when
-- the socket opens; the handshake's row comes when the socket closes and
-- holds the frames after the last part. Readers put the parts (in
-- `part_no` order) before the row's own frames.
CREATE TABLE ws_frame_parts (
    capture_id   INTEGER NOT NULL REFERENCES captures(id),
    session_no   INTEGER NOT NULL,
    seq          INTEGER NOT NULL,
    part_no      INTEGER NOT NULL,
    frame_count  INTEGER NOT NULL,
    frames       TEXT    NOT NULL,
    PRIMARY KEY (capture_id, session_no, seq, part_no)
) STRICT;

-- Frames of the socket that are not stored: past the bounds
-- (`--ws-max-frames`, `--ws-max-bytes`), or in a part the writer's queue
-- had no room for. 0 for other exchanges.
ALTER TABLE exchanges ADD COLUMN ws_frames_dropped INTEGER NOT NULL DEFAULT 0;
