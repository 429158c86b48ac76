"""validate() runs a batch's rules in a thread of their own, one batch ahead of the caller: what a caller sees is
unchanged (every batch in order, an error after the batches before it, a stop midway closes the file)."""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path

import pytest

from daemon.sinks.profile_ops import with_ops
from manifests.validate import FileError, validate_csv
from tests.fixtures.engine import PROCESSING_TS, manifest

HEADER = "identity,evt,Age,Note\n"
NOTE = "n" * 100  # rows of about 120 bytes: 40,000 of them fill more than a 4 MiB block


def _write(path: Path, rows: int, tail: bytes = b"") -> None:
    with open(path, "wb") as handle:
        handle.write(HEADER.encode())
        body = "".join(f"u{i},Bought,{'x' if i % 10 == 3 else i % 90},{NOTE}\n" for i in range(rows))
        handle.write(body.encode())
        handle.write(tail)


def _validate(path: Path, batch_rows: int = 10_000, skip_rows: int = 0):
    spec = manifest("event", {"evt": {"ctName": "evtName"}, "Age": {"dataType": "INTEGER"}})
    return validate_csv(
        path, spec, account="acme", processing_ts=PROCESSING_TS, batch_rows=batch_rows, skip_rows=skip_rows
    )


def _rules_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "ingestd-rules"]


def test_every_batch_comes_in_order_with_its_rows_and_bad_rows(tmp_path):
    path = tmp_path / "events.csv"
    _write(path, 95_000)
    batches = list(_validate(path, skip_rows=25_000))
    assert [b.index for b in batches] == list(range(2, 10))
    assert [b.rows_done for b in batches] == [30_000, 40_000, 50_000, 60_000, 70_000, 80_000, 90_000, 95_000]
    lines = [line for b in batches for line in [*b.events["line"], *(row.line for row in b.bad)]]
    assert sorted(lines) == list(range(25_002, 95_002))
    assert all(row.line % 10 == 5 for b in batches for row in b.bad)  # the data row i = line - 2 ends in 3
    assert sum(len(b.bad) for b in batches) == 7_000
    assert [b.bytes_done for b in batches] == sorted(b.bytes_done for b in batches)
    assert batches[-1].bytes_done == path.stat().st_size
    assert _rules_threads() == []


def test_an_error_midway_comes_after_the_batches_before_it(tmp_path):
    path = tmp_path / "events.csv"
    _write(path, 120_000, tail=b"u,Bought,1,\xff\n")  # not UTF-8, after 120,000 rows (three blocks)
    seen = []
    with pytest.raises(FileError, match="not valid UTF-8"):
        for batch in _validate(path):
            seen.append(batch.rows_done)
    assert seen == list(range(10_000, 10_000 * (len(seen) + 1), 10_000))
    assert 1 <= len(seen) < 12
    assert _rules_threads() == []


def test_a_validation_stopped_midway_ends_its_thread_and_closes_the_file(tmp_path):
    path = tmp_path / "events.csv"
    _write(path, 200_000)
    before = len(os.listdir("/proc/self/fd"))
    batches = _validate(path)
    first = next(batches)
    assert first.rows_done == 10_000
    batches.close()  # an import cancelled after its first batch
    assert _rules_threads() == []
    assert len(os.listdir("/proc/self/fd")) == before


def test_whole_numbers_are_written_as_numbers_however_the_partner_wrote_them(tmp_path):
    """A batch of plain numbers passes its cells through; a sign, a leading zero or spaces are written canonically."""
    path = tmp_path / "events.csv"
    path.write_text("identity,evt,Age,Score\nu1,Bought,12,-5\nu2,Bought,0,9007199254740993\n")
    padded = tmp_path / "padded.csv"
    padded.write_text("identity,evt,Age,Score\nu1,Bought,+12,-05\nu2,Bought, 007 ,-0\n")
    spec = manifest(
        "event", {"evt": {"ctName": "evtName"}, "Age": {"dataType": "INTEGER"}, "Score": {"dataType": "LONG"}}
    )

    def properties(file: Path) -> list[str]:
        batches = validate_csv(file, spec, account="acme", processing_ts=PROCESSING_TS)
        return [p for b in batches if b.events is not None for p in b.events["properties"]]

    assert properties(path) == ['{"Age":12,"Score":-5}', '{"Age":0,"Score":9007199254740993}']
    assert properties(padded) == ['{"Age":12,"Score":-5}', '{"Age":7,"Score":0}']


@pytest.mark.parametrize("width", [3, 70])  # a few checks, and many
def test_each_bad_row_lists_every_check_it_failed_and_only_those(tmp_path, width):
    columns = [f"n{i}" for i in range(width)]
    path = tmp_path / "profiles.csv"
    rows = [["u1", *["1"] * width], ["u2", "x", *["1"] * (width - 2), "y"], ["u3", *["1"] * (width - 1), "z"]]
    path.write_text("\n".join(",".join(row) for row in [["identity", *columns], *rows]) + "\n")
    spec = manifest("profile", {name: {"dataType": "INTEGER"} for name in columns})
    batches = list(validate_csv(path, spec, account="acme", processing_ts=PROCESSING_TS))
    bad = [(row.line, [column for column, _ in row.problems]) for b in batches for row in b.bad]
    assert bad == [(3, ["n0", columns[-1]]), (4, [columns[-1]])]
    assert [line for b in batches for line in b.profiles["line"]] == [2]


def test_booleans_are_written_as_json_whether_or_not_the_partner_wrote_them_so(tmp_path):
    spec = manifest("profile", {"Married": {"dataType": "BOOLEAN"}})

    def ops(body: str) -> tuple[list[object], list[int]]:
        path = tmp_path / "profiles.csv"
        path.write_text("identity,Married\n" + body)
        batches = list(validate_csv(path, spec, account="acme", processing_ts=PROCESSING_TS))
        frames = [with_ops(b.profiles) for b in batches if b.profiles is not None]  # given as sets or ops
        return [json.loads(o) for frame in frames for o in frame["ops"]], [r.line for b in batches for r in b.bad]

    as_json = [[["$set", "Married", True]], [["$set", "Married", False]], []]
    assert ops("u1,true\nu2,false\nu3,\n") == (as_json, [])
    assert ops("u1,TRUE\nu2,no\nu3,\n") == (as_json, [])
    assert ops("u1,true\nu2,false\nu3,\nu4,maybe\n") == (as_json, [5])
