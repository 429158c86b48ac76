"""Checkpoints: how far a job got, and the error CSV that must agree with it after a crash."""

from __future__ import annotations

import io
import os
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from manifests import rules
from manifests.batch import Dialect
from manifests.errors_csv import encode_rows


@dataclass
class Checkpoint:
    """Saved in the job row after every batch the sink acknowledged; a resume starts from here."""

    rows_done: int = 0
    rows_ingested: int = 0
    rows_failed: int = 0
    rows_duplicate: int = 0  # rows already stored (events that de-duplicated)
    rows_expected: int | None = None  # the data file's rows, once counted (progress)
    error_bytes: int = 0
    processing_ts: int = 0
    started: float = 0.0  # epoch seconds of the first pickup, for duration_ms
    reasons: dict[str, int] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Checkpoint:
        known = {key: data[key] for key in cls.__dataclass_fields__ if key in data}
        return cls(**known)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def count_reasons(self, problems: list[list[tuple[str | None, str]]]) -> None:
        counts = Counter(rules.reason(message) for row in problems for _, message in row)
        for message, count in counts.items():
            self.reasons[message] = self.reasons.get(message, 0) + count

    def top_reasons(self) -> list[list[Any]]:
        """[[message, count], ...], most frequent first (ties in alphabetical order)."""
        return [[message, count] for message, count in sorted(self.reasons.items(), key=lambda kv: (-kv[1], kv[0]))]


class ErrorFile:
    """The job's error CSV, appended batch by batch; reopened at a checkpoint's byte length after a crash.

    Rows written after the last checkpoint belong to a batch that will be validated again, so they are cut."""

    def __init__(self, path: Path, length: int) -> None:
        self.path = path
        self._handle: io.BufferedWriter | None = None
        if path.exists():
            with open(path, "r+b") as handle:
                handle.truncate(length)
        elif length:
            raise FileNotFoundError(f"error CSV {path} is gone but the checkpoint says {length} bytes")

    def write(
        self,
        header: list[str],
        rows: list[tuple[list[str], list[tuple[str | None, str]]]],
        dialect: Dialect | None = None,
    ) -> int:
        """Append (cells, problems) rows (the header first when the file is empty), in the upload's delimiter
        and encoding (`dialect`; a row the sink refused has no cells and is padded); returns the new length."""
        if self._handle is None:
            self._handle = open(self.path, "ab")  # noqa: SIM115 - kept open across batches, closed in close()
        if rows:
            self._handle.write(encode_rows(header, rows, dialect, first=self._handle.tell() == 0))
            self._handle.flush()
            os.fsync(self._handle.fileno())
        return self._handle.tell()

    @property
    def size(self) -> int:
        return self.path.stat().st_size if self.path.exists() else 0

    def close(self) -> None:
        if self._handle is not None:
            self._handle.close()
            self._handle = None
