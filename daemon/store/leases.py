"""Lease timing on shared state: how long a node's claim holds, and how often its heartbeat renews it.

A node claims a job, an outbox row or an export run until `now + LEASE_SECONDS`; its heartbeat (one transaction,
daemon/store/nodes.py) renews every claim it holds each HEARTBEAT_SECONDS, four beats per lease, so one or two
beats lost to a slow database do no harm. A node whose last beat is older than LEASE_SECONDS is `lost`.

What a takeover costs (docs/ops-guide.md, "Running several nodes"): a node that dies without a clean stop keeps
its claims until they lapse, between LEASE_SECONDS - HEARTBEAT_SECONDS and LEASE_SECONDS after it died; another
node takes a job over at its next scheduler pass (IDLE_TICK, 5 s, in daemon/jobs/manager.py) and resumes it
from its last checkpoint, so the rows written since (at most the batches in flight) are validated and written
again, under the same ids. A clean stop gives every claim back at once. SQLite state has one node, no leases.
"""

from __future__ import annotations

LEASE_SECONDS = 20.0
HEARTBEAT_SECONDS = LEASE_SECONDS / 4
