-- Several nodes on shared state (issue #16). A job or outbox row being handled by a node names it, and until
-- when (epoch seconds) the claim holds; the node's heartbeat extends it, and once it lapses (the node died)
-- another node may take the row over. NULL: nobody holds it. SQLite (one node) leaves them NULL.
ALTER TABLE jobs ADD COLUMN lease_node TEXT;
ALTER TABLE jobs ADD COLUMN lease_until REAL;
ALTER TABLE outbox ADD COLUMN lease_node TEXT;
ALTER TABLE outbox ADD COLUMN lease_until REAL;
CREATE INDEX jobs_lease ON jobs (lease_node) WHERE lease_node IS NOT NULL;
CREATE INDEX outbox_lease ON outbox (lease_node) WHERE lease_node IS NOT NULL;
-- Every `ingestd serve` using this state: `ingestd nodes`, GET /api/nodes.
CREATE TABLE nodes (
    id            TEXT PRIMARY KEY,           -- host:pid
    host          TEXT NOT NULL,
    pid           INTEGER NOT NULL,
    version       TEXT NOT NULL,
    sftp          TEXT NOT NULL DEFAULT '',   -- host:port the node's SFTP server listens on
    http          TEXT NOT NULL DEFAULT '',
    started_at    TEXT NOT NULL,
    heartbeat_at  REAL NOT NULL,              -- epoch seconds of its last heartbeat
    stopped_at    TEXT                        -- set by a clean stop
)
