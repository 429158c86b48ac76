"""validate_csv() on whole files: the shared samples, encodings, quoting, line numbers, file errors, batches."""

from __future__ import annotations

import json

import pytest

from manifests.model import load_manifest
from manifests.validate import FileError
from tests.fixtures.engine import PROCESSING_TS, manifest, run
from tests.fixtures.samples import SAMPLES


def sample(tmp_path, kind):
    spec = load_manifest((SAMPLES / f"{kind}.manifest").read_bytes())
    return run(tmp_path, (SAMPLES / f"{kind}.csv").read_bytes(), spec)


def apply(rows):
    """Apply profile ops in row order, as a sink would: the last row wins, $add/$remove on lists."""
    profiles: dict[str, dict] = {}
    for row in rows:
        props = profiles.setdefault(row["identity"], {"_ts": row["ts"]})
        props["_ts"] = row["ts"]
        for op, key, value in row["ops"]:
            if op == "$set":
                props[key] = value
            elif op == "$delete":
                props.pop(key, None)
            elif op == "$add":
                props[key] = [*[v for v in props.get(key, []) if v != value], value]
            elif op == "$remove":
                props[key] = [v for v in props.get(key, []) if v != value]
    return profiles


def test_profiles_sample_gives_the_readme_outcome(tmp_path):
    result = sample(tmp_path, "profiles")
    assert result.bad == [] and len(result.rows) == 5
    profiles = apply(result.rows)
    assert profiles["john.doe@example.com"]["Playlist"] == ["Rock"]
    assert "Pop" not in profiles["jane.doe@example.com"].get("Playlist", [])
    assert profiles["john.roe@example.com"]["Phone"] == "+918876543213"
    assert profiles["john.roe@example.com"]["Married"] is True
    assert "Phone" not in profiles["jane.roe@example.com"]
    assert profiles["jane.roe5@example.com"]["Age"] == 32
    assert profiles["jane.roe5@example.com"]["_ts"] == PROCESSING_TS * 1000
    jane_roe = result.by_line()[5]["ops"]
    assert ["$delete", "Phone", None] in jane_roe
    assert ["$remove", "Playlist", "Pop"] in result.by_line()[3]["ops"]
    assert ["$set", "MSG-sms", True] in result.by_line()[2]["ops"]


def test_events_sample_gives_the_readme_outcome(tmp_path):
    result = sample(tmp_path, "events")
    assert result.bad == [] and len(result.rows) == 4
    assert {row["name"] for row in result.rows} == {"Purchased"}
    assert {row["identity"] for row in result.rows} == {"john.doe@example.com"}
    assert [row["properties"]["DeliveryStatus"] for row in result.rows] == [True, False, True, False]
    for row in result.rows:
        assert row["properties"]["Price"] == 123.0 and isinstance(row["properties"]["Price"], float)
        assert row["properties"]["DeliveryDate"] == "2020-05-12T09:07:12Z"
        assert row["ts"] == 1578503667000
    assert len({row["event_id"] for row in result.rows}) == 4


@pytest.mark.parametrize(
    ("encoding", "data"),
    [
        (None, "identity,City\na,Zürich\n".encode()),
        (None, b"\xef\xbb\xbf" + "identity,City\na,Zürich\n".encode()),
        ("utf-8", b"\xef\xbb\xbf" + "identity,City\na,Zürich\n".encode()),
        ("UTF-16", "identity,City\na,Zürich\n".encode("utf-16")),
        (None, "identity,City\na,Zürich\n".encode("utf-16")),  # a UTF-16 byte order mark speaks for itself
        ("UTF-16LE", "identity,City\na,Zürich\n".encode("utf-16-le")),
        ("latin1", "identity,City\na,Zürich\n".encode("latin1")),
        ("cp1252", "identity,City\na,Zürich\n".encode("cp1252")),
    ],
)
def test_encodings(tmp_path, encoding, data):
    extra = {"encoding": encoding} if encoding else {}
    result = run(tmp_path, data, manifest("profile", **extra))
    assert result.batches[0].header == ["identity", "City"]
    assert result.rows[0]["ops"] == [["$set", "City", "Zürich"]]


@pytest.mark.parametrize(
    ("encoding", "text"),
    [("cp1250", "Łódź Žižkov"), ("cp1251", "Москва"), ("iso-8859-2", "Łódź"), ("cp1253", "Αθήνα")],
)
def test_single_byte_encodings_of_the_reference(tmp_path, encoding, text):
    data = f"identity,City\na,{text}\n".encode(encoding)
    result = run(tmp_path, data, manifest("profile", encoding=encoding))
    assert result.rows[0]["ops"] == [["$set", "City", text]]


@pytest.mark.parametrize(
    ("encoding", "data", "reason"),
    [
        (None, b"identity,City\na,ok\nb,\xff\n", "File couldn't be read: byte 0xff at line 3 is not valid UTF-8"),
        (None, b'identity,City\n"a\nb",ok\nc,\xc3\n', "byte 0xc3 at line 4 is not valid UTF-8"),
        ("cp1252", b"identity,City\na,\x81\n", "File couldn't be read: byte 0x81 at line 2 is not valid cp1252"),
    ],
)
def test_undecodable_bytes_name_their_line(tmp_path, encoding, data, reason):
    extra = {"encoding": encoding} if encoding else {}
    with pytest.raises(FileError) as caught:
        run(tmp_path, data, manifest("profile", **extra))
    assert reason in str(caught.value)


def test_rfc4180_quoting_and_physical_line_numbers(tmp_path):
    data = (
        "identity,Note,Age\r\n"
        'a,"one, two",1\r\n'
        'b,"say ""hi""",2\r\n'
        'c,"line one\r\nline two",3\r\n'
        'd,"x",oops\r\n'
        'e,"a\nb\nc",4\r\n'
        "f,plain,5\r\n"
    )
    result = run(tmp_path, data, manifest("profile", {"Age": {"dataType": "INTEGER"}}))
    notes = {row["line"]: row["ops"][0][2] for row in result.rows}
    assert notes == {2: "one, two", 3: 'say "hi"', 4: "line one\r\nline two", 7: "a\nb\nc", 10: "plain"}
    assert [(row.line, row.cells) for row in result.bad] == [(6, ["d", "x", "oops"])]
    assert result.batches[-1].last_line == 10


@pytest.mark.parametrize(
    ("data", "delimiter"),
    [
        ("identity;City;Age\na;Paris, France;3\n", None),
        ("identity\tCity\tAge\na\tParis, France\t3\n", None),
        ("identity|City|Age\na|Paris, France|3\n", None),
        ("identity;City;Age\na;Paris, France;3\n", ";"),
        ('identity City Age\na "Paris, France" 3\n', "space"),
    ],
)
def test_delimiters_are_sniffed_from_the_header_or_given(tmp_path, data, delimiter):
    extra = {"delimiter": delimiter} if delimiter else {}
    result = run(tmp_path, data, manifest("profile", **extra))
    assert result.batches[0].header == ["identity", "City", "Age"]
    assert result.rows[0]["ops"] == [["$set", "City", "Paris, France"], ["$set", "Age", "3"]]


def test_blank_lines_are_skipped_but_counted(tmp_path):
    result = run(tmp_path, "identity,Age\n\na,1\n,\n\nb,2\n\n", manifest("profile"))
    assert [row["line"] for row in result.rows] == [3, 6]
    assert result.bad == [] and result.batches[-1].rows_done == 2


@pytest.mark.parametrize(
    ("data", "columns", "reason"),
    [
        (b"", {}, "File couldn't be read: the file is empty"),
        (b"\xef\xbb\xbf", {}, "the file is empty"),
        (b"\n\n  \n", {}, "the file is empty"),
        (b"identity,,Age\na,b,1\n", {}, "column 2 of the header row has no name"),
        (b"identity,Age,Age\na,1,2\n", {}, "duplicate column name 'Age' in the header (columns 2 and 3)"),
        (
            b"a@example.com,21\nb@example.com,22\n",
            {"identity": {}, "age": {"dataType": "INTEGER"}},
            "no header row: the first line has none of the manifest's columns ('identity', 'age')",
        ),
        (
            b"identity,agee\na,1\n",
            {"identity": {}, "age": {"dataType": "INTEGER"}},
            "the manifest maps the column 'age', which the header does not have (even ignoring case); "
            "did you mean 'agee' for 'age'?",
        ),
        (
            b"identity,user\na,b\n",
            {"user": {"ctName": "identity"}},
            "columns 'identity' and 'user' both map to the property 'identity'",
        ),
        (
            ",".join(f"c{i}" for i in range(261)).encode() + b"\n",
            {},
            "the header has 261 columns; at most 260 are allowed",
        ),
    ],
)
def test_file_errors(tmp_path, data, columns, reason):
    with pytest.raises(FileError) as caught:
        run(tmp_path, data, manifest("profile", columns))
    assert reason in str(caught.value)
    assert str(caught.value).startswith("File couldn't be read: ")


def test_a_missing_file_is_a_file_error(tmp_path):
    from manifests.validate import validate_csv

    with pytest.raises(FileError, match="cannot be opened"):
        next(validate_csv(tmp_path / "nope.csv", manifest(), account="a", processing_ts=1))


def test_260_columns_are_fine(tmp_path):
    header = "identity," + ",".join(f"c{i}" for i in range(259))
    result = run(tmp_path, header + "\na" + "," * 259 + "\n", manifest("profile"))
    assert len(result.batches[0].header) == 260 and len(result.rows) == 1


def test_a_header_only_file_gives_one_empty_batch(tmp_path):
    result = run(tmp_path, "identity,Age\n", manifest("profile"))
    assert len(result.batches) == 1
    batch = result.batches[0]
    assert batch.header == ["identity", "Age"] and batch.rows == 0 and batch.rows_done == 0
    assert batch.profiles is not None and batch.profiles.height == 0


def lines_file(n):
    rows = [f"u{i},{i if i % 4 else 'bad'}" for i in range(n)]
    rows[5] = "u5,5,extra"
    return "identity,Age\n" + "\n".join(rows) + "\n"


def test_batches_are_bounded_and_numbered(tmp_path):
    spec = manifest("profile", {"Age": {"dataType": "INTEGER"}})
    result = run(tmp_path, lines_file(25), spec, batch_rows=10)
    assert [(b.index, b.rows, b.rows_done) for b in result.batches] == [(0, 10, 10), (1, 10, 20), (2, 5, 25)]
    assert all(b.header == ["identity", "Age"] for b in result.batches)
    assert [b.last_line for b in result.batches] == [11, 21, 26]
    assert result.batches[-1].bytes_done == (tmp_path / "data.csv").stat().st_size
    bad_lines = [row.line for row in result.bad]
    assert bad_lines == [2, 6, 7, 10, 14, 18, 22, 26]
    assert len(result.rows) + len(result.bad) == 25


@pytest.mark.parametrize("skip", [10, 13, 25])
def test_resuming_skips_rows_already_done(tmp_path, skip):
    spec = manifest("profile", {"Age": {"dataType": "INTEGER"}})
    whole = run(tmp_path, lines_file(25), spec, batch_rows=10)
    resumed = run(tmp_path, lines_file(25), spec, batch_rows=10, skip_rows=skip)
    assert [r["line"] for r in resumed.rows] == [r["line"] for r in whole.rows if r["line"] > skip + 1]
    assert [b.line for b in resumed.bad] == [b.line for b in whole.bad if b.line > skip + 1]
    assert resumed.batches[-1].rows_done == 25


def test_the_frames_follow_the_interface(tmp_path):
    spec = manifest("event", {"e": {"ctName": "evtName"}, "i": {"ctName": "identity"}, "t": {"ctName": "ts"}})
    result = run(tmp_path, "e,i,t,x\nBuy,a,1574668407,1\n", spec)
    frame = result.batches[0].events
    assert result.batches[0].profiles is None
    assert {name: str(dtype) for name, dtype in frame.schema.items()} == {
        "line": "Int64",
        "event_id": "String",
        "identity": "String",
        "name": "String",
        "ts": "Int64",
        "properties": "String",
    }
    line, event_id, identity, name, ts, properties = frame.row(0)
    assert (line, identity, name, ts, json.loads(properties)) == (2, "a", "Buy", 1574668407000, {"x": "1"})
    assert event_id.isdigit() and int(event_id) < 2**128
    profiles = run(tmp_path, "identity,x\na,1\n", manifest("profile")).batches[0].profiles
    assert list(profiles.columns) == ["line", "identity", "ts", "ops", "sets"]


@pytest.mark.parametrize("data", ["identity,Age", "identity,Age\na,1", "identity,Age\r\na,1\r\n"])
def test_the_last_line_needs_no_line_end(tmp_path, data):
    result = run(tmp_path, data, manifest("profile"))
    assert result.batches[0].header == ["identity", "Age"]
    assert [row["ops"] for row in result.rows] == ([[["$set", "Age", "1"]]] if "a,1" in data else [])


@pytest.mark.parametrize("shift", range(-2, 7))
def test_characters_split_across_read_blocks(tmp_path, shift):
    head = "identity,Name\n"
    size = 64 * 1024 - len(head) - len("b,") - 1 + shift  # "é" straddles the first 64 KiB read
    filler = "".join(f"a,{'x' * 98}\n" for _ in range(size // 101))
    filler += "a," + "y" * (size - len(filler) - 3) + "\n"
    data = (head + filler + "b,é\n" + "c," + "ü" * 500 + "\n").encode()
    assert data[64 * 1024 - 1 + shift : 64 * 1024 + 1 + shift] == "é".encode()
    result = run(tmp_path, data, manifest("profile"))
    assert [row["ops"][0][2] for row in result.rows][-2:] == ["é", "ü" * 500]
    assert result.bad == []


def test_a_long_row_in_the_middle_fails_alone(tmp_path):
    data = 'identity,Note\na,ok\nb,"' + "x" * (5 << 20) + '"\nc,ok\n'
    result = run(tmp_path, data, manifest("profile"))
    assert [row["line"] for row in result.rows] == [2, 4]
    assert [(row.line, row.problems) for row in result.bad] == [
        (3, [("Note", "Value must be at most 1024 characters")])
    ]


@pytest.mark.parametrize(
    ("data", "line"),
    [
        ('identity,Note\na,ok\nb,"unclosed\nc,ok\nd,ok\n', 3),
        ('identity,Note,Age\na,ok,1\nb,"unclosed,2\nc,ok,3\n', 3),
        ('identity,Note\na,ok\nb,"""never\n', 3),
    ],
)
def test_a_quote_never_closed_is_a_file_error(tmp_path, data, line):
    with pytest.raises(FileError) as caught:
        run(tmp_path, data, manifest("profile"), batch_rows=1)
    assert f"the quoted field in the row at line {line} is never closed" in str(caught.value)


def test_a_stray_quote_inside_a_value_is_read_as_written(tmp_path):
    result = run(tmp_path, "identity,Height\na,5'11\"\nb,6'1\"\nc,x\n", manifest("profile"))
    assert [row["ops"][0][2] for row in result.rows] == ["5'11\"", "6'1\"", "x"]


@pytest.mark.parametrize("bom", [b"", b"\xef\xbb\xbf"])
@pytest.mark.parametrize("bad", [b"\xff", b"\xe2\x82"])
def test_an_undecodable_byte_deep_in_a_large_file_names_its_line(tmp_path, bom, bad):
    # Past the first 4 MiB parse block and several reads; rows hold quoted newlines, which count as lines.
    rows = "".join(f'u{i},"two\nlines"\n' if i % 3 == 0 else f"u{i},caf\u00e9\n" for i in range(300_000))
    data = bom + b"identity,Note\n" + rows.encode() + b"z," + bad + b"\nlast,ok\n"
    line = 2 + 300_000 + 100_000
    with pytest.raises(FileError) as caught:
        run(tmp_path, data, manifest("profile"))
    assert str(caught.value) == f"File couldn't be read: byte 0x{bad[0]:02x} at line {line} is not valid UTF-8"


def test_a_multibyte_character_cut_off_at_the_end_names_its_line(tmp_path):
    with pytest.raises(FileError) as caught:
        run(tmp_path, b"identity,City\na,ok\nb,\xc3", manifest("profile"))
    assert str(caught.value) == "File couldn't be read: byte 0xc3 at line 3 is not valid UTF-8"


@pytest.mark.parametrize(
    ("tail", "error"),
    [
        ('z,"two\nlines"\n', False),  # quotes even: a last value may hold a newline
        ('z,"never closed\nc,ok\n', True),
        ('z,a"b\ny,"two\nlines"\n', True),  # a stray quote makes the count odd: read as a field left open
    ],
)
def test_the_quote_count_of_a_large_file_decides_an_open_last_field(tmp_path, tail, error):
    rows = "".join(f'u{i},"say ""hi"", {i}"\n' for i in range(200_000))
    data = "identity,Note\n" + rows + tail
    if error:
        with pytest.raises(FileError, match="is never closed"):
            run(tmp_path, data, manifest("profile"))
    else:
        assert run(tmp_path, data, manifest("profile")).rows[-1]["ops"] == [["$set", "Note", "two\nlines"]]
