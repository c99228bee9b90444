-- ff schema v5 (PostgreSQL): context attributes the application declares, for validating targeting.
CREATE TABLE ff_attributes (
    name TEXT PRIMARY KEY,
    declared_at BIGINT NOT NULL
);
