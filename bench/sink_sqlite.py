"""The sqlite sink alone: write_events / write_profiles of pre-validated frames against a naive csv+sqlite3 import.

    python bench/sink_sqlite.py                      # 1M events, 200k profiles (bench/ingest.py's files)
    python bench/sink_sqlite.py --events 200000 --profiles 50000

The frames come from the real validation engine before any clock starts; the naive baseline is
bench/ingest.py's (stdlib csv.reader + sqlite3 executemany, 10,000-row transactions) on the same
event file in the same run. Prints figures, asserts nothing."""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.ingest import ACCOUNT, EVENT_MANIFEST, PROFILE_MANIFEST, naive_sqlite, write_events, write_profiles  # noqa: E402
from daemon.sinks.sqlite import SQLiteSink  # noqa: E402
from manifests.model import load_manifest  # noqa: E402
from manifests.validate import validate_csv  # noqa: E402


def frames(path: Path, manifest: dict[str, object], batch_rows: int) -> list:
    model = load_manifest(json.dumps(manifest).encode())
    kind = "events" if model.type == "event" else "profiles"
    return [
        getattr(batch, kind)
        for batch in validate_csv(path, model, account=ACCOUNT, processing_ts=0, batch_rows=batch_rows)
    ]


def cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def timed_writes(sink: SQLiteSink, kind: str, batches: list, verbose: bool) -> tuple[float, float]:
    """Wall and CPU seconds to write every batch, one after another as the worker does."""
    write = sink.write_events if kind == "events" else sink.write_profiles

    async def run() -> tuple[float, float]:
        await sink.start()
        wall, used = time.perf_counter(), cpu()
        for index, frame in enumerate(batches):
            start = time.perf_counter()
            failures = await write(ACCOUNT, frame)
            if failures:
                raise SystemExit(f"{kind} batch {index}: {len(failures)} row failures, e.g. {failures[0]}")
            if verbose:
                print(f"    {kind} batch {index}: {frame.height / (time.perf_counter() - start):,.0f} rows/s")
        result = time.perf_counter() - wall, cpu() - used
        await sink.stop()
        return result

    return asyncio.run(run())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--profiles", type=int, default=200_000)
    parser.add_argument("--batch-rows", type=int, default=50_000, help="rows per batch (config jobs.batch_rows)")
    parser.add_argument("--verbose", action="store_true", help="also print each batch's rate")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="ingestd-bench-sink-") as tmp:
        workdir = Path(tmp)
        events, profiles = workdir / "events.csv", workdir / "profiles.csv"
        write_events(events, args.events)
        write_profiles(profiles, args.profiles)
        event_frames = frames(events, EVENT_MANIFEST, args.batch_rows)
        profile_frames = frames(profiles, PROFILE_MANIFEST, args.batch_rows)
        sink = SQLiteSink(workdir / "sink.sqlite3")
        ev_wall, ev_cpu = timed_writes(sink, "events", event_frames, args.verbose)
        print(
            f"sink write_events:   {args.events:,} rows in {ev_wall:.2f}s = {args.events / ev_wall:,.0f} rows/s  (CPU {ev_cpu:.2f}s)"
        )
        again_wall, again_cpu = timed_writes(sink, "events", event_frames[:2], False)
        again = sum(frame.height for frame in event_frames[:2])
        print(
            f"sink rewrite (dupes): {again:,} rows in {again_wall:.2f}s = {again / again_wall:,.0f} rows/s  (CPU {again_cpu:.2f}s)"
        )
        pr_wall, pr_cpu = timed_writes(sink, "profiles", profile_frames, args.verbose)
        print(
            f"sink write_profiles: {args.profiles:,} rows in {pr_wall:.2f}s = {args.profiles / pr_wall:,.0f} rows/s  (CPU {pr_cpu:.2f}s)"
        )
        size = sum(path.stat().st_size for path in workdir.glob("sink.sqlite3*"))
        print(f"sink files: {size / 2**20:,.0f} MiB")
        used = cpu()
        naive = naive_sqlite(events, workdir / "naive.sqlite3")
        print(f"naive csv.reader + executemany: {naive:,.0f} rows/s  (CPU {cpu() - used:.2f}s)")
        print(f"ratio sink write_events / naive: {args.events / ev_wall / naive:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
