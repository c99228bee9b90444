-- ff schema v1 (PostgreSQL). Values are JSON text; times are Unix milliseconds.
CREATE TABLE ff_meta (
    id BIGINT PRIMARY KEY CHECK (id = 1),
    seq BIGINT NOT NULL
);
INSERT INTO ff_meta (id, seq) VALUES (1, 0);

CREATE TABLE ff_flags (
    key TEXT PRIMARY KEY,
    value_type TEXT NOT NULL,
    value TEXT NOT NULL,
    off_value TEXT NOT NULL,
    enabled BIGINT NOT NULL,
    schema TEXT NOT NULL,
    description TEXT NOT NULL,
    archived BIGINT NOT NULL,
    version BIGINT NOT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);

CREATE TABLE ff_overrides (
    key TEXT NOT NULL,
    user_id TEXT NOT NULL,
    value TEXT NOT NULL,
    updated_at BIGINT NOT NULL,
    PRIMARY KEY (key, user_id)
);
CREATE INDEX ff_overrides_user ON ff_overrides (user_id);

CREATE TABLE ff_changes (
    seq BIGINT PRIMARY KEY,
    at_ms BIGINT NOT NULL,
    actor TEXT NOT NULL,
    action TEXT NOT NULL,
    key TEXT NOT NULL,
    subject TEXT,
    before_state TEXT,
    after_state TEXT,
    reason TEXT
);
CREATE INDEX ff_changes_key ON ff_changes (key, seq);
