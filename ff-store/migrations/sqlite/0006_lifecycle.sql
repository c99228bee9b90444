-- ff schema v6 (SQLite): flag kinds and expiry policy,
-- and usage counts flushed by instances.
ALTER TABLE ff_flags ADD COLUMN kind TEXT;
ALTER TABLE ff_flags ADD COLUMN permanent INTEGER;
ALTER TABLE ff_flags ADD COLUMN expiry TEXT NOT NULL DEFAULT 'warn';

-- Evaluations per flag, UTC day, reason and served value or variant.
CREATE TABLE ff_usage (
    key TEXT NOT NULL,
    day INTEGER NOT NULL,
    reason TEXT NOT NULL,
    variant TEXT NOT NULL,
    count INTEGER NOT NULL,
    last_at INTEGER NOT NULL,
    PRIMARY KEY (key, day, reason, variant)
);

-- Keys that code asked for and the snapshot did not have.
CREATE TABLE ff_unknown_flags (
    key TEXT PRIMARY KEY,
    count INTEGER NOT NULL,
    first_at INTEGER NOT NULL,
    last_at INTEGER NOT NULL
);
