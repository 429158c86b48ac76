"""Benchmark of the validation engine against a bare csv.reader pass; prints figures, asserts nothing.

    python bench/validate.py            # 1M-row profile and event files, then the 10M-row RSS check
    python bench/validate.py --quick    # 1M-row files only
    python bench/validate.py --rows 200000 --quick
    python bench/validate.py --quick --runs 5   # 5 paired runs (engine, then csv.reader) per file: medians

Each measured run is a fresh subprocess, so its peak RSS is its own. The machine's load average is printed
with the figures: the engine uses two threads and the baseline one, so a busy machine lowers the ratio."""

from __future__ import annotations

import argparse
import csv
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

# The daemon's allocator settings, before polars or pyarrow loads (the engine child measures what the daemon runs).
from daemon.jobs import memory  # noqa: E402

memory.apply()

from tests.fixtures.csvgen import write_validate  # noqa: E402

PROFILE_MANIFEST = {
    "fileName": "profiles.csv",
    "type": "profile",
    "clientEmail": "bench@example.com",
    "columns": {
        "time_stamp": {"ctName": "ts", "dataType": "INTEGER"},
        "identity": {"ctName": "identity"},
        "cookie_id": {"ctName": "objectId"},
        "name": {"ctName": "Name"},
        "email": {"ctName": "Email"},
        "phone": {"ctName": "Phone"},
        "married": {"ctName": "Married", "dataType": "BOOLEAN"},
        "age": {"ctName": "Age", "dataType": "INTEGER"},
        "score": {"ctName": "Score", "dataType": "FLOAT"},
        "city": {"ctName": "City"},
        "msg_email": {"ctName": "MSG-email", "dataType": "BOOLEAN"},
    },
}
EVENT_MANIFEST = {
    "fileName": "events.csv",
    "type": "event",
    "clientEmail": "bench@example.com",
    "columns": {
        "event_name": {"ctName": "evtName"},
        "time_stamp": {"ctName": "ts", "dataType": "LONG"},
        "identity": {"ctName": "identity"},
        "cookie_id": {"ctName": "objectId"},
        "item": {"ctName": "Item"},
        "price": {"ctName": "Price", "dataType": "FLOAT"},
        "qty": {"ctName": "Quantity", "dataType": "INTEGER"},
        "delivered": {"ctName": "Delivered", "dataType": "BOOLEAN"},
        "delivery_date": {"ctName": "DeliveryDate"},
        "city": {"ctName": "City"},
        "note": {"ctName": "Note"},
        "score": {"ctName": "Score", "dataType": "LONG"},
    },
}


def generate(kind: str, rows: int, path: Path) -> None:
    """12 columns; every 100th row breaks one rule (1% bad rows): tests/fixtures/csvgen.py's validate shapes."""
    write_validate(kind, rows, path)


def run_engine(csv_path: str, manifest_path: str) -> dict[str, float]:
    """Child mode: validate the whole file, report rows, good/bad counts, seconds and peak RSS."""
    from manifests.model import load_manifest
    from manifests.validate import validate_csv

    manifest = load_manifest(Path(manifest_path).read_bytes())
    cpu = _cpu()
    started = time.perf_counter()
    rows = good = bad = 0
    for batch in validate_csv(csv_path, manifest, account="bench", processing_ts=1_700_000_000):
        frame = batch.events if batch.events is not None else batch.profiles
        rows += batch.rows
        good += 0 if frame is None else frame.height
        bad += len(batch.bad)
    seconds = time.perf_counter() - started
    return {"rows": rows, "good": good, "bad": bad, "seconds": seconds, "cpu": _cpu() - cpu, "rss_mb": _peak_rss_mb()}


def run_reader(csv_path: str) -> dict[str, float]:
    """Child mode: a bare stdlib csv.reader pass, no conversion."""
    cpu = _cpu()
    started = time.perf_counter()
    rows = 0
    with open(csv_path, encoding="utf-8", newline="") as handle:
        for _ in csv.reader(handle):
            rows += 1
    seconds = time.perf_counter() - started
    return {"rows": rows - 1, "seconds": seconds, "cpu": _cpu() - cpu, "rss_mb": _peak_rss_mb()}


def run_parsers(csv_path: str) -> dict[str, float]:
    """Child mode: the two columnar CSV parsers alone, all columns as strings (the engine's choice)."""
    import polars as pl
    import pyarrow as pa
    import pyarrow.csv as pacsv

    with open(csv_path, encoding="utf-8") as handle:
        header = handle.readline().rstrip("\n").split(",")
    started = time.perf_counter()
    reader = pacsv.open_csv(
        csv_path,
        read_options=pacsv.ReadOptions(use_threads=False, block_size=4 << 20),
        convert_options=pacsv.ConvertOptions(column_types=dict.fromkeys(header, pa.large_string())),
    )
    rows = sum(pl.from_arrow(batch).height for batch in reader)  # type: ignore[union-attr,misc]
    arrow = time.perf_counter() - started
    started = time.perf_counter()
    frame = pl.read_csv(csv_path, infer_schema=False)
    polars_seconds = time.perf_counter() - started
    return {"rows": rows, "pyarrow_stream": arrow, "polars_read_csv": polars_seconds, "polars_rows": frame.height}


def _cpu() -> float:
    """CPU seconds of this process so far, all threads: a figure the machine's load skews less."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _load() -> str:
    return " ".join(f"{value:.2f}" for value in os.getloadavg())


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _child(mode: str, *args: str) -> dict[str, float]:
    out = subprocess.run(
        [sys.executable, __file__, f"--child-{mode}", *args], check=True, capture_output=True, text=True
    ).stdout
    return json.loads(out.strip().splitlines()[-1])


def measure(kind: str, rows: int, folder: Path, runs: int = 1) -> dict[str, float]:
    csv_path = folder / f"{kind}-{rows}.csv"
    manifest_path = folder / f"{kind}.manifest"
    manifest_path.write_text(json.dumps(PROFILE_MANIFEST if kind == "profile" else EVENT_MANIFEST))
    started = time.perf_counter()
    generate(kind, rows, csv_path)
    size_mb = csv_path.stat().st_size / 1e6
    print(
        f"\n{kind} file: {rows:,} rows, 12 columns, {size_mb:,.0f} MB (generated in {time.perf_counter() - started:.1f}s)"
    )
    pairs = []
    for _ in range(runs):  # paired: each engine run next to a baseline run, so both see the same load
        pairs.append((_child("engine", str(csv_path), str(manifest_path)), _child("reader", str(csv_path))))
    ratios = [(e["rows"] / e["seconds"]) / (b["rows"] / b["seconds"]) for e, b in pairs]
    engine = {key: statistics.median(e[key] for e, _ in pairs) for key in pairs[0][0]}
    baseline = {key: statistics.median(b[key] for _, b in pairs) for key in pairs[0][1]}
    engine["rss_max"] = max(e["rss_mb"] for e, _ in pairs)
    rate, base_rate = engine["rows"] / engine["seconds"], baseline["rows"] / baseline["seconds"]
    each = f" (median of {runs} paired runs)" if runs > 1 else ""
    worst = f" (max {engine['rss_max']:.0f})" if runs > 1 else ""
    print(
        f"  engine      {rate / 1e6:6.2f} M rows/s  {size_mb / engine['seconds']:6.1f} MB/s  "
        f"peak RSS {engine['rss_mb']:6.0f} MB{worst}  "
        f"({engine['good']:,.0f} good, {engine['bad']:,.0f} bad, {engine['seconds']:.2f}s){each}"
    )
    print(
        f"  csv.reader  {base_rate / 1e6:6.2f} M rows/s  {size_mb / baseline['seconds']:6.1f} MB/s  ({baseline['seconds']:.2f}s)"
    )
    shown = f"{statistics.median(ratios):.2f}"
    if runs > 1:
        shown += f" (median; runs {', '.join(f'{r:.2f}' for r in ratios)})"
    print(f"  ratio engine / csv.reader: {shown}; load average {_load()}")
    print(
        f"  CPU seconds: engine {engine['cpu']:.2f} (all threads, imports excluded), csv.reader {baseline['cpu']:.2f}"
    )
    if rows <= 2_000_000:
        parsers = _child("parsers", str(csv_path))
        print(
            f"  parse only: pyarrow streaming {parsers['rows'] / parsers['pyarrow_stream'] / 1e6:.2f} M rows/s, "
            f"polars read_csv {parsers['polars_rows'] / parsers['polars_read_csv'] / 1e6:.2f} M rows/s"
        )
    csv_path.unlink()
    return engine


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--quick", action="store_true", help="skip the 10x-rows peak-RSS run")
    parser.add_argument("--runs", type=int, default=1, help="paired engine/csv.reader runs per file (medians)")
    parser.add_argument("--child-engine", nargs=2, metavar=("CSV", "MANIFEST"), help=argparse.SUPPRESS)
    parser.add_argument("--child-reader", metavar="CSV", help=argparse.SUPPRESS)
    parser.add_argument("--child-parsers", metavar="CSV", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child_engine:
        print(json.dumps(run_engine(*args.child_engine)))
        return
    if args.child_reader:
        print(json.dumps(run_reader(args.child_reader)))
        return
    if args.child_parsers:
        print(json.dumps(run_parsers(args.child_parsers)))
        return
    from manifests import validate

    print(f"event ids hashed by: {'polars-hash' if validate._plh is not None else 'hashlib'}; cores: {os.cpu_count()}")
    with tempfile.TemporaryDirectory(prefix="ingestd-bench-") as tmp:
        folder = Path(tmp)
        measure("profile", args.rows, folder, args.runs)
        small = measure("event", args.rows, folder, args.runs)
        if not args.quick:
            big = measure("event", args.rows * 10, folder)
            print(
                f"\npeak RSS {args.rows * 10:,} rows / {args.rows:,} rows: {big['rss_mb'] / small['rss_mb']:.2f} (target <= 1.5)"
            )


if __name__ == "__main__":
    main()
