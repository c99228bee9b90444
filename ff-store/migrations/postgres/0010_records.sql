-- ff schema v10 (PostgreSQL): operational records the admin keeps (webhook endpoints and
-- their delivery state), versioned so instances never overwrite each other's writes.
CREATE TABLE ff_records (
    name TEXT PRIMARY KEY,
    version BIGINT NOT NULL,
    body TEXT NOT NULL
);
