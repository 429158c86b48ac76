-- Exports (GitHub issue #15): one row per export request, one per run, one per file a run published.
CREATE TABLE exports (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    account       TEXT NOT NULL,
    type          TEXT NOT NULL,              -- events | profiles
    events        TEXT NOT NULL DEFAULT '[]', -- JSON list of event names; empty: every event
    format        TEXT NOT NULL,              -- jsonl | csv | xml | parquet
    since_ms      INTEGER,                    -- one-time events exports: events with ts >= this
    days          INTEGER,                    -- the --days asked for (shown), or NULL
    every_s       REAL,                       -- recurring: seconds between runs; NULL: one-time
    destination   TEXT NOT NULL,              -- 'sftp' or 's3://BUCKET/PREFIX'
    requested_by  TEXT NOT NULL DEFAULT 'cli',
    emails        TEXT NOT NULL DEFAULT '[]', -- JSON: extra addresses told about runs (a *.export request's clientEmail)
    status        TEXT NOT NULL,              -- pending | running | done | failed | cancelled
    watermark     TEXT NOT NULL,              -- JSON: where the next run starts (the sink's arrival order)
    next_run_at   REAL,                       -- epoch seconds; NULL: nothing more to run
    created_at    REAL NOT NULL,
    updated_at    REAL NOT NULL,
    error         TEXT
);
CREATE INDEX exports_due ON exports (next_run_at) WHERE next_run_at IS NOT NULL;
CREATE INDEX exports_account ON exports (account, id);
CREATE TABLE export_runs (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    export_id    INTEGER NOT NULL REFERENCES exports (id),
    run_ts       TEXT NOT NULL,               -- yyyymmddHHMMSS (UTC) of the run's start: part of its file names
    status       TEXT NOT NULL,               -- running | done | failed | cancelled
    low          TEXT NOT NULL,               -- JSON watermark: rows that arrived after this ...
    high         TEXT NOT NULL,               -- ... and up to this one are the run's
    rows         INTEGER NOT NULL DEFAULT 0,
    bytes        INTEGER NOT NULL DEFAULT 0,
    attempts     INTEGER NOT NULL DEFAULT 1,
    note         TEXT,
    error        TEXT,
    started_at   REAL NOT NULL,
    finished_at  REAL
);
CREATE INDEX export_runs_export ON export_runs (export_id, id);
CREATE TABLE export_files (
    id        INTEGER PRIMARY KEY AUTOINCREMENT,
    run_id    INTEGER NOT NULL REFERENCES export_runs (id),
    name      TEXT NOT NULL,
    location  TEXT NOT NULL,                  -- 'exports/<name>' or 's3://bucket/key'
    series    TEXT NOT NULL,                  -- event name or 'profiles'
    rows      INTEGER NOT NULL,
    bytes     INTEGER NOT NULL
);
CREATE INDEX export_files_run ON export_files (run_id, id)
