-- ff schema v4 (PostgreSQL): segments, reusable sets of users referenced by rules.
CREATE TABLE ff_segments (
    key TEXT PRIMARY KEY,
    definition TEXT NOT NULL,
    version BIGINT NOT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);
