-- ff schema v3 (PostgreSQL): targeting rules, splits and schedules, as JSON.
ALTER TABLE ff_flags ADD COLUMN targeting TEXT NOT NULL DEFAULT '{}';
