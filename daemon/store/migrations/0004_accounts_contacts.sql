-- Account contacts and allowed domains; the outbox keeps each row's delivery channel; failure-email budget.
-- Contact addresses (JSON list): told when a manifest's own addresses cannot be used, and about every failure.
ALTER TABLE accounts ADD COLUMN emails TEXT NOT NULL DEFAULT '[]';
-- Allowed domains (JSON list): when not empty, the only domains a manifest's clientEmail may name.
ALTER TABLE accounts ADD COLUMN allowed_domains TEXT NOT NULL DEFAULT '[]';
ALTER TABLE accounts ADD COLUMN updated_at TEXT;
-- Delivery is first-in first-out per channel: 'email:<recipient domain>', 'webhook:<url>', 'eml' (files).
-- Rows queued before this migration keep the old single email channel.
ALTER TABLE outbox ADD COLUMN channel TEXT NOT NULL DEFAULT 'email';
ALTER TABLE outbox ADD COLUMN account TEXT;
UPDATE outbox SET channel = 'webhook:' || target WHERE kind = 'webhook';
CREATE INDEX outbox_channel ON outbox (channel, id) WHERE sent_at IS NULL AND failed_at IS NULL;
-- One row per failure email an account caused: emailed (1) or held back for the hourly summary (0).
CREATE TABLE notify_failures (
    id             INTEGER PRIMARY KEY AUTOINCREMENT,
    account        TEXT NOT NULL,
    job_id         INTEGER,
    at             REAL NOT NULL,              -- epoch seconds
    emailed        INTEGER NOT NULL,
    recipients     TEXT NOT NULL DEFAULT '[]', -- JSON: who the held-back email would have gone to
    summarised_at  REAL                        -- when the summary naming it was queued
);
CREATE INDEX notify_failures_account ON notify_failures (account, at)
