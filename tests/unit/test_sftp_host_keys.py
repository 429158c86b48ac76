"""Host keys on a data_dir shared by several processes or nodes: generated once, whoever starts first."""

from __future__ import annotations

import multiprocessing
import os
import threading
from pathlib import Path

import asyncssh
import pytest

from daemon.sftp import listener
from daemon.sftp.listener import HOST_KEYS, load_or_create_host_key


def _start(directory: str, barrier: multiprocessing.synchronize.Barrier, queue: multiprocessing.Queue) -> None:
    barrier.wait()
    keys = {label: load_or_create_host_key(Path(directory), *spec) for label, spec in HOST_KEYS.items()}
    queue.put({label: key.export_public_key("openssh").decode() for label, key in keys.items()})


def test_processes_starting_at_once_on_a_fresh_folder_all_get_the_same_keys(tmp_path: Path) -> None:
    folder = tmp_path / "host_keys"
    context = multiprocessing.get_context("fork")
    barrier, queue = context.Barrier(4), context.Queue()
    processes = [context.Process(target=_start, args=(str(folder), barrier, queue)) for _ in range(4)]
    for process in processes:
        process.start()
    seen = [queue.get(timeout=120) for _ in processes]
    for process in processes:
        process.join(30)
        assert process.exitcode == 0
    assert all(keys == seen[0] for keys in seen)
    on_disk = {label: (folder / f"{spec[0]}.pub").read_text() for label, spec in HOST_KEYS.items()}
    assert {
        label: asyncssh.import_public_key(text).export_public_key("openssh").decode() for label, text in on_disk.items()
    } == seen[0]
    assert sorted(path.name for path in folder.iterdir()) == sorted(
        name for spec in HOST_KEYS.values() for name in (spec[0], f"{spec[0]}.pub")
    )  # no temp file left behind
    assert all((folder / spec[0]).stat().st_mode & 0o777 == 0o600 for spec in HOST_KEYS.values())


def test_without_hard_links_the_first_exclusive_create_wins(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def no_links(source: object, target: object) -> None:  # a file system without hard links (SMB, some FUSE)
        raise PermissionError(1, "Operation not permitted")

    monkeypatch.setattr(os, "link", no_links)
    folder = tmp_path / "host_keys"
    barrier = threading.Barrier(4)
    seen: list[str] = []

    def start() -> None:
        barrier.wait()
        key = load_or_create_host_key(folder)
        seen.append(key.export_public_key("openssh").decode())

    threads = [threading.Thread(target=start) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert len(seen) == 4 and len(set(seen)) == 1
    assert asyncssh.read_private_key(folder / listener.HOST_KEY_FILE).export_public_key("openssh").decode() == seen[0]
