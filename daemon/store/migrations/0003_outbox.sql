-- Emails and webhook calls waiting to be delivered; kept after delivery for the record.
-- Delivery is first-in first-out per channel: all emails share one, each webhook URL has its own.
CREATE TABLE outbox (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    kind          TEXT NOT NULL,          -- 'email' or 'webhook'
    job_id        INTEGER,
    event         TEXT NOT NULL,          -- picked_up, progress, succeeded, completed_with_errors, failed
    target        TEXT NOT NULL,          -- recipients (comma-separated) or the webhook URL
    message_id    TEXT,                   -- the email's Message-ID, the same at every attempt
    payload       BLOB NOT NULL,          -- the whole RFC 5322 message, or the JSON body
    created_at    TEXT NOT NULL,
    attempts      INTEGER NOT NULL DEFAULT 0,
    next_attempt  REAL NOT NULL DEFAULT 0, -- epoch seconds
    last_error    TEXT,
    sent_at       TEXT,                   -- set as soon as the server accepted it
    failed_at     TEXT                    -- set when the server refused it for good (e.g. every recipient 5xx)
);
CREATE INDEX outbox_pending ON outbox (sent_at, failed_at, kind, id)
