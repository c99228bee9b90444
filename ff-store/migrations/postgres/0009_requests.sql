-- ff schema v9 (PostgreSQL): change requests, and who approved a change.

-- A change request: the admin's JSON, versioned so two deciders never both act on one version.
CREATE TABLE ff_requests (
    id BIGINT PRIMARY KEY,
    key TEXT NOT NULL,
    version BIGINT NOT NULL,
    body TEXT NOT NULL
);

-- A flag's own approval policy (NULL: as its kind's).
ALTER TABLE ff_flags ADD COLUMN approval BIGINT;

ALTER TABLE ff_changes ADD COLUMN approved_by TEXT;
ALTER TABLE ff_changes ADD COLUMN emergency BIGINT NOT NULL DEFAULT 0;
