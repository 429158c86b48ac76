"""Every partner-facing reason a job can fail with, in one place (wording of the reference page)."""

from __future__ import annotations

BAD_MANIFEST = "Incorrect details in manifest file"
DUPLICATE_MANIFEST = "Every manifest file must have a unique name"
NO_DATA_FILE = "No data file found"
UNREADABLE = "File couldn't be read"
ALL_ROWS_FAILED = "All rows failed"
INTERNAL = "Internal error"


def no_data_detail(file_name: str, grace_seconds: float) -> str:
    if grace_seconds <= 0:
        return f"{file_name} was no longer in your folder when its manifest was picked up"
    return f"{file_name} did not arrive in your folder within {_duration(grace_seconds)} of its manifest"


def duplicate_detail(manifest_name: str) -> str:
    return f"a manifest named {manifest_name} was already imported; upload it again under a new name"


def unreadable_detail(manifest_name: str, reason: str) -> str:
    return f"{manifest_name} could not be read ({reason})"


def vanished_detail(manifest_name: str) -> str:
    return f"{manifest_name} was removed from your folder before it was picked up"


def _duration(seconds: float) -> str:
    if seconds >= 3600 and seconds % 3600 == 0:
        return f"{int(seconds // 3600)}h"
    if seconds >= 60 and seconds % 60 == 0:
        return f"{int(seconds // 60)}m"
    return f"{seconds:g}s"


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
