"""Exports: N events from the sqlite sink to each format, rows/s and peak RSS, next to a naive script in the same run.

    python bench/export.py                                   # 1M events, every format, then 5M for RSS
    python bench/export.py --rows 200000 --big 0 --formats jsonl,csv

The naive baseline reads the same sink file with a sqlite3 cursor and writes one row at a time (json.dumps per
row for jsonl; csv.writer per row for csv, after a query for the union of property names). Every export and
every baseline runs in its own process, so its peak RSS (ru_maxrss) is its own. Prints figures, asserts nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import polars as pl  # noqa: E402

ACCOUNT = "bench"
NAMES = ("Charged", "App Open", "Added To Cart", "Searched", "Viewed")
DAY = 86_400_000


def fill(data_dir: Path, rows: int, batch: int = 250_000) -> None:
    """`rows` events in the sink file, written through the sqlite sink as imports do: 5 names over 10 days."""
    from daemon.sinks.sqlite import SQLiteSink

    sink = SQLiteSink(data_dir / "sink.sqlite3")
    now = int(time.time() * 1000)

    async def run() -> None:
        await sink.start()
        for start in range(0, rows, batch):
            index = pl.int_range(start, min(rows, start + batch), eager=True, dtype=pl.Int64)
            frame = pl.DataFrame({"i": index}).select(
                (pl.col("i") + 2).alias("line"),
                (pl.col("i") + 10**15).cast(pl.String).alias("event_id"),
                ("user" + (pl.col("i") % 50_000).cast(pl.String)).alias("identity"),
                (pl.col("i") % len(NAMES)).replace_strict(dict(enumerate(NAMES)), return_dtype=pl.String).alias("name"),
                (now - (pl.col("i") * 997) % (10 * DAY)).alias("ts"),
                pl.format(
                    '{{"Amount":{},"Currency":"USD","Product":"Item {}","Qty":{},"Paid":{},"Store":"S{}"}}',
                    pl.col("i") % 1000,
                    pl.col("i") % 977,
                    pl.col("i") % 9,
                    (pl.col("i") % 2 == 0),
                    pl.col("i") % 31,
                ).alias("properties"),
            )
            failures = await sink.write_events(ACCOUNT, frame)
            if failures:
                raise SystemExit(f"fill: {len(failures)} failures, e.g. {failures[0]}")
        await sink.stop()

    asyncio.run(run())


def peak_rss_mib() -> float:
    """This process's peak RSS since its exec (VmHWM; ru_maxrss would carry the parent's over from the fork)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def child_ours(data_dir: Path, fmt: str) -> dict[str, float]:
    from daemon.commands.exports import create_export
    from daemon.config import load_config
    from daemon.exports.model import make_spec
    from daemon.exports.service import ExportService
    from daemon.store import StateDB

    config = load_config(environ={"INGESTD_DATA_DIR": str(data_dir)})
    export_id, _ = create_export(config, make_spec(ACCOUNT, "events", format=fmt, days=45))
    service = ExportService(config, StateDB(config.state_db))
    start = time.perf_counter()
    outcome = service.run_one(export_id)
    elapsed = time.perf_counter() - start
    if outcome is None or outcome.status != "done":
        raise SystemExit(f"export {fmt}: {outcome}")
    for item in outcome.files:  # keep the disk free for the next format
        (config.drop_root / ACCOUNT / str(item["location"])).unlink()
    return {"rows": outcome.rows, "seconds": elapsed, "bytes": outcome.bytes, "files": len(outcome.files)}


def child_naive(data_dir: Path, fmt: str) -> dict[str, float]:
    import sqlite3

    out = data_dir / f"naive.{fmt}"
    start = time.perf_counter()
    conn = sqlite3.connect(data_dir / "sink.sqlite3")
    cursor = conn.execute("SELECT identity, name, ts, properties FROM events WHERE account = ?", (ACCOUNT,))
    rows = 0
    with open(out, "w", newline="", encoding="utf-8") as handle:
        if fmt == "jsonl":
            for identity, name, ts, properties in cursor:
                line = {"profile": {"identity": identity}, "ts": ts, "eventName": name}
                line["eventProps"] = json.loads(properties)
                handle.write(json.dumps(line) + "\n")
                rows += 1
        else:
            keys = [
                row[0]
                for row in conn.execute(
                    "SELECT DISTINCT j.key FROM events, json_each(events.properties) AS j WHERE account = ?",
                    (ACCOUNT,),
                )
            ]
            writer = csv.writer(handle)
            writer.writerow(["identity", "ts", "eventName", *keys])
            for identity, name, ts, properties in cursor:
                props = json.loads(properties)
                writer.writerow([identity, ts, name, *(props.get(key, "") for key in keys)])
                rows += 1
    elapsed = time.perf_counter() - start
    size = out.stat().st_size
    out.unlink()
    return {"rows": rows, "seconds": elapsed, "bytes": size, "files": 1}


def run_child(kind: str, data_dir: Path, fmt: str) -> dict[str, float]:
    result = subprocess.run(
        [sys.executable, __file__, "--child", kind, "--data", str(data_dir), "--formats", fmt],
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        raise SystemExit(f"{kind} {fmt} failed:\n{result.stderr[-2000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def report(label: str, figures: dict[str, float]) -> float:
    rate = figures["rows"] / figures["seconds"]
    print(
        f"  {label:16} {figures['rows']:>10,.0f} rows in {figures['seconds']:6.2f}s = {rate:>10,.0f} rows/s"
        f"  peak RSS {figures['rss']:7.1f} MiB  {figures['bytes'] / 2**20:8.1f} MiB in {figures['files']:.0f} file(s)"
    )
    return rate


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--big", type=int, default=5_000_000, help="a second, bigger run for RSS (0: skip)")
    parser.add_argument("--formats", default="jsonl,csv,xml,parquet")
    parser.add_argument("--big-formats", default="jsonl,csv,xml,parquet", help="formats of the bigger run")
    parser.add_argument("--child", choices=["ours", "naive"], help=argparse.SUPPRESS)
    parser.add_argument("--data", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        figures = (child_ours if args.child == "ours" else child_naive)(args.data, args.formats)
        figures["rss"] = peak_rss_mib()
        print(json.dumps(figures))
        return 0
    formats = args.formats.split(",")
    peaks: dict[int, dict[str, float]] = {}
    for rows in [args.rows] + ([args.big] if args.big else []):
        with tempfile.TemporaryDirectory(prefix="ingestd-bench-export-") as tmp:
            data_dir = Path(tmp)
            start = time.perf_counter()
            fill(data_dir, rows)
            print(f"{rows:,} events in the sqlite sink ({time.perf_counter() - start:.1f}s to fill)")
            peaks[rows] = {}
            for fmt in formats if rows == args.rows else args.big_formats.split(","):
                ours = run_child("ours", data_dir, fmt)
                rate = report(f"ingestd {fmt}", ours)
                peaks[rows][fmt] = ours["rss"]
                if fmt in ("jsonl", "csv") and rows == args.rows:
                    naive = run_child("naive", data_dir, fmt)
                    naive_rate = report(f"naive {fmt}", naive)
                    print(f"  ratio ingestd / naive {fmt}: {rate / naive_rate:.2f}")
    if args.big and len(peaks) == 2:
        for fmt, big in peaks[args.big].items():
            small = peaks[args.rows].get(fmt)
            if small:
                print(
                    f"peak RSS {fmt}: {small:.1f} MiB at {args.rows:,}, {big:.1f} MiB at {args.big:,} = {big / small:.2f}x"
                )
    return 0


if __name__ == "__main__":
    sys.exit(main())
