"""Resumable uploads at the handler, in-process: what a broken upload leaves, and `reput` / `put -a` / paramiko's
append mode continuing it (the whole-daemon journey is in test_sftp_resume.py)."""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import time
from pathlib import Path

import asyncssh
import pytest

from daemon.sftp import partials
from tests.fixtures.sftp_server import Partner, Server
from tests.integration.test_sftp_handler import serve, temp_files

PARTIAL = partials.PARTIAL_DIR


async def broken_upload(server: Server, partner: Partner, name: str, chunks: list[tuple[int, bytes]]) -> None:
    """Write `chunks` (offset, bytes) to `name`, then drop the connection without closing the file."""
    conn = await asyncssh.connect(
        "127.0.0.1", server.port, username=partner.account, client_keys=[partner.key], known_hosts=None, config=None
    )
    sftp = await conn.start_sftp_client()
    remote = await sftp.open(name, "wb")
    for offset, data in chunks:
        await remote.write(data, offset)
    conn.abort()
    await until(lambda: (server.drop(partner.account) / PARTIAL / name).exists(), "the partial to be kept")


async def until(condition, what: str, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.01)


def test_a_broken_upload_is_kept_hidden_and_uncounted_and_stat_reports_its_size(
    tmp_path: Path, sftp_host_keys: Path, caplog: pytest.LogCaptureFixture
) -> None:
    async def scenario(server: Server) -> None:
        acme = server.partner()
        drop = server.drop("acme")
        await broken_upload(server, acme, "big.csv", [(0, b"a" * 100_000)])
        assert "big.csv" not in os.listdir(drop) and temp_files(drop) == []
        assert (drop / PARTIAL / "big.csv").stat().st_mode & 0o777 == 0o600
        assert server.counted("UPLOADS") == 0 and server.counted("UPLOAD_BYTES") == 0
        async with server.sftp(acme) as sftp:
            assert set(await sftp.listdir(".")) == {".", ".."}  # not listed, and its folder neither
            assert (await sftp.stat("big.csv")).size == 100_000  # how `reput` learns where to continue
            with pytest.raises(asyncssh.SFTPNoSuchFile):
                await sftp.open("big.csv", "rb")  # nothing to download: it is not a file yet
            with pytest.raises(asyncssh.SFTPNoSuchFile):
                await sftp.listdir(f"{PARTIAL}")

    with caplog.at_level(logging.INFO, logger="ingestd.sftp"):
        serve(tmp_path, sftp_host_keys, scenario)
    [interrupted] = [getattr(r, "fields", {}) for r in caplog.records if r.getMessage() == "upload.interrupted"]
    assert interrupted["file"] == "big.csv" and interrupted["size_bytes"] == 100_000
    assert not [r for r in caplog.records if r.getMessage() == "upload.completed"]


def test_append_mode_continues_the_partial_and_the_file_appears_whole_once(
    tmp_path: Path, sftp_host_keys: Path, caplog: pytest.LogCaptureFixture
) -> None:
    content = os.urandom(300_000)

    async def scenario(server: Server) -> None:
        acme = server.partner()
        drop = server.drop("acme")
        await broken_upload(server, acme, "data.csv", [(0, content[:120_000])])
        async with server.sftp(acme) as sftp:
            size = (await sftp.stat("data.csv")).size
            assert size == 120_000
            remote = await sftp.open("data.csv", "ab")
            await remote.write(content[size:])
            assert "data.csv" not in os.listdir(drop)  # still not there before the close
            await remote.close()
        assert (drop / "data.csv").read_bytes() == content
        assert not (drop / PARTIAL / "data.csv").exists()
        assert server.counted("UPLOADS") == 1 and server.counted("UPLOAD_BYTES") == 300_000

    with caplog.at_level(logging.INFO, logger="ingestd.sftp"):
        serve(tmp_path, sftp_host_keys, scenario)
    [done] = [getattr(r, "fields", {}) for r in caplog.records if r.getMessage() == "upload.completed"]
    assert done["size_bytes"] == 300_000 and done["resumed_from"] == 120_000


def test_a_partial_keeps_only_the_bytes_before_the_first_gap(tmp_path: Path, sftp_host_keys: Path) -> None:
    async def scenario(server: Server) -> None:
        acme = server.partner()
        # Written out of order: 0-10, 20-30, 10-15 — bytes 15-20 never arrived.
        await broken_upload(server, acme, "gap.csv", [(0, b"0" * 10), (20, b"2" * 10), (10, b"1" * 5)])
        assert (server.drop("acme") / PARTIAL / "gap.csv").read_bytes() == b"0" * 10 + b"1" * 5
        await broken_upload(server, acme, "filled.csv", [(0, b"0" * 10), (20, b"2" * 10), (10, b"1" * 10)])
        assert (server.drop("acme") / PARTIAL / "filled.csv").read_bytes() == b"0" * 10 + b"1" * 10 + b"2" * 10

    serve(tmp_path, sftp_host_keys, scenario)


def test_openssh_reput_and_paramiko_append_continue_a_partial(tmp_path: Path, sftp_host_keys: Path) -> None:
    source = tmp_path / "events.csv"
    source.write_bytes(os.urandom(2_000_000))
    whole = source.read_bytes()

    def paramiko_resume(server: Server, partner: Partner) -> None:
        # Append mode: paramiko starts at the size of the handle (the partial's).
        with server.paramiko(partner) as sftp, sftp.open("p.csv", "ab") as remote:
            remote.write(whole[remote.tell() :])

    async def scenario(server: Server) -> None:
        acme = server.partner()
        drop = server.drop("acme")
        await broken_upload(server, acme, "events.csv", [(0, whole[:700_000])])
        result = await server.openssh(acme, [f"reput {source} events.csv"])
        assert result.returncode == 0, result.stderr
        assert hashlib.sha256((drop / "events.csv").read_bytes()).digest() == hashlib.sha256(whole).digest()
        await broken_upload(server, acme, "p.csv", [(0, whole[:333_333])])
        await asyncio.to_thread(paramiko_resume, server, acme)
        assert (drop / "p.csv").read_bytes() == whole
        assert server.counted("UPLOADS") == 2 and not os.listdir(drop / PARTIAL)

    serve(tmp_path, sftp_host_keys, scenario)


def test_a_new_upload_or_rm_drops_the_partial_and_one_partial_has_one_writer(
    tmp_path: Path, sftp_host_keys: Path
) -> None:
    async def scenario(server: Server) -> None:
        acme = server.partner()
        drop = server.drop("acme")
        await broken_upload(server, acme, "x.csv", [(0, b"old part")])
        async with server.sftp(acme) as sftp:
            async with sftp.open("x.csv", "wb") as remote:  # a plain `put`: the partner starts over
                await remote.write(b"new\n")
            assert (drop / "x.csv").read_bytes() == b"new\n" and not (drop / PARTIAL / "x.csv").exists()
            # A complete file is not a broken upload: appending to it stays refused.
            with pytest.raises(asyncssh.SFTPOpUnsupported):
                await sftp.open("x.csv", "ab")
        await broken_upload(server, acme, "y.csv", [(0, b"part")])
        async with server.sftp(acme) as first, server.sftp(acme) as second:
            held = await first.open("y.csv", "ab")
            with pytest.raises(asyncssh.SFTPFailure, match="Another session is resuming this upload"):
                await second.open("y.csv", "ab")
            await held.write(b" and the rest")
            await held.close()
            assert (drop / "y.csv").read_bytes() == b"part and the rest"
        await broken_upload(server, acme, "w.csv", [(0, b"a longer old part")])
        # Writing from offset 0 without truncating (not append mode) starts over: no old tail is left.
        async with (
            server.sftp(acme) as sftp,
            sftp.open("w.csv", asyncssh.FXF_WRITE | asyncssh.FXF_CREAT, encoding=None) as remote,
        ):
            await remote.write(b"new", 0)
        assert (drop / "w.csv").read_bytes() == b"new" and not (drop / PARTIAL / "w.csv").exists()
        await broken_upload(server, acme, "z.csv", [(0, b"abandoned")])
        async with server.sftp(acme) as sftp:
            await sftp.remove("z.csv")
            assert not await sftp.exists("z.csv")
        assert not (drop / PARTIAL / "z.csv").exists()

    serve(tmp_path, sftp_host_keys, scenario)


def test_expired_partials_are_removed_and_a_resume_from_nothing_is_refused(
    tmp_path: Path, sftp_host_keys: Path
) -> None:
    async def scenario(server: Server) -> None:
        acme = server.partner()
        drop = server.drop("acme")
        await broken_upload(server, acme, "old.csv", [(0, b"old")])
        await broken_upload(server, acme, "new.csv", [(0, b"new")])
        day_ago = time.time() - 86_400 - 60
        os.utime(drop / PARTIAL / "old.csv", (day_ago, day_ago))
        assert partials.remove_expired(drop, 86_400) == 1
        assert sorted(os.listdir(drop / PARTIAL)) == ["new.csv"]
        async with server.sftp(acme) as sftp:
            assert not await sftp.exists("old.csv")
            # A client continuing at an offset the server no longer has gets a refusal, not a file with a hole.
            remote = await sftp.open("old.csv", "ab")
            with pytest.raises(asyncssh.SFTPFailure, match="The broken upload to continue is gone"):
                await remote.write(b"rest", 3)
            with pytest.raises(asyncssh.SFTPError):
                await remote.close()
        assert "old.csv" not in os.listdir(drop)

    serve(tmp_path, sftp_host_keys, scenario)


def test_a_resume_the_client_cuts_short_is_kept_unfinished_not_published(tmp_path: Path, sftp_host_keys: Path) -> None:
    async def scenario(server: Server) -> None:
        acme = server.partner()
        drop = server.drop("acme")
        await broken_upload(server, acme, "c.csv", [(0, b"first part, ")])
        async with server.sftp(acme) as sftp:
            # What OpenSSH's reput does on Ctrl-C: cut the file to what was acknowledged, then close it.
            remote = await sftp.open("c.csv", "ab")
            await remote.write(b"second part, unacknowledged tail")
            await remote.truncate(len(b"first part, second part, "))
            with pytest.raises(asyncssh.SFTPFailure, match="cut short and is kept unfinished"):
                await remote.close()
            assert "c.csv" not in os.listdir(drop) and server.counted("UPLOADS") == 0
            assert (await sftp.stat("c.csv")).size == len(b"first part, second part, ")
            async with sftp.open("c.csv", "ab") as remote:  # the same reput again finishes it
                await remote.write(b"end\n")
        assert (drop / "c.csv").read_bytes() == b"first part, second part, end\n"
        assert server.counts.count(("UPLOADS_FAILED", 1, ("interrupted",))) == 1

    serve(tmp_path, sftp_host_keys, scenario)
