"""Every partner-facing message of the SFTP front end, in one place, and what OpenSSH's sftp shows of each."""

from __future__ import annotations

import errno

import asyncssh
from asyncssh import SFTPError

NO_SUCH_FILE = "No such file or directory"
HIDDEN_NAME = "Names starting with '.' are reserved"
LINKS_REFUSED = "Links are not allowed"
TOP_FOLDER_ONLY = "Uploads go to the top folder only"
NO_DIRECTORIES = "Creating or removing folders is not allowed"
NOT_A_FILE = "Not a regular file"
NO_READ_WRITE = "Opening a file for both reading and writing is not supported"
NO_RESUME = "This file is complete and cannot be changed; only a broken upload can be resumed, so upload it again"
RESUME_BUSY = "Another session is resuming this upload right now; try again when it has finished"
UPLOAD_CUT_SHORT = "The upload was cut short and is kept unfinished; continue it with reput (or put -a)"
RESUME_GONE = "The broken upload to continue is gone (kept for a limited time only); upload the whole file again"
READ_ONLY_HANDLE = "File is open for reading only"
WRITE_ONLY_HANDLE = "File is open for writing only"
ALREADY_EXISTS = "File already exists"
NOT_A_DIRECTORY = "Not a directory"
INVALID_NAME = "Invalid name: {reason}"
SHUTTING_DOWN = "Server is shutting down; try again shortly"
TOO_LARGE = "File exceeds the maximum upload size of {limit}"
DISCARDED = "Upload failed and was discarded: {reason}"
NO_CHMOD = "Changing permissions, ownership or size is not supported"
TOO_MANY_OPEN = "Too many files open at once for this account (at most {limit}); close some and try again"
NAME_NOT_UTF8 = "File names must be valid UTF-8"
NAME_CONTROL = "File names must not contain control characters"
# Said before or at login (auth.py), or when a channel is refused.
BANNED = "Too many failed logins for {account} from {address}; try again in {wait}"
BANNED_ADDRESS = "Too many failed logins from {address}; try again in {wait}"
TOO_MANY_AUTH_FAILURES = "Too many authentication failures"
TOO_MANY_SESSIONS = "Too many sessions on this connection (at most {limit}); close one or open another connection"

# What OpenSSH's sftp prints for each status code (its fx2txt): all a partner sees of a refusal. Codes above
# 8 do not exist in SFTP v3; asyncssh sends them to a v3 client as FX_FAILURE.
SHOWN_BY_OPENSSH = {
    asyncssh.FX_NO_SUCH_FILE: "No such file or directory",
    asyncssh.FX_PERMISSION_DENIED: "Permission denied",
    asyncssh.FX_FAILURE: "Failure",
    asyncssh.FX_OP_UNSUPPORTED: "Operation unsupported",
}
_OS_CODES = {errno.ENOENT: asyncssh.FX_NO_SUCH_FILE, errno.EACCES: asyncssh.FX_PERMISSION_DENIED}


def shown_by_openssh(exc: BaseException) -> str:
    code = exc.code if isinstance(exc, SFTPError) else _OS_CODES.get(getattr(exc, "errno", None) or 0)
    return SHOWN_BY_OPENSSH.get(code or asyncssh.FX_FAILURE, "Failure")


def human_size(size: int) -> str:
    for unit, scale in (("GiB", 1024**3), ("MiB", 1024**2), ("KiB", 1024)):
        if size >= scale:
            value = size / scale
            return f"{value:.0f} {unit}" if value == int(value) else f"{value:.1f} {unit}"
    return f"{size} bytes"
