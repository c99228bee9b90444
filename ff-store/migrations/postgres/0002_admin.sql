-- ff schema v2 (PostgreSQL): flag metadata and API tokens.
ALTER TABLE ff_flags ADD COLUMN owner TEXT NOT NULL DEFAULT '';
ALTER TABLE ff_flags ADD COLUMN tags TEXT NOT NULL DEFAULT '[]';
ALTER TABLE ff_flags ADD COLUMN ticket TEXT NOT NULL DEFAULT '';
ALTER TABLE ff_flags ADD COLUMN expires_at BIGINT;

CREATE TABLE ff_tokens (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    role TEXT NOT NULL,
    secret_hash TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    revoked_at BIGINT
);

CREATE INDEX ff_changes_actor ON ff_changes (actor, seq);
