-- WebSocket handshakes (status 101): the frames of the socket that
-- followed, as a JSON array of {t_us, dir, op, fin, len, data, truncated,
-- close_code}; NULL for other exchanges.
ALTER TABLE exchanges ADD COLUMN ws_frames TEXT;
