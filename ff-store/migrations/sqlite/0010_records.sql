-- ff schema v10 (SQLite): operational records the admin keeps (webhook endpoints and
-- their delivery state), versioned so instances never overwrite each other's writes.
CREATE TABLE ff_records (
    name TEXT PRIMARY KEY,
    version INTEGER NOT NULL,
    body TEXT NOT NULL
);
