-- The share of sessions a run recorded (`record --sample`): 1 records
-- every session; runs recorded before sampling existed recorded all.
ALTER TABLE captures ADD COLUMN sample_fraction REAL NOT NULL DEFAULT 1.0;
