"""Validated batches waiting for the sink are bounded by weight (failed rows, bytes), not only by count.

A slow consumer takes one batch at a time; after each step the producer is left to run until it waits
for room or runs out of batches, and the batches it has pulled from the engine are counted. No timing."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import polars as pl

from daemon.jobs.prefetch import Validated
from manifests.validate import BadRow, Batch


class Source:
    """Batches of `rows` rows, `bad` of them failed; counts how many the producer has pulled."""

    def __init__(self, count: int, rows: int = 100, bad: int = 0) -> None:
        self.count, self.rows, self.bad = count, rows, bad
        self.pulled = 0
        self.done = threading.Event()

    def __iter__(self) -> Iterator[Batch]:
        for index in range(self.count):
            first = index * self.rows + 2
            cut = first + self.rows - self.bad
            self.pulled += 1
            yield Batch(
                index=index,
                header=["identity", "name"],
                rows=self.rows,
                rows_done=(index + 1) * self.rows,
                last_line=first + self.rows - 1,
                bytes_done=(index + 1) * 1000,
                events=pl.DataFrame({"line": list(range(first, cut))}, schema={"line": pl.Int64}),
                bad=[BadRow(line, ["a"], [(None, "ragged")]) for line in range(cut, first + self.rows)],
            )
        self.done.set()


def settle(validated: Validated, source: Source) -> None:
    """Until the producer waits for room or has pulled every batch (a guard, not a timing assertion)."""
    for _ in range(3000):
        if validated.blocked.is_set() or source.done.is_set():
            return
        source.done.wait(0.01)
    raise AssertionError("the producer neither waited for room nor finished")


def drain(validated: Validated, source: Source, step_rows: int) -> tuple[list[Batch], int]:
    """Take one write at a time; the most batches ever pulled and not yet taken."""
    taken: list[Batch] = []
    consumed = most = 0
    while True:
        settle(validated, source)
        most = max(most, source.pulled - consumed)
        batch = validated.take(step_rows)
        if batch is None:
            return taken, most
        taken.append(batch)
        consumed = batch.index + 1


def test_batches_of_bad_rows_wait_for_the_sink_within_the_bad_row_budget() -> None:
    source = Source(30, rows=100, bad=100)
    validated = Validated(iter(source), ahead=21, bad_rows=250)
    try:
        taken, most = drain(validated, source, step_rows=100)
    finally:
        validated.close()
    # 300 failed rows waiting (put while under 250) and one batch in the producer's hand; was 21 + 1.
    assert most <= 4
    assert [batch.index for batch in taken] == list(range(30))
    assert sum(len(batch.bad) for batch in taken) == 3000


def test_a_batch_over_the_budget_still_passes_alone() -> None:
    source = Source(5, rows=1000, bad=1000)
    validated = Validated(iter(source), ahead=21, bad_rows=10)
    try:
        taken, most = drain(validated, source, step_rows=10_000)
    finally:
        validated.close()
    assert most <= 2  # one waiting, one in hand
    assert [len(batch.bad) for batch in taken] == [1000] * 5  # never two of them joined


def test_good_batches_still_run_ahead_by_count_and_are_joined() -> None:
    source = Source(30, rows=100, bad=0)
    validated = Validated(iter(source), ahead=21, bad_rows=250)
    try:
        settle(validated, source)
        assert source.pulled == 22  # the budget of bad rows leaves good batches alone
        first = validated.take(10_000)
        assert first is not None and first.rows == 2100  # one joined write of every batch ready
    finally:
        validated.close()


def test_the_byte_budget_bounds_batches_without_bad_rows_too() -> None:
    source = Source(10, rows=100, bad=0)
    validated = Validated(iter(source), ahead=21, max_bytes=1)
    try:
        taken, most = drain(validated, source, step_rows=10_000)
    finally:
        validated.close()
    assert most <= 2
    assert [batch.rows for batch in taken] == [100] * 10


def test_prepare_runs_in_the_validation_thread_on_each_batch_and_again_on_joined_ones() -> None:
    source = Source(4, rows=100, bad=0)
    threads: list[str] = []

    def prepare(frame: pl.DataFrame) -> pl.DataFrame:
        threads.append(threading.current_thread().name)
        # Takes its own output: a joined frame is prepared again as a whole.
        return frame.select("line").with_columns(first=pl.col("line").min())

    validated = Validated(iter(source), ahead=21, prepare=prepare)
    try:
        settle(validated, source)
        assert threads == ["ingestd-validate"] * 4  # each batch as it was validated, before the sink took any
        joined = validated.take(10_000)
        assert joined is not None and joined.events is not None
    finally:
        validated.close()
    assert joined.events["line"].to_list() == list(range(2, 402))
    assert joined.events["first"].unique().to_list() == [2]  # the four batches prepared as one
    assert len(threads) == 5
