"""Where a job's files live: its own folder, and the names of its copies in the partner's `errors/` folder."""

from __future__ import annotations

from pathlib import Path

from daemon.config import Config
from daemon.text import safe

ERRORS_FILE = "errors.csv"  # the full error CSV, in the job's folder
MAX_NAME_BYTES = 255  # NAME_MAX of the usual file systems
ERROR_CSV_SUFFIX = ".errors.csv"
REPORT_SUFFIX = ".report.txt"


def job_dir(config: Config, job_id: int) -> Path:
    return config.jobs_root / str(job_id)


def partner_errors_dir(config: Config, account: str) -> Path:
    return config.drop_root / account / "errors"


def _partner_name(job_id: int, file_name: str, suffix: str) -> str:
    # The stem is shortened (on a character boundary) so that the name, and its hidden `.<name>.part` while
    # it is written, fit in NAME_MAX bytes whatever the length of the partner's file name.
    room = MAX_NAME_BYTES - len(f".{job_id}-{suffix}.part".encode())
    stem = safe(Path(file_name).stem).encode()[:room].decode("utf-8", "ignore")
    return f"{job_id}-{stem}{suffix}"


def partner_error_name(job_id: int, file_name: str) -> str:
    """The error CSV's name in `drop/<account>/errors/`: `<job id>-<file stem>.errors.csv`."""
    return _partner_name(job_id, file_name, ERROR_CSV_SUFFIX)


def partner_report_name(job_id: int, file_name: str) -> str:
    """The report's name in `drop/<account>/errors/`: `<job id>-<file stem>.report.txt`."""
    return _partner_name(job_id, file_name, REPORT_SUFFIX)
