"""Log lines: one line per state change with its fields, as plain text or as JSON lines."""

from __future__ import annotations

import io
import json
import logging
import re
from collections.abc import Iterator

import pytest

from daemon.logs import event, setup_logging


@pytest.fixture
def capture() -> Iterator[io.StringIO]:
    """Route logging to a buffer, then restore the root logger as it was."""
    root = logging.getLogger()
    saved_handlers, saved_level = root.handlers[:], root.level
    buffer = io.StringIO()
    yield buffer
    root.handlers[:] = saved_handlers
    root.setLevel(saved_level)


def test_text_line_has_time_level_logger_event_and_fields(capture: io.StringIO) -> None:
    setup_logging("text", "info", stream=capture)
    event(logging.getLogger("ingestd.jobs"), "job.finished", account="acme", job_id=7, size_bytes=2048, elapsed_ms=1234)
    lines = capture.getvalue().splitlines()
    assert len(lines) == 1
    assert re.match(
        r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z INFO    ingestd\.jobs: job\.finished "
        r"account=acme job_id=7 size_bytes=2048 elapsed_ms=1234$",
        lines[0],
    ), lines[0]


def test_text_values_with_spaces_newlines_or_equals_stay_on_one_parseable_line(capture: io.StringIO) -> None:
    setup_logging("text", "info", stream=capture)
    event(
        logging.getLogger("ingestd.jobs"),
        "job.failed",
        account="acme",
        reason='File couldn\'t be read:\nno "header" row',
        note="a=b",
        empty="",
        missing=None,
        problems=["x", "y"],
    )
    lines = capture.getvalue().splitlines()
    assert len(lines) == 1, lines
    line = lines[0]
    assert 'reason="File couldn\'t be read:\\nno \\"header\\" row"' in line
    assert 'note="a=b"' in line
    assert 'empty=""' in line
    assert "missing=-" in line
    assert 'problems=["x","y"]' in line


def test_json_lines_carry_the_same_fields(capture: io.StringIO) -> None:
    setup_logging("json", "info", stream=capture)
    log = logging.getLogger("ingestd.sftp")
    event(log, "upload.completed", account="acme", file="profiles.csv", size_bytes=5120, elapsed_ms=37.5)
    event(log, "email.retried", level=logging.WARNING, job_id=3, attempt=2, error="connection refused\nby peer")
    lines = capture.getvalue().splitlines()
    assert len(lines) == 2
    first, second = (json.loads(line) for line in lines)
    assert first["event"] == "upload.completed"
    assert first["level"] == "info"
    assert first["logger"] == "ingestd.sftp"
    assert re.match(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$", first["time"])
    assert {k: first[k] for k in ("account", "file", "size_bytes", "elapsed_ms")} == {
        "account": "acme",
        "file": "profiles.csv",
        "size_bytes": 5120,
        "elapsed_ms": 37.5,
    }
    assert second["level"] == "warning"
    assert second["error"] == "connection refused\nby peer"


def test_json_field_named_like_the_envelope_does_not_replace_it(capture: io.StringIO) -> None:
    setup_logging("json", "info", stream=capture)
    event(logging.getLogger("ingestd.jobs"), "job.queued", event="manifest", time=5)
    body = json.loads(capture.getvalue())
    assert body["event"] == "job.queued"
    assert body["event_"] == "manifest"
    assert body["time_"] == 5


def test_level_filters_and_exceptions_are_kept(capture: io.StringIO) -> None:
    setup_logging("json", "warning", stream=capture)
    log = logging.getLogger("ingestd.test")
    event(log, "job.progress", job_id=1)  # info: below the configured level
    try:
        raise RuntimeError("disk full")
    except RuntimeError:
        log.exception("worker crashed")
    lines = capture.getvalue().splitlines()
    assert len(lines) == 1
    body = json.loads(lines[0])
    assert body["event"] == "worker crashed"
    assert "RuntimeError: disk full" in body["exception"]


def test_non_event_records_format_too(capture: io.StringIO) -> None:
    setup_logging("text", "debug", stream=capture)
    logging.getLogger("ingestd.service").warning("component %s not available", "x")
    assert capture.getvalue().rstrip().endswith("WARNING ingestd.service: component x not available")


@pytest.mark.parametrize("fmt", ["text", "json"])
def test_any_partner_text_is_one_line_of_valid_utf8_without_terminal_controls(capture: io.StringIO, fmt: str) -> None:
    # An undecodable byte of a file name (a lone surrogate), a forged second line, a C1 CSI and a bidi override.
    hostile = "a\udcff.csv\n2026-01-01T00:00:00.000Z INFO    ingestd.jobs: job.succeeded\x9b2J\u202e"
    setup_logging(fmt, "info", stream=capture)
    event(logging.getLogger("ingestd.sftp"), "upload.completed", file=hostile, names=[hostile])
    written = capture.getvalue()
    written.encode("utf-8")  # a lone surrogate would fail here, and so the daemon's write to stderr
    assert len(written.splitlines()) == 1
    assert not any(char in written for char in "\x9b\u202e")
    if fmt == "json":
        assert json.loads(written)["file"] == hostile
