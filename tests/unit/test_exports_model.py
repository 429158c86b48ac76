"""Export requests and file names, without servers: what is accepted, what is refused and with which words."""

from __future__ import annotations

import json

import pytest

from daemon.errors import UsageError
from daemon.exports.model import file_name, make_spec, series_label
from daemon.exports.requests import parse_request


def test_file_names_follow_the_reference() -> None:
    assert file_name(7, "20261201080000", "Charged", "20261130", 2, "acme", "csv") == (
        "7-20261201080000-Charged-20261130-2-acme.csv"
    )
    # Separators and slashes never reach a file name; two names differing only there keep apart.
    assert series_label("a/b") != series_label("a-b")
    assert "/" not in series_label("a/b") and "-" not in series_label("x-y")
    assert series_label("App Open") == "App Open"


@pytest.mark.parametrize(
    ("request_body", "reason"),
    [
        (b"{not json", "The export request is not a JSON object"),
        (b"[1]", "The export request is not a JSON object: found a list"),
        (json.dumps({"type": "events", "filename": "x"}).encode(), "unknown key 'filename'"),
        (json.dumps({"type": "rows"}).encode(), "type 'rows': expected events or profiles"),
        (json.dumps({"type": "events", "days": 46}).encode(), "at most 45 days back"),
        (json.dumps({"type": "events", "format": "xls"}).encode(), "format 'xls'"),
        (json.dumps({"type": "events", "clientEmail": "nope"}).encode(), "clientEmail 'nope'"),
        (json.dumps({"type": "events", "events": [1]}).encode(), "events: expected a list of event names"),
        (b"x" * 70_000, "larger than 64 KiB"),
    ],
)
def test_bad_requests_get_one_line_reasons(request_body: bytes, reason: str) -> None:
    with pytest.raises(UsageError) as caught:
        parse_request("acme", request_body)
    assert reason in str(caught.value) and "\n" not in str(caught.value)


def test_a_good_request_is_a_one_time_export_to_sftp() -> None:
    body = {
        "type": "events",
        "events": "Charged",
        "format": "parquet",
        "days": 3,
        "clientEmail": "A@Example.com, b@x.io",
    }
    spec = parse_request("acme", json.dumps(body).encode())
    assert (spec.events, spec.format, spec.days, spec.destination, spec.recurring) == (
        ("Charged",),
        "parquet",
        3,
        "sftp",
        False,
    )
    assert spec.emails == ("A@example.com", "b@x.io") and spec.requested_by == "sftp"
    assert parse_request("acme", b'{"type": "profiles"}').type == "profiles"


def test_profiles_take_no_window_and_no_names() -> None:
    with pytest.raises(UsageError, match="--event selects events"):
        make_spec("acme", "profiles", events=["x"])
    with pytest.raises(UsageError, match="a profiles export takes every profile"):
        make_spec("acme", "profiles", days=3)
