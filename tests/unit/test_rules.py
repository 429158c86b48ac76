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
    (
        "profile",
        {},
        "identity,Age",
        f"{LONG},21",
        [("identity", "Value must be at most 1024 characters"), (None, rules.IDENTITY_MISSING)],
    ),
    (
        "profile",
        {"t": {"ctName": "ts"}},
        "identity,t",
        "a,abc",
        [("t", "expected epoch seconds, epoch milliseconds or ISO 8601 like 2024-05-01T10:00:00Z")],
    ),
    ("profile", {"t": {"ctName": "ts"}}, "identity,t", "a,01/05/2024", [("t", rules.BAD_TS)]),
    ("profile", {"t": {"ctName": "ts"}}, "identity,t", "a,2024-05-01T10:00:00", [("t", rules.BAD_TS)]),
    ("profile", {"t": {"ctName": "ts"}}, "identity,t", "a,99999999999", [("t", rules.BAD_TS)]),
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
    ("profile", {}, "identity,Born", "a,$D_abc", [("Born", rules.BAD_DATE)]),
    ("profile", {}, "identity,Born", "a,$D_12/05/2020", [("Born", rules.BAD_DATE)]),
    ("profile", {"N": {"dataType": "INTEGER"}}, "identity,N", "a,$D_", [("N", rules.BAD_DATE)]),
    # Only digits and `$D_` in the column's bytes, yet no date: the buffer facts must not take them for epochs.
    ("profile", {}, "identity,Born", "a,$D_1$D_2", [("Born", rules.BAD_DATE)]),
    ("profile", {}, "identity,Born", "a,$D_$D_12", [("Born", rules.BAD_DATE)]),
    ("profile", {}, "identity,Born", "a,$D_12$D_", [("Born", rules.BAD_DATE)]),
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
    (
        "event",
        EVENT,
        "evt,who",
        "App Launched,a",
        [("evt", "Event name is a restricted system event name (reserved by ingestd)")],
    ),
    ("event", EVENT, "evt,who", "Stayed,a", [("evt", rules.EVENT_RESTRICTED)]),
    ("event", EVENT, "evt,who", "app launched,a", [("evt", rules.EVENT_RESTRICTED)]),
    ("event", EVENT, "evt,who", "STAYED,a", [("evt", rules.EVENT_RESTRICTED)]),
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
    # The problems as the report counts them; the error CSV quotes the cell too (see the tests below).
    assert [(column, rules.reason(message)) for column, message in result.bad[0].problems] == expected


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
    *[
        ("profile", {"t": {"ctName": "ts"}}, "identity,t", f"a,{cell}", {"ts": ms, "ops": []})
        for cell, ms in [
            ("1574668407000", 1574668407000),
            ("1574668407123", 1574668407123),
            ("1574668407.5", 1574668407500),
            ("2019-11-25T07:53:27Z", 1574668407000),
            ("2019-11-25T09:53:27+02:00", 1574668407000),
            ("2019-11-25T02:53:27-0500", 1574668407000),
            ("2019-11-25T07:53:27.123Z", 1574668407123),
            ("2019-11-25 07:53:27Z", 1574668407000),
            (" 2019-11-25T07:53:27Z ", 1574668407000),
            ("$D_1574668407", 1574668407000),
            ("$D_2019-11-25T07:53:27Z", 1574668407000),
            ("99999999999999", None),
        ]
        if ms is not None
    ],
    ("profile", {}, "identity,Born", "a,$D_1589274432000", {"ops": [["$set", "Born", "2020-05-12T09:07:12Z"]]}),
    ("profile", {}, "identity,Born", "a,$D_1589274432123", {"ops": [["$set", "Born", "2020-05-12T09:07:12.123Z"]]}),
    (
        "profile",
        {},
        "identity,Born",
        "a,$D_2020-05-12T11:07:12+02:00",
        {"ops": [["$set", "Born", "2020-05-12T09:07:12Z"]]},
    ),
    ("profile", {}, "identity,P,P.operation", "a,Rock,$ADD", {"ops": [["$add", "P", "Rock"]]}),
    ("profile", {}, "identity,P,P.operation", "a,Pop, $Remove ", {"ops": [["$remove", "P", "Pop"]]}),
    ("profile", {}, "identity,P,P.operation", "a,x,$DELETE", {"ops": [["$delete", "P", None]]}),
    ("profile", {"P": {"dataType": "FLOAT"}}, "identity,P", "a,12.5", {"ops": [["$set", "P", 12.5]]}),
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
    assert result.problems == [[("evt", rules.EVENT_RESTRICTED + ", found 'My Event'")]]


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


# -- the value in the problem, and hints ---------------------------------------------------------

TS = {"t": {"ctName": "ts"}}


@pytest.mark.parametrize(
    ("columns", "header", "row", "expected"),
    [
        (
            TS,
            "identity,t",
            "a,01/05/2024",
            "expected epoch seconds, epoch milliseconds or ISO 8601 like 2024-05-01T10:00:00Z, found '01/05/2024'",
        ),
        (
            {},
            "identity,Born",
            "a,$D_12/05/2020",
            "expected $D_ followed by epoch seconds, epoch milliseconds or ISO 8601 like $D_2024-05-01T10:00:00Z, "
            "found '$D_12/05/2020'",
        ),
        (
            {"P": {"dataType": "FLOAT"}},
            "identity,P",
            'a,"12,5"',
            "Value must be a FLOAT: a finite decimal number, found '12,5' "
            '(a decimal comma: add "decimal": "," to the manifest)',
        ),
        ({"N": {"dataType": "INTEGER"}}, "identity,N", "a, 2x ", rules.TYPE_PROBLEMS["INTEGER"] + ", found '2x'"),
        (
            {},
            "identity,P,P.operation",
            "a,x,$append",
            "Profile operation must be one of $add, $set, $remove, $delete, found '$append'",
        ),
    ],
)
def test_a_problem_quotes_the_value_it_found(tmp_path, columns, header, row, expected):
    result = run(tmp_path, f"{header}\n{row}\n", manifest("profile", columns))
    [[(_, message)]] = result.problems
    assert message == expected
    assert rules.reason(message) == expected.split(", found ")[0]


def test_a_long_value_is_shortened_in_the_problem(tmp_path):
    result = run(tmp_path, "identity,t\na," + "9" * 200 + "\n", manifest("profile", TS))
    [[(_, message)]] = result.problems
    assert message.endswith("found '" + "9" * 59 + "…'")


# -- European spreadsheets: a decimal comma -------------------------------------------------------


def test_a_decimal_comma_is_read_when_the_manifest_says_so(tmp_path):
    spec = manifest("profile", {"P": {"dataType": "FLOAT"}}, decimal=",")
    result = run(tmp_path, "identity;P\na;12,5\nb;-3\nc;1.234,5\nd;1.5\n", spec)
    assert [row["ops"] for row in result.rows] == [[["$set", "P", 12.5]], [["$set", "P", -3.0]]]
    assert [row.cells for row in result.bad] == [["c", "1.234,5"], ["d", "1.5"]]
    assert (
        result.bad[1]
        .problems[0][1]
        .endswith('found \'1.5\' (the manifest says "decimal": ",": write 12,5, without thousands marks)')
    )


def test_decimal_must_be_a_point_or_a_comma():
    from manifests.model import ManifestError

    with pytest.raises(ManifestError, match=r"decimal: expected \"\.\" or \",\""):
        manifest("profile", decimal=";")


# -- headers: exact, then ignoring case and spaces; a missing column fails the file once ---------


def test_an_all_caps_header_matches_the_manifest_and_the_report_says_so(tmp_path):
    spec = manifest("profile", {"email": {"ctName": "identity"}, "age": {"ctName": "Age", "dataType": "INTEGER"}})
    result = run(tmp_path, "EMAIL,AGE, CITY \na@x.com,21,Paris\n", spec)
    assert result.bad == []
    assert result.rows[0]["identity"] == "a@x.com"
    assert result.rows[0]["ops"] == [["$set", "Age", 21], ["$set", " CITY ", "Paris"]]
    assert result.batches[0].notes == [
        "the header's column 'EMAIL' was matched to the manifest's 'email' ignoring case and spaces",
        "the header's column 'AGE' was matched to the manifest's 'age' ignoring case and spaces",
    ]


def test_reserved_names_match_in_any_case(tmp_path):
    result = run(tmp_path, "IDENTITY,TS,Name\na,1574668407,Jo\n", manifest("profile"))
    assert (result.rows[0]["identity"], result.rows[0]["ts"]) == ("a", 1574668407000)
    assert result.batches[0].notes == [
        "the header's column 'IDENTITY' was read as 'identity' (ignoring case and spaces)",
        "the header's column 'TS' was read as 'ts' (ignoring case and spaces)",
    ]


def test_an_exact_match_wins_over_one_ignoring_case(tmp_path):
    spec = manifest("profile", {"Name": {"ctName": "FullName"}})
    result = run(tmp_path, "identity,NAME,Name\na,x,y\n", spec)
    assert result.rows[0]["ops"] == [["$set", "NAME", "x"], ["$set", "FullName", "y"]]
    assert result.batches[0].notes == []


@pytest.mark.parametrize(
    ("kind", "columns", "header", "reason"),
    [
        (
            "profile",
            {"identity": {}, "age": {"dataType": "INTEGER"}},
            "identity,agee",
            "the manifest maps the column 'age', which the header does not have (even ignoring case); "
            "did you mean 'agee' for 'age'?",
        ),
        ("profile", {}, "Name,Age", rules.file_no_identity("profile")),
        ("event", {"who": {"ctName": "identity"}}, "who,Price", rules.FILE_NO_EVENT_NAME),
    ],
)
def test_a_missing_column_fails_the_file_once(tmp_path, kind, columns, header, reason):
    from manifests.validate import FileError

    with pytest.raises(FileError) as caught:
        run(tmp_path, f"{header}\n" + "x,1\n" * 50, manifest(kind, columns))
    assert str(caught.value) == rules.FILE_PREFIX + reason


# -- the dataType registry ----------------------------------------------------------------------


def test_every_data_type_is_in_the_registry_and_an_unknown_one_is_an_error():
    from manifests import datatypes
    from manifests.model import ManifestError

    assert list(datatypes.REGISTRY) == ["STRING", "INTEGER", "FLOAT", "BOOLEAN", "LONG"]
    assert set(rules.TYPE_PROBLEMS) == set(datatypes.REGISTRY)
    with pytest.raises(ValueError, match="unknown dataType 'DECIMAL'"):
        datatypes.get("DECIMAL")
    with pytest.raises(ManifestError, match="expected one of STRING, INTEGER, FLOAT, BOOLEAN, LONG"):
        manifest("profile", {"x": {"dataType": "DECIMAL"}})


def test_a_type_missing_from_the_registry_fails_the_plan_not_as_a_boolean(tmp_path, monkeypatch):
    from manifests import datatypes
    from manifests.plan import build_plan

    spec = manifest("profile", {"B": {"dataType": "BOOLEAN"}})
    # A copy without BOOLEAN (delitem would put it back last, and the order of the types is what manifests list).
    monkeypatch.setattr(datatypes, "REGISTRY", {k: t for k, t in datatypes.REGISTRY.items() if k != "BOOLEAN"})
    with pytest.raises(ValueError, match="unknown dataType 'BOOLEAN'"):
        build_plan(spec, ["identity", "B"], account="a", processing_ts=1, restricted=[])
