"""Peak RSS and rows/s of the main daemon importing N failed rows, next to N good rows in the same run.

The hostile file of the security review: header `identity,name`, then `a` on every line (every row ragged),
2 bytes a row, so the default 2,000,000 rows is a 4 MB file. Each kind runs in a fresh `ingestd serve`
(tests/fixtures/daemon.py) so its VmHWM (/proc/<pid>/status) is its own."""

from __future__ import annotations

import argparse
import json
import os
import sqlite3
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.fixtures.csvgen import write_names, write_ragged
from tests.fixtures.daemon import Daemon, daemon_env

ACCOUNT = "bench"


def write_csv(path: Path, rows: int, bad: bool) -> None:
    """Header `identity,name`; then `a` on every line (bad: every row ragged), or `u<i>,n` (good)."""
    if bad:
        write_ragged(path, rows, header="identity,name")
    else:
        write_names(path, rows)


def vm(pid: int, key: str) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) / 1024
    return float("nan")


def job(data_dir: Path) -> tuple | None:
    try:
        conn = sqlite3.connect(f"file:{data_dir / 'state.sqlite3'}?mode=ro", uri=True, timeout=10)
    except sqlite3.OperationalError:
        return None
    try:
        return conn.execute("SELECT status, rows_ingested, rows_failed, error FROM jobs ORDER BY id DESC").fetchone()
    except sqlite3.OperationalError:
        return None
    finally:
        conn.close()


def run(root: Path, name: str, csv_path: Path) -> tuple[float, float, float, tuple]:
    data_dir = root / name / "data"
    daemon = Daemon(data_dir, daemon_env(data_dir, INGESTD_SINK__DRIVER="sqlite"))
    daemon.start(timeout=60)
    try:
        assert daemon.process is not None
        idle = vm(daemon.process.pid, "VmRSS")
        folder = daemon.drop(ACCOUNT)
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "p.csv").write_bytes(csv_path.read_bytes())
        temp = folder / ".upload.part"
        manifest = {"fileName": "p.csv", "type": "profile", "clientEmail": "bench@example.com"}
        temp.write_text(json.dumps(manifest), encoding="utf-8")
        start = time.perf_counter()
        os.replace(temp, folder / "p.manifest")
        while True:
            state = job(data_dir)
            if state and state[0] in ("succeeded", "completed_with_errors", "failed"):
                seconds = time.perf_counter() - start
                break
            if not daemon.running:
                raise SystemExit(f"daemon died:\n{daemon.log()[-3000:]}")
            time.sleep(0.02)
        return seconds, idle, vm(daemon.process.pid, "VmHWM"), state
    finally:
        daemon.stop(timeout=60)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=2_000_000)
    parser.add_argument("--kinds", default="good,bad", help="which imports to run, in order (good,bad)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="ingestd-bad-rows-") as tmp:
        root = Path(tmp)
        for kind in args.kinds.split(","):
            path = root / f"{kind}.csv"
            write_csv(path, args.rows, bad=kind == "bad")
            seconds, idle, peak, state = run(root, kind, path)
            status, ingested, failed, error = state
            print(
                f"[{kind}] {args.rows:,} rows, {path.stat().st_size / 1e6:.1f} MB: {seconds:.2f}s = "
                f"{args.rows / seconds:,.0f} rows/s; main daemon RSS idle {idle:,.0f} MiB, peak {peak:,.0f} MiB "
                f"({status}, ingested {ingested:,}, failed {failed:,}{', ' + error if error else ''})"
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
