-- ff schema v4 (SQLite): segments, reusable sets of users referenced by rules.
CREATE TABLE ff_segments (
    key TEXT PRIMARY KEY,
    definition TEXT NOT NULL,
    version INTEGER NOT NULL,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL
);
