"""The drop-folder watcher on a running job manager: what counts as an arrival, and what never does."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from daemon.config import Config
from daemon.jobs.manager import JobManager
from daemon.sinks import open_sink
from daemon.store.db import StateDB
from notifier.service import Notifier
from tests.fixtures.csvgen import write_names


class Running:
    """A started JobManager (watcher included) on its own event loop, which runs while `until()` polls."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.db = StateDB(config.state_db)
        self.sink = open_sink(config)
        self.manager = JobManager(config, self.db, self.sink, Notifier(config, self.db))  # emails as files
        self.loop = asyncio.new_event_loop()
        self.loop.run_until_complete(self.sink.start())
        self.loop.run_until_complete(self.manager.start())

    def until(self, what: str, check: Any, timeout: float = 30) -> Any:
        async def poll() -> Any:
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                value = await asyncio.to_thread(check)
                if value:
                    return value
                await asyncio.sleep(0.05)
            raise AssertionError(f"timed out waiting for {what}")

        return self.loop.run_until_complete(poll())

    def jobs(self) -> list[dict[str, Any]]:
        return list(reversed(self.manager.store.list_imports(limit=1000)))

    def close(self) -> None:
        self.loop.run_until_complete(self.manager.stop())
        self.loop.run_until_complete(self.sink.stop())
        self.loop.close()
        self.db.close()


@pytest.fixture
def running(config: Config) -> Iterator[Running]:
    config.drop_root.joinpath("acme").mkdir(parents=True)
    service = Running(config)
    yield service
    service.close()


def manifest(file_name: str) -> str:
    return json.dumps({"fileName": file_name, "type": "profile", "clientEmail": "partner@example.com"})


def test_renamed_and_copied_manifests_become_jobs(running: Running, tmp_path: Path) -> None:
    folder = running.config.drop_root / "acme"
    (folder / "a.csv").write_text("identity,Name\nann,Ann\n")
    temp = folder / ".ingestd-upload-1.a.manifest.part"
    temp.write_text(manifest("a.csv"))
    os.replace(temp, folder / "a.manifest")  # how an SFTP upload completes
    outside = tmp_path / "b.manifest"
    outside.write_text(manifest("b.csv"))
    (folder / "b.csv").write_text("identity,Name\nbob,Bob\n")
    shutil.copyfile(outside, folder / "b.manifest")  # how a copy by other means arrives
    jobs = running.until(
        "two finished jobs",
        lambda: len(running.jobs()) == 2 and all(j["finished_at"] for j in running.jobs()) and running.jobs(),
    )
    assert [(job["manifest_name"], job["status"]) for job in jobs] == [
        ("a.manifest", "succeeded"),
        ("b.manifest", "succeeded"),
    ]


def test_a_new_accounts_folder_is_watched_too(running: Running) -> None:
    folder = running.config.drop_root / "newco"
    folder.mkdir()
    (folder / "n.csv").write_text("identity,Name\nnia,Nia\n")
    (folder / "n.manifest").write_text(manifest("n.csv"))
    [job] = running.until("a job for the new account", running.jobs)
    assert job["account"] == "newco"


def test_an_account_folder_moved_into_the_drop_root_is_watched_and_one_moved_out_is_not(
    running: Running, tmp_path: Path
) -> None:
    made = tmp_path / "moved"
    made.mkdir()
    (made / "m.csv").write_text("identity,Name\nmo,Mo\n")
    (made / "m.manifest").write_text(manifest("m.csv"))
    folder = running.config.drop_root / "moved"
    os.rename(made, folder)  # its files were there before it was watched
    running.until("the moved-in folder's job", lambda: any(j["finished_at"] for j in running.jobs()))
    (folder / "later.csv").write_text("identity,Name\nli,Li\n")
    (folder / "later.manifest").write_text(manifest("later.csv"))  # after: its own event
    running.until("the later manifest's job", lambda: len([j for j in running.jobs() if j["finished_at"]]) == 2)
    gone = tmp_path / "gone"
    os.rename(running.config.drop_root / "acme", gone)
    (gone / "g.csv").write_text("identity,Name\ngi,Gi\n")
    (gone / "g.manifest").write_text(manifest("g.csv"))  # outside the drop root now: no arrival
    (folder / "last.csv").write_text("identity,Name\nla,La\n")
    (folder / "last.manifest").write_text(manifest("last.csv"))
    running.until("the last manifest's job", lambda: len([j for j in running.jobs() if j["finished_at"]]) == 3)
    assert [(job["account"], job["manifest_name"]) for job in running.jobs()] == [
        ("moved", "m.manifest"),
        ("moved", "later.manifest"),
        ("moved", "last.manifest"),
    ]


def test_after_the_kernel_drops_events_every_folder_is_looked_at_again(running: Running) -> None:
    from inotify_simple import flags

    events = running.manager.watcher._events
    assert events is not None
    events._unwatch("acme")  # as if its events were lost
    folder = running.config.drop_root / "acme"
    (folder / "o.csv").write_text("identity,Name\nola,Ola\n")
    (folder / "o.manifest").write_text(manifest("o.csv"))
    time.sleep(0.5)
    assert running.jobs() == []
    events._dispatch(-1, flags.Q_OVERFLOW, "")  # what the kernel reports when its queue overflowed
    [job] = running.until("the manifest's job", running.jobs)
    assert job["manifest_name"] == "o.manifest"


def test_hidden_files_nested_folders_and_other_names_are_not_arrivals(running: Running) -> None:
    folder = running.config.drop_root / "acme"
    (folder / ".ingestd-upload-2.x.manifest.part").write_text(manifest("x.csv"))
    (folder / ".hidden.manifest").write_text(manifest("x.csv"))
    (folder / "errors").mkdir()
    (folder / "errors" / "e.manifest").write_text(manifest("x.csv"))
    (folder / "sub").mkdir()
    (folder / "sub" / "s.manifest").write_text(manifest("x.csv"))
    (folder / "notes.txt").write_text("hello")
    (running.config.drop_root / "root.manifest").write_text(manifest("x.csv"))
    # A real arrival after all of them: once it is seen, the others would have been seen too.
    (folder / "real.csv").write_text("identity,Name\nrae,Rae\n")
    (folder / "real.manifest").write_text(manifest("real.csv"))
    running.until("the real manifest's job", lambda: any(j["finished_at"] for j in running.jobs()))
    assert [job["manifest_name"] for job in running.jobs()] == ["real.manifest"]


def big_profiles(path: Path, rows: int) -> None:
    write_names(path, rows, header="identity,Name", name=lambda i: f"N{i}")


@pytest.mark.parametrize("workers", [1, 2])
def test_accounts_run_in_parallel_up_to_the_worker_count(config: Config, workers: int) -> None:
    config.jobs.workers = workers
    config.jobs.batch_rows = config.jobs.commit_rows = 2_000
    for account in ("acme", "globex"):
        config.drop_root.joinpath(account).mkdir(parents=True)
    service = Running(config)
    try:
        acme, globex = config.drop_root / "acme", config.drop_root / "globex"
        big_profiles(acme / "big.csv", 150_000)
        (acme / "big.manifest").write_text(manifest("big.csv"))
        service.until("acme's import under way", lambda: any(j["rows_ingested"] for j in service.jobs()))
        (globex / "small.csv").write_text("identity,Name\ngus,Gus\n")
        (globex / "small.manifest").write_text(manifest("small.csv"))

        def small_done() -> dict[str, Any] | None:
            jobs = {job["account"]: job for job in service.jobs()}
            return jobs if jobs.get("globex", {}).get("finished_at") else None

        jobs = service.until("globex's import", small_done, timeout=120)
        if workers == 2:
            # A second worker took the other account's file while the big one was still going.
            assert jobs["acme"]["status"] == "processing"
        else:
            # One worker: the other account waited for it.
            assert jobs["acme"]["status"] == "succeeded"
        assert jobs["globex"]["status"] == "succeeded"
    finally:
        service.close()
