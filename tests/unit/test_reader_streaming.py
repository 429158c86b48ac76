"""The CSV reader streams: it reads the file as it parses it (not up to 128 MiB ahead), keeps every row's line
across the blocks it waits between, and a reader closed midway returns and closes the file."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from manifests.reader import BLOCK_SIZE, CsvReader

ROW = "user{i}@example.com,Purchased,{ts},Item {item},{price},{qty},true\n"


def _write(path: Path, rows: int, ragged_every: int = 0) -> int:
    """An event-shaped CSV; every `ragged_every`-th row has one field too few. Returns the ragged rows."""
    ragged = 0
    with open(path, "w", encoding="utf-8", newline="") as handle:
        handle.write("identity,event_name,time_stamp,item_name,item_price,quantity,delivered\n")
        for i in range(rows):
            if ragged_every and i % ragged_every == 0:
                handle.write(f"user{i}@example.com,Purchased,{i}\n")
                ragged += 1
            else:
                handle.write(ROW.format(i=i, ts=1_600_000_000 + i, item=i % 977, price=i % 500 / 4, qty=i % 7))
    return ragged


def test_a_file_of_many_blocks_is_read_as_it_is_parsed(tmp_path: Path) -> None:
    path = tmp_path / "events.csv"
    rows = 400_000
    _write(path, rows)
    size = path.stat().st_size
    assert size > 5 * BLOCK_SIZE
    reader = CsvReader(str(path), encoding=None, delimiter=None)
    batches = reader.batches(50_000)
    first = next(batches)
    # pyarrow's own reader had the whole file read by now: progress by bytes said "done" at the first batch.
    assert reader.bytes_done <= 5 * BLOCK_SIZE < size
    lines = [first.frame["line"]]
    lines += [batch.frame["line"] for batch in batches]
    numbers = [int(n) for series in lines for n in series]
    assert numbers == list(range(2, rows + 2))
    assert reader.bytes_done == size


def test_ragged_rows_across_blocks_keep_their_lines(tmp_path: Path) -> None:
    path = tmp_path / "events.csv"
    rows = 300_000
    ragged = _write(path, rows, ragged_every=997)
    reader = CsvReader(str(path), encoding=None, delimiter=None)
    good: list[int] = []
    bad: list[int] = []
    for batch in reader.batches(50_000):
        good += [int(n) for n in batch.frame["line"]]
        bad += [row.line for row in batch.ragged]
    assert bad == [i + 2 for i in range(0, rows, 997)]
    assert len(bad) == ragged
    assert sorted(good + bad) == list(range(2, rows + 2))


def test_a_reader_closed_midway_returns_and_closes_the_file(tmp_path: Path) -> None:
    path = tmp_path / "events.csv"
    _write(path, 300_000)
    before = len(os.listdir("/proc/self/fd"))
    reader = CsvReader(str(path), encoding=None, delimiter=None)
    batches = reader.batches(10_000)
    next(batches)
    batches.close()  # an import cancelled or interrupted after its first batch
    assert len(os.listdir("/proc/self/fd")) == before
    assert reader.bytes_done < path.stat().st_size


def test_the_allocator_settings_are_in_place_before_polars_loads_and_an_operators_own_are_kept() -> None:
    code = "import daemon, os, polars; print(os.environ['MIMALLOC_PURGE_DELAY'], os.environ['_RJEM_MALLOC_CONF'])"
    env = {k: v for k, v in os.environ.items() if k not in ("MIMALLOC_PURGE_DELAY", "_RJEM_MALLOC_CONF")}
    ours = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    delay, conf = ours.stdout.split()
    assert delay == "10"
    assert conf.endswith("muzzy_decay_ms:0")  # after polars' own settings: the later value wins
    env["MIMALLOC_PURGE_DELAY"] = "25"
    theirs = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert theirs.stdout.split()[0] == "25"


@pytest.mark.parametrize("module", ["manifests.reader", "manifests.validate", "manifests.plan"])
def test_the_engine_alone_gets_the_allocator_settings_before_polars_and_pyarrow_load(module: str) -> None:
    """Whatever imports the engine first (bench/validate.py's child, a tool) runs it with the daemon's allocators."""
    names = ("MIMALLOC_PURGE_DELAY", "MIMALLOC_ARENA_EAGER_COMMIT", "_RJEM_MALLOC_CONF")
    code = f"import os, {module}; print(*(os.environ.get(name) for name in {names!r}))"
    env = {k: v for k, v in os.environ.items() if k not in names}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    delay, commit, conf = out.stdout.split()
    assert (delay, commit) == ("10", "0")
    assert conf.endswith("muzzy_decay_ms:0")  # polars puts its own settings first
