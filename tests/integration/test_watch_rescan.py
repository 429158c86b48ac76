"""The periodic rescan (`watch.rescan_interval`): files no watch event announced become jobs, exactly once."""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from daemon.config import Config
from daemon.store.db import StateDB
from daemon.store.jobs import JobStore
from daemon.watch.watcher import DropWatcher
from tests.integration.test_jobs_watch import Running, manifest

CSV = "identity,Name\nann,Ann\n"


@pytest.fixture
def rescanning(config: Config) -> Iterator[Running]:
    config = config.model_copy(update={"watch": config.watch.model_copy(update={"rescan_interval": 0.2})})
    config.drop_root.joinpath("acme").mkdir(parents=True)
    service = Running(config)
    yield service
    service.close()


def placed_by_another_writer(source: Path, target: Path) -> None:
    """How a file appears without any event the watcher acts on: linked in, then unlinked where it was (inotify
    reports a bare create, no close-write and no move), as another node's or writer's file does on a shared
    file system (NFS sends no events at all). Its mtime is a minute old: a rescan leaves fresh files alone."""
    old = time.time() - 60
    os.utime(source, (old, old))
    os.link(source, target)
    source.unlink()  # one name again: hard-linked files are refused


def queued_by_rescan(caplog: pytest.LogCaptureFixture) -> list[int]:
    return [i for r in caplog.records if r.getMessage() == "watch.rescan_queued" for i in r.fields["job_ids"]]  # type: ignore[attr-defined]


def test_a_file_no_event_announced_is_picked_up_by_the_rescan_once(
    rescanning: Running, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, "ingestd.watch")
    folder = rescanning.config.drop_root / "acme"
    outside = tmp_path / "other-node"
    outside.mkdir()
    (outside / "n.csv").write_text(CSV)
    (outside / "n.manifest").write_text(manifest("n.csv"))
    placed_by_another_writer(outside / "n.csv", folder / "n.csv")
    placed_by_another_writer(outside / "n.manifest", folder / "n.manifest")
    [job] = rescanning.until("the job, finished", lambda: [j for j in rescanning.jobs() if j["finished_at"]])
    assert job["status"] == "succeeded" and job["rows_ingested"] == 1
    assert queued_by_rescan(caplog) == [job["id"]]  # the rescan queued it: no watch event had


def test_a_manifest_seen_by_inotify_and_by_rescans_makes_one_job(
    rescanning: Running, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, "ingestd.watch")
    folder = rescanning.config.drop_root / "acme"
    (folder / "w.manifest").write_text(manifest("w.csv"))  # a close-write: the watcher queues it at once
    [waiting] = rescanning.until("the job, waiting for its CSV", rescanning.jobs)
    old = time.time() - 60
    os.utime(folder / "w.manifest", (old, old))  # old enough for every rescan from now on to look at it
    # A second file only a rescan can see: once it is queued, a rescan has also looked at w.manifest.
    (tmp_path / "x.manifest").write_text(manifest("x.csv"))
    placed_by_another_writer(tmp_path / "x.manifest", folder / "x.manifest")
    # That rescan listed the folder after x.manifest was linked, so after w.manifest's mtime was set: it
    # offered w.manifest again, and no second job came of it.
    rescanning.until("x.manifest queued by a rescan", lambda: len(queued_by_rescan(caplog)) == 1)
    (folder / "x.csv").write_text(CSV)
    (folder / "w.csv").write_text(CSV)
    rescanning.until("both jobs finished", lambda: all(j["finished_at"] for j in rescanning.jobs()))
    jobs = rescanning.jobs()
    assert sorted(j["manifest_name"] for j in jobs) == ["w.manifest", "x.manifest"]
    assert [j["id"] for j in jobs if j["manifest_name"] == "w.manifest"] == [waiting["id"]]
    assert all(j["status"] == "succeeded" for j in jobs)


def test_two_nodes_rescanning_one_drop_area_make_one_job_per_manifest(config: Config) -> None:
    # Two nodes: each its own connection to the shared state and its own watcher over the same folders.
    folder = config.drop_root / "acme"
    folder.mkdir(parents=True)
    names = [f"m{index:02}.manifest" for index in range(30)]
    old = time.time() - 60
    for name in names:
        (folder / name).write_text(manifest(name.replace(".manifest", ".csv")))
        os.utime(folder / name, (old, old))
    nodes = [DropWatcher(config.drop_root, JobStore(StateDB(config.state_db)), lambda **_: None) for _ in range(2)]
    start = threading.Barrier(len(nodes))
    created: list[list[int]] = [[] for _ in nodes]

    def run(index: int) -> None:
        start.wait()
        for _ in range(5):
            created[index] += nodes[index].rescan(min_age=5.0)

    threads = [threading.Thread(target=run, args=(index,)) for index in range(len(nodes))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    jobs = JobStore(StateDB(config.state_db)).list_imports(limit=1000)
    assert sorted(job["manifest_name"] for job in jobs) == names  # one each, whichever node queued it
    assert sorted(created[0] + created[1]) == sorted(job["id"] for job in jobs)
