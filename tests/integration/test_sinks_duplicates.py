"""Both sink drivers say how many rows were already stored; Elasticsearch de-duplicates across monthly indices."""

from __future__ import annotations

import json
import urllib.request
from typing import Any

from tests.integration.test_sinks import (  # noqa: F401 - `run` is a fixture
    ACCOUNT,
    JAN_8_2020,
    SinkRunner,
    events_frame,
    profiles_frame,
    run,
)

MARCH_2020 = 1583020800  # 2020-03-01T00:00:00Z


def test_a_reimport_reports_the_events_already_stored(run: SinkRunner) -> None:  # noqa: F811
    rows = [("john", "Purchased", JAN_8_2020 + i, {"n": i}) for i in range(5)]
    first = run(run.sink.write_events(ACCOUNT, events_frame(rows)))
    assert first == [] and first.duplicates == 0
    again = run(run.sink.write_events(ACCOUNT, events_frame([*rows[:3], ("john", "Purchased", JAN_8_2020, {"n": 9})])))
    assert again == [] and again.duplicates == 3
    assert len(run(run.sink.list_events(ACCOUNT, "john"))) == 6


def test_a_repeat_within_one_write_counts_as_already_present(run: SinkRunner) -> None:  # noqa: F811
    row = ("jane", "Viewed", JAN_8_2020, {"Page": 1})
    written = run(run.sink.write_events(ACCOUNT, events_frame([row, row])))
    assert written == [] and written.duplicates == 1
    assert len(run(run.sink.list_events(ACCOUNT, "jane"))) == 1


def test_profile_rows_are_never_duplicates(run: SinkRunner) -> None:  # noqa: F811
    frame = profiles_frame([("john", 1, [["$set", "A", 1]])])
    assert run(run.sink.write_profiles(ACCOUNT, frame)).duplicates == 0
    assert run(run.sink.write_profiles(ACCOUNT, frame)).duplicates == 0


def _count(url: str) -> int:
    urllib.request.urlopen(urllib.request.Request(f"{url}/_refresh", method="POST"), timeout=60).read()
    with urllib.request.urlopen(f"{url}/_count", timeout=60) as response:
        return int(json.loads(response.read())["count"])


def test_an_event_without_ts_imported_again_in_a_later_month_is_stored_once(run: SinkRunner) -> None:  # noqa: F811
    # An empty ts means processing time: the same row (the same id, derived from the cell as written) gets
    # January's processing time at its first import and March's at the second, so another monthly index.
    frame = events_frame([("john", "Purchased", JAN_8_2020, {"Price": 5})])
    assert run(run.sink.write_events(ACCOUNT, frame)).duplicates == 0
    config: Any = run.config
    alias = f"{config.elasticsearch.url}/{config.elasticsearch.index_prefix}-events"
    if config.sink.driver == "elasticsearch":
        _count(alias)  # months apart: the first import is long searchable (refreshed) by the second
    later = frame.with_columns(ts=frame["ts"] * 0 + MARCH_2020 * 1000)
    assert run(run.sink.write_events(ACCOUNT, later)).duplicates == 1
    events = run(run.sink.list_events(ACCOUNT, "john"))
    assert [event["ts"] for event in events] == ["2020-01-08T17:14:27Z"]
    if config.sink.driver == "elasticsearch":
        assert _count(alias) == 1
