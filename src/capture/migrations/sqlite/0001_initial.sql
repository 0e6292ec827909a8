-- tapedeck capture store, schema version 1.
-- One file holds any number of recording runs (`captures`), each with its
-- sessions and exchanges. Times are microseconds: `*_at_us` since the Unix
-- epoch, `offset_us` since the run started, durations as `*_us`.

CREATE TABLE store_meta (
    key   TEXT PRIMARY KEY NOT NULL,
    value BLOB NOT NULL
) STRICT;

CREATE TABLE captures (
    id              INTEGER PRIMARY KEY,
    upstream        TEXT    NOT NULL,
    listen          TEXT    NOT NULL,
    tool_version    TEXT    NOT NULL,
    started_at_us   INTEGER NOT NULL,
    stopped_at_us   INTEGER,
    max_body_bytes  INTEGER NOT NULL,
    redaction       TEXT    NOT NULL,
    exchanges       INTEGER NOT NULL DEFAULT 0,
    sessions        INTEGER NOT NULL DEFAULT 0,
    dropped         INTEGER NOT NULL DEFAULT 0
) STRICT;

CREATE TABLE sessions (
    capture_id     INTEGER NOT NULL REFERENCES captures(id),
    session_no     INTEGER NOT NULL,
    key_kind       TEXT    NOT NULL,
    key            TEXT    NOT NULL,
    client_addr    TEXT    NOT NULL,
    user_agent     TEXT,
    started_at_us  INTEGER NOT NULL,
    PRIMARY KEY (capture_id, session_no)
) STRICT;

CREATE TABLE exchanges (
    id                 INTEGER PRIMARY KEY,
    capture_id         INTEGER NOT NULL REFERENCES captures(id),
    session_no         INTEGER NOT NULL,
    seq                INTEGER NOT NULL,
    started_at_us      INTEGER NOT NULL,
    offset_us          INTEGER NOT NULL,
    method             TEXT    NOT NULL,
    uri                TEXT    NOT NULL,
    http_version       TEXT    NOT NULL,
    request_headers    TEXT    NOT NULL,
    request_body       BLOB    NOT NULL,
    request_body_len   INTEGER NOT NULL,
    request_truncated  INTEGER NOT NULL,
    status             INTEGER,
    response_headers   TEXT    NOT NULL,
    response_body      BLOB    NOT NULL,
    response_body_len  INTEGER NOT NULL,
    response_truncated INTEGER NOT NULL,
    ttfb_us            INTEGER,
    duration_us        INTEGER NOT NULL,
    error_kind         TEXT,
    error_message      TEXT
) STRICT;

-- Replay reads a run session by session, in send order.
CREATE INDEX exchanges_by_session ON exchanges (capture_id, session_no, seq);
