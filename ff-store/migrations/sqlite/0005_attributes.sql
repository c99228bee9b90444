-- ff schema v5 (SQLite): context attributes the application declares, for validating targeting.
CREATE TABLE ff_attributes (
    name TEXT PRIMARY KEY,
    declared_at INTEGER NOT NULL
);
