-- Emails and webhook calls waiting to be delivered; kept after delivery for the record.
CREATE TABLE outbox (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    kind          TEXT NOT NULL,          -- 'email' or 'webhook'
    job_id        INTEGER,
    event         TEXT NOT NULL,          -- picked_up, progress, succeeded, completed_with_errors, failed
    target        TEXT NOT NULL,          -- recipients (comma-separated) or the webhook URL
    payload       BLOB NOT NULL,          -- the whole RFC 5322 message, or the JSON body
    created_at    TEXT NOT NULL,
    attempts      INTEGER NOT NULL DEFAULT 0,
    next_attempt  REAL NOT NULL DEFAULT 0,
    last_error    TEXT,
    sent_at       TEXT
);
CREATE INDEX outbox_pending ON outbox (sent_at, next_attempt);
