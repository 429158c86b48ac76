"""The reader seam: a new input format is one Reader (manifests.batch); the rules, typing and error rows stay the same.

A JSON-lines reader of about forty lines, written here for the test only, goes through validate() and gives
what the CSV reader gives for the same rows."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import polars as pl

from manifests import rules
from manifests.batch import Dialect, Facts, FileError, Ragged, RawBatch
from manifests.compression import open_stream
from manifests.validate import validate
from tests.fixtures.engine import PROCESSING_TS, manifest, run


class JsonLinesReader:
    """One JSON object per line (PostHog's export shape); the first object's keys are the header."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.header: list[str] = []
        self.fields = 0
        self.wanted: dict[int, Facts] | None = None
        self.dialect = Dialect()
        self.bytes_done = 0

    def batches(self, batch_rows: int) -> Iterator[RawBatch]:
        stream = open_stream(str(self.path), limit=rules.MAX_UNCOMPRESSED)  # gzip and zip for free
        try:
            text = b""
            while chunk := stream.read(1 << 16):
                text += chunk
            self.bytes_done = stream.bytes_done
        finally:
            stream.close()
        rows: list[list[str]] = []
        lines: list[int] = []
        ragged: list[Ragged] = []
        for number, line in enumerate(text.decode().splitlines(), 1):
            if not line.strip():
                continue
            record = json.loads(line)
            if not self.header:
                self.header, self.fields = list(record), len(record)
            if set(record) != set(self.header):
                ragged.append(Ragged(number, line, len(record)))
                continue
            rows.append(["" if record[key] is None else str(record[key]) for key in self.header])
            lines.append(number)
        if not self.header:
            raise FileError(rules.FILE_EMPTY)
        columns = {f"f{i}": [row[i] for row in rows] for i in range(len(self.header))}
        frame = pl.DataFrame(columns, schema=dict.fromkeys(columns, pl.String)).with_columns(
            pl.Series("line", lines, dtype=pl.Int64)
        )
        whole = RawBatch(frame, ragged)  # facts unknown: the rules assume every cell may hold anything
        while whole.rows > batch_rows:
            head, whole = whole.split(batch_rows)
            yield head
        yield whole

    def split_cells(self, text: str, line: int = 0) -> list[str]:
        return [str(value) for value in json.loads(text).values()]


EVENTS = [
    {"evt": "Purchased", "who": "a", "t": "2024-05-01T10:00:00Z", "Price": "12.5", "Qty": 3},
    {"evt": "Purchased", "who": "b", "t": 1714557600000, "Price": "oops", "Qty": 1},
    {"evt": "", "who": "c", "t": 1714557600, "Price": "1", "Qty": 2},
    {"evt": "Viewed", "who": "d", "t": None, "Price": "2", "Qty": 5},
]
SPEC = {
    "evt": {"ctName": "evtName"},
    "who": {"ctName": "identity"},
    "t": {"ctName": "ts"},
    "Price": {"dataType": "FLOAT"},
    "Qty": {"dataType": "INTEGER"},
}


def _through_the_seam(tmp_path: Path, text: str, batch_rows: int = 2):
    path = tmp_path / "events.jsonl"
    path.write_text(text)
    batches = list(
        validate(
            JsonLinesReader(path),
            manifest("event", SPEC),
            account="acme",
            processing_ts=PROCESSING_TS,
            batch_rows=batch_rows,
        )
    )
    rows = [row for batch in batches if batch.events is not None for row in batch.events.to_dicts()]
    bad = [(row.line, row.cells, row.problems) for batch in batches for row in batch.bad]
    return batches, rows, bad


def test_a_json_lines_reader_plugged_into_the_seam_gives_what_the_csv_reader_gives(tmp_path):
    batches, rows, bad = _through_the_seam(tmp_path, "\n".join(json.dumps(e) for e in EVENTS) + "\n")
    csv_text = "evt,who,t,Price,Qty\n" + "".join(
        f"{e['evt']},{e['who']},{'' if e['t'] is None else e['t']},{e['Price']},{e['Qty']}\n" for e in EVENTS
    )
    from_csv = run(tmp_path, csv_text, manifest("event", SPEC), batch_rows=2)
    assert [b.rows for b in batches] == [2, 2]
    keys = ("identity", "name", "ts", "properties")
    assert [{k: r[k] for k in keys} for r in rows] == [
        {k: json.dumps(r[k], separators=(",", ":")) if k == "properties" else r[k] for k in keys} for r in from_csv.rows
    ]
    # The same rows, one line earlier (JSON lines have no header line).
    assert [r["line"] for r in rows] == [r["line"] - 1 for r in from_csv.rows]
    assert [r["ts"] for r in rows] == [1714557600000, PROCESSING_TS * 1000]
    assert [(line + 1, problems) for line, _, problems in bad] == [(b.line, b.problems) for b in from_csv.bad]
    assert bad[0][2] == [("Price", rules.TYPE_PROBLEMS["FLOAT"] + ", found 'oops'")]


def test_a_json_lines_row_with_other_keys_fails_alone(tmp_path):
    text = json.dumps(EVENTS[0]) + "\n" + json.dumps({"who": "x"}) + "\n"
    _, rows, bad = _through_the_seam(tmp_path, text)
    assert [r["identity"] for r in rows] == ["a"]
    assert bad == [(2, ["x"], [(None, "Row has 1 fields but the header has 5")])]


def test_the_seam_reads_compressed_json_lines_too(tmp_path):
    import gzip

    path = tmp_path / "events.jsonl.gz"
    path.write_bytes(gzip.compress(("\n".join(json.dumps(e) for e in EVENTS) + "\n").encode()))
    batches = list(validate(JsonLinesReader(path), manifest("event", SPEC), account="acme", processing_ts=1))
    assert sum(batch.events.height for batch in batches) == 2
