-- Streamed responses (text/event-stream, NDJSON): when each body chunk
-- arrived, as a JSON array of [µs since the response head, bytes]; NULL
-- for other responses.
ALTER TABLE exchanges ADD COLUMN response_chunks TEXT;
