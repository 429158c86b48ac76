"""Kept broken uploads without a server: expiry, the writer's lock, hostile names, the whole-from-the-start count."""

from __future__ import annotations

import os
import time
from pathlib import Path

from daemon.sftp import partials
from daemon.sftp.uploads import Upload


def kept(account_dir: Path, name: str, data: bytes, age: float = 0.0) -> Path:
    folder = account_dir / partials.PARTIAL_DIR
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_bytes(data)
    if age:
        then = time.time() - age
        os.utime(path, (then, then))
    return path


def test_expiry_removes_only_old_partials_that_no_session_is_writing(tmp_path: Path) -> None:
    account = tmp_path / "acme"
    old, busy, young = (
        kept(account, "old.csv", b"1", 7200),
        kept(account, "busy.csv", b"2", 7200),
        kept(account, "young.csv", b"3"),
    )
    fd = os.open(busy, os.O_WRONLY)
    try:
        assert partials.lock(fd)  # a session resuming it holds this lock (from any SFTP process)
        assert partials.remove_expired(account, 3600) == 1
        assert not old.exists() and busy.exists() and young.exists()
    finally:
        os.close(fd)
    assert partials.remove_expired(account, 3600) == 1 and not busy.exists()
    assert partials.kept_since(account, "young.csv") == young.stat().st_mtime


def test_a_planted_link_instead_of_the_partial_folder_is_never_followed(tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    kept(elsewhere, "victim.csv", b"keep me", 7200)
    account = tmp_path / "acme"
    account.mkdir()
    (account / partials.PARTIAL_DIR).symlink_to(elsewhere / partials.PARTIAL_DIR)
    assert partials.remove_expired(account, 3600) == 0
    assert (elsewhere / partials.PARTIAL_DIR / "victim.csv").exists()
    assert partials.kept_since(account, "victim.csv") is None


def test_a_manifest_file_name_cannot_point_outside_the_partial_folder(tmp_path: Path) -> None:
    account = tmp_path / "acme"
    kept(account, "data.csv", b"x")
    (tmp_path / "outside.csv").write_text("x")
    for name in ("../../outside.csv", "../data.csv", ".", "..", "a\x00b"):
        assert partials.kept_since(account, name) is None, name
    assert partials.kept_since(account, "data.csv") is not None


def test_an_upload_counts_the_bytes_whole_from_its_start() -> None:
    upload = Upload(-1, b"t", b"f", b"p", "acme", "f.csv", "1", False, lambda *args: None)
    for offset, end in ((0, 10), (20, 30), (40, 50), (10, 15)):
        upload.wrote(offset, end)
    assert (upload.size, upload.prefix) == (50, 15)
    upload.wrote(15, 20)  # fills the first gap: 20-30 joins
    assert upload.prefix == 30
    upload.wrote(30, 40)
    assert upload.prefix == 50
    upload.truncated(12)
    assert (upload.size, upload.prefix) == (12, 12)
