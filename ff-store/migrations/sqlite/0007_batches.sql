-- ff schema v7 (SQLite): changes written together as one batch.
ALTER TABLE ff_changes ADD COLUMN batch_end INTEGER;
