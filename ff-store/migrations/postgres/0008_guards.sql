-- ff schema v8 (PostgreSQL): guarded rollouts' counts from every instance, and leases.

-- One instance's counts of one variation of a guarded rollout, since it started
-- (`epoch`, ms): replaced whole on each flush, so a retried flush counts nothing twice.
CREATE TABLE ff_guard_counts (
    flag TEXT NOT NULL,
    epoch BIGINT NOT NULL,
    instance TEXT NOT NULL,
    variation INTEGER NOT NULL,
    arm TEXT NOT NULL,
    updated_at BIGINT NOT NULL,
    PRIMARY KEY (flag, epoch, instance, variation)
);
CREATE INDEX ff_guard_counts_updated ON ff_guard_counts (updated_at);

-- Who may act for a job (the guardian) until when.
CREATE TABLE ff_leases (
    name TEXT PRIMARY KEY,
    holder TEXT NOT NULL,
    expires_at BIGINT NOT NULL
);
