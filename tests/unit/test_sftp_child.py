"""The SFTP process's metric relay: updates are added up and reach the daemon in one line."""

from __future__ import annotations

import asyncio
import json

import pytest

from daemon.sftp import child


def test_counts_are_added_up_per_metric_and_labels_and_sent_in_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    sent: list[dict[str, object]] = []
    monkeypatch.setattr(child, "send", sent.append)

    async def burst() -> None:
        relay = child.CountRelay()
        relay("UPLOADS", 1, ("acme",))
        relay("UPLOAD_BYTES", 100, ("acme",))
        relay("UPLOADS", 1, ("acme",))
        relay("UPLOADS", 1, ("globex",))
        relay("LOGIN_FAILURES", 1, ())
        assert sent == []  # nothing until the relay's timer fires or it is flushed
        relay.flush()
        relay.flush()  # nothing new: no empty line

    asyncio.run(burst())
    assert sent == [
        {
            "counts": [
                ["UPLOADS", 2.0, ["acme"]],
                ["UPLOAD_BYTES", 100.0, ["acme"]],
                ["UPLOADS", 1.0, ["globex"]],
                ["LOGIN_FAILURES", 1.0, []],
            ]
        }
    ]


def test_many_busy_accounts_are_sent_in_lines_the_daemon_can_read(monkeypatch: pytest.MonkeyPatch) -> None:
    sent: list[dict[str, list[list[object]]]] = []
    monkeypatch.setattr(child, "send", sent.append)

    async def burst() -> None:
        relay = child.CountRelay()
        for number in range(1000):
            relay("UPLOADS", 1, (f"account-{number}",))
        relay.flush()

    asyncio.run(burst())
    assert [len(message["counts"]) for message in sent] == [200] * 5
    assert all(len(json.dumps(message)) < 64 * 1024 for message in sent)


def test_the_config_line_and_the_messages_after_it_are_read_whole_however_they_arrive() -> None:
    import os

    read, write = os.pipe()
    try:
        # The config and a relayed failed login in one write, then a line split over two writes.
        os.write(write, b'{"config": 1}\n{"failed": ["192.0.2.1", "acme"]}\n{"failed": ["192.0')
        os.write(write, b'.2.2", "globex"]}\n')
        os.close(write)
        pending = bytearray()
        assert child.read_line(read, pending) == b'{"config": 1}'
        assert child.read_line(read, pending) == b'{"failed": ["192.0.2.1", "acme"]}'
        assert child.read_line(read, pending) == b'{"failed": ["192.0.2.2", "globex"]}'
        assert child.read_line(read, pending) is None  # the daemon closed the pipe
    finally:
        os.close(read)
