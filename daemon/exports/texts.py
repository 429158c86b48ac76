"""Every text an export shows to partners and operators (CLI errors, run notes, request replies), in one place."""

from __future__ import annotations

BAD_TYPE = "type {value!r}: expected events or profiles"
BAD_FORMAT = "format {value!r}: expected one of {choices}"
BAD_DAYS = "days {value!r}: a one-time export looks at most {limit} days back"
BAD_SINCE = "since {value!r}: expected a date like 2026-11-20 or 2026-11-20T08:00:00Z"
SINCE_TOO_OLD = "since {value}: a one-time export looks at most {limit} days back"
SINCE_FUTURE = "since {value}: the date is in the future"
DAYS_AND_SINCE = "--days and --since cannot be combined: give one"
BAD_EVERY = "every {value!r}: a recurring export runs every 4h to 24h"
WINDOW_ON_RECURRING = "a recurring export takes what arrives from now on: --days and --since are for one-time exports"
WINDOW_ON_PROFILES = "a profiles export takes every profile: --days and --since select events only"
EVENTS_ON_PROFILES = "--event selects events: a profiles export takes every profile"
BAD_EVENT = "event name {value!r}: expected 1 to 512 characters"
BAD_DESTINATION = "destination {value!r}: expected sftp or s3://BUCKET/PREFIX"
BAD_ACCOUNT = "account {value!r}: expected letters, digits, '.', '_' or '-' (at most 64)"
NO_SUCH_EXPORT = "no export {value}"
ALREADY_FINISHED = "export {value} is already {status}"
UNKNOWN_EVENTS = "no events named {names} stored for account {account} yet: the export will write nothing for them"

# Run outcomes, shown in `exports show`, the API, the activity log and the emails.
NOTHING_NEW = "nothing to export: no rows in the selection"
NO_SUCH_EVENTS = "no events named {names} in the selection"
INTERRUPTED = "the run was interrupted (daemon stopped or crashed) and started again"
S3_FAILED = "S3 bucket {bucket}: {reason}"
WRITE_FAILED = "writing {name}: {reason}"

# Replies to a partner's `*.export` request file, written next to it as `<name>.error` when refused.
REQUEST_NOT_JSON = "The export request is not a JSON object: {reason}"
REQUEST_UNKNOWN_KEY = "The export request has an unknown key {key!r}; expected type, events, format, days, clientEmail"
REQUEST_BAD = "The export request cannot be used: {reason}"
REQUEST_TOO_BIG = "The export request is larger than 64 KiB"
