"""Benchmark of the validation engine against a bare csv.reader pass; prints figures, asserts nothing.

    python bench/validate.py            # 1M-row profile and event files, then the 10M-row RSS check
    python bench/validate.py --quick    # 1M-row files only
    python bench/validate.py --rows 200000 --quick

Each measured run is a fresh subprocess, so its peak RSS is its own."""

from __future__ import annotations

import argparse
import csv
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

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
    rows = sum(pl.from_arrow(batch).height for batch in reader)  # type: ignore[union-attr]
    arrow = time.perf_counter() - started
    started = time.perf_counter()
    frame = pl.read_csv(csv_path, infer_schema=False)
    polars_seconds = time.perf_counter() - started
    return {"rows": rows, "pyarrow_stream": arrow, "polars_read_csv": polars_seconds, "polars_rows": frame.height}


def _cpu() -> float:
    """CPU seconds of this process so far, all threads: a figure the machine's load skews less."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _child(mode: str, *args: str) -> dict[str, float]:
    out = subprocess.run(
        [sys.executable, __file__, f"--child-{mode}", *args], check=True, capture_output=True, text=True
    ).stdout
    return json.loads(out.strip().splitlines()[-1])


def measure(kind: str, rows: int, folder: Path) -> dict[str, float]:
    csv_path = folder / f"{kind}-{rows}.csv"
    manifest_path = folder / f"{kind}.manifest"
    manifest_path.write_text(json.dumps(PROFILE_MANIFEST if kind == "profile" else EVENT_MANIFEST))
    started = time.perf_counter()
    generate(kind, rows, csv_path)
    size_mb = csv_path.stat().st_size / 1e6
    print(
        f"\n{kind} file: {rows:,} rows, 12 columns, {size_mb:,.0f} MB (generated in {time.perf_counter() - started:.1f}s)"
    )
    engine = _child("engine", str(csv_path), str(manifest_path))
    baseline = _child("reader", str(csv_path))
    rate, base_rate = engine["rows"] / engine["seconds"], baseline["rows"] / baseline["seconds"]
    print(
        f"  engine      {rate / 1e6:6.2f} M rows/s  {size_mb / engine['seconds']:6.1f} MB/s  "
        f"peak RSS {engine['rss_mb']:6.0f} MB  ({engine['good']:,} good, {engine['bad']:,} bad, {engine['seconds']:.2f}s)"
    )
    print(
        f"  csv.reader  {base_rate / 1e6:6.2f} M rows/s  {size_mb / baseline['seconds']:6.1f} MB/s  ({baseline['seconds']:.2f}s)"
    )
    print(f"  ratio engine / csv.reader: {rate / base_rate:.2f}")
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
        measure("profile", args.rows, folder)
        small = measure("event", args.rows, folder)
        if not args.quick:
            big = measure("event", args.rows * 10, folder)
            print(
                f"\npeak RSS {args.rows * 10:,} rows / {args.rows:,} rows: {big['rss_mb'] / small['rss_mb']:.2f} (target <= 1.5)"
            )


if __name__ == "__main__":
    main()
