"""The drop-folder handler's promises, in-process: the real listener on port 0 in the test's event loop, with
asyncssh's client, paramiko in a thread and OpenSSH's sftp (tests/fixtures/sftp_server.py)."""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Awaitable, Callable
from pathlib import Path

import asyncssh
import pytest

from tests.fixtures.sftp_server import Server, sftp_server

Scenario = Callable[[Server], Awaitable[None]]


class _Tracebacks(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.seen: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.exc_info:
            self.seen.append(f"{record.name}: {record.getMessage()}")


def serve(tmp_path: Path, host_keys: Path, scenario: Scenario, **env: str) -> None:
    """Run `scenario` against a fresh in-process server; nothing it does may end in a logged traceback."""

    async def main() -> None:
        async with sftp_server(tmp_path / "data", host_keys, **env) as server:
            await scenario(server)

    tracebacks = _Tracebacks()
    logger = logging.getLogger("ingestd")
    logger.addHandler(tracebacks)
    try:
        asyncio.run(main())
    finally:
        logger.removeHandler(tracebacks)
    assert tracebacks.seen == []


def temp_files(drop: Path) -> list[str]:
    return [name for name in os.listdir(drop) if name.startswith(".ingestd-upload-")]


# -- the jail -------------------------------------------------------------------------------------------------


def test_paths_cannot_leave_the_partners_folder(tmp_path: Path, sftp_host_keys: Path) -> None:
    async def scenario(server: Server) -> None:
        acme, globex = server.partner("acme"), server.partner("globex")
        async with server.sftp(globex) as sftp, sftp.open("theirs.csv", "wb") as remote:
            await remote.write(b"identity\nsecret\n")
        async with server.sftp(acme) as sftp:
            assert await sftp.realpath("../..") == "/"
            # '..' and absolute paths are taken inside the root: an upload lands there, nowhere else.
            async with sftp.open("../../up.csv", "wb") as remote:
                await remote.write(b"identity\n1\n")
            assert (server.drop("acme") / "up.csv").read_bytes() == b"identity\n1\n"
            assert not (server.config.data_dir / "up.csv").exists()
            for path in ("/etc/passwd", "../../state.sqlite3", "../globex/theirs.csv", "/globex/theirs.csv"):
                with pytest.raises(asyncssh.SFTPNoSuchFile):
                    await sftp.open(path, "rb")
            with pytest.raises(asyncssh.SFTPNoSuchFile):
                await sftp.listdir("/etc")
            assert "theirs.csv" not in await sftp.listdir("..")

    serve(tmp_path, sftp_host_keys, scenario)


def test_links_are_refused_and_planted_links_lead_nowhere(tmp_path: Path, sftp_host_keys: Path) -> None:
    async def scenario(server: Server) -> None:
        acme = server.partner()
        drop = server.drop("acme")
        async with server.sftp(acme) as sftp:
            async with sftp.open("target.csv", "wb") as remote:
                await remote.write(b"identity\n")
            with pytest.raises(asyncssh.SFTPPermissionDenied, match="Links are not allowed"):
                await sftp.symlink("/etc/passwd", "pw")
            with pytest.raises(asyncssh.SFTPPermissionDenied, match="Links are not allowed"):
                await sftp.link("target.csv", "hard.csv")
            assert not {"pw", "hard.csv"} & set(os.listdir(drop))
            (drop / "planted").symlink_to("/etc/passwd")
            (drop / "planted-dir").symlink_to(server.config.data_dir)
            assert not {"planted", "planted-dir"} & set(await sftp.listdir("."))
            for path in ("planted", "planted-dir/state.sqlite3"):
                with pytest.raises(asyncssh.SFTPNoSuchFile):
                    await sftp.open(path, "rb")
            with pytest.raises(asyncssh.SFTPNoSuchFile):
                await sftp.listdir("planted-dir")
            with pytest.raises(asyncssh.SFTPNoSuchFile):
                await sftp.open("planted", "wb")  # an upload does not write through a planted link either
            assert os.readlink(drop / "planted") == "/etc/passwd"

    serve(tmp_path, sftp_host_keys, scenario)


def test_hidden_names_cannot_be_created_read_renamed_or_removed(tmp_path: Path, sftp_host_keys: Path) -> None:
    async def scenario(server: Server) -> None:
        acme = server.partner()
        drop = server.drop("acme")
        drop.mkdir(parents=True, exist_ok=True)
        other = drop / ".ingestd-upload-0000.other.csv.part"
        other.write_text("someone else's upload")
        async with server.sftp(acme) as sftp:
            for name in (".hidden.csv", ".ingestd-upload-1234.h.csv.part"):
                with pytest.raises(asyncssh.SFTPPermissionDenied, match="Names starting with"):
                    await sftp.open(name, "wb")
            with pytest.raises(asyncssh.SFTPNoSuchFile):
                await sftp.open(other.name, "rb")
            with pytest.raises(asyncssh.SFTPNoSuchFile):
                await sftp.remove(other.name)
            with pytest.raises(asyncssh.SFTPNoSuchFile):
                await sftp.rename(other.name, "stolen.csv")
            async with sftp.open("mine.csv", "wb") as remote:
                await remote.write(b"x\n")
            with pytest.raises(asyncssh.SFTPPermissionDenied, match="Names starting with"):
                await sftp.rename("mine.csv", ".mine.csv")
        assert other.read_text() == "someone else's upload"
        assert not (drop / ".hidden.csv").exists() and not (drop / "stolen.csv").exists()

    serve(tmp_path, sftp_host_keys, scenario)


# -- uploads --------------------------------------------------------------------------------------------------


def test_an_upload_appears_under_its_name_only_when_closed_and_replaces_a_file_whole(
    tmp_path: Path, sftp_host_keys: Path
) -> None:
    async def scenario(server: Server) -> None:
        acme = server.partner()
        drop = server.drop("acme")
        async with server.sftp(acme) as sftp:
            remote = await sftp.open("late.csv", "wb")
            await remote.write(b"identity\n" * 1000)
            # Written so far, but not under its name: not on disk, not listed, not found by stat.
            assert "late.csv" not in os.listdir(drop) and "late.csv" not in await sftp.listdir(".")
            assert not await sftp.exists("late.csv")
            assert len(temp_files(drop)) == 1  # the hidden temp file it is written to
            assert not [name for name in await sftp.listdir(".") if name.startswith(".") and name not in (".", "..")]
            await remote.close()
            assert (drop / "late.csv").stat().st_size == 9000 and temp_files(drop) == []
            assert server.counted("UPLOADS") == 1 and server.counted("UPLOAD_BYTES") == 9000
            # An overwrite: the old file stays whole until the new one is closed.
            remote = await sftp.open("late.csv", "wb")
            await remote.write(b"second\n")
            assert (drop / "late.csv").stat().st_size == 9000
            await remote.close()
            assert (drop / "late.csv").read_bytes() == b"second\n"
            # Changing a complete file in place is refused: the watcher may be importing it.
            with pytest.raises(asyncssh.SFTPOpUnsupported):
                await sftp.open("late.csv", "r+b")

    serve(tmp_path, sftp_host_keys, scenario)


def test_a_session_sending_many_files_gets_each_whole_and_leaves_no_temp_file_behind(
    tmp_path: Path, sftp_host_keys: Path
) -> None:
    # From its second upload on, a session gets the temp file of its next upload made ahead (one at most).
    async def scenario(server: Server) -> None:
        acme = server.partner()
        drop = server.drop("acme")
        sent = {f"f{index:02d}.csv": os.urandom(index * 997) for index in range(12)}  # f00.csv is empty
        async with server.sftp(acme) as sftp:
            for name, data in sent.items():
                async with sftp.open(name, "wb") as remote:
                    await remote.write(data)
                assert (drop / name).read_bytes() == data
                spares = temp_files(drop)
                assert len(spares) <= 1 and all((drop / spare).stat().st_size == 0 for spare in spares)
                assert not [entry for entry in await sftp.listdir(".") if entry.startswith(".ingestd-")]
            assert len(temp_files(drop)) == 1  # ready for a next upload
        for _ in range(100):  # the session's end removes it
            if not temp_files(drop):
                break
            await asyncio.sleep(0.02)
        assert temp_files(drop) == [] and sorted(os.listdir(drop)) == sorted(sent)
        assert server.counted("UPLOADS") == len(sent) and server.counted("UPLOAD_BYTES") == sum(map(len, sent.values()))
        # A connection dropped without closing the session removes its spare too; a later upload is whole.
        async with asyncssh.connect(
            "127.0.0.1", server.port, username="acme", client_keys=[acme.key], known_hosts=None, config=None
        ) as conn:
            sftp = await conn.start_sftp_client()
            for name in ("g1.csv", "g2.csv", "g3.csv"):
                async with sftp.open(name, "wb") as remote:
                    await remote.write(name.encode())
            conn.abort()
        for _ in range(100):
            if not temp_files(drop):
                break
            await asyncio.sleep(0.02)
        assert temp_files(drop) == [] and (drop / "g3.csv").read_bytes() == b"g3.csv"
        # OpenSSH's sftp putting several files in one session, as partners do.
        source = tmp_path / "batch"
        source.mkdir()
        for index in range(5):
            (source / f"b{index}.csv").write_bytes(b"identity\n%d\n" % index)
        result = await server.openssh(acme, [f"put {source}/*"])
        assert result.returncode == 0, result.stderr
        for index in range(5):
            assert (drop / f"b{index}.csv").read_bytes() == b"identity\n%d\n" % index
        for _ in range(100):
            if not temp_files(drop):
                break
            await asyncio.sleep(0.02)
        assert temp_files(drop) == []

    serve(tmp_path, sftp_host_keys, scenario)


def test_an_upload_cut_off_by_the_session_ending_never_appears_nor_counts(tmp_path: Path, sftp_host_keys: Path) -> None:
    async def scenario(server: Server) -> None:
        acme = server.partner()
        drop = server.drop("acme")
        async with server.sftp(acme) as sftp:
            remote = await sftp.open("cut.csv", "wb")
            await remote.write(b"identity\n1\n")
        for _ in range(100):  # the server closes the handle when it sees the session end
            if not temp_files(drop):
                break
            await asyncio.sleep(0.02)
        assert "cut.csv" not in os.listdir(drop) and temp_files(drop) == []
        assert server.counted("UPLOADS") == 0

    serve(tmp_path, sftp_host_keys, scenario)


def test_rename_does_not_replace_and_posix_rename_does(tmp_path: Path, sftp_host_keys: Path) -> None:
    async def scenario(server: Server) -> None:
        acme = server.partner()
        drop = server.drop("acme")
        async with server.sftp(acme) as sftp:
            for name in ("a.csv.filepart", "b.csv"):
                async with sftp.open(name, "wb") as remote:
                    await remote.write(name.encode())
            with pytest.raises(asyncssh.SFTPFailure):  # FX_FILE_ALREADY_EXISTS, shown as a failure to v3
                await sftp.rename("a.csv.filepart", "b.csv")
            assert (drop / "b.csv").read_bytes() == b"b.csv"
            await sftp.posix_rename("a.csv.filepart", "b.csv")
            assert (drop / "b.csv").read_bytes() == b"a.csv.filepart" and not (drop / "a.csv.filepart").exists()

    serve(tmp_path, sftp_host_keys, scenario)


def test_the_size_cap_refuses_and_discards_a_bigger_upload(tmp_path: Path, sftp_host_keys: Path) -> None:
    async def scenario(server: Server) -> None:
        acme = server.partner()
        drop = server.drop("acme")
        async with server.sftp(acme) as sftp:
            remote = await sftp.open("over.csv", "wb")
            await remote.write(b"x" * 200 * 1024)
            with pytest.raises(asyncssh.SFTPFailure, match="exceeds the maximum upload size of 256 KiB"):
                await remote.write(b"x" * 100 * 1024)
            with pytest.raises(asyncssh.SFTPFailure, match="maximum upload size"):
                await remote.close()
            assert "over.csv" not in os.listdir(drop) and temp_files(drop) == []
            remote = await sftp.open("grow.csv", "wb")
            with pytest.raises(asyncssh.SFTPFailure, match="maximum upload size"):
                await remote.truncate(257 * 1024)  # a size set by fsetstat is held to the cap too
            with pytest.raises(asyncssh.SFTPError):
                await remote.close()
            async with sftp.open("exact.csv", "wb") as remote:
                await remote.write(b"x" * 256 * 1024)  # the cap itself is allowed
        # Refused, and then the client vanishes without closing: nothing left, counted once.
        async with asyncssh.connect(
            "127.0.0.1", server.port, username="acme", client_keys=[acme.key], known_hosts=None, config=None
        ) as conn:
            sftp = await conn.start_sftp_client()
            remote = await sftp.open("gone.csv", "wb")
            with pytest.raises(asyncssh.SFTPFailure, match="maximum upload size"):
                await remote.write(b"x" * (256 * 1024 + 1))
            conn.abort()
        await asyncio.sleep(0.1)
        assert (drop / "exact.csv").stat().st_size == 256 * 1024
        assert not {"grow.csv", "gone.csv", "over.csv"} & set(os.listdir(drop)) and temp_files(drop) == []
        assert server.counts.count(("UPLOADS_FAILED", 1, ("too_large",))) == 3 and server.counted("UPLOADS") == 1

    serve(tmp_path, sftp_host_keys, scenario, INGESTD_SFTP__MAX_FILE_SIZE="256KiB")


def test_open_files_are_capped_per_account_over_its_connections(tmp_path: Path, sftp_host_keys: Path) -> None:
    async def scenario(server: Server) -> None:
        acme, globex = server.partner("acme"), server.partner("globex")
        async with server.sftp(acme) as first, server.sftp(acme) as second, server.sftp(globex) as other:
            held = [await first.open(f"a-{index}.csv", "wb") for index in range(2)]
            held.append(await second.open("b-0.csv", "wb"))
            with pytest.raises(asyncssh.SFTPFailure, match="Too many files open at once for this account"):
                await second.open("b-1.csv", "wb")
            with pytest.raises(asyncssh.SFTPFailure, match="at most 3"):
                await first.open("a-0.csv", "rb")  # a download holds a handle too
            theirs = [await other.open(f"g-{index}.csv", "wb") for index in range(3)]  # another account: its own
            for handle in theirs:
                await handle.close()
            await held.pop(0).close()
            held.append(await second.open("b-1.csv", "wb"))
            for handle in held:
                await handle.write(b"identity\n")
                await handle.close()
        assert {"a-1.csv", "b-0.csv", "b-1.csv"} <= set(os.listdir(server.drop("acme")))

    serve(tmp_path, sftp_host_keys, scenario, INGESTD_SFTP__MAX_OPEN_FILES="3")


# -- listing and folders --------------------------------------------------------------------------------------


def test_a_listing_shows_only_visible_regular_files_and_folders(tmp_path: Path, sftp_host_keys: Path) -> None:
    async def scenario(server: Server) -> None:
        acme = server.partner()
        drop = server.drop("acme")
        drop.mkdir(parents=True, exist_ok=True)
        (drop / "errors").mkdir()
        (drop / "data.csv").write_text("identity\n")
        (drop / ".dotfile").write_text("hidden\n")
        os.mkfifo(drop / "pipe")
        (drop / "link.csv").symlink_to(drop / "data.csv")
        async with server.sftp(acme) as sftp:
            names = {name for name in await sftp.listdir(".") if name not in (".", "..")}
            assert names == {"errors", "data.csv"}
            with pytest.raises(asyncssh.SFTPFailure, match="Not a regular file"):
                await sftp.open("pipe", "rb")
            with pytest.raises(asyncssh.SFTPFailure, match="Not a directory"):
                await sftp.listdir("data.csv")

    serve(tmp_path, sftp_host_keys, scenario)


def test_errors_and_exports_are_read_only_and_folders_cannot_be_made(tmp_path: Path, sftp_host_keys: Path) -> None:
    async def scenario(server: Server) -> None:
        acme = server.partner()
        drop = server.drop("acme")
        for folder in ("errors", "exports"):
            (drop / folder).mkdir(parents=True)
            (drop / folder / "report.csv").write_text("identity,Failure Description\n")
        async with server.sftp(acme) as sftp:
            async with sftp.open("top.csv", "wb") as remote:
                await remote.write(b"x\n")
            for folder in ("errors", "exports"):
                async with sftp.open(f"{folder}/report.csv", "rb") as remote:
                    report: bytes = await remote.read()
                assert report.startswith(b"identity,Failure Description")
                with pytest.raises(asyncssh.SFTPPermissionDenied, match="Uploads go to the top folder only"):
                    await sftp.open(f"{folder}/x.csv", "wb")
                with pytest.raises(asyncssh.SFTPPermissionDenied, match="Uploads go to the top folder only"):
                    await sftp.rename("top.csv", f"{folder}/x.csv")
                with pytest.raises(asyncssh.SFTPPermissionDenied, match="Creating or removing folders"):
                    await sftp.rmdir(folder)
            with pytest.raises(asyncssh.SFTPPermissionDenied, match="Creating or removing folders"):
                await sftp.mkdir("new")
        for folder in ("errors", "exports"):
            assert os.listdir(drop / folder) == ["report.csv"]
        assert not (drop / "new").exists()

    serve(tmp_path, sftp_host_keys, scenario)


# -- other clients against the same in-process server ---------------------------------------------------------


def test_paramiko_and_openssh_put_list_get_and_refusals_are_logged(
    tmp_path: Path, sftp_host_keys: Path, caplog: pytest.LogCaptureFixture
) -> None:
    source = tmp_path / "events.csv"
    source.write_bytes(b"identity\n" + b"1\n" * 50_000)
    back = tmp_path / "back.csv"

    def with_paramiko(server: Server, private: Path) -> list[str]:
        from tests.fixtures.sshkeys import paramiko_sftp

        with paramiko_sftp(server.port, "acme", private) as sftp:
            sftp.put(str(source), "p.csv")
            sftp.get("p.csv", str(back))
            try:
                sftp.open("errors/no.csv", "wb")
            except PermissionError as exc:
                return [str(exc), *sftp.listdir(".")]
            return sftp.listdir(".")

    async def scenario(server: Server) -> None:
        acme = server.partner()
        seen = await asyncio.to_thread(with_paramiko, server, acme.private)
        assert "Uploads go to the top folder only" in seen[0] and "p.csv" in seen
        assert back.read_bytes() == source.read_bytes()
        result = await server.openssh(acme, [f"put {source} o.csv", "ls -l", "put /etc/hostname .x"])
        assert result.returncode != 0 and "o.csv" in result.stdout and "p.csv" in result.stdout
        assert (server.drop("acme") / "o.csv").read_bytes() == source.read_bytes()

    with caplog.at_level(logging.INFO, logger="ingestd.sftp"):
        serve(tmp_path, sftp_host_keys, scenario)
    refused = [getattr(record, "fields", {}) for record in caplog.records if record.getMessage() == "sftp.refused"]
    assert {"account": "acme", "op": "open", "file": "errors/no.csv"}.items() <= refused[0].items(), refused
    assert refused[0]["reason"] == "Uploads go to the top folder only" and refused[0]["shown"] == "Permission denied"
    assert any(str(fields["reason"]).startswith("Names starting with") for fields in refused), refused
