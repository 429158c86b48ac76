"""Row rules, one case per rule and per error text: (manifest, header, row) -> problems or the typed record."""

from __future__ import annotations

import csv

import pytest
import xxhash

from manifests import rules
from tests.fixtures.engine import PROCESSING_TS, manifest, run

LONG = "x" * 1025
EVENT = {"evt": {"ctName": "evtName"}, "who": {"ctName": "identity"}}

# (kind, columns, header, row, expected problems as (column, message))
PROBLEMS = [
    ("profile", {}, "identity,Age", ",21", [(None, rules.IDENTITY_MISSING)]),
    ("profile", {}, "Name,Age", "Jo,21", [(None, rules.IDENTITY_MISSING)]),
    (
        "profile",
        {},
        "identity,Age",
        f"{LONG},21",
        [("identity", "Value must be at most 1024 characters"), (None, rules.IDENTITY_MISSING)],
    ),
    ("profile", {"t": {"ctName": "ts"}}, "identity,t", "a,abc", [("t", "Timestamp must be in epoch seconds")]),
    ("profile", {"t": {"ctName": "ts"}}, "identity,t", "a,1574668407000", [("t", rules.BAD_TS)]),
    ("profile", {"t": {"ctName": "ts"}}, "identity,t", "a,-5", [("t", rules.BAD_TS)]),
    ("profile", {"Age": {"dataType": "INTEGER"}}, "identity,Age", "a,21.5", [("Age", rules.TYPE_PROBLEMS["INTEGER"])]),
    (
        "profile",
        {"Age": {"dataType": "INTEGER"}},
        "identity,Age",
        "a,2147483648",
        [("Age", rules.TYPE_PROBLEMS["INTEGER"])],
    ),
    (
        "profile",
        {"Big": {"dataType": "LONG"}},
        "identity,Big",
        "a,9223372036854775808",
        [("Big", rules.TYPE_PROBLEMS["LONG"])],
    ),
    ("profile", {"Big": {"dataType": "LONG"}}, "identity,Big", "a,12e3", [("Big", rules.TYPE_PROBLEMS["LONG"])]),
    (
        "profile",
        {"P": {"dataType": "FLOAT"}},
        "identity,P",
        "a,1.5.2",
        [("P", "Value must be a FLOAT: a finite decimal number")],
    ),
    ("profile", {"P": {"dataType": "FLOAT"}}, "identity,P", "a,inf", [("P", rules.TYPE_PROBLEMS["FLOAT"])]),
    ("profile", {"P": {"dataType": "FLOAT"}}, "identity,P", "a,NaN", [("P", rules.TYPE_PROBLEMS["FLOAT"])]),
    ("profile", {"P": {"dataType": "FLOAT"}}, "identity,P", "a,1e999", [("P", rules.TYPE_PROBLEMS["FLOAT"])]),
    ("profile", {"B": {"dataType": "BOOLEAN"}}, "identity,B", "a,maybe", [("B", rules.TYPE_PROBLEMS["BOOLEAN"])]),
    ("profile", {}, "identity,Bio", f"a,{LONG}", [("Bio", "Value must be at most 1024 characters")]),
    ("profile", {}, "identity,Born", "a,$D_abc", [("Born", "Date must be $D_ followed by epoch seconds")]),
    ("profile", {"N": {"dataType": "INTEGER"}}, "identity,N", "a,$D_", [("N", rules.BAD_DATE)]),
    ("profile", {}, "identity,Phone", "a,12345", [("Phone", "Phone number is not valid")]),
    ("profile", {"p": {"ctName": "Phone"}}, "identity,p", "a,+0123456789", [("p", rules.BAD_PHONE)]),
    ("profile", {}, "identity,Email", "a,not-an-address", [("Email", "Email address is not valid")]),
    ("profile", {}, "identity,Email", "a,x@y", [("Email", rules.BAD_EMAIL)]),
    ("profile", {}, "identity,MSG-sms", "a,sometimes", [("MSG-sms", rules.BAD_MSG)]),
    (
        "profile",
        {},
        "identity,Playlist,Playlist.operation",
        "a,Rock,$append",
        [("Playlist.operation", "Profile operation must be one of $add, $set, $remove, $delete")],
    ),
    ("event", EVENT, "evt,who", ",a", [("evt", "Event name is mandatory")]),
    ("event", {"who": {"ctName": "identity"}}, "who,Price", "a,1", [(None, rules.EVENT_NAME_MISSING)]),
    (
        "event",
        EVENT,
        "evt,who",
        "App Launched,a",
        [("evt", "Event name belongs to CleverTap restricted system events")],
    ),
    ("event", EVENT, "evt,who", "Stayed,a", [("evt", rules.EVENT_RESTRICTED)]),
    (
        "event",
        {**EVENT, "n": {"dataType": "INTEGER"}, "p": {"ctName": "Phone"}},
        "evt,who,n,p",
        ",,x,1",
        [
            ("evt", rules.EVENT_NAME_MISSING),
            ("n", rules.TYPE_PROBLEMS["INTEGER"]),
            ("p", rules.BAD_PHONE),
            (None, rules.IDENTITY_MISSING),
        ],
    ),
]


@pytest.fixture(params=["buffer facts", "polars facts"])
def facts(request, monkeypatch):
    """Both ways of learning a batch's facts: from the Arrow buffers, and the polars fallback."""
    if request.param == "polars facts":
        monkeypatch.setattr("manifests.reader._flags", lambda *args: None)
    return request.param


@pytest.mark.parametrize(("kind", "columns", "header", "row", "expected"), PROBLEMS)
def test_a_bad_row_lists_every_problem_with_its_column(tmp_path, facts, kind, columns, header, row, expected):
    result = run(tmp_path, f"{header}\n{row}\n", manifest(kind, columns))
    assert result.rows == []
    assert len(result.bad) == 1
    assert result.bad[0].line == 2
    assert result.bad[0].cells == next(csv.reader([row]))
    assert result.bad[0].problems == expected


# (kind, columns, header, row, expected subset of the record)
RECORDS = [
    ("profile", {"Age": {"dataType": "INTEGER"}}, "identity,Age", "a, 21 ", {"ops": [["$set", "Age", 21]]}),
    (
        "profile",
        {"Age": {"dataType": "INTEGER"}},
        "identity,Age",
        "a,-2147483648",
        {"ops": [["$set", "Age", -2147483648]]},
    ),
    (
        "profile",
        {"Big": {"dataType": "LONG"}},
        "identity,Big",
        "a,9223372036854775807",
        {"ops": [["$set", "Big", 9223372036854775807]]},
    ),
    ("profile", {"P": {"dataType": "FLOAT"}}, "identity,P", "a,123", {"ops": [["$set", "P", 123.0]]}),
    ("profile", {"P": {"dataType": "FLOAT"}}, "identity,P", "a,-1.5e3", {"ops": [["$set", "P", -1500.0]]}),
    *[
        ("profile", {"B": {"dataType": "BOOLEAN"}}, "identity,B", f"a,{word}", {"ops": [["$set", "B", truth]]})
        for word, truth in [
            ("true", True),
            ("FALSE", False),
            ("1", True),
            ("0", False),
            ("Yes", True),
            ("n", False),
            (" True ", True),
            ("nO", False),
        ]
    ],
    ("profile", {}, "identity,Born", "a,$D_1589274432", {"ops": [["$set", "Born", "2020-05-12T09:07:12Z"]]}),
    (
        "profile",
        {"N": {"dataType": "INTEGER"}},
        "identity,N",
        "a,$D_0",
        {"ops": [["$set", "N", "1970-01-01T00:00:00Z"]]},
    ),
    ("profile", {}, "identity,Bio", "a," + "é" * 1024, {"ops": [["$set", "Bio", "é" * 1024]]}),
    ("profile", {}, "identity,Note", 'a,"say ""hi""\\\t"', {"ops": [["$set", "Note", 'say "hi"\\\t']]}),
    (
        "profile",
        {},
        "identity,Phone,Email",
        "a,+918876543211,a.b+c@example.co.uk",
        {"ops": [["$set", "Phone", "+918876543211"], ["$set", "Email", "a.b+c@example.co.uk"]]},
    ),
    ("profile", {"m": {"ctName": "MSG-push"}}, "identity,m", "a,Y", {"ops": [["$set", "MSG-push", True]]}),
    ("profile", {}, "identity,Age,City", "a,,Paris", {"ops": [["$set", "City", "Paris"]]}),
    ("profile", {}, "identity,P,P.operation", "a,Rock,$add", {"ops": [["$add", "P", "Rock"]]}),
    ("profile", {}, "identity,P,P.operation", "a,Pop,$remove", {"ops": [["$remove", "P", "Pop"]]}),
    ("profile", {}, "identity,P,P.operation", "a,x,$delete", {"ops": [["$delete", "P", None]]}),
    ("profile", {}, "identity,P,P.operation", "a,,$delete", {"ops": [["$delete", "P", None]]}),
    ("profile", {}, "identity,P,P.operation", "a,x,", {"ops": [["$set", "P", "x"]]}),
    (
        "profile",
        {"P": {"ctName": "Playlist"}},
        "identity,P,P.operation",
        "a,x,$add",
        {"ops": [["$add", "Playlist", "x"]]},
    ),
    ("profile", {}, "identity,Gone.operation", "a,$delete", {"ops": [["$delete", "Gone", None]]}),
    (
        "profile",
        {},
        "identity,objectId,Age",
        "a,o,1",
        {"identity": "a", "ops": [["$set", "objectId", "o"], ["$set", "Age", "1"]]},
    ),
    ("profile", {}, "identity,objectId", ",o", {"identity": "o", "ops": []}),
    ("profile", {}, "gpId,fbId", "g,f", {"identity": "f", "ops": [["$set", "gpId", "g"]]}),
    ("profile", {}, "identity,objectId", f"{LONG[:1024]},o", {"identity": LONG[:1024]}),
    ("profile", {"t": {"ctName": "ts"}}, "identity,t", "a,1574668407", {"ts": 1574668407000, "ops": []}),
    ("profile", {"t": {"ctName": "ts"}}, "identity,t", "a,", {"ts": PROCESSING_TS * 1000}),
    ("profile", {}, "identity", "a", {"ts": PROCESSING_TS * 1000, "ops": []}),
    ("event", EVENT, "evt,who", "Purchased,a", {"name": "Purchased", "identity": "a", "properties": {}}),
    (
        "event",
        {**EVENT, "c": {"ctName": "objectId"}},
        "evt,who,c,Z,A",
        "E,a,o,z,",
        {"properties": {"Z": "z", "objectId": "o"}},
    ),
    ("event", EVENT, "evt,who,Stayed", "Bought,a,1", {"properties": {"Stayed": "1"}}),
]


@pytest.mark.parametrize(("kind", "columns", "header", "row", "expected"), RECORDS)
def test_a_good_row_becomes_a_typed_record(tmp_path, facts, kind, columns, header, row, expected):
    result = run(tmp_path, f"{header}\n{row}\n", manifest(kind, columns))
    assert result.bad == []
    assert len(result.rows) == 1
    record = result.rows[0]
    assert record["line"] == 2
    assert {key: record[key] for key in expected} == expected


def test_more_than_100_event_properties_counts_only_cells_with_a_value(tmp_path):
    names = [f"p{i}" for i in range(101)]
    header = "evt,who," + ",".join(names)
    full = "E,a," + ",".join("1" for _ in names)
    sparse = "E,a," + ",".join("1" if i < 100 else "" for i in range(101))
    result = run(tmp_path, f"{header}\n{full}\n{sparse}\n", manifest("event", EVENT))
    assert [row.problems for row in result.bad] == [[(None, "Cannot have more than 100 event properties")]]
    assert [row["line"] for row in result.rows] == [3]
    assert len(result.rows[0]["properties"]) == 100


@pytest.mark.parametrize(
    ("row", "fields"),
    [("a,1,2", 3), ("a", 1)],
)
def test_a_ragged_row_keeps_its_cells(tmp_path, row, fields):
    result = run(tmp_path, f"identity,Age\n{row}\nb,2\n", manifest("profile"))
    assert [r["line"] for r in result.rows] == [3]
    assert result.bad[0].line == 2
    assert result.bad[0].cells == row.split(",")
    assert result.bad[0].problems == [(None, f"Row has {fields} fields but the header has 2")]


def test_restricted_events_are_configurable(tmp_path):
    data = "evt,who\nApp Launched,a\nMy Event,b\n"
    result = run(tmp_path, data, manifest("event", EVENT), restricted_events=["My Event"])
    assert [row["name"] for row in result.rows] == ["App Launched"]
    assert result.problems == [[("evt", rules.EVENT_RESTRICTED)]]


def test_event_ids_are_deterministic_and_ignore_processing_time(tmp_path):
    data = "evt,who,t,Price\nE,a,,1\nE,a,,2\nE,a,1574668407,1\n"
    spec = manifest("event", {**EVENT, "t": {"ctName": "ts"}, "Price": {"dataType": "FLOAT"}})
    first = run(tmp_path, data, spec, processing_ts=1)
    again = run(tmp_path, data, spec, processing_ts=2)
    ids = [row["event_id"] for row in first.rows]
    assert ids == [row["event_id"] for row in again.rows]
    assert len(set(ids)) == 3 and all(i.isdigit() and int(i) < 2**128 for i in ids)
    other = run(tmp_path, data, spec, account="other")
    assert not set(ids) & {row["event_id"] for row in other.rows}
    reordered = run(tmp_path, "Price,t,who,evt\n1,,a,E\n", spec)
    assert reordered.rows[0]["event_id"] == ids[0]


def _recipe(account: str, identity: str, name: str, ts_cell: str, properties: str) -> str:
    """The documented event id: xxh3-128 of the account, identity, name, ts cell as written and properties JSON."""
    key = "\x1f".join([account, identity, name, ts_cell, properties])
    return str(xxhash.xxh3_128_intdigest(key.encode()))


@pytest.mark.parametrize("rows", [3, 12_001])
def test_event_ids_follow_the_recipe_in_small_and_large_batches(tmp_path, rows):
    spec = manifest("event", {**EVENT, "t": {"ctName": "ts"}, "Price": {"dataType": "FLOAT"}})
    cells = [(f"u{i}", "" if i % 5 == 0 else str(1574668407 + i)) for i in range(rows)]
    data = "evt,who,t,Price,Note\n" + "".join(f"E,{who},{ts},{i % 7},n{i}\n" for i, (who, ts) in enumerate(cells))
    frame = run(tmp_path, data, spec).batches[0].events
    assert frame.height == rows
    expected = [
        _recipe("acme", who, "E", ts, f'{{"Note":"n{i}","Price":{i % 7}.0}}') for i, (who, ts) in enumerate(cells)
    ]
    assert frame["properties"][1] == '{"Note":"n1","Price":1.0}'
    assert frame["event_id"].to_list() == expected
