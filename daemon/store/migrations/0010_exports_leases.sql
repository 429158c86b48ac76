-- Several nodes (issue #16): an export being run names the node running it, and until when (epoch seconds) the
-- claim holds; the node's heartbeat extends it. A node resumes an interrupted run only once its claim lapsed (the
-- node that ran it died), never one another live node is running. SQLite (one node) leaves them NULL.
ALTER TABLE exports ADD COLUMN lease_node TEXT;
ALTER TABLE exports ADD COLUMN lease_until REAL;
