"""One suite, both sink drivers: sqlite and Elasticsearch (noida-db) must store and read back the same things."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import polars as pl
import pytest
import xxhash

from daemon.config import Config, load_config
from daemon.errors import RetryableError
from daemon.sinks import RowFailure, Sink, open_sink, profile_ops
from daemon.sinks.base import iso_ms
from daemon.sinks.elasticsearch import ElasticsearchSink
from tests.fixtures.noida import Noida

ACCOUNT = "acme"
JAN_8_2020 = 1578503667  # 2020-01-08T17:14:27Z


def event_id(account: str, identity: str, name: str, ts: int, properties: dict[str, Any]) -> str:
    text = json.dumps([account, identity, name, str(ts), properties], sort_keys=True)
    return str(xxhash.xxh3_128_intdigest(text.encode()))


EventRow = tuple[str, str, int, dict[str, Any]]  # (identity, name, ts in epoch seconds, properties)
ProfileRow = tuple[str, int, Any]  # (identity, ts in epoch seconds, [[op, property, value], ...])


def events_frame(rows: list[EventRow], account: str = ACCOUNT) -> pl.DataFrame:
    """(identity, name, ts in epoch seconds, properties) per row, as the validation engine hands them over."""
    return pl.DataFrame(
        {
            "line": [index + 2 for index in range(len(rows))],
            "event_id": [event_id(account, *row) for row in rows],
            "identity": [row[0] for row in rows],
            "name": [row[1] for row in rows],
            "ts": [row[2] * 1000 for row in rows],
            "properties": [json.dumps(row[3]) for row in rows],
        },
        schema={
            "line": pl.Int64,
            "event_id": pl.Utf8,
            "identity": pl.Utf8,
            "name": pl.Utf8,
            "ts": pl.Int64,
            "properties": pl.Utf8,
        },
    )


def profiles_frame(rows: Sequence[ProfileRow], first_line: int = 2) -> pl.DataFrame:
    """(identity, ts in epoch seconds, [[op, property, value], ...]) per row."""
    return pl.DataFrame(
        {
            "line": [first_line + index for index in range(len(rows))],
            "identity": [row[0] for row in rows],
            "ts": [row[1] * 1000 for row in rows],
            "ops": [json.dumps(row[2]) for row in rows],
        },
        schema={"line": pl.Int64, "identity": pl.Utf8, "ts": pl.Int64, "ops": pl.Utf8},
    )


class SinkRunner:
    """A started sink and the event loop it lives on (its HTTP session belongs to that loop)."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self._runner = asyncio.Runner()
        self.sink: Sink = open_sink(config)

    def __call__(self, coro: Any) -> Any:
        return self._runner.run(coro)

    def close(self) -> None:
        try:
            self(self.sink.stop())
        finally:
            self._runner.close()


def sink_config(data_dir: Path, driver: str, url: str = "", prefix: str = "") -> Config:
    environ = {"INGESTD_DATA_DIR": str(data_dir), "INGESTD_SINK__DRIVER": driver}
    if driver == "elasticsearch":
        environ |= {"INGESTD_ELASTICSEARCH__URL": url, "INGESTD_ELASTICSEARCH__INDEX_PREFIX": prefix}
    return load_config(environ=environ)


def old_sqlite_sink(data_dir: Path, script: str) -> tuple[Config, sqlite3.Connection]:
    """The sqlite sink's config, and its file made in an earlier layout by `script`, open for the test to fill."""
    config = sink_config(data_dir, "sqlite")
    config.sink_db.parent.mkdir(parents=True, exist_ok=True)
    old = sqlite3.connect(config.sink_db)
    old.executescript(script)
    return config, old


def hand_over_prepared(sink: Sink) -> None:
    """Make the sink's writes get their frames as the worker hands them over: through Sink.prepare (which the
    validation thread runs), the first rows and the rest prepared apart, then together (as joined batches are)."""
    for kind, name in (("event", "write_events"), ("profile", "write_profiles")):
        prepare, write = sink.prepare(kind), getattr(sink, name)
        assert prepare is not None

        async def prepared(account: str, frame: pl.DataFrame, prepare: Any = prepare, write: Any = write) -> Any:
            half = frame.height // 2
            if half:
                frame = pl.concat([prepare(frame.head(half)), prepare(frame.slice(half))])
            return await write(account, prepare(frame))

        setattr(sink, name, prepared)


def with_sets(frame: pl.DataFrame) -> pl.DataFrame:
    """Each row as the engine gives it in a batch that neither removes nor deletes: its new profile as one JSON
    object, `sets` ($set: the value, $add: a list of it), and no `ops`, when it only sets and adds and names each
    property once (as the engine's rows do); else its `ops`, and no `sets`."""

    def sets(ops: str | None) -> str | None:
        try:
            elements = json.loads(ops or "")
            made = {key: [value] if op == "$add" else value for op, key, value in elements if op in ("$set", "$add")}
        except (ValueError, TypeError):
            return None  # not the engine's cell (a sink test of a broken one): no object either
        if len(made) < len(elements) or None in [value for _, _, value in elements]:
            return None
        return json.dumps(made, separators=(",", ":"), ensure_ascii=False)

    made = pl.Series([sets(ops) for ops in frame["ops"]], dtype=pl.String)
    if "sets" in frame.columns:  # the engine's own frame: its rows given as sets stay so
        made = frame["sets"].fill_null(made)
    return frame.with_columns(sets=made).with_columns(ops=pl.when(pl.col("sets").is_null()).then(pl.col("ops")))


def hand_over_sets(sink: Sink) -> None:
    """Make the sink's profile writes get rows as the engine's `sets` where it can (with_sets)."""
    write = sink.write_profiles

    async def given(account: str, frame: pl.DataFrame) -> Any:
        return await write(account, with_sets(frame))

    sink.write_profiles = given  # type: ignore[method-assign]


@pytest.fixture(params=["sqlite", "sqlite-prepared", "sqlite-sets", "elasticsearch", "elasticsearch-sets"])
def run(request: pytest.FixtureRequest, data_dir: Path) -> Iterator[SinkRunner]:
    """`run(run.sink.write_events(...))`: a started sink of each driver, stopped at teardown; `sqlite-prepared`:
    the sqlite sink given frames as the worker hands them over (hand_over_prepared); `sqlite-sets`: profile frames
    given as the engine's `sets` objects where a row only sets and adds (hand_over_sets), also to elasticsearch."""
    if request.param.startswith("elasticsearch"):
        server: Noida = request.getfixturevalue("noida")
        config = sink_config(data_dir, "elasticsearch", server.url, request.getfixturevalue("es_prefix"))
    else:
        config = sink_config(data_dir, "sqlite")
    runner = SinkRunner(config)
    if request.param.endswith("-sets"):
        hand_over_sets(runner.sink)
    if request.param == "sqlite-prepared":
        hand_over_prepared(runner.sink)
        # Frames of a few rows prepared in two halves at once too, as large ones are.
        request.getfixturevalue("monkeypatch").setattr(profile_ops, "HALVES_FROM", 4)
    runner(runner.sink.start())
    yield runner
    runner.close()


def test_profile_operations_follow_the_sample_file(run: SinkRunner) -> None:
    sink = run.sink
    failures = run(
        sink.write_profiles(
            ACCOUNT,
            profiles_frame(
                [
                    (
                        "john.doe@example.com",
                        1574668407,
                        [["$set", "Name", "JohnDoe-001"], ["$add", "Playlist", "Rock"]],
                    ),
                    ("jane.doe@example.com", 1574668408, [["$set", "Married", False], ["$remove", "Playlist", "Pop"]]),
                    (
                        "john.roe@example.com",
                        1574668409,
                        [["$set", "Phone", "+918876543213"], ["$set", "Married", True]],
                    ),
                    ("jane.roe@example.com", 1574668410, [["$set", "Phone", "+918876543213"], ["$set", "Age", 28]]),
                    ("jane.roe@example.com", 1574668411, [["$delete", "Phone", None]]),
                ]
            ),
        )
    )
    assert failures == []
    assert run(sink.get_profile(ACCOUNT, "john.doe@example.com")) == {
        "identity": "john.doe@example.com",
        "properties": {"Name": "JohnDoe-001", "Playlist": ["Rock"]},
        "ts": "2019-11-25T07:53:27Z",
    }
    assert run(sink.get_profile(ACCOUNT, "jane.doe@example.com"))["properties"] == {"Married": False}
    assert run(sink.get_profile(ACCOUNT, "john.roe@example.com"))["properties"] == {
        "Phone": "+918876543213",
        "Married": True,
    }
    jane_roe = run(sink.get_profile(ACCOUNT, "jane.roe@example.com"))
    assert jane_roe["properties"] == {"Age": 28}
    assert jane_roe["ts"] == "2019-11-25T07:53:31Z"  # the last row applied


def test_later_rows_win_within_and_across_batches(run: SinkRunner) -> None:
    sink = run.sink
    first = profiles_frame(
        [("a", 100, [["$set", "Age", 21]]), ("a", 50, [["$set", "Age", 22], ["$set", "City", "Pune"]])]
    )
    second = profiles_frame([("a", 10, [["$set", "Age", 23]]), ("b", 10, [["$set", "Age", 40]])], first_line=4)
    assert run(sink.write_profiles(ACCOUNT, first)) == []
    assert run(sink.get_profile(ACCOUNT, "a"))["properties"] == {"Age": 22, "City": "Pune"}
    assert run(sink.write_profiles(ACCOUNT, second)) == []
    profile = run(sink.get_profile(ACCOUNT, "a"))
    # File order wins, not the ts column: the second batch's row is the later one.
    assert profile == {"identity": "a", "properties": {"Age": 23, "City": "Pune"}, "ts": "1970-01-01T00:00:10Z"}
    assert run(sink.get_profile(ACCOUNT, "b"))["properties"] == {"Age": 40}


def test_multi_value_properties_add_without_duplicates_and_remove(run: SinkRunner) -> None:
    sink = run.sink
    rows: list[ProfileRow] = [
        ("u", 1, [["$set", "Tags", "gold"]]),
        ("u", 2, [["$add", "Tags", "silver"], ["$add", "Tags", "gold"], ["$add", "Tags", "silver"]]),
        ("u", 3, [["$add", "Codes", 1], ["$add", "Codes", True], ["$add", "Codes", 1]]),
        ("u", 4, [["$remove", "Tags", "gold"], ["$remove", "Nothing", "x"]]),
        ("u", 5, [["$add", "Single", "x"], ["$remove", "Single", "x"]]),
        ("u", 6, [["$set", "Scalar", "keep"], ["$remove", "Scalar", "other"]]),
    ]
    assert run(sink.write_profiles(ACCOUNT, profiles_frame(rows))) == []
    assert run(sink.get_profile(ACCOUNT, "u"))["properties"] == {
        "Tags": ["silver"],
        "Codes": [1, True],  # true is not 1
        "Scalar": "keep",
    }


def test_writing_the_same_profile_batch_twice_changes_nothing(run: SinkRunner) -> None:
    sink = run.sink
    frame = profiles_frame(
        [
            ("p", 1, [["$set", "Level", 1], ["$add", "Badges", "a"]]),
            ("p", 2, [["$add", "Badges", "b"], ["$remove", "Badges", "a"], ["$set", "Level", 2]]),
            ("q", 3, [["$add", "Badges", "z"]]),
        ]
    )
    run(sink.write_profiles(ACCOUNT, frame))
    once = [run(sink.get_profile(ACCOUNT, identity)) for identity in ("p", "q")]
    run(sink.write_profiles(ACCOUNT, frame))  # the worker retrying a batch after a crash
    assert [run(sink.get_profile(ACCOUNT, identity)) for identity in ("p", "q")] == once
    assert once[0]["properties"] == {"Level": 2, "Badges": ["b"]}


def test_a_bad_profile_operation_fails_its_row_only(run: SinkRunner) -> None:
    sink = run.sink
    frame = profiles_frame([("good", 1, [["$set", "A", 1]]), ("bad", 1, [["$append", "A", 1]])])
    failures = run(sink.write_profiles(ACCOUNT, frame))
    assert [failure.line for failure in failures] == [3]
    assert "Profile operation must be one of $add, $set, $remove, $delete" in failures[0].message
    assert run(sink.get_profile(ACCOUNT, "good"))["properties"] == {"A": 1}


def test_an_ops_cell_that_is_not_one_json_array_fails_its_row_only(run: SinkRunner) -> None:
    frame = profiles_frame([("a", 1, []), ("b", 1, []), ("c", 1, [])]).with_columns(
        ops=pl.Series(['[["$set","A",1]] [["$set","A",2]]', ' [["$set","B",2]]\n', '[["$set","C",3]'])
    )
    failures = run(run.sink.write_profiles(ACCOUNT, frame))
    assert [failure.line for failure in failures] == [2, 4]
    assert run(run.sink.get_profile(ACCOUNT, "a")) is None
    assert run(run.sink.get_profile(ACCOUNT, "b"))["properties"] == {"B": 2}  # surrounding blanks are fine
    assert run(run.sink.get_profile(ACCOUNT, "c")) is None


def test_a_large_profile_batch_merges_with_stored_profiles(run: SinkRunner) -> None:
    # Many identities (many upsert statements), each touched by several rows in and across batches.
    rows = [(f"p{i % 300}", i, [["$set", "Last", i], ["$add", "Seen", i % 4]]) for i in range(1_200)]
    assert run(run.sink.write_profiles(ACCOUNT, profiles_frame(rows[:700]))) == []
    assert run(run.sink.write_profiles(ACCOUNT, profiles_frame(rows[700:], first_line=702))) == []
    for identity in ("p0", "p299"):
        last = max(i for i in range(1_200) if f"p{i % 300}" == identity)
        profile = run(run.sink.get_profile(ACCOUNT, identity))
        assert profile["properties"] == {"Last": last, "Seen": [last % 4]}
        assert profile["ts"] == iso_ms(last * 1000)


def test_events_are_stored_once_and_listed_oldest_first(run: SinkRunner) -> None:
    sink = run.sink
    ring = {"Name": "Awesome Ring - 10", "Price": 123.0, "DeliveryDate": "2020-05-12T09:07:12Z", "DeliveryStatus": True}
    rows: list[EventRow] = [
        ("john.doe@example.com", "Purchased", JAN_8_2020, ring),
        ("john.doe@example.com", "Purchased", JAN_8_2020, {**ring, "Name": "Awesome Ring - 11"}),
        ("john.doe@example.com", "Charged", JAN_8_2020 - 86400, {"Amount": 5}),
        ("jane.doe@example.com", "Purchased", JAN_8_2020, ring),
        ("john.doe@example.com", "Viewed", JAN_8_2020 + 40 * 86400, {}),  # next month: another index in ES
    ]
    assert run(sink.write_events(ACCOUNT, events_frame(rows))) == []
    assert run(sink.write_events(ACCOUNT, events_frame(rows))) == []  # a re-import: nothing new, no failure
    assert run(sink.write_events(ACCOUNT, events_frame(rows[:1]))) == []
    events = run(sink.list_events(ACCOUNT, "john.doe@example.com"))
    assert events == [
        {"name": "Charged", "ts": "2020-01-07T17:14:27Z", "properties": {"Amount": 5}},
        {"name": "Purchased", "ts": "2020-01-08T17:14:27Z", "properties": ring},
        {"name": "Purchased", "ts": "2020-01-08T17:14:27Z", "properties": {**ring, "Name": "Awesome Ring - 11"}},
        {"name": "Viewed", "ts": "2020-02-17T17:14:27Z", "properties": {}},
    ]
    assert len(run(sink.list_events(ACCOUNT, "john.doe@example.com", limit=2))) == 2
    assert [event["name"] for event in run(sink.list_events(ACCOUNT, "jane.doe@example.com"))] == ["Purchased"]


def test_data_is_kept_per_account(run: SinkRunner) -> None:
    sink = run.sink
    run(sink.write_events("other", events_frame([("x", "Purchased", JAN_8_2020, {})], account="other")))
    run(sink.write_profiles("other", profiles_frame([("x", 1, [["$set", "A", 1]])])))
    assert run(sink.list_events(ACCOUNT, "x")) == []
    assert run(sink.get_profile(ACCOUNT, "x")) is None
    assert run(sink.get_profile("other", "x"))["properties"] == {"A": 1}
    assert len(run(sink.list_events("other", "x"))) == 1
    assert run(sink.list_events("other", "nobody")) == []


def test_rows_breaking_the_frame_contract_become_row_failures(run: SinkRunner) -> None:
    sink = run.sink
    frame = events_frame([("a", "Purchased", JAN_8_2020, {"n": 1}), ("a", "Purchased", JAN_8_2020, {"n": 2})])
    frame = frame.with_columns(name=pl.when(pl.col("line") == 3).then(None).otherwise(pl.col("name")))
    failures = run(sink.write_events(ACCOUNT, frame))
    assert failures == [RowFailure(3, "Event could not be stored: it lacks an id, identity, name, ts or properties")]
    assert [event["properties"] for event in run(sink.list_events(ACCOUNT, "a"))] == [{"n": 1}]


def test_event_ids_that_are_not_128_bit_unsigned_decimals_become_row_failures(run: SinkRunner) -> None:
    rows = [("b", "Purchased", JAN_8_2020, {"n": n}) for n in range(4)]
    ids = ["340282366920938463463374607431768211456", "-42", "12ab", "340282366920938463463374607431768211455"]
    frame = events_frame(rows).with_columns(event_id=pl.Series(ids))
    failures = run(run.sink.write_events(ACCOUNT, frame))
    assert [failure.line for failure in failures] == [2, 3, 4]
    assert [event["properties"] for event in run(run.sink.list_events(ACCOUNT, "b"))] == [{"n": 3}]


def test_identities_longer_than_an_elasticsearch_id_are_stored(run: SinkRunner) -> None:
    identity = "x" * 1024  # the longest identity the row rules allow
    assert run(run.sink.write_profiles(ACCOUNT, profiles_frame([(identity, 1, [["$set", "A", "é"]])]))) == []
    assert run(run.sink.get_profile(ACCOUNT, identity))["properties"] == {"A": "é"}


def test_health_is_none_when_the_store_answers(run: SinkRunner) -> None:
    assert run(run.sink.health()) is None


def test_sqlite_sink_uses_its_own_database_file(data_dir: Path) -> None:
    runner = SinkRunner(sink_config(data_dir, "sqlite"))
    try:
        runner(runner.sink.start())
        runner(runner.sink.write_events(ACCOUNT, events_frame([("a", "Purchased", JAN_8_2020, {})])))
    finally:
        runner.close()
    assert runner.config.sink_db.exists()
    assert not runner.config.state_db.exists()
    # Another process (the CLI) reads what the daemon wrote.
    reader = SinkRunner(sink_config(data_dir, "sqlite"))
    try:
        assert [event["name"] for event in reader(reader.sink.list_events(ACCOUNT, "a"))] == ["Purchased"]
    finally:
        reader.close()


def test_sqlite_events_stored_with_an_older_id_column_are_kept_at_start(data_dir: Path) -> None:
    """A sink file from before 2026-11-30 (one event_id column: sha256 bytes, or a decimal string) still lists its
    events after an upgrade, and new imports de-duplicate as usual."""
    config, old = old_sqlite_sink(
        data_dir,
        "CREATE TABLE events (account TEXT NOT NULL, identity TEXT NOT NULL, event_id BLOB NOT NULL, "
        "name TEXT NOT NULL, ts INTEGER NOT NULL, line INTEGER NOT NULL, properties TEXT NOT NULL);"
        "CREATE UNIQUE INDEX events_key ON events (account, identity, event_id);",
    )
    ts = JAN_8_2020 * 1000
    old.executemany(
        "INSERT INTO events VALUES (?, 'a', ?, ?, ?, ?, '{}')",
        [(ACCOUNT, bytes(range(16)), "Old", ts, 2), (ACCOUNT, "12345678901234567890123", "Newer", ts, 3)],
    )
    old.commit()
    old.close()
    runner = SinkRunner(config)
    try:
        runner(runner.sink.start())
        rows: list[EventRow] = [("a", "Purchased", JAN_8_2020 + 1, {})]
        assert runner(runner.sink.write_events(ACCOUNT, events_frame(rows))) == []
        assert runner(runner.sink.write_events(ACCOUNT, events_frame(rows))) == []
        names = [event["name"] for event in runner(runner.sink.list_events(ACCOUNT, "a"))]
    finally:
        runner.close()
    assert names == ["Old", "Newer", "Purchased"]


def test_sqlite_events_stored_before_identity_hashes_are_found_and_not_stored_twice(data_dir: Path) -> None:
    """A sink file from before 2026-12-02 (the unique index on account, identity and id) gets its identity hashes
    at start: an identity's events are still listed (also a non-ASCII one, and not another account's), and
    importing a stored event again stores nothing."""
    config, old = old_sqlite_sink(
        data_dir,
        "CREATE TABLE events (account TEXT NOT NULL, identity TEXT NOT NULL, id_hi INTEGER NOT NULL, "
        "id_lo INTEGER NOT NULL, name TEXT NOT NULL, ts INTEGER NOT NULL, line INTEGER NOT NULL, "
        "properties TEXT NOT NULL);"
        "CREATE UNIQUE INDEX events_key ON events (account, identity, id_hi, id_lo);",
    )
    stored: list[EventRow] = [("a", "Stored", JAN_8_2020, {"n": 1}), ("Zoë", "Stored", JAN_8_2020, {})]
    for account in (ACCOUNT, "other"):
        frame = events_frame(stored, account)
        columns = ["identity", pl.col("event_id").cast(pl.UInt128), "line", "ts", "properties"]
        for identity, number, line, ts, properties in frame.select(columns).iter_rows():
            halves = [(number >> shift) & (2**64 - 1) for shift in (64, 0)]
            id_hi, id_lo = (half - 2**64 if half >= 2**63 else half for half in halves)
            old.execute(
                "INSERT INTO events VALUES (?, ?, ?, ?, 'Stored', ?, ?, ?)",
                (account, identity, id_hi, id_lo, ts, line, properties),
            )
    old.commit()
    old.close()
    runner = SinkRunner(config)
    try:
        runner(runner.sink.start())
        again = runner(runner.sink.write_events(ACCOUNT, events_frame([*stored, ("a", "New", JAN_8_2020, {})])))
        listed = {identity: runner(runner.sink.list_events(ACCOUNT, identity)) for identity in ("a", "Zoë", "zoë")}
    finally:
        runner.close()
    assert again == [] and again.duplicates == 2
    assert [event["name"] for event in listed["a"]] == ["Stored", "New"]
    assert listed["a"][0]["properties"] == {"n": 1}
    assert [event["name"] for event in listed["Zoë"]] == ["Stored"]
    assert listed["zoë"] == []


def _get_json(url: str) -> Any:
    import urllib.request

    with urllib.request.urlopen(url, timeout=10) as response:
        return json.load(response)


def test_elasticsearch_layout_is_monthly_event_indices_behind_an_alias(
    noida: Noida, es_prefix: str, data_dir: Path
) -> None:
    runner = SinkRunner(sink_config(data_dir, "elasticsearch", noida.url, es_prefix))
    try:
        runner(runner.sink.start())
        rows: list[EventRow] = [("a", "Purchased", JAN_8_2020, {}), ("a", "Purchased", JAN_8_2020 + 40 * 86400, {})]
        runner(runner.sink.write_events(ACCOUNT, events_frame(rows)))
        runner(runner.sink.write_profiles(ACCOUNT, profiles_frame([("a", 1, [["$set", "A", 1]])])))
    finally:
        runner.close()
    aliases = _get_json(f"{noida.url}/_alias/{es_prefix}-events")
    assert sorted(aliases) == [f"{es_prefix}-events-2020.01", f"{es_prefix}-events-2020.02"]
    profile = _get_json(f"{noida.url}/{es_prefix}-profiles/_doc/{ACCOUNT}:a")
    assert profile["_source"]["properties"] == {"A": 1}


def test_elasticsearch_outage_raises_retryable_and_recovers(make_noida: Any, es_prefix: str, data_dir: Path) -> None:
    server: Noida = make_noida()
    runner = SinkRunner(sink_config(data_dir, "elasticsearch", server.url, es_prefix))
    sink = runner.sink
    assert isinstance(sink, ElasticsearchSink)
    sink.attempts, sink.first_delay = 2, 0.05  # keep the test short; the behaviour is the same
    frame = events_frame([("a", "Purchased", JAN_8_2020, {"n": 1})])
    try:
        runner(sink.start())
        server.stop()
        with pytest.raises(RetryableError, match=f"elasticsearch unreachable at {server.url}"):
            runner(sink.write_events(ACCOUNT, frame))
        assert runner(sink.health()).startswith(f"elasticsearch unreachable at {server.url}")
        server.start()
        deadline = time.monotonic() + 30
        while runner(sink.health()) is not None:
            assert time.monotonic() < deadline, "sink never saw Elasticsearch again"
            time.sleep(0.1)
        assert runner(sink.write_events(ACCOUNT, frame)) == []  # the worker retries the same batch
        assert len(runner(sink.list_events(ACCOUNT, "a"))) == 1
    finally:
        runner.close()


def test_elasticsearch_down_at_start_does_not_stop_the_daemon(make_noida: Any, es_prefix: str, data_dir: Path) -> None:
    server: Noida = make_noida()
    server.stop()
    runner = SinkRunner(sink_config(data_dir, "elasticsearch", server.url, es_prefix))
    assert isinstance(runner.sink, ElasticsearchSink)
    runner.sink.attempts, runner.sink.first_delay = 1, 0.05
    try:
        runner(runner.sink.start())  # logs that Elasticsearch is unavailable, does not raise
        server.start()
        # The first write creates the templates it could not create at start.
        assert runner(runner.sink.write_events(ACCOUNT, events_frame([("a", "Purchased", JAN_8_2020, {})]))) == []
        assert len(runner(runner.sink.list_events(ACCOUNT, "a"))) == 1
    finally:
        runner.close()


def test_elasticsearch_refusals_become_row_failures(noida: Noida, es_prefix: str, data_dir: Path) -> None:
    runner = SinkRunner(sink_config(data_dir, "elasticsearch", noida.url, es_prefix))
    try:
        runner(runner.sink.start())
        january = ("a", "Purchased", JAN_8_2020, {"n": 1})
        runner(runner.sink.write_events(ACCOUNT, events_frame([january])))
        # An operator made January's index read-only: its rows fail, February's are stored.
        import urllib.request

        # Searchable, as a stored event is by the next import: it is found already present, not refused.
        urllib.request.urlopen(urllib.request.Request(f"{noida.url}/_refresh", method="POST"), timeout=10).close()

        request = urllib.request.Request(
            f"{noida.url}/{es_prefix}-events-2020.01/_settings",
            data=json.dumps({"index.blocks.write": True}).encode(),
            method="PUT",
            headers={"content-type": "application/json"},
        )
        urllib.request.urlopen(request, timeout=10).close()
        rows = [january, ("a", "Purchased", JAN_8_2020, {"n": 2}), ("a", "Purchased", JAN_8_2020 + 40 * 86400, {})]
        failures = runner(runner.sink.write_events(ACCOUNT, events_frame(rows)))
        # The new January row is refused; the one already stored is skipped (and counted) before the bulk.
        assert [failure.line for failure in failures] == [3] and failures.duplicates == 1
        assert "blocked" in failures[0].message
        assert [event["ts"] for event in runner(runner.sink.list_events(ACCOUNT, "a"))] == [
            "2020-01-08T17:14:27Z",
            "2020-02-17T17:14:27Z",
        ]
    finally:
        runner.close()


def test_identities_and_names_with_special_characters_round_trip(run: SinkRunner) -> None:
    identity = 'a/b?c#d "quoted" back\\slash é 中'
    name = 'Bought "it"\\now'
    properties = {"Note": 'line\nbreak "q"', "Ünïcode": "✓"}
    assert run(run.sink.write_events(ACCOUNT, events_frame([(identity, name, JAN_8_2020, properties)]))) == []
    assert run(run.sink.list_events(ACCOUNT, identity)) == [
        {"name": name, "ts": "2020-01-08T17:14:27Z", "properties": properties}
    ]
    assert run(run.sink.write_profiles(ACCOUNT, profiles_frame([(identity, 1, [["$set", "Note", 'x "y"']])]))) == []
    assert run(run.sink.get_profile(ACCOUNT, identity))["properties"] == {"Note": 'x "y"'}


def test_sqlite_health_reports_a_missing_database(data_dir: Path) -> None:
    runner = SinkRunner(sink_config(data_dir, "sqlite"))
    try:
        runner(runner.sink.start())
        assert runner(runner.sink.health()) is None
        runner.config.sink_db.unlink()  # an operator removed the file under a running daemon
        reason = runner(runner.sink.health())
        assert reason is not None and reason.startswith(f"sqlite sink {runner.config.sink_db}")
        assert not runner.config.sink_db.exists()
    finally:
        runner.close()


def test_an_account_with_a_quote_stays_a_plain_value(run: SinkRunner) -> None:
    # Accounts are validated upstream; the sink still never lets one change a statement.
    account = "o'brien"
    assert (
        run(run.sink.write_events(account, events_frame([("a", "Purchased", JAN_8_2020, {})], account=account))) == []
    )
    assert len(run(run.sink.list_events(account, "a"))) == 1
    assert run(run.sink.list_events("o", "a")) == []


def test_a_large_batch_with_repeats_stores_each_event_once_in_line_order(run: SinkRunner) -> None:
    # Big enough to span many insert statements: repeats land in the same and in other statements.
    rows = [(f"u{i % 7}", "Viewed", JAN_8_2020 + i % 5, {"n": i % 40}) for i in range(1_000)]
    assert run(run.sink.write_events(ACCOUNT, events_frame(rows))) == []
    assert run(run.sink.write_events(ACCOUNT, events_frame(rows[500:] + rows[:500]))) == []
    first_seen = {json.dumps(row): row for row in reversed(rows)}  # each distinct event at its first line
    distinct = sorted(first_seen.values(), key=rows.index)
    assert len(distinct) == 280
    for identity in ("u0", "u6"):
        # Oldest first; events with the same ts in the order they first appear in the file.
        expected = sorted((row for row in distinct if row[0] == identity), key=lambda row: row[2])
        events = run(run.sink.list_events(ACCOUNT, identity, limit=10_000))
        assert [(event["ts"], event["properties"]) for event in events] == [
            (iso_ms(row[2] * 1000), row[3]) for row in expected
        ]


def test_every_operation_over_rows_of_one_identity_in_one_batch_and_across_batches(run: SinkRunner) -> None:
    sink = run.sink
    first = [
        ("v", 1, [["$set", "Name", "Ann"], ["$set", "Age", 30], ["$add", "Tags", "a"]]),
        ("w", 1, [["$set", "Plan", "gold"]]),
        ("v", 2, [["$add", "Tags", "b"], ["$add", "Tags", "a"], ["$set", "Score", 1.5], ["$set", "Vip", True]]),
        ("v", 3, [["$remove", "Tags", "a"], ["$delete", "Age", None], ["$add", "Mixed", 1], ["$add", "Mixed", "1"]]),
        ("w", 2, [["$add", "Plan", "silver"], ["$set", "Name", "Wes"]]),
        ("v", 4, [["$add", "Mixed", True], ["$add", "Tags", "a"], ["$set", "Age", 31]]),
    ]
    second = [
        ("v", 5, [["$add", "Tags", "c"], ["$remove", "Mixed", "1"], ["$add", "Score", 1.5]]),
        ("w", 5, [["$remove", "Plan", "gold"], ["$remove", "Plan", "silver"], ["$add", "Codes", 7]]),
        ("v", 6, [["$remove", "Tags", "b"], ["$delete", "Vip", None], ["$remove", "Name", "Bob"]]),
        ("x", 6, []),  # a row with no operation still makes (or touches) the profile
        ("w", 7, [["$set", "Plan", "bronze"], ["$remove", "Plan", "bronze"], ["$add", "Codes", 7]]),
    ]
    assert run(sink.write_profiles(ACCOUNT, profiles_frame(first))) == []
    assert run(sink.get_profile(ACCOUNT, "v"))["properties"] == {
        "Name": "Ann",
        "Tags": ["b", "a"],
        "Score": 1.5,
        "Vip": True,
        "Mixed": [1, "1", True],
        "Age": 31,
    }
    assert run(sink.get_profile(ACCOUNT, "w"))["properties"] == {"Plan": ["gold", "silver"], "Name": "Wes"}
    assert run(sink.write_profiles(ACCOUNT, profiles_frame(second, first_line=8))) == []
    v = run(sink.get_profile(ACCOUNT, "v"))
    assert v["properties"] == {"Name": "Ann", "Tags": ["a", "c"], "Score": [1.5], "Mixed": [1, True], "Age": 31}
    assert v["ts"] == iso_ms(6000)
    assert run(sink.get_profile(ACCOUNT, "w")) == {
        "identity": "w",
        "properties": {"Name": "Wes", "Codes": [7]},
        "ts": iso_ms(7000),
    }
    assert run(sink.get_profile(ACCOUNT, "x"))["properties"] == {}


def _reference(batches: list[list[tuple[str, int, list[list[Any]]]]]) -> dict[str, tuple[int, dict[str, Any]]]:
    """The rows applied one by one in order by base.apply_ops: {identity: (ts ms, properties)}."""
    from daemon.sinks.base import apply_ops

    profiles: dict[str, tuple[int, dict[str, Any]]] = {}
    for rows in batches:
        for identity, ts, ops in rows:
            properties = profiles.get(identity, (0, {}))[1]
            apply_ops(properties, json.loads(json.dumps(ops)))
            profiles[identity] = (ts * 1000, properties)
    return profiles


def _random_batches(seed: int, batches: int, rows: int, people: int) -> list[list[tuple[str, int, list[list[Any]]]]]:
    import random

    values: list[Any] = ["a", "b", "é", "x\u00e9", 'q"uote', "back\\slash", "1", 1, 2, 2**40, 1.5, True, False, 0]
    keys = ["Tags", "Name", "é", 'k"q']
    ops = ["$set", "$add", "$remove", "$delete"]
    rng = random.Random(seed)
    return [
        [
            (
                f"u{rng.randrange(people)}",
                rng.randrange(1000),
                [
                    [op, rng.choice(keys), None if op == "$delete" else rng.choice(values)]
                    for op in rng.choices(ops, weights=[3, 4, 3, 1], k=rng.randrange(5))
                ],
            )
            for _ in range(rows)
        ]
        for _ in range(batches)
    ]


def _write_and_match_the_reference(
    run: SinkRunner, batches: list[list[tuple[str, int, list[list[Any]]]]], spaced_first: bool
) -> None:
    """Write the batches in turn, in the engine's compact form (the first in json.dumps' spaced one if
    `spaced_first`: both are read alike); each profile is then what base.apply_ops makes of the rows in order."""
    line = 2
    for number, rows in enumerate(batches):
        frame = profiles_frame(rows, first_line=line)
        if number or not spaced_first:
            frame = frame.with_columns(ops=pl.Series([json.dumps(row[2], separators=(",", ":")) for row in rows]))
        assert run(run.sink.write_profiles(ACCOUNT, frame)) == []
        line += len(rows)
    for identity, (ts, properties) in _reference(batches).items():
        profile = run(run.sink.get_profile(ACCOUNT, identity))
        assert json.dumps(profile["properties"], sort_keys=True) == json.dumps(properties, sort_keys=True), identity
        assert profile["ts"] == iso_ms(ts)


def test_random_operations_give_what_applying_the_rows_one_by_one_gives(run: SinkRunner) -> None:
    """Many rows per identity, in one batch and across batches, every operation over mixed values: each profile is
    what base.apply_ops makes of the rows in file order (the same types: 1 is not 1.0 is not true)."""
    batches = _random_batches(seed=14, batches=3, rows=150, people=12)
    _write_and_match_the_reference(run, batches, spaced_first=True)


def test_compact_rows_of_identities_twice_in_a_batch_far_apart_give_the_row_by_row_result(run: SinkRunner) -> None:
    """Most identities on one row, some on two rows half a batch apart (a large batch's halves are prepared at
    once): both rows apply, in order, over new and stored profiles."""
    batches: list[list[tuple[str, int, list[list[Any]]]]] = []
    for start in (0, 1000):
        rows: list[tuple[str, int, list[list[Any]]]] = []
        for i in range(80):  # p0 ... p39, then each again 40 rows later
            rows.append((f"p{i % 40}", start + i, [["$set", "n", start + i], ["$add", "tags", f"t{start + i}"]]))
        for i in range(20):
            rows.append((f"solo{start + i}", i, [["$set", "n", i], ["$delete", "gone", None]]))
        batches.append(rows)
    _write_and_match_the_reference(run, batches, spaced_first=False)


def test_cells_the_columnar_path_leaves_to_row_by_row_still_apply_in_order(run: SinkRunner) -> None:
    # Nested values, a null that is set, whitespace the engine never writes: applied in order with the plain rows.
    frame = profiles_frame(
        [
            ("n", 1, [["$set", "Obj", {"a": 1}], ["$add", "Tags", "a"]]),
            ("n", 2, [["$add", "Tags", "b"], ["$set", "Gone", None]]),
            ("m", 3, [["$add", "Tags", "a"]]),
            ("n", 4, [["$remove", "Tags", "a"], ["$add", "List", [1, 2]]]),
        ]
    ).with_columns(ops=pl.when(pl.col("line") == 4).then(pl.lit(' [ ["$add" , "Tags", "a"] ]\t')).otherwise("ops"))
    assert run(run.sink.write_profiles(ACCOUNT, frame)) == []
    assert run(run.sink.get_profile(ACCOUNT, "n"))["properties"] == {
        "Obj": {"a": 1},
        "Tags": ["b"],
        "Gone": None,
        "List": [[1, 2]],
    }
    assert run(run.sink.get_profile(ACCOUNT, "m"))["properties"] == {"Tags": ["a"]}


def test_one_row_per_identity_over_stored_and_new_profiles_gives_the_row_by_row_result(run: SinkRunner) -> None:
    """The engine's usual file (each identity once per batch, compact cells) over stored profiles and new ones:
    every operation, a property named twice in one cell, values holding the cell's own punctuation, an empty
    cell. Each profile is what base.apply_ops makes of the rows in file order."""
    stored: list[tuple[str, int, list[list[Any]]]] = [
        ("s1", 1, [["$set", "Name", "Ann"], ["$add", "Tags", "a"], ["$set", "Age", 30]]),
        ("s2", 1, [["$set", "Plan", "gold"], ["$add", "Tags", 1]]),
        ("s3", 1, [["$set", "Tags", "solo"], ["$set", "Gone", True]]),
        ("s4", 1, [["$set", "Keep", 1.5]]),
    ]
    batch: list[tuple[str, int, list[list[Any]]]] = [
        ("s1", 2, [["$set", "Name", "Bea"], ["$delete", "Age", None], ["$set", "City", 'x],["$set","y']]),
        ("s2", 2, [["$add", "Tags", 1.0], ["$add", "Tags", "1"], ["$remove", "Plan", "gold"]]),
        ("s3", 2, [["$add", "Tags", "solo"], ["$delete", "Gone", None]]),
        ("s4", 2, []),
        ("n1", 2, [["$add", "Tags", "a"], ["$remove", "Tags", "a"], ["$delete", "None", None], ["$set", "é", "ü"]]),
        ("n2", 2, [["$set", "Name", "Cy"], ["$add", "Tags", True], ["$add", "More", 0], ["$remove", "X", 1]]),
        ("n3", 2, [["$set", "K", 1], ["$delete", "K", None], ["$set", "L", '],["']]),
        ("n4", 2, [["$set", "Empty", ""], ["$set", "Neg", -0.5e-3], ["$add", "Big", 2**40]]),
    ]
    frames = [profiles_frame(stored), profiles_frame(batch, first_line=2 + len(stored))]
    for frame in frames:  # the engine's compact form
        compact = frame["ops"].map_elements(lambda text: json.dumps(json.loads(text), separators=(",", ":")))
        assert run(run.sink.write_profiles(ACCOUNT, frame.with_columns(ops=compact))) == []
    for identity, (ts, properties) in _reference([stored, batch]).items():
        profile = run(run.sink.get_profile(ACCOUNT, identity))
        assert profile["properties"] == properties, identity
        assert json.dumps(profile["properties"], sort_keys=True) == json.dumps(properties, sort_keys=True), identity
        assert profile["ts"] == iso_ms(ts)


def test_compact_cells_whose_keys_or_values_start_with_a_comma_are_stored_as_written(run: SinkRunner) -> None:
    """A compact cell (the engine's form) where a key or a string value starts with a comma or holds the cell's
    punctuation (`",`, `],`): each profile, new or stored, is what base.apply_ops makes of the rows."""
    stored: list[tuple[str, int, list[list[Any]]]] = [("s1", 1, [["$set", "Name", ",Ann"], ["$set", "Old", 1]])]
    batch: list[tuple[str, int, list[list[Any]]]] = [
        ("s1", 2, [["$set", ",City", ",x"], ["$delete", "Old", None], ["$set", "Note", "a],b"]]),
        ("n1", 2, [["$set", "Name", ",Bo"], ["$add", "Tags", ",t"], ["$set", "Age", 3]]),
        ("n2", 2, [["$add", ",Tags", ","], ["$set", "Empty", ""], ["$remove", "X", ",y"]]),
    ]
    for first_line, rows in ((2, stored), (3, batch)):
        frame = profiles_frame(rows, first_line=first_line)
        compact = frame["ops"].map_elements(lambda text: json.dumps(json.loads(text), separators=(",", ":")))
        assert run(run.sink.write_profiles(ACCOUNT, frame.with_columns(ops=compact))) == []
    for identity, (ts, properties) in _reference([stored, batch]).items():
        profile = run(run.sink.get_profile(ACCOUNT, identity))
        assert profile["properties"] == properties, identity
        assert profile["ts"] == iso_ms(ts)


def test_random_compact_rows_one_per_identity_with_punctuation_give_the_row_by_row_result(run: SinkRunner) -> None:
    """The engine's usual batches (each identity once, compact cells) over new and stored profiles, with keys and
    string values made of the cell's own punctuation: each profile is what base.apply_ops makes of the rows."""
    import random

    rng = random.Random(1414)
    texts = ["]", "],", ",", ",]", "[", "],[", "$set", ":", "{", "}", "", " ", "x]]", "a,b", '"', "é"]
    values: list[Any] = [*texts, 1, 2, 1.5, True, False, 0, 2**40]
    keys = ["k", ",k", "k]", "],", "é", "$add", "", "[", "k,"]
    ops = ["$set", "$add", "$remove", "$delete"]
    batches = [
        [
            (
                f"u{person}",
                rng.randrange(1000),
                [
                    [op, rng.choice(keys), None if op == "$delete" else rng.choice(values)]
                    for op in rng.choices(ops, weights=[4, 3, 2, 1], k=rng.randrange(5))
                ],
            )
            for person in rng.sample(range(40), 30)
        ]
        for _ in range(4)
    ]
    _write_and_match_the_reference(run, batches, spaced_first=False)


def test_adds_to_stored_profiles_in_compact_rows_give_the_row_by_row_result(run: SinkRunner) -> None:
    """Each identity once per batch, compact cells, $add over what is stored: lists, scalars, null, objects, values
    the same only by JSON type (1 and 1.0 are, 1 and true and "1" are not), numbers too long to compare in SQL,
    new properties, a $set and $delete beside. Each profile is what base.apply_ops makes of the rows."""
    first: list[tuple[str, int, list[list[Any]]]] = [
        ("a", 1, [["$set", "L", 1], ["$add", "L", "x"], ["$add", "L", True], ["$set", "S", 2.5]]),
        ("b", 1, [["$set", "S", "1"], ["$set", "N", None], ["$set", "O", {"k": [1]}], ["$set", "D", 1]]),
        ("c", 1, [["$add", "T", 2**40], ["$set", "F", False], ["$set", "Z", 0]]),
    ]
    second: list[tuple[str, int, list[list[Any]]]] = [
        ("a", 2, [["$add", "L", 1.0], ["$add", "S", 2.5], ["$add", "New", "n"], ["$set", "X", 1]]),
        ("b", 2, [["$add", "S", 1], ["$add", "N", "v"], ["$add", "O", "k"], ["$delete", "D", None]]),
        ("c", 2, [["$add", "T", 2**40 + 1], ["$add", "F", False], ["$add", "Z", -0.0]]),
    ]
    third: list[tuple[str, int, list[list[Any]]]] = [
        ("a", 3, [["$add", "L", "x"], ["$add", "S", True], ["$add", "X", 1]]),
        ("b", 3, [["$add", "S", "1"], ["$add", "N", "v"], ["$add", "Big", 12345678901234567890]]),
        ("c", 3, [["$add", "T", 1e300], ["$add", "F", 0]]),
    ]
    line = 2
    for rows in (first, second, third):
        frame = profiles_frame(rows, first_line=line)
        frame = frame.with_columns(ops=pl.Series([json.dumps(row[2], separators=(",", ":")) for row in rows]))
        assert run(run.sink.write_profiles(ACCOUNT, frame)) == []
        line += len(rows)
    for identity, (ts, properties) in _reference([first, second, third]).items():
        profile = run(run.sink.get_profile(ACCOUNT, identity))
        assert json.dumps(profile["properties"], sort_keys=True) == json.dumps(properties, sort_keys=True), identity
        assert profile["ts"] == iso_ms(ts)


def test_adds_beside_escaped_strings_over_stored_profiles_give_the_row_by_row_result(run: SinkRunner) -> None:
    """Compact cells whose strings hold escapes (a quote, a backslash, a newline) beside $add, for new and for
    stored profiles: each profile is what base.apply_ops makes of the rows."""
    first: list[tuple[str, int, list[list[Any]]]] = [
        ("a", 1, [["$set", "Name", 'A "q"'], ["$add", "Tags", "x"]]),
        ("b", 1, [["$set", "Path", "c:\\d"], ["$set", "Tags", ["y"]]]),
    ]
    second: list[tuple[str, int, list[list[Any]]]] = [
        ("a", 2, [["$set", "Name", "line\nbreak"], ["$add", "Tags", 'z "w"']]),
        ("b", 2, [["$set", "Path", 'e"f'], ["$add", "Tags", "y"], ["$add", "Tags2", "\\"]]),
        ("c", 2, [["$set", "Name", '"C"'], ["$add", "Tags", "t"]]),
    ]
    line = 2
    for rows in (first, second):
        frame = profiles_frame(rows, first_line=line)
        frame = frame.with_columns(ops=pl.Series([json.dumps(row[2], separators=(",", ":")) for row in rows]))
        assert run(run.sink.write_profiles(ACCOUNT, frame)) == []
        line += len(rows)
    for identity, (ts, properties) in _reference([first, second]).items():
        profile = run(run.sink.get_profile(ACCOUNT, identity))
        assert json.dumps(profile["properties"], sort_keys=True) == json.dumps(properties, sort_keys=True), identity
        assert profile["ts"] == iso_ms(ts)


def _stored_events(config: Config) -> int:
    """Events another process (the CLI, an export) sees in the sink file."""
    conn = sqlite3.connect(f"file:{config.sink_db}?mode=ro", uri=True, timeout=30)
    try:
        return int(conn.execute("SELECT count(*) FROM events WHERE account = ?", (ACCOUNT,)).fetchone()[0])
    finally:
        conn.close()


def test_sqlite_held_writes_are_stored_at_commit_and_undone_by_abort(data_dir: Path) -> None:
    """The worker's batches in one open transaction: nobody else sees them before the commit (a crash then
    loses exactly what the last checkpoint does not cover), an abort leaves the store as at the last commit,
    and another job's write waits for the commit and says it is waiting."""
    config = sink_config(data_dir, "sqlite")
    runner = SinkRunner(config)
    sink = runner.sink
    rows = [("a", "Purchased", JAN_8_2020 + i, {"n": i}) for i in range(6)]
    try:
        runner(sink.start())
        held = sink.held()
        assert held is not None

        async def held_then_commit() -> tuple[int, int, bool]:
            await held.write_events(ACCOUNT, events_frame(rows[:2]))
            await held.write_events(ACCOUNT, events_frame(rows[2:4]))
            before = await asyncio.to_thread(_stored_events, config)
            other = asyncio.ensure_future(sink.write_events(ACCOUNT, events_frame(rows[4:])))
            await asyncio.sleep(0.2)
            waiting = held.contended and not other.done()
            await held.commit()
            await other
            return before, await asyncio.to_thread(_stored_events, config), waiting

        assert runner(held_then_commit()) == (0, 6, True)

        async def held_then_abort() -> int:
            again = sink.held()
            assert again is not None
            more: list[EventRow] = [("b", "Viewed", JAN_8_2020 + i, {}) for i in range(3)]
            await again.write_events(ACCOUNT, events_frame(more))
            await again.abort()
            return len(await sink.list_events(ACCOUNT, "b"))

        assert runner(held_then_abort()) == 0
        assert _stored_events(config) == 6
    finally:
        runner.close()


@pytest.mark.parametrize("prepared", [False, True], ids=["plain", "prepared"])
def test_sqlite_writes_larger_than_a_slice_of_python_values_store_every_row(data_dir: Path, prepared: bool) -> None:
    """A write's rows become Python values a slice at a time, a statement of many rows at a time: a write
    spanning several slices and statements (and a partial last one of each) stores each row once, as written."""
    config = sink_config(data_dir, "sqlite")
    runner = SinkRunner(config)
    if prepared:
        hand_over_prepared(runner.sink)
    count = 25_123  # over two slices of 10,000 rows
    try:
        runner(runner.sink.start())
        events = [(f"u{i % 1000}", "Viewed", JAN_8_2020 + i, {"n": i}) for i in range(count)]
        assert runner(runner.sink.write_events(ACCOUNT, events_frame(events))) == []
        profiles = [(f"p{i}", i, [["$set", "n", i], ["$add", "tags", f"t{i % 3}"]]) for i in range(count)]
        assert runner(runner.sink.write_profiles(ACCOUNT, profiles_frame(profiles))) == []
        for identity in ("u0", "u999"):
            listed = runner(runner.sink.list_events(ACCOUNT, identity, limit=100))
            number = int(identity[1:])
            assert [event["properties"]["n"] for event in listed] == list(range(number, count, 1000))
        for i in (0, 9_999, 10_000, 19_999, 20_000, count - 1):
            profile = runner(runner.sink.get_profile(ACCOUNT, f"p{i}"))
            assert profile is not None and profile["properties"] == {"n": i, "tags": [f"t{i % 3}"]}
        conn = sqlite3.connect(f"file:{config.sink_db}?mode=ro", uri=True, timeout=30)
        try:
            stored = conn.execute("SELECT (SELECT count(*) FROM events), (SELECT count(*) FROM profiles)").fetchone()
        finally:
            conn.close()
        assert stored == (count, count)
    finally:
        runner.close()


def test_the_engines_frames_imported_twice_give_the_row_by_row_profiles(run: SinkRunner, tmp_path: Path) -> None:
    """A profile file validated by the engine, in batches given as `sets` (only $set and $add: $add values as
    lists, strings with quotes, brackets and `":`) and as `ops` (a batch that removes), written twice: each
    profile is what applying the rows one by one, twice, gives (base.apply_ops)."""
    from daemon.sinks.base import apply_ops
    from manifests.model import load_manifest
    from manifests.validate import validate_csv

    values = ["plain", 'say "hi"', 'a":[b', "x,y]", "é", "back\\slash", "7"]
    lines = ["identity,Name,Tags,Tags.operation,Score"]
    for i in range(60):
        op = "$remove" if 40 <= i < 45 else ("$add" if i % 3 else "")
        lines.append(f'u{i % 13},"{values[i % 7].replace(chr(34), chr(34) * 2)}",{values[(i * 5) % 7]},{op},{i}')
    path = tmp_path / "profiles.csv"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    manifest = load_manifest(
        json.dumps({"fileName": "profiles.csv", "type": "profile", "clientEmail": "p@example.com"}).encode()
    )
    batches = [
        batch.profiles
        for batch in validate_csv(path, manifest, account=ACCOUNT, processing_ts=JAN_8_2020, batch_rows=9)
        if batch.profiles is not None
    ]
    assert any(frame["ops"].null_count() == frame.height for frame in batches)  # batches given as sets
    assert any(frame["sets"].null_count() == frame.height for frame in batches)  # and as ops
    expected: dict[str, dict[str, Any]] = {}
    for _ in range(2):
        for frame in batches:
            assert run(run.sink.write_profiles(ACCOUNT, frame)) == []
            for identity, ops in profile_ops.with_ops(frame).select("identity", "ops").iter_rows():
                apply_ops(expected.setdefault(identity, {}), json.loads(ops))
    for identity, properties in expected.items():
        assert run(run.sink.get_profile(ACCOUNT, identity))["properties"] == properties
