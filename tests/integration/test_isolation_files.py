"""What ingestd writes is its own user's only, whatever umask it was started with (issue #10)."""

from __future__ import annotations

import os
import stat
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.fixtures.daemon import Daemon
from tests.fixtures.samples import PROFILES_CSV
from tests.integration.test_e2e import Partner, finished, profile_manifest


@pytest.fixture
def loose_umask() -> Iterator[None]:
    """The daemon inherits umask 022, the usual default, under which files would be world-readable."""
    previous = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(previous)


def test_data_dir_is_0700_and_every_file_in_it_0600(
    loose_umask: None, make_daemon: Callable[..., Daemon], keypair: tuple[Path, Path], tmp_path: Path
) -> None:
    daemon = make_daemon()
    daemon.add_key("acme", keypair[1])
    partner = Partner(daemon, keypair[0], tmp_path / "partner")
    # One bad row, so there is an error CSV (in the job folder and the partner's errors/) and a failure email.
    csv = PROFILES_CSV.rstrip("\n") + "\n,,,,,,,,,\n"
    partner.upload("profiles.csv", csv, "profiles.manifest", profile_manifest("profiles.csv"))
    [job] = finished(daemon, 1)
    assert job["rows_failed"] >= 1
    assert stat.S_IMODE(daemon.data_dir.stat().st_mode) == 0o700
    loose = []
    for folder, dirs, files in os.walk(daemon.data_dir):
        for name in files:
            path = Path(folder) / name
            if stat.S_IMODE(path.lstat().st_mode) & 0o077:
                loose.append(f"{path.relative_to(daemon.data_dir)} {stat.filemode(path.lstat().st_mode)}")
        for name in dirs:
            path = Path(folder) / name
            if stat.S_IMODE(path.lstat().st_mode) & 0o077:
                loose.append(f"{path.relative_to(daemon.data_dir)}/ {stat.filemode(path.lstat().st_mode)}")
    assert loose == []
    names = {path.name for path in daemon.data_dir.rglob("*")}
    assert {"state.sqlite3", "sink.sqlite3", "profiles.csv"} <= names  # what the walk covered
    assert any(name.endswith(".eml") for name in names) and any(name.endswith(".errors.csv") for name in names)


def test_an_older_data_dir_is_made_private_at_start(loose_umask: None, make_daemon: Callable[..., Daemon]) -> None:
    daemon = make_daemon()
    daemon.stop()
    daemon.data_dir.chmod(0o755)
    (daemon.data_dir / "state.sqlite3").chmod(0o644)
    daemon.start()
    assert stat.S_IMODE(daemon.data_dir.stat().st_mode) == 0o700
    assert stat.S_IMODE((daemon.data_dir / "state.sqlite3").stat().st_mode) == 0o600
