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
    details        TEXT NOT NULL DEFAULT '{}',   -- problems, reasons, paused, duration_ms, exception
    checkpoint     TEXT NOT NULL DEFAULT '{}',   -- how far the worker got: rows_done, error_bytes, processing_ts, ...
    paused         TEXT,                         -- why the sink is being retried, NULL when running
    waiting_since  REAL                          -- epoch seconds when the job first waited for its CSV
);
CREATE INDEX jobs_account_status ON jobs (account, status, id);
CREATE INDEX jobs_status ON jobs (status, id);
-- A manifest still in the drop folder has at most one job waiting for it (watch events and rescans repeat).
CREATE UNIQUE INDEX jobs_pending_manifest ON jobs (account, manifest_name) WHERE status IN ('queued', 'waiting_for_data');
