-- ff schema v7 (PostgreSQL): changes written together as one batch.
ALTER TABLE ff_changes ADD COLUMN batch_end BIGINT;
