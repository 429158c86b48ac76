"""The manifest model: DESIGN.md's keys, and errors a partner can act on."""

from __future__ import annotations

import json

import pytest

from manifests.model import ManifestError, load_manifest
from tests.fixtures.samples import SAMPLES

BASE = {"fileName": "data.csv", "type": "event", "clientEmail": "partner@example.com"}


def problems(raw: bytes | dict) -> ManifestError:
    data = raw if isinstance(raw, bytes) else json.dumps(raw).encode()
    with pytest.raises(ManifestError) as caught:
        load_manifest(data)
    return caught.value


def test_the_reference_samples_load():
    profiles = load_manifest((SAMPLES / "profiles.manifest").read_bytes())
    assert profiles.file_name == "profiles.csv" and profiles.type == "profile"
    assert profiles.client_emails == ["partner@example.com"]
    assert profiles.columns["id_phone"].ct_name == "Phone"
    assert profiles.columns["age"].data_type == "INTEGER"
    assert profiles.property_name("age") == "Age" and profiles.property_name("Playlist") == "Playlist"
    events = load_manifest((SAMPLES / "events.manifest").read_bytes())
    assert events.type == "event" and events.columns["item_price"].data_type == "FLOAT"
    assert events.encoding is None and events.delimiter is None


@pytest.mark.parametrize(
    ("extra", "attribute", "expected"),
    [
        ({"clientEmail": "a@example.com, b@example.com"}, "client_emails", ["a@example.com", "b@example.com"]),
        ({"clientEmail": ["a@example.com", "b@example.com"]}, "client_emails", ["a@example.com", "b@example.com"]),
        ({"type": "Profile"}, "type", "profile"),
        ({"encoding": "UTF-16"}, "encoding", "utf-16"),
        ({"encoding": "cp1250"}, "encoding", "cp1250"),
        ({"encoding": "windows-1252"}, "encoding", "cp1252"),
        ({"encoding": "latin1"}, "encoding", "iso8859-1"),
        ({"encoding": "ISO-8859-2"}, "encoding", "iso8859-2"),
        ({"encoding": "utf-8-sig"}, "encoding", "utf-8"),
        ({"delimiter": ";"}, "delimiter", ";"),
        ({"delimiter": "tab"}, "delimiter", "\t"),
        ({"delimiter": "\t"}, "delimiter", "\t"),
        ({"delimiter": "pipe"}, "delimiter", "|"),
        ({"columns": {"age": {"dataType": "Integer"}}}, "columns", None),
    ],
)
def test_accepted_values(extra, attribute, expected):
    manifest = load_manifest(json.dumps({**BASE, **extra}).encode())
    if attribute == "columns":
        assert manifest.columns["age"].data_type == "INTEGER"
        assert manifest.columns["age"].ct_name is None
    else:
        assert getattr(manifest, attribute) == expected


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"filename": "data.csv"}, "unknown key 'filename' — did you mean 'fileName'?"),
        ({"clientemail": "x@example.com"}, "unknown key 'clientemail' — did you mean 'clientEmail'?"),
        ({"colour": 1}, "unknown key 'colour'"),
        (
            {"columns": {"age": {"datatype": "INTEGER"}}},
            "columns.age: unknown key 'datatype' — did you mean 'dataType'?",
        ),
        (
            {"columns": {"price": {"dataType": "DECIMAL"}}},
            "columns.price.dataType: expected one of STRING, INTEGER, FLOAT, BOOLEAN, LONG, found 'DECIMAL'",
        ),
        (
            {"columns": {"age": {"dataType": "INTEGR"}}},
            "columns.age.dataType: expected one of STRING, INTEGER, FLOAT, BOOLEAN, LONG, found 'INTEGR'"
            " — did you mean 'INTEGER'?",
        ),
        ({"columns": {"age": {"ctName": ""}}}, "columns.age.ctName: expected a property name, found ''"),
        ({"columns": {"age": None}}, "columns.age: expected an object, found null"),
        ({"columns": ["age"]}, 'columns: expected an object, found an array ["age"]'),
        ({"type": "events"}, "type: expected 'event' or 'profile', found 'events' — did you mean 'event'?"),
        ({"type": 3}, "type: expected 'event' or 'profile', found 3"),
        ({"fileName": "../etc/passwd"}, "fileName: expected a plain file name in the same folder"),
        ({"fileName": "sub/data.csv"}, "fileName: expected a plain file name in the same folder"),
        ({"fileName": 5}, "fileName: expected a string, found a number 5"),
        ({"clientEmail": "not-an-address"}, "clientEmail: expected email addresses, found 'not-an-address'"),
        ({"clientEmail": []}, "clientEmail: expected at least one email address"),
        ({"encoding": "ascii"}, "encoding: expected one of UTF-8, UTF-16"),
        ({"encoding": "cp1522"}, "— did you mean 'cp1252'?"),
        ({"delimiter": "::"}, "delimiter: expected one of space ' ', tab '\\t', comma ','"),
    ],
)
def test_problems_name_the_key_what_was_expected_and_what_was_found(change, expected):
    error = problems({**BASE, **change})
    assert any(expected in problem for problem in error.problems), error.problems


@pytest.mark.parametrize("key", ["fileName", "type", "clientEmail"])
def test_required_keys(key):
    data = {k: v for k, v in BASE.items() if k != key}
    assert f"{key}: required key is missing" in problems(data).problems


def test_every_problem_is_listed_at_once():
    error = problems({"filename": "a.csv", "type": "x", "clientEmail": "p@example.com"})
    assert len(error.problems) == 3  # unknown key, missing fileName, bad type
    assert error.client_emails == ["p@example.com"]
    assert str(error).startswith("Incorrect details in manifest file: ")


def test_invalid_json_reports_line_and_column_and_still_finds_the_partner():
    raw = b'{\n  "fileName": "a.csv",\n  "clientEmail": ["p@example.com", "q@example.com"]\n  "type": "event"\n}'
    error = problems(raw)
    assert error.problems == ["the manifest is not valid JSON: Expecting ',' delimiter at line 4, column 3"]
    assert error.client_emails == ["p@example.com", "q@example.com"]


def test_truncated_json_still_finds_a_single_address():
    error = problems(b'{"clientEmail": "p@example.com", "fileName": "a.c')
    assert "at line 1" in error.problems[0]
    assert error.client_emails == ["p@example.com"]


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (b"", "the manifest is empty"),
        (b"  \n", "the manifest is empty"),
        (b"[1, 2]", "the manifest must be a JSON object, found an array"),
        (b'"text"', "the manifest must be a JSON object, found a string"),
        (b'{"fileName": "a\xff.csv"}', "the manifest is not UTF-8 text (byte 0xff at line 1)"),
        (
            b'{"type": "event", "type": "profile", "fileName": "a", "clientEmail": "p@example.com"}',
            "duplicate key 'type'",
        ),
    ],
)
def test_unusable_documents(raw, expected):
    assert expected in problems(raw).problems


def test_a_byte_order_mark_is_fine():
    assert load_manifest(b"\xef\xbb\xbf" + json.dumps(BASE).encode()).file_name == "data.csv"


def test_emails_are_recovered_from_a_manifest_with_other_problems():
    error = problems({**BASE, "type": "neither", "clientEmail": "a@example.com,b@example.com"})
    assert error.client_emails == ["a@example.com", "b@example.com"]
