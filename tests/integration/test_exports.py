"""Exports, one suite for both sinks: each format read back with its own standard reader equals what the sink holds;
chunk series; recurring windows; unknown names; bad requests."""

from __future__ import annotations

import csv
import io
import json
import time
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest

from daemon.commands.exports import create_export
from daemon.config import Config, load_config
from daemon.errors import UsageError
from daemon.exports import texts
from daemon.exports.model import make_spec
from daemon.exports.selection import SQLiteSelection
from daemon.exports.service import ExportService
from daemon.exports.store import ExportStore
from daemon.store import StateDB
from tests.fixtures.noida import Noida
from tests.integration.test_sinks import SinkRunner, events_frame, old_sqlite_sink, profiles_frame

ACCOUNT = "acme"
NOW = int(time.time())
FIXED = {"identity", "ts", "eventName"}


def event_rows(count: int, offset: int = 0, names: tuple[str, ...] = ("Charged", "App Open", "a/b")) -> list[Any]:
    """(identity, name, ts, properties): consistent types per property, strings that need quoting or escaping."""
    rows = []
    for index in range(offset, offset + count):
        props: dict[str, Any] = {"amount": index, "price": index + 0.5, "ok": index % 2 == 0}
        props["note"] = f'n{index}, "quoted" <&> é\nline' if index % 5 == 0 else f"n{index}"
        if index % 3 == 0:
            props["tags"] = [f"t{index}", "x"]
        if index % 7 == 0:
            props[f"only{index % 4}"] = "rare"
        rows.append((f"user{index % 11}", names[index % len(names)], NOW - 3600 * (index % 50) - index, props))
    return rows


class Env:
    """A started sink of one driver, the config pointing at it, and the exports component (runs in this thread)."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.sink = SinkRunner(config)
        self.sink(self.sink.sink.start())
        self.db = StateDB(config.state_db)
        self.store = ExportStore(self.db)
        self.service = ExportService(config, self.db)

    def write(self, rows: list[Any]) -> None:
        assert self.sink(self.sink.sink.write_events(ACCOUNT, events_frame(rows))) == []
        self.settle()

    def settle(self) -> None:
        refresh = getattr(self.sink.sink, "client", None)
        if self.config.sink.driver == "elasticsearch" and refresh is not None:
            self.sink(refresh.indices.refresh(index=f"{self.config.elasticsearch.index_prefix}-*"))

    def export(self, type: str = "events", **options: Any) -> int:
        export_id, _ = create_export(self.config, make_spec(ACCOUNT, type, **options))
        return export_id

    def run(self, export_id: int) -> dict[str, Any]:
        self.store.run_now(export_id)
        self.service.run_one(export_id)
        row = self.store.get(export_id)
        assert row is not None
        return self.store.describe(row)

    def stored_events(self, identities: set[str]) -> set[tuple[str, str, str, str]]:
        found = set()
        for identity in identities:
            for item in self.sink(self.sink.sink.list_events(ACCOUNT, identity)):
                found.add((identity, item["name"], item["ts"], _canon(item["properties"])))
        return found

    def files(self, shown: dict[str, Any], run: int = -1) -> list[Path]:
        folder = self.config.drop_root / ACCOUNT
        return [folder / item["location"] for item in shown["runs"][run]["files"]]

    def close(self) -> None:
        self.sink.close()
        self.db.close()


def _canon(properties: dict[str, Any]) -> str:
    return json.dumps(properties, sort_keys=True)


def _iso(compact: str | int) -> str:
    """The reference's yyyymmddHHMMSS as the sink's ISO 8601."""
    return datetime.strptime(str(compact), "%Y%m%d%H%M%S").replace(tzinfo=UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, separators=(",", ":"), ensure_ascii=False)


@pytest.fixture(params=["sqlite", "elasticsearch"])
def env(request: pytest.FixtureRequest, data_dir: Path) -> Iterator[Env]:
    environ = {"INGESTD_DATA_DIR": str(data_dir), "INGESTD_SINK__DRIVER": request.param}
    environ |= {"INGESTD_EXPORTS__BATCH_ROWS": "7", "INGESTD_EXPORTS__ES_SETTLE": "0s"}
    if request.param == "elasticsearch":
        server: Noida = request.getfixturevalue("noida")
        environ |= {
            "INGESTD_ELASTICSEARCH__URL": server.url,
            "INGESTD_ELASTICSEARCH__INDEX_PREFIX": request.getfixturevalue("es_prefix"),
        }
    marker = request.node.get_closest_marker("exports_env")
    if marker:
        environ |= marker.kwargs
    created = Env(load_config(environ=environ))
    yield created
    created.close()


def _read_jsonl(paths: list[Path]) -> set[tuple[str, str, str, str]]:
    found = []
    for path in paths:
        for line in path.read_text(encoding="utf-8").splitlines():
            item = json.loads(line)
            found.append((item["profile"]["identity"], item["eventName"], _iso(item["ts"]), _canon(item["eventProps"])))
    assert len(found) == len(set(found)), "an event is in two lines"
    return set(found)


def _as_text(properties: dict[str, Any]) -> str:
    return _canon({key: _text(value) for key, value in properties.items()})


def _read_csv(paths: list[Path]) -> set[tuple[str, str, str, str]]:
    found = []
    for path in paths:
        with open(path, newline="", encoding="utf-8") as handle:
            for row in csv.DictReader(handle):
                props = {key: value for key, value in row.items() if key not in FIXED and value != ""}
                found.append((row["identity"], row["eventName"], _iso(row["ts"]), _canon(props)))
    assert len(found) == len(set(found))
    return set(found)


def _xml_text(element: ET.Element, path: str) -> str:
    text = element.findtext(path)
    assert text is not None, f"no <{path}> in <{element.tag}>"
    return text


def _read_xml(paths: list[Path]) -> set[tuple[str, str, str, str]]:
    found = []
    for path in paths:
        root = ET.parse(path).getroot()
        assert root.tag == "Events"
        for item in root.iter("Event"):
            props = {_xml_text(entry, "key"): entry.findtext("value") or "" for entry in item.iter("entry")}
            found.append(
                (
                    _xml_text(item, "profile/identity"),
                    _xml_text(item, "eventName"),
                    _iso(_xml_text(item, "ts")),
                    _canon(props),
                )
            )
    assert len(found) == len(set(found))
    return set(found)


def _read_parquet(paths: list[Path]) -> set[tuple[str, str, str, str]]:
    found = []
    for path in paths:
        table = pq.read_table(path)
        assert str(table.schema.field("ts").type) == "timestamp[ms, tz=UTC]"
        assert str(table.schema.field("amount").type) == "int64"
        for row in table.to_pylist():
            props = {key: value for key, value in row.items() if key not in FIXED and value is not None}
            found.append((row["identity"], row["eventName"], row["ts"].strftime("%Y-%m-%dT%H:%M:%SZ"), _canon(props)))
    assert len(found) == len(set(found))
    return set(found)


READERS = {"jsonl": _read_jsonl, "csv": _read_csv, "xml": _read_xml, "parquet": _read_parquet}
AS_TEXT = {"csv", "xml"}


@pytest.mark.parametrize("fmt", list(READERS))
def test_each_format_read_back_equals_what_the_sink_holds(env: Env, fmt: str) -> None:
    rows = event_rows(60)
    env.write(rows)
    shown = env.run(env.export(format=fmt, days=45))
    assert shown["status"] == "done", shown
    run = shown["runs"][-1]
    assert run["rows"] == 60 and run["error"] is None
    stored = env.stored_events({row[0] for row in rows})
    assert len(stored) == 60
    expected = {(i, n, ts, _as_text(json.loads(p)) if fmt in AS_TEXT else p) for i, n, ts, p in stored}
    assert READERS[fmt](env.files(shown)) == expected
    # Split by event name and day, one series each; names that are not file-name safe are made so.
    for item in run["files"]:
        assert item["name"].startswith(f"{shown['id']}-{run['run_ts']}-")
        assert item["name"].endswith(f"-1-{ACCOUNT}.{fmt}")
    assert any("-a_b_" in item["name"] for item in run["files"])
    assert {item["series"] for item in run["files"]} == {"Charged", "App Open", "a/b"}


@pytest.mark.parametrize("fmt", ["jsonl", "csv", "xml"])
@pytest.mark.exports_env(INGESTD_EXPORTS__CHUNK_SIZE="3KB", INGESTD_EXPORTS__BATCH_ROWS="13")
def test_a_small_chunk_size_makes_a_numbered_series_with_nothing_lost_at_the_seams(env: Env, fmt: str) -> None:
    # One name, one day (so one series), properties that differ from row to row (the csv union grows).
    rows = [
        (f"u{index}", "Charged", NOW - 3600 + index, props) for index, (_, _, _, props) in enumerate(event_rows(150))
    ]
    env.write(rows)
    shown = env.run(env.export(format=fmt, events=["Charged"], days=1))
    files = env.files(shown)
    assert len(files) > 3
    by_day: dict[str, list[int]] = {}
    for path in files:
        assert path.stat().st_size <= 3000, path.name
        parts = path.name.split("-")
        by_day.setdefault(parts[3], []).append(int(parts[4]))
    for indexes in by_day.values():
        assert sorted(indexes) == list(range(1, len(indexes) + 1))
    stored = env.stored_events({row[0] for row in rows})
    expected = {(i, n, ts, _as_text(json.loads(p)) if fmt in AS_TEXT else p) for i, n, ts, p in stored}
    assert READERS[fmt](files) == expected
    assert sum(item["rows"] for item in shown["runs"][-1]["files"]) == 150


def test_recurring_runs_cover_consecutive_windows_exactly(env: Env) -> None:
    before = event_rows(10, names=("Before",))
    env.write(before)
    export_id = env.export(every="4h")
    first, second = event_rows(20, offset=100), event_rows(15, offset=200)
    env.write(first)
    one = env.run(export_id)
    assert one["status"] == "pending" and one["recurring"]
    env.write(second + first[:5])  # repeats of already exported events are not stored again
    two = env.run(export_id)
    three = env.run(export_id)
    assert two["runs"][1]["rows"] == 15
    runs = three["runs"]
    assert [run["status"] for run in runs] == ["done", "done", "done"]
    got_one, got_two = _read_jsonl(env.files(three, 0)), _read_jsonl(env.files(three, 1))
    ids_one = {(i, n) for i, n, _, _ in got_one}
    assert len(got_one) == 20 and len(got_two) == 15 and not got_one & got_two
    assert all(n != "Before" for _, n in ids_one)
    everything = env.stored_events({row[0] for row in before + first + second})
    assert got_one | got_two == {item for item in everything if item[1] != "Before"}
    assert runs[2]["rows"] == 0 and runs[2]["files"] == [] and runs[2]["note"] == texts.NOTHING_NEW
    assert three["status"] == "pending" and three["rows_exported"] == 35


def test_an_unknown_event_name_exports_nothing_and_says_so(env: Env) -> None:
    env.write(event_rows(6))
    export_id, warnings = create_export(env.config, make_spec(ACCOUNT, "events", events=["Nope", "Charged"]))
    assert warnings and "'Nope'" in warnings[0]
    shown = env.run(export_id)
    assert shown["status"] == "done"
    assert shown["runs"][0]["note"] == texts.NO_SUCH_EVENTS.format(names="'Nope'")
    assert {item["series"] for item in shown["runs"][0]["files"]} == {"Charged"}


@pytest.mark.parametrize("fmt", ["jsonl", "csv"])
def test_profiles_export_every_profile_once(env: Env, fmt: str) -> None:
    frame = profiles_frame(
        [
            ("p1", NOW, [["$set", "Name", 'Ann, "A"'], ["$add", "Tags", "x"], ["$add", "Tags", "y"]]),
            ("p2", NOW, [["$set", "Age", 33]]),
            ("p3", NOW, [["$set", "Age", 40], ["$set", "Married", True]]),
        ]
    )
    assert env.sink(env.sink.sink.write_profiles(ACCOUNT, frame)) == []
    env.settle()
    shown = env.run(env.export("profiles", format=fmt))
    (path,) = env.files(shown)
    assert "-profiles-" in path.name
    stored = {p: env.sink(env.sink.sink.get_profile(ACCOUNT, p))["properties"] for p in ("p1", "p2", "p3")}
    if fmt == "jsonl":
        lines = [json.loads(line) for line in path.read_text().splitlines()]
        assert {line["profile"]["identity"]: line["profileData"] for line in lines} == stored
    else:
        rows = list(csv.DictReader(io.StringIO(path.read_text())))
        got = {row["identity"]: {k: v for k, v in row.items() if k not in FIXED and v} for row in rows}
        assert got == {p: {k: _text(v) for k, v in props.items()} for p, props in stored.items()}


def test_recurring_profiles_runs_take_the_profiles_changed_since_the_last_run(env: Env) -> None:
    def write(rows: list[tuple[str, int, list[list[Any]]]]) -> None:
        time.sleep(0.01)  # Elasticsearch stamps writes by the millisecond: not in the one of the last run's end
        assert env.sink(env.sink.sink.write_profiles(ACCOUNT, profiles_frame(rows))) == []
        env.settle()
        time.sleep(0.01)

    def exported(shown: dict[str, Any], run: int) -> dict[str, dict[str, Any]]:
        lines = [json.loads(line) for path in env.files(shown, run) for line in path.read_text().splitlines()]
        got = {line["profile"]["identity"]: line["profileData"] for line in lines}
        assert len(got) == len(lines), "a profile is in a run twice"
        return got

    write([(f"p{i}", NOW, [["$set", "Age", 20 + i], ["$add", "Tags", "a"]]) for i in range(10)])
    export_id = env.export("profiles", every="6h")
    one = env.run(export_id)
    assert one["status"] == "pending" and one["runs"][0]["rows"] == 10
    assert set(exported(one, 0)) == {f"p{i}" for i in range(10)}
    # Changed, in several rows and batches; one new; the others untouched.
    write(
        [
            ("p2", NOW, [["$set", "Age", 99]]),
            ("p7", NOW, [["$add", "Tags", "b"]]),
            ("p2", NOW, [["$delete", "Tags", None]]),
        ]
    )
    write([("p7", NOW, [["$remove", "Tags", "a"]]), ("new", NOW, [["$set", "Age", 1]])])
    two = env.run(export_id)
    three = env.run(export_id)
    stored = {p: env.sink(env.sink.sink.get_profile(ACCOUNT, p))["properties"] for p in ("p2", "p7", "new")}
    assert exported(three, 1) == stored == {"p2": {"Age": 99}, "p7": {"Age": 27, "Tags": ["b"]}, "new": {"Age": 1}}
    assert two["runs"][1]["rows"] == 3
    assert three["runs"][2]["rows"] == 0 and three["runs"][2]["note"] == texts.NOTHING_NEW
    write([("p0", NOW, [["$set", "Age", 5]])])
    assert exported(env.run(export_id), 3) == {"p0": {"Age": 5, "Tags": ["a"]}}


def test_a_sink_file_from_before_profile_changes_opens_and_its_profiles_are_in_the_first_recurring_run(
    data_dir: Path,
) -> None:
    """A sqlite sink file made before profiles recorded their changes: the column is added at start (twice is
    harmless), the first recurring run takes every profile, the next one only those written since."""
    config, old = old_sqlite_sink(
        data_dir,
        "CREATE TABLE profiles (account TEXT NOT NULL, identity TEXT NOT NULL, ts INTEGER NOT NULL, "
        "properties TEXT NOT NULL, PRIMARY KEY (account, identity)) WITHOUT ROWID;",
    )
    old.executemany(
        "INSERT INTO profiles VALUES (?, ?, ?, ?)",
        [(ACCOUNT, "old1", NOW * 1000, '{"Age":1}'), (ACCOUNT, "old2", NOW * 1000, '{"Tags":["a"]}')],
    )
    old.commit()
    old.close()
    SinkRunner(config).close()  # an earlier start of this version: the migration runs again below, harmlessly
    env = Env(config)
    try:
        export_id = env.export("profiles", every="4h")
        one = env.run(export_id)
        assert one["runs"][0]["rows"] == 2
        frame = profiles_frame([("old2", NOW, [["$add", "Tags", "b"]])])
        assert env.sink(env.sink.sink.write_profiles(ACCOUNT, frame)) == []
        two = env.run(export_id)
        (path,) = env.files(two, 1)
        assert [json.loads(line)["profileData"] for line in path.read_text().splitlines()] == [{"Tags": ["a", "b"]}]
        assert env.sink(env.sink.sink.get_profile(ACCOUNT, "old1"))["properties"] == {"Age": 1}
    finally:
        env.close()


def test_a_sink_file_with_change_numbers_but_no_counter_goes_on_numbering_after_its_last_change(
    data_dir: Path,
) -> None:
    """A sqlite sink file from before 2026-12-02 (change numbers in the profiles, each account's last one found
    through an index on them): a recurring run that ended at an account's last number takes the next write and
    nothing older, each account numbering on from its own last change."""
    config, old = old_sqlite_sink(
        data_dir,
        "CREATE TABLE profiles (account TEXT NOT NULL, identity TEXT NOT NULL, ts INTEGER NOT NULL, "
        "properties TEXT NOT NULL, changed INTEGER NOT NULL DEFAULT 1, PRIMARY KEY (account, identity)) WITHOUT ROWID;"
        "CREATE INDEX profiles_changed ON profiles (account, changed);",
    )
    stored = [(ACCOUNT, "p1", 1), (ACCOUNT, "p2", 3), (ACCOUNT, "p3", 2), ("other", "q1", 7)]
    old.executemany(
        "INSERT INTO profiles VALUES (?, ?, ?, '{\"Age\":1}', ?)",
        [(account, identity, NOW * 1000, changed) for account, identity, changed in stored],
    )
    old.commit()
    old.close()
    selection = SQLiteSelection(config.sink_db)
    try:
        assert selection.profiles_watermark(ACCOUNT) == {"seq": 3}  # read before the daemon opened the file
        runner = SinkRunner(config)
        try:
            runner(runner.sink.start())
            for account in (ACCOUNT, "other"):
                frame = profiles_frame([("p3" if account == ACCOUNT else "q2", NOW, [["$set", "Age", 2]])])
                assert runner(runner.sink.write_profiles(account, frame)) == []
        finally:
            runner.close()
        assert selection.profiles_watermark(ACCOUNT) == {"seq": 4}
        assert selection.profiles_watermark("other") == {"seq": 8}
        since_last_run = selection.changed_profiles(ACCOUNT, {"seq": 3}, {"seq": 4}, batch_rows=1)
        assert [frame["identity"].to_list() for frame in since_last_run] == [["p3"]]
        every = selection.changed_profiles(ACCOUNT, {"seq": 0}, {"seq": 4}, batch_rows=2)
        assert [frame["identity"].to_list() for frame in every] == [["p1", "p2"], ["p3"]]
    finally:
        selection.close()


def test_an_elasticsearch_profiles_index_from_before_profile_changes_learns_them(
    noida: Noida, es_prefix: str, data_dir: Path
) -> None:
    """A profiles index made with the mapping of before (strict, no `changed`) and a profile in it: the sink's start
    adds the field, new writes are stamped, and recurring runs take the old profile first, then only changes."""
    import urllib.request

    def call(method: str, path: str, body: Any) -> None:
        request = urllib.request.Request(
            f"{noida.url}/{path}",
            data=json.dumps(body).encode(),
            method=method,
            headers={"content-type": "application/json"},
        )
        urllib.request.urlopen(request, timeout=10).close()

    old_mapping: dict[str, Any] = {
        "dynamic": "strict",
        "properties": {"account": {"type": "keyword"}, "identity": {"type": "keyword"}},
    }
    old_mapping["properties"] |= {"ts": {"type": "long"}, "properties": {"type": "object", "enabled": False}}
    call("PUT", f"{es_prefix}-profiles", {"mappings": old_mapping})
    old = {"account": ACCOUNT, "identity": "old", "ts": NOW * 1000, "properties": {"Age": 1}}
    call("PUT", f"{es_prefix}-profiles/_doc/{ACCOUNT}:old?refresh=true", old)
    environ = {"INGESTD_DATA_DIR": str(data_dir), "INGESTD_SINK__DRIVER": "elasticsearch"}
    environ |= {"INGESTD_EXPORTS__ES_SETTLE": "0s", "INGESTD_ELASTICSEARCH__URL": noida.url}
    env = Env(load_config(environ=environ | {"INGESTD_ELASTICSEARCH__INDEX_PREFIX": es_prefix}))
    try:
        export_id = env.export("profiles", every="4h")
        one = env.run(export_id)
        assert one["runs"][0]["rows"] == 1
        time.sleep(0.01)
        frame = profiles_frame([("new", NOW, [["$set", "Age", 2]])])
        assert env.sink(env.sink.sink.write_profiles(ACCOUNT, frame)) == []
        env.settle()
        time.sleep(0.01)
        two = env.run(export_id)
        (path,) = env.files(two, 1)
        assert [json.loads(line)["profile"]["identity"] for line in path.read_text().splitlines()] == ["new"]
    finally:
        env.close()


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"days": 46}, "a one-time export looks at most 45 days back"),
        ({"since": "2001-01-01"}, "a one-time export looks at most 45 days back"),
        ({"format": "xlsx"}, "format 'xlsx': expected one of jsonl, csv, xml, parquet"),
        ({"every": "1h"}, "a recurring export runs every 4h to 24h"),
        ({"every": "25h"}, "a recurring export runs every 4h to 24h"),
        ({"every": "4h", "days": 3}, "--days and --since are for one-time exports"),
        ({"destination": "ftp://x"}, "expected sftp or s3://BUCKET/PREFIX"),
        ({"since": "yesterday"}, "expected a date like 2026-11-20"),
    ],
)
def test_bad_requests_are_refused_with_one_line(options: dict[str, Any], message: str) -> None:
    with pytest.raises(UsageError) as caught:
        make_spec(ACCOUNT, "events", **options)
    assert message in str(caught.value) and "\n" not in str(caught.value)


def _s3_env(data_dir: Path, endpoint: str, **extra: str) -> Env:
    environ = {
        "INGESTD_DATA_DIR": str(data_dir),
        "INGESTD_EXPORTS__ENDPOINT_URL": endpoint,
        "INGESTD_EXPORTS__ACCESS_KEY": "testing",
        "INGESTD_EXPORTS__SECRET_KEY": "testing",
        "INGESTD_EXPORTS__BATCH_ROWS": "50",
        **extra,
    }
    return Env(load_config(environ=environ))


def test_an_s3_destination_gets_complete_files_through_a_real_s3_server(moto_server: Any, data_dir: Path) -> None:
    client = moto_server.client()
    client.create_bucket(Bucket="partner-exports")
    env = _s3_env(data_dir, moto_server.url, INGESTD_EXPORTS__MULTIPART_THRESHOLD="8KiB")
    try:
        rows = [(i, "Charged", NOW - index, p) for index, (i, _, _, p) in enumerate(event_rows(200))]
        env.write(rows)
        shown = env.run(env.export(format="jsonl", days=45, destination="s3://partner-exports/acme/daily"))
        assert shown["status"] == "done", shown
        run = shown["runs"][0]
        assert run["rows"] == 200
        listed = client.list_objects_v2(Bucket="partner-exports", Prefix="acme/daily/")["Contents"]
        assert sorted(item["Key"] for item in listed) == sorted(
            item["location"].removeprefix("s3://partner-exports/") for item in run["files"]
        )
        fetched = data_dir / "fetched"
        fetched.mkdir()
        paths = []
        for item in listed:
            path = fetched / item["Key"].rsplit("/", 1)[1]
            client.download_file("partner-exports", item["Key"], str(path))
            paths.append(path)
        assert _read_jsonl(paths) == env.stored_events({row[0] for row in rows})
        # Files over the threshold went up in parts (a multipart ETag ends in -<parts>).
        big = [item for item in listed if item["Size"] > 8 * 1024]
        assert big and all("-" in item["ETag"] for item in big)
        assert not list((env.config.exports_staging).rglob("*.part")), "staged chunks are removed once uploaded"
    finally:
        env.close()


def test_an_unreachable_bucket_fails_the_run_with_the_reason_and_the_next_period_covers_it(
    moto_server: Any, data_dir: Path
) -> None:
    from tests.fixtures.common import free_port

    moto_server.client().create_bucket(Bucket="later")
    down = _s3_env(data_dir, f"http://127.0.0.1:{free_port()}", INGESTD_EXPORTS__MAX_ATTEMPTS="1")
    try:
        export_id = down.export(every="6h", destination="s3://later/x")
        rows = event_rows(12, offset=500)
        down.write(rows)
        failed = down.run(export_id)
        assert failed["status"] == "pending" and failed["runs"][0]["status"] == "failed"
        assert failed["error"].startswith("S3 bucket later: ") and "\n" not in failed["error"]
        assert failed["runs"][0]["files"] == []
    finally:
        down.close()
    up = _s3_env(data_dir, moto_server.url)
    try:
        shown = up.run(export_id)
        assert [run["status"] for run in shown["runs"]] == ["failed", "done"]
        assert shown["runs"][1]["rows"] == 12 and shown["error"] is None
        missing = up.run(up.export(days=3, destination="s3://no-such-bucket/x"))
        assert missing["status"] == "failed" and missing["error"] == "S3 bucket no-such-bucket: no such bucket"
    finally:
        up.close()


def test_a_finished_run_is_posted_to_webhooks_signed_with_its_files(data_dir: Path) -> None:
    from notifier.webhooks import verify
    from tests.fixtures.smtp import make_notifier, running
    from tests.integration.test_webhooks import HookReceiver

    receiver = HookReceiver()
    receiver.start()
    try:
        env = Env(
            load_config(
                environ={
                    "INGESTD_DATA_DIR": str(data_dir),
                    "INGESTD_WEBHOOKS__URLS": receiver.url,
                    "INGESTD_WEBHOOKS__SECRET": "shh",
                    "INGESTD_WEBHOOKS__MAX_RETRY_DELAY": "0.5s",
                }
            )
        )
        notifier = make_notifier(env.config)
        env.service.notifier = notifier
        try:
            with running(notifier):
                env.write(event_rows(6))
                shown = env.run(env.export(format="jsonl", days=5))
                ((headers, body),) = receiver.wait_for(1)
        finally:
            env.close()
    finally:
        receiver.stop()
    assert headers["X-Ingestd-Event"] == "export_done" and verify("shh", body, headers["X-Ingestd-Signature"])
    posted = json.loads(body)
    assert posted["export"]["id"] == shown["id"] and posted["run"]["rows"] == 6
    assert [item["name"] for item in posted["run"]["files"]] == [item["name"] for item in shown["runs"][0]["files"]]
