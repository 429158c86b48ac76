"""Property-based: no generated CSV or manifest makes the engine raise anything but its own documented errors."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from daemon.sinks.profile_ops import with_ops
from manifests.model import ManifestError, load_manifest
from manifests.validate import FileError, validate_csv

NAMES = ["identity", "objectId", "evt", "ts", "Age", "Phone", "Email", "MSG-sms", "P", "P.operation", "x y", ""]
CELLS = st.one_of(
    st.sampled_from(
        [
            "",
            "a",
            "1",
            "-1",
            "1.5",
            "true",
            "no",
            "$D_1589274432",
            "$D_x",
            "$add",
            "$delete",
            "$bogus",
            "+918876543211",
            "a@example.com",
            "App Launched",
            "1574668407",
            "99999999999999999999",
            "NaN",
            " 7 ",
            '"',
            '""',
            "\r",
            "\n",
        ]
    ),
    st.text(alphabet=st.characters(codec="utf-8", exclude_categories=["Cs"]), max_size=12),
)
DELIMITERS = st.sampled_from([",", ";", "\t", "|"])
SETTINGS = settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _quote(cell: str, delimiter: str) -> str:
    if any(c in cell for c in (delimiter, '"', "\n", "\r")):
        return '"' + cell.replace('"', '""') + '"'
    return cell


@st.composite
def csv_files(draw: st.DrawFn) -> tuple[bytes, str]:
    delimiter = draw(DELIMITERS)
    header = draw(st.lists(st.sampled_from(NAMES), min_size=1, max_size=6))
    rows = draw(st.lists(st.lists(CELLS, min_size=0, max_size=7), max_size=8))
    newline = draw(st.sampled_from(["\n", "\r\n"]))
    lines = [delimiter.join(_quote(c, delimiter) for c in row) for row in [header, *rows]]
    text = newline.join(lines) + draw(st.sampled_from(["", newline]))
    raw = text.encode("utf-8")
    if draw(st.booleans()):  # sometimes damage the bytes
        position = draw(st.integers(0, max(0, len(raw))))
        raw = raw[:position] + draw(st.binary(max_size=3)) + raw[position:]
    return raw, delimiter


MANIFESTS = st.fixed_dictionaries(
    {
        "fileName": st.just("data.csv"),
        "type": st.sampled_from(["event", "profile"]),
        "clientEmail": st.just("p@example.com"),
    },
    optional={
        "columns": st.dictionaries(
            st.sampled_from(NAMES[:-1]),
            st.fixed_dictionaries(
                {},
                optional={
                    "ctName": st.sampled_from(["identity", "evtName", "ts", "Phone", "objectId", "Age", "MSG-x"]),
                    "dataType": st.sampled_from(["STRING", "INTEGER", "FLOAT", "BOOLEAN", "LONG"]),
                },
            ),
            max_size=4,
        ),
        "encoding": st.sampled_from(["UTF-8", "cp1252", "latin1", "UTF-16"]),
    },
)


@SETTINGS
@given(csv_files(), MANIFESTS, st.integers(1, 4), st.integers(0, 5))
def test_any_csv_gives_batches_or_a_file_error(csv_file, manifest_data, batch_rows, skip_rows):
    raw, delimiter = csv_file
    manifest = load_manifest(json.dumps({**manifest_data, "delimiter": delimiter}).encode())
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "data.csv"
        path.write_bytes(raw)
        try:
            batches = list(
                validate_csv(path, manifest, account="a", processing_ts=1, batch_rows=batch_rows, skip_rows=skip_rows)
            )
        except FileError as exc:
            assert str(exc).startswith("File couldn't be read: ")
            return
    assert batches and all(batch.rows <= batch_rows for batch in batches)
    for batch in batches:
        frame = batch.events if manifest.type == "event" else batch.profiles
        good = 0 if frame is None else frame.height
        assert good + len(batch.bad) == batch.rows
        for row in batch.bad:
            assert row.problems and all(isinstance(message, str) and message for _, message in row.problems)
        if frame is not None and good:
            column = "properties" if manifest.type == "event" else "ops"
            for value in frame[column].to_list():
                json.loads(value)
            assert frame["identity"].null_count() == 0


JSONISH = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=8,
)


@SETTINGS
@given(
    st.one_of(
        st.binary(max_size=80),
        JSONISH.map(lambda v: json.dumps(v).encode()),
        MANIFESTS.flatmap(
            lambda m: st.dictionaries(
                st.sampled_from(["fileName", "type", "clientEmail", "columns", "encoding", "delimiter", "filename"]),
                JSONISH,
                max_size=3,
            ).map(lambda extra: json.dumps({**m, **extra}).encode())
        ),
    )
)
def test_any_manifest_loads_or_raises_manifest_error(raw):
    try:
        manifest = load_manifest(raw)
    except ManifestError as exc:
        assert exc.problems and all(isinstance(p, str) and p for p in exc.problems)
        assert isinstance(exc.client_emails, list)
        return
    assert manifest.type in ("event", "profile") and manifest.client_emails


FAST_PATH_CELLS = st.one_of(
    CELLS,
    st.sampled_from([" TRUE ", "Yes", "N", "\t1\t", " $D_1589274432", "$D_1589274432 ", " 1574668407 ", "1e3"]),
    st.sampled_from([" $add", "$SET", "\u00a07\u00a0", "É", "x" * 1025, 'a"b', "a\\b", "\x01", "$", "$D", "-0"]),
    st.sampled_from(["+5", "007", "0", "-12", "00", "-007", "2147483648"]),  # whole numbers written otherwise
)


# Batches whose columns are all of one kind: JSON words, dates, plain whole numbers (the fast paths' facts).
UNIFORM_CELLS = st.sampled_from(["true", "false", "", "$D_1589274432", "$D_x", "12", "-3", "0"])


@st.composite
def fast_path_files(draw: st.DrawFn, cells: st.SearchStrategy[str] = FAST_PATH_CELLS) -> tuple[bytes, str]:
    header = draw(st.lists(st.sampled_from(NAMES[:-1]), min_size=1, max_size=6, unique=True))
    rows = draw(st.lists(st.lists(cells, min_size=len(header), max_size=len(header)), max_size=8))
    lines = [",".join(_quote(c, ",") for c in row) for row in [header, *rows]]
    return ("\n".join(lines) + "\n").encode("utf-8"), ","


def _outcome(raw: bytes, manifest_data: dict[str, object], batch_rows: int) -> object:
    manifest = load_manifest(json.dumps(manifest_data).encode())
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "data.csv"
        path.write_bytes(raw)
        try:
            batches = list(validate_csv(path, manifest, account="a", processing_ts=1, batch_rows=batch_rows))
        except FileError as exc:
            return str(exc)
    return [
        (
            (b.index, b.rows, b.rows_done, b.last_line, b.bytes_done, b.header),
            None if b.events is None else b.events.rows(),
            None if b.profiles is None else b.profiles.rows(),
            [(row.line, row.cells, row.problems) for row in b.bad],
        )
        for b in batches
    ]


@SETTINGS
@given(st.one_of(csv_files(), fast_path_files(), fast_path_files(UNIFORM_CELLS)), MANIFESTS, st.integers(1, 4))
def test_buffer_facts_give_the_same_batches_as_assuming_everything(csv_file, manifest_data, batch_rows):
    """The per-batch fast paths (skipped strips, dates, escapes, lower-casing) never change an outcome."""
    raw, delimiter = csv_file
    data = {**manifest_data, "delimiter": delimiter}
    fast = _outcome(raw, data, batch_rows)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr("manifests.reader._flags", lambda *args, **kwargs: None)
        slow = _outcome(raw, data, batch_rows)
    assert fast == slow


OPERATIONS = st.sampled_from(["", "$add", "$set", "$ADD", " $add", "$add ", "$remove", "$delete", "$bogus"])


@st.composite
def operation_files(draw: st.DrawFn) -> tuple[bytes, str]:
    """Profile files with `.operation` columns: most batches without a $remove or $delete (given as `sets`)."""
    header = ["identity", "P", "P.operation", *draw(st.sampled_from([[], ["Age"], ["Age", "Age.operation"]]))]
    ops = OPERATIONS if draw(st.booleans()) else st.sampled_from(["", "$add", "$set"])
    cells = {"P": FAST_PATH_CELLS, "Age": st.sampled_from(["", "7", "-1", "x"])}
    rows = draw(
        st.lists(
            st.tuples(*[ops if name.endswith(".operation") else cells.get(name, CELLS) for name in header]),
            max_size=8,
        )
    )
    lines = [",".join(_quote(c, ",") for c in row) for row in [header, *rows]]
    return ("\n".join(lines) + "\n").encode("utf-8"), ","


@SETTINGS
@given(st.one_of(csv_files(), fast_path_files(), fast_path_files(UNIFORM_CELLS)), MANIFESTS, st.integers(1, 4))
def test_a_profile_rows_sets_object_holds_what_its_operations_set(csv_file, manifest_data, batch_rows):
    """A batch gives each row's operations as `sets` (its new profile as one JSON object, for a sink to store as
    it is) or as `ops`; `sets`, and the operations a sink reads out of it (with_ops), say what `ops` says, key
    for key in the same order: checked against the same file with `ops` made for every batch."""
    _sets_say_what_ops_say(csv_file, manifest_data, batch_rows)


@SETTINGS
@given(operation_files(), st.integers(1, 4))
def test_sets_with_adds_say_what_the_operations_say(csv_file, batch_rows):
    """As above, for files with `.operation` columns: $add (a list in `sets`), $set, and batches that remove."""
    _sets_say_what_ops_say(csv_file, {"fileName": "data.csv", "clientEmail": "p@example.com"}, batch_rows)


def _sets_say_what_ops_say(csv_file: tuple[bytes, str], manifest_data: dict[str, object], batch_rows: int) -> None:
    raw, delimiter = csv_file
    manifest = load_manifest(json.dumps({**manifest_data, "type": "profile", "delimiter": delimiter}).encode())

    def frames() -> list[pl.DataFrame]:
        with tempfile.TemporaryDirectory() as folder:
            path = Path(folder) / "data.csv"
            path.write_bytes(raw)
            batches = list(validate_csv(path, manifest, account="a", processing_ts=1, batch_rows=batch_rows))
        return [batch.profiles for batch in batches if batch.profiles is not None]

    try:
        given_frames = frames()
    except FileError:
        return
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr("manifests.plan._gives_ops", lambda plan, stats: True)  # `ops` for every batch
        reference = pl.concat(frames())
    given = pl.concat(given_frames)
    assert reference["sets"].null_count() == reference.height
    assert given.select("line", "identity", "ts").equals(reference.select("line", "identity", "ts"))
    for ops, sets, made, expected in zip(
        given["ops"], given["sets"], with_ops(given)["ops"], reference["ops"], strict=True
    ):
        assert (ops is None) != (sets is None)
        assert json.loads(made) == json.loads(expected)
        if sets is not None:
            assert list(json.loads(sets, object_pairs_hook=lambda pairs: pairs)) == [
                (key, [value] if op == "$add" else value) for op, key, value in json.loads(expected)
            ]
