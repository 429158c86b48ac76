"""The job statuses of DESIGN.md, in lifecycle order: the one list the store, the CLI and the HTTP API use."""

from __future__ import annotations

STATUSES = (
    "queued",
    "waiting_for_data",
    "processing",
    "succeeded",
    "completed_with_errors",
    "failed",
    "cancelled",
)
PENDING = ("queued", "waiting_for_data")  # not picked up yet: a partner's rm of the manifest cancels them
ACTIVE = ("queued", "waiting_for_data", "processing")  # not finished: `imports cancel` applies
FINAL = ("succeeded", "completed_with_errors", "failed", "cancelled")  # finished: `imports retry` applies

# The events of a job's `details.timeline`, in the order they usually happen.
TIMELINE_EVENTS = ("queued", "waiting_for_data", "picked_up", "paused", "resumed", "cancelled", "retried", "finished")
