-- ff schema v9 (SQLite): change requests, and who approved a change.

-- A change request: the admin's JSON, versioned so two deciders never both act on one version.
CREATE TABLE ff_requests (
    id INTEGER PRIMARY KEY,
    key TEXT NOT NULL,
    version INTEGER NOT NULL,
    body TEXT NOT NULL
);

-- A flag's own approval policy (NULL: as its kind's).
ALTER TABLE ff_flags ADD COLUMN approval INTEGER;

ALTER TABLE ff_changes ADD COLUMN approved_by TEXT;
ALTER TABLE ff_changes ADD COLUMN emergency INTEGER NOT NULL DEFAULT 0;
