-- ff schema v6 (PostgreSQL): flag kinds and expiry policy,
-- and usage counts flushed by instances.
ALTER TABLE ff_flags ADD COLUMN kind TEXT;
ALTER TABLE ff_flags ADD COLUMN permanent BIGINT;
ALTER TABLE ff_flags ADD COLUMN expiry TEXT NOT NULL DEFAULT 'warn';

-- Evaluations per flag, UTC day, reason and served value or variant.
CREATE TABLE ff_usage (
    key TEXT NOT NULL,
    day BIGINT NOT NULL,
    reason TEXT NOT NULL,
    variant TEXT NOT NULL,
    count BIGINT NOT NULL,
    last_at BIGINT NOT NULL,
    PRIMARY KEY (key, day, reason, variant)
);

-- Keys that code asked for and the snapshot did not have.
CREATE TABLE ff_unknown_flags (
    key TEXT PRIMARY KEY,
    count BIGINT NOT NULL,
    first_at BIGINT NOT NULL,
    last_at BIGINT NOT NULL
);
