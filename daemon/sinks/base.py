"""The Sink interface both drivers implement, and the profile-operation rules they share."""

from __future__ import annotations

import abc
import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import polars as pl

PROFILE_OPS = ("$set", "$add", "$remove", "$delete")
_OPS = frozenset(PROFILE_OPS)
EVENT_COLUMNS = ("line", "event_id", "identity", "name", "ts", "properties")
PROFILE_COLUMNS = ("line", "identity", "ts", "ops")


@dataclass(frozen=True)
class RowFailure:
    """A row the sink refused; `message` goes to the error CSV's Failure Description."""

    line: int
    message: str


class Written(list[RowFailure]):
    """What one write did: the rows the sink refused (the list itself) and `duplicates`, the rows that were
    already stored (events whose id was there: a re-import, or a repeat within the file)."""

    def __init__(self, failures: list[RowFailure] | None = None, duplicates: int = 0) -> None:
        super().__init__(failures or [])
        self.duplicates = duplicates


class HeldWrites(abc.ABC):
    """Writes of one job in one open transaction: durable only once `commit()` returned; `abort()` undoes them.

    The store's writer slot is taken at the first write and given back by commit() or abort(); `contended` says
    another job waits for it (the holder should commit soon, so imports at once take turns)."""

    @abc.abstractmethod
    async def write_events(self, account: str, frame: pl.DataFrame) -> Written: ...

    @abc.abstractmethod
    async def write_profiles(self, account: str, frame: pl.DataFrame) -> Written: ...

    @abc.abstractmethod
    async def commit(self) -> None: ...

    @abc.abstractmethod
    async def abort(self) -> None: ...

    @property
    @abc.abstractmethod
    def contended(self) -> bool: ...


class Sink(abc.ABC):
    """Where validated rows land. Writes are idempotent: the worker may retry a batch after a crash or an outage."""

    name: str
    # Whether the worker should join validated batches into writes of up to `jobs.commit_rows` rows: for
    # a store whose commit costs by the pages it touches rather than by the rows it holds.
    joins_batches: bool = False
    # The longest wait, in seconds, between two tries of a write the store refused for now (RetryableError):
    # the worker pauses the job and tries the same batch again until it is written.
    max_retry_delay: float = 30.0

    def write_rows(self, batch_rows: int, commit_rows: int) -> int:
        """Rows the worker hands over per write: one validated batch, or batches joined up to `commit_rows`."""
        return max(batch_rows, commit_rows) if self.joins_batches else batch_rows

    def prepare(self, kind: str) -> Callable[[pl.DataFrame], pl.DataFrame] | None:
        """For the worker: the part of writing a validated frame of a job of `kind` ("event", "profile") that needs
        no store (values computed column-wise, rows sorted), or None. The worker runs it in the validation thread,
        so it overlaps the store's work on the batch before; the write gets the frame it returns (same rows, maybe
        in another order, with columns of its own; it also takes its own output) and takes unprepared frames too."""
        return None

    def held(self) -> HeldWrites | None:
        """One job's writes kept in one open transaction across batches until `commit()`, or None (each write is
        durable when it returns). Lets the worker hand over one validated batch at a time, so a large commit never
        needs its rows in memory at once."""
        return None

    @abc.abstractmethod
    async def start(self) -> None:
        """Create the schema (tables, index templates); safe to call on an existing store."""

    @abc.abstractmethod
    async def stop(self) -> None: ...

    @abc.abstractmethod
    async def write_events(self, account: str, frame: pl.DataFrame) -> Written:
        """Store the events frame; an event_id already stored is skipped (not a failure) and counted."""

    @abc.abstractmethod
    async def write_profiles(self, account: str, frame: pl.DataFrame) -> Written:
        """Apply each row's ops to its profile, in frame order."""

    @abc.abstractmethod
    async def get_profile(self, account: str, identity: str) -> dict[str, Any] | None:
        """{"identity", "properties", "ts" (ISO 8601 UTC of the last applied row)} or None."""

    @abc.abstractmethod
    async def list_events(self, account: str, identity: str, limit: int = 1000) -> list[dict[str, Any]]:
        """[{"name", "ts" (ISO 8601 UTC), "properties"}], oldest first."""

    @abc.abstractmethod
    async def health(self) -> str | None:
        """None when the store answers, else the reason."""

    def banner(self) -> list[str]:
        return [f"  sink   {self.name}"]

    async def open_for_reading(self) -> None:
        """Ready the sink for a one-off read by a person at the CLI (start() by default: it creates nothing
        that holds data, only the tables of a store the daemon has not finished setting up)."""
        await self.start()


def iso_ms(ms: int) -> str:
    """Epoch milliseconds as ISO 8601 UTC: "2020-01-08T17:14:27Z" (milliseconds shown only when not zero)."""
    moment = datetime.fromtimestamp(ms / 1000, tz=UTC)
    if ms % 1000:
        return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{ms % 1000:03d}Z"
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def _same(a: Any, b: Any) -> bool:
    # JSON-typed equality: true is not 1, so a boolean and a number never de-duplicate each other.
    return a == b and isinstance(a, bool) == isinstance(b, bool)


def apply_ops(properties: dict[str, Any], ops: list[list[Any]]) -> None:
    """Apply [op, property, value] triples in order, in place. Mirrored by the painless script in elasticsearch.py."""
    for op, key, value in ops:
        if op == "$set":
            properties[key] = value
        elif op == "$delete":
            properties.pop(key, None)
        elif op == "$add":
            current = properties.get(key)
            if current is None:
                properties[key] = [value]
            else:
                values = current if isinstance(current, list) else [current]
                if not any(_same(item, value) for item in values):
                    values.append(value)
                properties[key] = values
        elif op == "$remove":
            current = properties.get(key)
            if current is None:
                continue
            values = current if isinstance(current, list) else [current]
            kept = [item for item in values if not _same(item, value)]
            if kept:
                # A scalar that did not match stays a scalar.
                properties[key] = kept if isinstance(current, list) else current
            else:
                del properties[key]
        else:
            raise ValueError(f"Profile operation must be one of $add, $set, $remove, $delete, found {op}")


def parse_ops(text: str) -> list[list[Any]]:
    """The ops cell of a profiles frame; ValueError with a short reason when it is malformed.

    Checked before any op of the row is applied, so a bad row changes nothing.
    """
    return check_ops(json.loads(text), text)


def check_ops(ops: Any, text: str) -> list[list[Any]]:
    """parse_ops for an ops cell already decoded from `text` (named in the error)."""
    if not isinstance(ops, list):
        raise ValueError("profile operations are not a list")
    try:
        kinds = {op for op, _key, _value in ops}  # a set comprehension: this runs once per profile row
    except (TypeError, ValueError):
        raise ValueError(f"malformed profile operations {text[:200]}") from None
    if not kinds <= _OPS:
        found = sorted(str(kind) for kind in kinds - _OPS)[0]
        raise ValueError(f"Profile operation must be one of $add, $set, $remove, $delete, found {found}")
    return ops


INCOMPLETE_EVENT = "Event could not be stored: it lacks an id, identity, name, ts or properties"
INCOMPLETE_PROFILE = "Profile could not be stored: it lacks an identity, ts or operations"


def valid_events() -> pl.Expr:
    """Rows the engine's contract promises: every column present and an event_id that is a 128-bit decimal."""
    present = pl.all_horizontal(pl.col(name).is_not_null() for name in EVENT_COLUMNS)
    # properties is spliced into bulk bodies as is: it must at least look like a JSON object.
    is_object = pl.col("properties").str.starts_with("{") & pl.col("properties").str.ends_with("}")
    # A 128-bit unsigned decimal (the engine writes them without leading zeros); the sqlite sink splits it into
    # two integers. Reading the cell back as text as well would make this check three times as dear.
    fits = pl.col("event_id").cast(pl.UInt128, strict=False).is_not_null()
    return present & fits & is_object


def check_columns(frame: pl.DataFrame, expected: tuple[str, ...], kind: str) -> None:
    """A frame missing a column is a programming error between engine and sink: say which."""
    missing = [name for name in expected if name not in frame.columns]
    if missing:
        raise ValueError(f"{kind} frame lacks column(s) {', '.join(missing)}")
