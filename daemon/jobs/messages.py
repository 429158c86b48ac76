"""Every partner-facing reason a job can fail with, in one place (wording of the reference page)."""

from __future__ import annotations

from daemon.units import setting_text

BAD_MANIFEST = "Incorrect details in manifest file"
DUPLICATE_MANIFEST = "Every manifest file must have a unique name"
NO_DATA_FILE = "No data file found"
UNREADABLE = "File couldn't be read"
ALL_ROWS_FAILED = "All rows failed"
INTERNAL = "Internal error"


def no_data_detail(file_name: str, grace_seconds: float) -> str:
    if grace_seconds <= 0:
        return f"{file_name} was no longer in your folder when its manifest was picked up"
    return f"{file_name} did not arrive in your folder within {setting_text(grace_seconds)} of its manifest"


def duplicate_detail(manifest_name: str) -> str:
    return f"a manifest named {manifest_name} was already imported; upload it again under a new name"


def unreadable_detail(manifest_name: str, reason: str) -> str:
    return f"{manifest_name} could not be read ({reason})"


def removed_by_partner(manifest_name: str) -> str:
    return f"{manifest_name} was removed from your folder before its import started"


def cancelled_by_operator() -> str:
    return "cancelled by an operator (ingestd imports cancel)"


def vanished_detail(manifest_name: str) -> str:
    return f"{manifest_name} was removed from your folder before it was picked up"


def failure_kind(reason: str) -> str:
    """The notifier's failure kind for a reason, which picks the email's wording and next steps."""
    if reason in (BAD_MANIFEST, DUPLICATE_MANIFEST):
        return "manifest"
    if reason == NO_DATA_FILE:
        return "no_data_file"
    if reason == ALL_ROWS_FAILED:
        return "all_rows_failed"
    if reason == INTERNAL:
        return "internal"
    return "file_unreadable"  # the engine's FileError reasons: the file as a whole could not be read


# -- files a job cannot use as they are ---------------------------------------------------------


def bad_name_detail(shown_name: str) -> str:
    return f"{shown_name}: the file name is not valid UTF-8; rename it"


def not_regular_detail(name: str, kind: str) -> str:
    """`kind`: what the entry is ("a symbolic link", "a folder", "a special file")."""
    return f"{name} is {kind}, not a regular file; upload the file itself into your folder"


def hard_linked_detail(name: str, links: int) -> str:
    return f"{name} has {links} names (hard links) on our side; upload the file itself into your folder"


def copy_not_written(reason: str) -> str:
    """Recorded in the job's details when the partner's copy of the error CSV could not be written."""
    return f"the error file could not be copied into your errors/ folder ({reason}); it is attached to the email"


def errors_not_a_folder() -> str:
    return "errors in your folder is not a folder"


# -- pauses: the job waits and resumes from its checkpoint --------------------------------------


def paused_disk_full(where: str, detail: str) -> str:
    return f"paused: no space left for the {where} ({detail}); the import resumes when space is freed"


def paused_locked(where: str, detail: str) -> str:
    return f"paused: the {where} is locked by another process ({detail}); the import resumes when it is free"


def paused_unreachable(where: str, detail: str) -> str:
    return f"paused: the {where} does not answer ({detail}); the import resumes when it does"


def report_not_written(reason: str) -> str:
    """Recorded in the job's details when the partner's report could not be written to `errors/`."""
    return f"the report could not be written into your errors/ folder ({reason})"


# -- the report left in the partner's errors/ folder for every failed or partly failed import -------

REPORT_STEPS = {
    "manifest": [
        "Correct the manifest using the problems listed above.",
        "Upload it again under a new name (every manifest needs a unique name), after its data file.",
    ],
    "no_data_file": [
        "Check fileName in the manifest: it must match the data file's name exactly, upper and lower case.",
        "Upload the data file first, then a new manifest for it: the manifest always goes last.",
    ],
    "file_unreadable": [
        "Check the file: a header row, the same number of fields on every row, UTF-8 text (or the manifest's"
        " encoding).",
        "Upload the corrected file again, then a new manifest for it.",
    ],
    "all_rows_failed": [
        "The error file lists every row with its problems in the last column, Failure Description.",
        "Fix the rows, then upload the file again and a new manifest for it.",
    ],
    "internal": [
        "This is an error on our side, not a problem with your file: try the import again later.",
        "If it fails again, contact us and mention the job id.",
    ],
    "completed_with_errors": [
        "The rows that passed were imported; only the rows in the error file were left out.",
        "Fix those rows using the last column, Failure Description, then upload them as a new data file"
        " (the error file can be uploaded again as it is) and a new manifest for it.",
    ],
}


def report(
    *,
    job_id: int,
    file_name: str,
    manifest_name: str,
    status: str,
    reason: str | None,
    kind: str | None,
    problems: list[str],
    rows: tuple[int, int, int],
    reasons: list[list[object]],
    error_csv: str | None,
    dry_run: bool = False,
) -> str:
    """The plain-text report of a failed or partly failed import, for `get errors/<job id>-<stem>.report.txt`."""
    outcome = "failed" if status == "failed" else "checked with errors" if dry_run else "imported with errors"
    lines = [f"Import {job_id} of {file_name} (manifest {manifest_name}): {outcome}"]
    if dry_run:
        lines.append("This was a dry run (dryRun: true): nothing was stored.")
    if reason:
        lines += ["", f"Reason: {reason}"]
    if problems:
        lines += ["", "Problems:"] + [f"  - {problem}" for problem in problems]
    done, ingested, failed = rows
    if done or failed:
        lines += ["", f"Rows: {done} read, {ingested} {'valid' if dry_run else 'imported'}, {failed} rejected"]
    if reasons:
        lines += ["", "Why rows were rejected:"] + [f"  {count:>8}  {message}" for message, count in reasons[:20]]
    if error_csv:
        lines += ["", f"The rejected rows, each with its problems: get {error_csv}"]
    steps = REPORT_STEPS.get(kind or status, [])
    if steps:
        lines += ["", "What to do:"] + [f"  {n}. {step}" for n, step in enumerate(steps, 1)]
    return "\n".join(lines) + "\n"
