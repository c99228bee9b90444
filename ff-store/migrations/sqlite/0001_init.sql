-- ff schema v1 (SQLite). Values are JSON text; times are Unix milliseconds.
CREATE TABLE ff_meta (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    seq INTEGER NOT NULL
);
INSERT INTO ff_meta (id, seq) VALUES (1, 0);

CREATE TABLE ff_flags (
    key TEXT PRIMARY KEY,
    value_type TEXT NOT NULL,
    value TEXT NOT NULL,
    off_value TEXT NOT NULL,
    enabled INTEGER NOT NULL,
    schema TEXT NOT NULL,
    description TEXT NOT NULL,
    archived INTEGER NOT NULL,
    version INTEGER NOT NULL,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL
);

CREATE TABLE ff_overrides (
    key TEXT NOT NULL,
    user_id TEXT NOT NULL,
    value TEXT NOT NULL,
    updated_at INTEGER NOT NULL,
    PRIMARY KEY (key, user_id)
);
CREATE INDEX ff_overrides_user ON ff_overrides (user_id);

CREATE TABLE ff_changes (
    seq INTEGER PRIMARY KEY,
    at_ms INTEGER NOT NULL,
    actor TEXT NOT NULL,
    action TEXT NOT NULL,
    key TEXT NOT NULL,
    subject TEXT,
    before_state TEXT,
    after_state TEXT,
    reason TEXT
);
CREATE INDEX ff_changes_key ON ff_changes (key, seq);
