-- ff schema v3 (SQLite): targeting rules, splits and schedules, as JSON.
ALTER TABLE ff_flags ADD COLUMN targeting TEXT NOT NULL DEFAULT '{}';
