"""Every partner-facing word of the notifications (subjects, headlines, next steps), in one place."""

from __future__ import annotations

# Event kinds passed to Notifier.notify(); also the webhook "event" field.
KINDS = ("picked_up", "progress", "succeeded", "completed_with_errors", "failed", "cancelled")

# Why a job failed; decides the subject's short reason and the next steps.
FAILURE_KINDS = ("manifest", "no_data_file", "file_unreadable", "all_rows_failed", "internal")

SUBJECTS = {
    "picked_up": "[{account}] Picked up: {file}",
    "progress": "[{account}] In progress, {percent} done: {file}",
    "progress_unknown": "[{account}] In progress: {file}",
    "succeeded": "[{account}] Imported: {file} ({ingested_rows})",
    "completed_with_errors": "[{account}] Imported with errors: {file} ({rows_failed} of {total_rows} failed)",
    "failed": "[{account}] Failed: {file} ({short_reason})",
    "cancelled": "[{account}] Cancelled: {file}",
}

SHORT_REASONS = {
    "manifest": "manifest has errors",
    "no_data_file": "no data file found",
    "file_unreadable": "file couldn't be read",
    "all_rows_failed": "all rows failed",
    "internal": "internal error",
}

# The partner-facing reason when the job dict carries none.
DEFAULT_REASONS = {
    "manifest": "Incorrect details in manifest file",
    "no_data_file": "No data file found",
    "file_unreadable": "File couldn't be read",
    "all_rows_failed": "All rows failed validation",
    "internal": "Internal error while importing data",
}

OUTCOMES = {
    "picked_up": "Picked up",
    "progress": "In progress",
    "succeeded": "Imported",
    "completed_with_errors": "Imported with errors",
    "failed": "Failed",
    "cancelled": "Cancelled",
}

HEADLINES = {
    "picked_up": "We picked up {file} and started importing it.",
    "progress": "{file} is still being imported: {percent} done.",
    "progress_unknown": "{file} is still being imported.",
    "succeeded": "{file} was imported: {all_rows}.",
    "completed_with_errors": "{file} was imported, but {rows_failed} of {total_rows} {were} rejected.",
    "failed": "{file} could not be imported: {reason}.",
    "cancelled": "The import of {file} was cancelled.",
}

# Extra words per failure kind, shown under the headline.
FAILURE_EXPLANATIONS = {
    "manifest": "The manifest {manifest} could not be used, so no row of the data file was read.",
    "no_data_file": "The manifest {manifest} names the data file {file}, but no file by that name arrived in your folder.",
    "file_unreadable": "The file could not be read as a whole, so no row was imported.",
    "all_rows_failed": "Every row of the file was rejected, so nothing was imported.",
    "internal": "This is an error on our side, not a problem with your file. Our operations team has been told.",
}

NEXT_STEPS = {
    "picked_up": [
        "Nothing to do for now: you will get an email when the import finishes{progress_note}.",
    ],
    "progress": [
        "Nothing to do: you will get an email when the import finishes.",
    ],
    "succeeded": [
        "Nothing to do: the data is available now.",
    ],
    "completed_with_errors": [
        "The rows that passed were imported; only the rows in the attached error file were left out.",
        "Fix those rows using the last column, Failure Description, which lists every problem of each row.",
        "Upload the fixed rows as a new data file (without the Failure Description column), "
        "then a new manifest for it. Rows already imported need not be sent again.",
    ],
    "manifest": [
        "Correct the manifest using the problems listed above.",
        "Upload the corrected manifest under a new name (every manifest needs a unique name). "
        "The data file can stay in your folder; if it is no longer there, upload it first.",
    ],
    "no_data_file": [
        'Check the file name in "fileName": it must match the data file exactly, including upper and lower case.',
        "Upload the data file first, then a new manifest for it: the manifest always goes last.",
    ],
    "file_unreadable": [
        "Check the file: it needs a header row, the same number of fields on every row, "
        "and UTF-8 text (or the encoding named in the manifest).",
        "Upload the corrected file again, then a new manifest for it.",
    ],
    "all_rows_failed": [
        "The attached error file lists every row with its problems in the last column, Failure Description.",
        "Fix the rows (the most common problems are listed above), then upload the file again and a new manifest for it.",
    ],
    "cancelled": [
        "Rows imported before the cancellation stay imported; nothing more of the file is read.",
        "To import the file after all, upload it again, then a new manifest for it.",
    ],
    "internal": [
        "Try the import again: upload the data file again, then a new manifest for it.",
        "If it fails again, contact us and mention job {job_id}.",
    ],
}

# A dry run ("dryRun": true in the manifest): checked and reported as usual, nothing stored.
DRY_RUN_SUBJECTS = {
    "picked_up": "[{account}] Dry run picked up: {file}",
    "progress": "[{account}] Dry run in progress, {percent} done: {file}",
    "progress_unknown": "[{account}] Dry run in progress: {file}",
    "succeeded": "[{account}] Dry run passed: {file} ({total_rows}, nothing stored)",
    "completed_with_errors": "[{account}] Dry run found errors: {file} ({rows_failed} of {total_rows} would fail)",
    "failed": "[{account}] Dry run failed: {file} ({short_reason})",
    "cancelled": "[{account}] Dry run cancelled: {file}",
}
DRY_RUN_OUTCOMES = {
    "picked_up": "Dry run picked up",
    "progress": "Dry run in progress",
    "succeeded": "Dry run passed",
    "completed_with_errors": "Dry run found errors",
    "failed": "Dry run failed",
    "cancelled": "Dry run cancelled",
}
DRY_RUN_HEADLINES = {
    "succeeded": "{file} was checked: {all_rows} would be imported.",
    "completed_with_errors": "{file} was checked: {rows_failed} of {total_rows} would be rejected.",
}
DRY_RUN_NOTE = (
    'This is a dry run ("dryRun": true in the manifest): the whole file is checked and reported as usual, '
    "but nothing is stored."
)
DRY_RUN_NEXT_STEPS = {
    "succeeded": [
        'Nothing was stored. To import the file, upload a new manifest for it without "dryRun" '
        "(the data file can stay in your folder; if it is no longer there, upload it first).",
    ],
    "completed_with_errors": [
        "Nothing was stored. The attached error file lists the rows that would be rejected, with every "
        "problem of each row in the last column, Failure Description.",
        'Fix those rows, then check again with another dry run, or import with a new manifest without "dryRun".',
    ],
}
# Events that de-duplicated: the same event was imported before and is stored once.
DUPLICATES = "{rows} already present (imported before), stored once"

PROGRESS_NOTE = ", and a progress update every {interval} while it runs"

SECTION_TITLES = {
    "facts": "Details",
    "reasons": "Why rows were rejected",
    "problems_manifest": "Problems in the manifest",
    "problems": "Details of the problem",
    "next_steps": "What to do next",
    "attachment": "Error file",
}

FACT_LABELS = {
    "account": "Account",
    "file": "Data file",
    "manifest": "Manifest",
    "type": "Type",
    "job_id": "Job id",
    "status": "Status",
    "rows_total": "Rows in file",
    "rows_ingested": "Rows imported",
    "rows_failed": "Rows rejected",
    "rows_duplicate": "Duplicates",
    "rows_valid": "Rows valid",
    "dry_run": "Dry run",
    "rows_done": "Rows so far",
    "progress": "Progress",
    "eta": "Time left",
    "received": "Received",
    "started": "Started",
    "finished": "Finished",
    "duration": "Duration",
    "running_for": "Running for",
}

TYPE_NAMES = {"event": "Events", "profile": "Profiles"}

ETA_UNKNOWN = "still estimating"
DRY_RUN_FACT = "yes: nothing was stored"

MORE_REASONS = "… and {kinds} of problem on {rows}"
MORE_PROBLEMS = "… and {count} more"

ATTACHMENT_NOTES = {
    "full": "Attached: {filename} ({rejected_rows}, {size}).",
    "gzip": "Attached: {filename}, compressed with gzip because the file ({size}) is over the {limit} attachment limit.",
    "truncated": "Attached: {filename}, the first {rows} of {rows_failed} rejected rows only — the whole file "
    "({size}) is too large to attach, even compressed (limit {limit}).",
    "none": "The error file ({size}) is too large to attach (limit {limit}).",
    "missing": "The error file could not be attached.",
}
SFTP_NOTE = "The complete error file is in your SFTP folder:"
SFTP_COMMAND = "get {path}"

FOOTER = "This email was sent by ingestd for the import of {file} into account {account} (job {job_id})."

# -- who gets which copy (notifier/recipients.py) -------------------------------------------------

# Why a manifest address was not used; never emailed.
DROPPED_REASONS = {
    "invalid": "not a valid email address",
    "too_many": "the manifest names more than {limit} addresses (notify.max_recipients); only the first {limit} are used",
    "domain": "{domain} is not one of the account's allowed domains ({allowed})",
}
DROPPED_LINE = "Not sent to {address}: {reason}."

# Why the account's contacts get a copy.
CONTACT_REASONS = {
    "no_address": "the manifest names no email address we could read",
    "none_usable": "none of the addresses the manifest names could be used",
    "dropped": "some of the addresses the manifest names could not be used",
    "failed": "contacts are told about every failed import",
}
CONTACT_NOTICE = "You receive this copy as a contact address of account {account}: {reason}."
OPS_NOTICE = "Operations copy of the email about job {job_id} of account {account}."
SENT_TO = "Sent to: {addresses}."
SENT_TO_NOBODY = "No address of the manifest was emailed."
# On the job's record (details.notified, shown on the activity page) when no partner or contact was told.
NOTIFIED_NOBODY = "No usable address in the manifest and no contact address for the account (ingestd accounts set)."
NOTIFIED_HELD_BACK = "Held back: the account reached notify.max_failure_emails this hour; an hourly summary follows."

# -- the hourly summary of failures not emailed one by one (rate limit) ---------------------------------

SUMMARY_SUBJECT = "[{account}] {count} more {failed_imports}, not emailed one by one"
SUMMARY_HEADLINE = (
    "{count} {imports} of account {account} failed after the {limit} failure emails an account gets per hour"
    " (notify.max_failure_emails) had been sent, so they were not emailed one by one."
)
SUMMARY_JOBS = "Job ids: {jobs}"
SUMMARY_MORE_JOBS = "… and {count} more"
SUMMARY_FIRST_LAST = "First held back: {first}. Last: {last}."
SUMMARY_NEXT_STEPS = [
    "Each failed import and its reason is listed in the activity log (the ingestd web page, "
    "account {account}, status failed): ask your operations contact if you cannot open it.",
    "Where rows were rejected, the error file of each import is in your SFTP folder under errors/.",
    "Failure emails resume within the hour; a new summary follows at most once an hour while failures go on.",
]
SUMMARY_FOOTER = "This email was sent by ingestd for account {account}."
OPS_SUMMARY_NOTICE = "Operations copy of the failure summary. Sent to: {addresses}."
