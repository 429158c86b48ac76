"""`ingestd profiles get` and `ingestd events list` against both sinks: what a person or a script sees."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from daemon.cli import main
from tests.fixtures.common import free_port
from tests.fixtures.noida import Noida
from tests.integration.test_sinks import JAN_8_2020, EventRow, SinkRunner, events_frame, profiles_frame, sink_config

HOSTILE_NAME = "\x1b]0;owned\x07Login\x9b2J"  # a title change, a bell and a C1 control sequence
RING = {"Name": "Awesome Ring - 10", "Price": 123.0, "DeliveryDate": "2020-05-12T09:07:12Z", "DeliveryStatus": True}


class CLI:
    """`ingestd ARGS` in this process with the sink's environment; returns (exit code, stdout, stderr)."""

    def __init__(self, env: dict[str, str], capsys: pytest.CaptureFixture[str]) -> None:
        self.env = env
        self.capsys = capsys

    def __call__(self, *args: str) -> tuple[int, str, str]:
        self.capsys.readouterr()
        code = main(list(args))
        out, err = self.capsys.readouterr()
        return code, out, err


@pytest.fixture(params=["sqlite", "elasticsearch"])
def cli(
    request: pytest.FixtureRequest, data_dir: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> Iterator[CLI]:
    """Data ingested through the sink the way a worker would, then read back through the CLI."""
    env = {"INGESTD_DATA_DIR": str(data_dir), "INGESTD_SINK__DRIVER": request.param}
    if request.param == "elasticsearch":
        server: Noida = request.getfixturevalue("noida")
        prefix = request.getfixturevalue("es_prefix")
        env |= {"INGESTD_ELASTICSEARCH__URL": server.url, "INGESTD_ELASTICSEARCH__INDEX_PREFIX": prefix}
    for name in list(os.environ):
        if name.upper().startswith("INGESTD_"):
            monkeypatch.delenv(name)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    config = sink_config(
        data_dir,
        request.param,
        env.get("INGESTD_ELASTICSEARCH__URL", ""),
        env.get("INGESTD_ELASTICSEARCH__INDEX_PREFIX", ""),
    )
    runner = SinkRunner(config)
    try:
        runner(runner.sink.start())
        profiles = profiles_frame(
            [
                ("john.doe@example.com", 1574668407, [["$set", "Name", "JohnDoe-001"], ["$add", "Playlist", "Rock"]]),
                ("john.doe@example.com", 1574668409, [["$set", "Married", True], ["$set", "Age", 21]]),
            ]
        )
        assert runner(runner.sink.write_profiles("acme", profiles)) == []
        events: list[EventRow] = [
            ("john.doe@example.com", "Purchased", JAN_8_2020, RING),
            ("john.doe@example.com", "Charged", JAN_8_2020 - 60, {"Amount": 5}),
            ("mallory", HOSTILE_NAME, JAN_8_2020, {"Note\x1b[8m": "\x1b[2Jcleared\u202e"}),
        ]
        assert runner(runner.sink.write_events("acme", events_frame(events))) == []
    finally:
        runner.close()
    yield CLI(env, capsys)


def test_profiles_get_prints_the_profile(cli: CLI) -> None:
    code, out, err = cli("profiles", "get", "acme", "john.doe@example.com")
    assert (code, err) == (0, "")
    assert out.splitlines() == [
        "identity:   john.doe@example.com",
        "updated:    2019-11-25T07:53:29Z",
        "properties:",
        "  Age       21",
        "  Married   true",
        "  Name      JohnDoe-001",
        '  Playlist  ["Rock"]',
    ]


def test_profiles_get_json(cli: CLI) -> None:
    code, out, _ = cli("profiles", "get", "acme", "john.doe@example.com", "--json")
    assert code == 0
    assert json.loads(out) == {
        "identity": "john.doe@example.com",
        "properties": {"Name": "JohnDoe-001", "Playlist": ["Rock"], "Married": True, "Age": 21},
        "ts": "2019-11-25T07:53:29Z",
    }


def test_events_list_oldest_first(cli: CLI) -> None:
    code, out, err = cli("events", "list", "acme", "john.doe@example.com")
    assert (code, err) == (0, "")
    lines = out.splitlines()
    assert lines[0].split() == ["TS", "NAME", "PROPERTIES"]
    assert lines[1].startswith("2020-01-08T17:13:27Z  Charged    {")
    assert lines[2].startswith("2020-01-08T17:14:27Z  Purchased  {")
    assert json.loads(lines[2].split("  ", 2)[2]) == RING
    code, out, _ = cli("events", "list", "acme", "john.doe@example.com", "--json")
    assert code == 0
    assert json.loads(out) == [
        {"name": "Charged", "ts": "2020-01-08T17:13:27Z", "properties": {"Amount": 5}},
        {"name": "Purchased", "ts": "2020-01-08T17:14:27Z", "properties": RING},
    ]


def test_events_list_limit_shows_the_oldest_n_and_says_there_are_more(cli: CLI) -> None:
    code, out, err = cli("events", "list", "acme", "john.doe@example.com", "--limit", "1", "--json")
    assert code == 0
    assert [event["name"] for event in json.loads(out)] == ["Charged"]
    assert err == "showing the first 1 event; --limit N shows more\n"
    code, out, err = cli("events", "list", "acme", "john.doe@example.com", "--limit", "2")
    assert (code, err) == (0, "") and len(out.splitlines()) == 3
    code, _, err = cli("events", "list", "acme", "john.doe@example.com", "--limit", "0")
    assert (code, err) == (2, "ingestd: error: --limit: expected a number of events from 1 to 10,000, found 0\n")


def test_partner_data_is_printed_escaped(cli: CLI) -> None:
    code, out, _ = cli("events", "list", "acme", "mallory")
    assert code == 0
    assert not any(char in out for char in "\x1b\x07\x9b\u202e"), out
    assert "\\x1b]0;owned\\x07Login\\x9b2J" in out
    code, out, _ = cli("events", "list", "acme", "mallory", "--json")
    assert not any(char in out for char in "\x1b\x07\x9b\u202e"), out
    assert json.loads(out)[0]["name"] == HOSTILE_NAME
    assert json.loads(out)[0]["properties"] == {"Note\x1b[8m": "\x1b[2Jcleared\u202e"}


def test_unknown_profile_or_events_exit_1(cli: CLI) -> None:
    code, out, err = cli("profiles", "get", "acme", "nobody@example.com")
    assert (code, out) == (1, "")
    assert err == "ingestd: error: no profile 'nobody@example.com' in account 'acme'\n"
    code, out, err = cli("events", "list", "other", "john.doe@example.com", "--json")
    assert (code, out) == (1, "")
    assert err == "ingestd: error: no events for 'john.doe@example.com' in account 'other'\n"


def test_bad_input_exits_2_with_one_line(cli: CLI) -> None:
    code, _, err = cli("profiles", "get", "ac/me", "x")
    assert code == 2
    assert err.startswith("ingestd: error: account 'ac/me': expected letters")
    code, _, err = cli("events", "list", "acme", "x" * 1025)
    assert (code, err) == (2, "ingestd: error: identity: at most 1024 characters, found 1025\n")
    code, _, err = cli("events", "list", "acme", " ")
    assert (code, err) == (2, "ingestd: error: identity: expected a non-empty identity\n")


def test_sqlite_read_without_data_creates_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    data_dir = tmp_path / "never-served"
    monkeypatch.setenv("INGESTD_DATA_DIR", str(data_dir))
    monkeypatch.setenv("INGESTD_SINK__DRIVER", "sqlite")
    code = main(["profiles", "get", "acme", "someone"])
    assert code == 1
    assert "no profile 'someone' in account 'acme'" in capsys.readouterr().err
    assert not data_dir.exists()


def test_elasticsearch_down_is_one_clear_line(tmp_path: Path) -> None:
    # A real process, as a person would run it: no traceback, the URL it tried, a non-zero exit.
    url = f"http://127.0.0.1:{free_port()}"
    env = {name: value for name, value in os.environ.items() if not name.upper().startswith("INGESTD_")}
    env |= {"INGESTD_DATA_DIR": str(tmp_path / "data"), "INGESTD_SINK__DRIVER": "elasticsearch"}
    env["INGESTD_ELASTICSEARCH__URL"] = url
    result = subprocess.run(
        [sys.executable, "-m", "daemon.cli", "events", "list", "acme", "someone"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr.startswith(f"ingestd: error: elasticsearch unreachable at {url}")
    assert "Traceback" not in result.stderr
