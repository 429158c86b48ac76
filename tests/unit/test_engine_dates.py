"""`$D_` dates are stored as ISO 8601 UTC text, whatever mix of instants a batch holds (the engine formats a
batch's dates from tables of its days, times of day and milliseconds; these pin the text a user sees)."""

from __future__ import annotations

import random
from datetime import UTC, datetime

import pytest

from manifests import rules
from tests.fixtures.engine import manifest, run


def iso(ms: int) -> str:
    """The expected text, from the standard library: seconds, then milliseconds only where there are some."""
    text = datetime.fromtimestamp(ms // 1000, UTC).strftime("%Y-%m-%dT%H:%M:%S")
    return text + (f".{ms % 1000:03d}" if ms % 1000 else "") + "Z"


def cell(ms: int) -> str:
    """How a partner writes it: epoch seconds for a whole second, else epoch milliseconds; ISO 8601 where a
    number would be read in the other unit (seconds from 10^11 on, milliseconds below it)."""
    if ms % 1000 == 0 and ms < 100_000_000_000_000:
        return f"$D_{ms // 1000}"
    return f"$D_{ms}" if ms >= 100_000_000_000 else "$D_" + iso(ms)


EDGES = [0, 1000, 59_999, 86_399_000, 86_400_000, 951_782_400_000, 1_589_274_432_000, 253_402_300_799_000]


@pytest.mark.parametrize(
    "instants",
    [
        pytest.param([1_589_274_432_000 + 1000 * i for i in range(300)], id="whole seconds, a few days"),
        pytest.param([1_589_274_432_000 + 1001 * i for i in range(300)], id="milliseconds, a few days"),
        pytest.param(EDGES, id="1970 to 9999, whole seconds"),
        pytest.param([e + 7 for e in EDGES[:-1]] + [EDGES[-1]], id="1970 to 9999, with milliseconds"),
        pytest.param([random.Random(13).randrange(0, 253_402_300_799_000) for _ in range(300)], id="random, all years"),
        pytest.param(
            [1_589_274_432_000 + random.Random(14).randrange(0, 4096 * 86_400_000) for _ in range(300)],
            id="random, about the table's span",
        ),
    ],
)
@pytest.mark.parametrize("kind", ["profile", "event"])
def test_dates_are_stored_as_iso_text_for_any_mix_of_instants(tmp_path, instants, kind):
    body = "".join(f"u{i},Bought,{cell(ms)},{i}\n" for i, ms in enumerate(instants))
    spec = manifest(kind, {"evt": {"ctName": "evtName"}} if kind == "event" else {"evt": {"ctName": "Event"}})
    result = run(tmp_path, "identity,evt,Born,n\n" + body, spec)
    assert result.bad == []
    if kind == "profile":
        expected = [
            [["$set", "Event", "Bought"], ["$set", "Born", iso(ms)], ["$set", "n", str(i)]]
            for i, ms in enumerate(instants)
        ]
        assert [row["ops"] for row in result.rows] == expected
    else:  # the date between other properties: a JSON object of its own
        assert [row["properties"] for row in result.rows] == [
            {"Born": iso(ms), "n": str(i)} for i, ms in enumerate(instants)
        ]


def test_a_batch_of_dates_with_bad_and_empty_cells_keeps_each_row_in_place(tmp_path):
    body = "u0,$D_1589274432\nu1,\nu2,$D_x\nu3,$D_1589274433123\n"
    result = run(tmp_path, "identity,Born\n" + body, manifest("profile"))
    assert [row.line for row in result.bad] == [4]
    assert [row["ops"] for row in result.rows] == [
        [["$set", "Born", "2020-05-12T09:07:12Z"]],
        [],
        [["$set", "Born", "2020-05-12T09:07:13.123Z"]],
    ]


@pytest.mark.parametrize("data_type", ["STRING", "INTEGER", "FLOAT", "BOOLEAN", "LONG"])
def test_a_typed_column_of_dates_only_stores_their_text_and_blames_a_bad_one_as_a_date(tmp_path, data_type):
    body = "u0,$D_1589274432\nu1,\nu2,$D_1589274432x\n"
    result = run(tmp_path, "identity,Born\n" + body, manifest("profile", {"Born": {"dataType": data_type}}))
    assert [(row.line, [message for _, message in row.problems]) for row in result.bad] == [
        (4, [rules.BAD_DATE + ", found '$D_1589274432x'"])
    ]
    assert [row["ops"] for row in result.rows] == [[["$set", "Born", "2020-05-12T09:07:12Z"]], []]
