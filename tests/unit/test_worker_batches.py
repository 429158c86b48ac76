"""How the worker joins validated batches into sink writes (daemon.jobs.worker.Validated)."""

from __future__ import annotations

from collections.abc import Iterator

import polars as pl
import pytest

from daemon.jobs.worker import Validated
from manifests.validate import BadRow, Batch, FileError


def batch(index: int, rows: int = 100, bad: int = 0) -> Batch:
    first = index * rows + 2
    good = pl.DataFrame({"line": list(range(first, first + rows - bad))})
    return Batch(
        index=index,
        header=["identity", "Name"],
        rows=rows,
        rows_done=(index + 1) * rows,
        last_line=first + rows - 1,
        bytes_done=(index + 1) * 1000,
        events=good,
        bad=[BadRow(line, [str(line)], [("Name", "bad")]) for line in range(first + rows - bad, first + rows)],
    )


def ready(batches: Iterator[Batch]) -> Validated:
    """A Validated whose thread has validated everything it will before the first take."""
    validated = Validated(batches, ahead=100)
    validated._thread.join(timeout=30)
    return validated


def test_ready_batches_are_joined_up_to_the_commit_size_in_row_order() -> None:
    validated = ready(batch(i, bad=1 if i == 1 else 0) for i in range(5))
    first = validated.take(250)
    assert first is not None
    assert (first.rows, first.rows_done, first.bytes_done, first.index) == (300, 300, 3000, 2)
    assert first.header == ["identity", "Name"]
    assert first.events is not None
    assert first.events["line"].to_list() == [line for line in range(2, 302) if line != 201]
    assert [row.line for row in first.bad] == [201]
    second = validated.take(250)
    assert second is not None and (second.rows, second.rows_done) == (200, 500)
    assert validated.take(250) is None
    assert validated.take(250) is None
    validated.close()


def test_rows_before_a_file_error_are_handed_on_before_the_error() -> None:
    def failing() -> Iterator[Batch]:
        yield batch(0)
        yield batch(1)
        raise FileError("undecodable bytes on line 205")

    validated = ready(failing())
    joined = validated.take(1_000)
    assert joined is not None and joined.rows_done == 200
    with pytest.raises(FileError, match="line 205"):
        validated.take(1_000)
    validated.close()


def test_a_batch_at_the_commit_size_is_written_alone() -> None:
    validated = ready(batch(i) for i in range(2))
    assert [validated.take(100).rows_done, validated.take(100).rows_done] == [100, 200]  # type: ignore[union-attr]
    validated.close()


def test_close_stops_validation_that_is_still_ahead() -> None:
    produced: list[int] = []

    def endless() -> Iterator[Batch]:
        index = 0
        while True:
            produced.append(index)
            yield batch(index)
            index += 1

    validated = Validated(endless(), ahead=2)
    assert validated.take(100) is not None
    validated.close()
    assert not validated._thread.is_alive()
    assert len(produced) <= 5  # bounded by `ahead`, not run to exhaustion
