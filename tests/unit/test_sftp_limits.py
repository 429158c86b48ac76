"""SFTP limits without a server: the startup gate, the refusal summary, new-name checks, rename, bans in the DB."""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import resource
from pathlib import Path

import pytest
from asyncssh import SFTPPermissionDenied

from daemon.sftp import rename as rename_module
from daemon.sftp.limits import RefusalLog, StartupGate, raise_nofile_limit
from daemon.sftp.messages import NAME_CONTROL, NAME_NOT_UTF8
from daemon.sftp.paths import check_new_name
from daemon.store import StateDB
from daemon.store.bans import Ban, BanStore


def test_the_gate_caps_per_address_then_in_all() -> None:
    gate = StartupGate(max_startups=3, per_source=2, refused=RefusalLog())
    keys = [object() for _ in range(3)]
    for key, address in zip(keys, ("192.0.2.1", "192.0.2.1", "192.0.2.2"), strict=True):
        assert gate.full(address) is None
        gate.opened(address, key, lambda: None)
    assert gate.full("192.0.2.1") == "per_source_max_startups"
    gate.done(keys[0])  # logged in or gone
    assert gate.full("192.0.2.3") is None and gate.full("192.0.2.1") is None


def test_over_the_overall_cap_the_oldest_connection_not_logged_in_makes_room() -> None:
    gate = StartupGate(max_startups=2, per_source=2, refused=RefusalLog())
    dropped: list[str] = []
    for name, address in (("old", "192.0.2.1"), ("newer", "192.0.2.2")):  # keys: anything hashable
        assert gate.full(address) is None
        gate.opened(address, name, functools.partial(dropped.append, name))
    assert asyncio.run(_full_in_a_loop(gate, "192.0.2.3")) is None  # let in: the oldest was dropped for it
    assert dropped == ["old"]
    gate.opened("192.0.2.3", "newest", lambda: dropped.append("newest"))
    gate.done("old")  # its connection_lost comes later: counted once only
    assert gate.total == 2
    gate.done("newer")  # logged in
    assert gate.full("192.0.2.4") is None and dropped == ["old"]


async def _full_in_a_loop(gate: StartupGate, address: str) -> str | None:
    return gate.full(address)  # the refusal summary needs a running loop


def test_refusals_are_one_line_per_reason(caplog: pytest.LogCaptureFixture) -> None:
    async def burst() -> None:
        refused = RefusalLog(interval=0.01)
        for _ in range(500):
            refused("per_source_max_startups")
        refused("max_startups")
        await asyncio.sleep(0.1)

    with caplog.at_level(logging.WARNING, logger="ingestd.sftp"):
        asyncio.run(burst())
    lines = [
        record.__dict__["fields"] for record in caplog.records if record.getMessage() == "sftp.connections_refused"
    ]
    assert [(f["count"], f["reason"]) for f in lines] == [(1, "max_startups"), (500, "per_source_max_startups")]


def test_raise_nofile_limit_reaches_the_hard_limit() -> None:
    before = resource.getrlimit(resource.RLIMIT_NOFILE)
    try:
        old, new = raise_nofile_limit()
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        assert old == before[0] and new == soft and soft >= old
        assert soft == hard or hard == resource.RLIM_INFINITY
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, before)


@pytest.mark.parametrize(
    ("name", "message"),
    [
        (b"\xff.manifest", NAME_NOT_UTF8),
        (b"a\nb.csv", NAME_CONTROL),
        (b"a\x00b", NAME_CONTROL),
        ("\x85".encode(), NAME_CONTROL),
    ],
)
def test_new_names_must_be_utf8_without_controls(name: bytes, message: str) -> None:
    with pytest.raises(SFTPPermissionDenied, match=message):
        check_new_name(name)


def test_plain_names_pass() -> None:
    for name in (b"events.csv", "café-東京.manifest".encode()):
        check_new_name(name)


@pytest.mark.parametrize("renameat2", [True, False])
def test_rename_never_replaces(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, renameat2: bool) -> None:
    if not renameat2:
        monkeypatch.setattr(rename_module, "_renameat2", None)  # the link + unlink fallback
    old, new, other = (os.fsencode(tmp_path / name) for name in ("x.tmp", "x.manifest", "y.tmp"))
    Path(os.fsdecode(old)).write_text("manifest")
    Path(os.fsdecode(other)).write_text("other")
    rename_module.rename_noreplace(old, new)
    assert sorted(os.listdir(tmp_path)) == ["x.manifest", "y.tmp"]
    with pytest.raises(FileExistsError):
        rename_module.rename_noreplace(other, new)
    assert Path(os.fsdecode(new)).read_text() == "manifest" and Path(os.fsdecode(other)).exists()


def test_bans_are_stored_listed_and_lifted(tmp_path: Path) -> None:
    now = [1_000_000.0]
    store = BanStore(StateDB(tmp_path / "state.sqlite3"), clock=lambda: now[0])
    store.add(Ban("192.0.2.1", "acme", "failed_logins", 5, now[0] + 600))
    store.add(Ban("192.0.2.1", "", "failed_logins_many_accounts", 20, now[0] + 300))
    store.add(Ban("192.0.2.9", "globex", "failed_logins", 5, now[0] + 10))
    assert store.banned("192.0.2.1", "acme").account == "acme"  # type: ignore[union-attr]
    assert store.banned("192.0.2.1", "initech").account == ""  # type: ignore[union-attr]
    assert store.banned("192.0.2.2", "acme") is None
    assert [ban.as_json()["account"] for ban in store.active()] == [None, "acme", "globex"]
    assert store.active()[1].as_json() == {
        "address": "192.0.2.1",
        "account": "acme",
        "reason": "failed_logins",
        "banned_until": "1970-01-12T13:56:40Z",
        "failures": 5,
    }
    now[0] += 11
    assert store.banned("192.0.2.9", "globex") is None  # expired
    assert store.lift("192.0.2.9") == 0
    assert store.lift("192.0.2.1") == 2
    assert store.active() == []
