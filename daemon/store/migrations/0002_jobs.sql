-- Import jobs, one per manifest, in arrival order (id grows with arrival).
CREATE TABLE jobs (
    id             INTEGER PRIMARY KEY AUTOINCREMENT,
    account        TEXT NOT NULL,
    manifest_name  TEXT NOT NULL,
    file_name      TEXT NOT NULL DEFAULT '',
    type           TEXT NOT NULL DEFAULT '',
    status         TEXT NOT NULL,
    rows_total     INTEGER NOT NULL DEFAULT 0,
    rows_ingested  INTEGER NOT NULL DEFAULT 0,
    rows_failed    INTEGER NOT NULL DEFAULT 0,
    bytes_total    INTEGER NOT NULL DEFAULT 0,
    bytes_done     INTEGER NOT NULL DEFAULT 0,
    created_at     TEXT NOT NULL,
    started_at     TEXT,
    finished_at    TEXT,
    updated_at     TEXT NOT NULL,
    error          TEXT,
    details        TEXT NOT NULL DEFAULT '{}',
    checkpoint     TEXT NOT NULL DEFAULT '{}',
    paused         TEXT
);
CREATE INDEX jobs_account_status ON jobs (account, status, id);
CREATE INDEX jobs_status ON jobs (status, id);
