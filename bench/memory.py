"""The main daemon's peak RSS during event imports: one file of N rows, or `--workers` accounts importing at once.

Each size runs in a fresh `ingestd serve` (tests/fixtures/daemon.py, sqlite sink), so its peak is its own.
RSS is sampled every 10 ms while the import runs (VmRSS), next to the kernel's high-water mark (VmHWM):
the figure to hold against the budget (docs/ops-guide.md, "Memory") is the peak minus nothing, the whole
process. Also prints the rows/s and the same run's naive csv.reader + executemany import of the same file
(bench/ingest.py's baseline), so a memory fix that costs speed shows in the ratio.

    python3 bench/memory.py                       # 1M rows
    python3 bench/memory.py --events 1000000 2000000
    python3 bench/memory.py --workers 2           # two accounts' 1M-row imports at once, workers=2
    python3 bench/memory.py --kind ragged --events 2000000   # every row ragged (a 4 MB file)
    python3 bench/memory.py --timeline            # also the RSS every 0.25 s
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sqlite3
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.ingest import EVENT_MANIFEST, naive_sqlite
from tests.fixtures.csvgen import write_events, write_ragged
from tests.fixtures.daemon import Daemon, daemon_env

FINAL = ("succeeded", "completed_with_errors", "failed", "cancelled")


def vm(pid: int, key: str) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) / 1024
    return float("nan")


class Sampler:
    """VmRSS of a pid every `interval` seconds in a thread; `peak` and a coarse timeline."""

    def __init__(self, pid: int, interval: float = 0.01) -> None:
        self.pid, self.interval = pid, interval
        self.peak = 0.0
        self.timeline: list[tuple[float, float]] = []
        self._stop = threading.Event()
        self._start = time.perf_counter()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        last = -1.0
        while not self._stop.is_set():
            try:
                rss = vm(self.pid, "VmRSS")
            except OSError:
                return
            self.peak = max(self.peak, rss)
            now = time.perf_counter() - self._start
            if now - last >= 0.25:
                self.timeline.append((now, rss))
                last = now
            time.sleep(self.interval)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


def jobs(data_dir: Path) -> list[tuple]:
    try:
        conn = sqlite3.connect(f"file:{data_dir / 'state.sqlite3'}?mode=ro", uri=True, timeout=10)
    except sqlite3.OperationalError:
        return []
    try:
        return conn.execute("SELECT account, status, rows_ingested, rows_failed FROM jobs ORDER BY id").fetchall()
    except sqlite3.OperationalError:
        return []
    finally:
        conn.close()


def run(root: Path, name: str, csv_path: Path, accounts: int, env: dict[str, str], timeline: bool) -> dict:
    data_dir = root / name / "data"
    daemon = Daemon(data_dir, daemon_env(data_dir, INGESTD_SINK__DRIVER="sqlite", **env))
    daemon.start(timeout=60)
    try:
        assert daemon.process is not None
        pid = daemon.process.pid
        idle = vm(pid, "VmRSS")
        names = [f"bench{i}" for i in range(accounts)]
        for account in names:
            folder = daemon.drop(account)
            folder.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(csv_path, folder / "events.csv")  # a hard link would be refused
        sampler = Sampler(pid)
        start = time.perf_counter()
        for account in names:
            temp = daemon.drop(account) / ".upload.part"
            temp.write_text(json.dumps(EVENT_MANIFEST), encoding="utf-8")
            os.replace(temp, daemon.drop(account) / "events.manifest")
        while True:
            state = jobs(data_dir)
            if len(state) == accounts and all(row[1] in FINAL for row in state):
                seconds = time.perf_counter() - start
                break
            if not daemon.running:
                raise SystemExit(f"daemon died:\n{daemon.log()[-3000:]}")
            time.sleep(0.02)
        sampler.stop()
        after = vm(pid, "VmRSS")
        hwm = vm(pid, "VmHWM")
    finally:
        daemon.stop(timeout=60)
    if timeline:
        print("    " + " ".join(f"{t:.1f}s:{rss:.0f}" for t, rss in sampler.timeline))
    return {"seconds": seconds, "idle": idle, "peak": max(sampler.peak, hwm), "after": after, "jobs": state}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, nargs="+", default=[1_000_000], help="rows per file, one run each")
    parser.add_argument("--workers", type=int, default=1, help="accounts importing the file at once (jobs.workers)")
    parser.add_argument("--kind", choices=["events", "ragged"], default="events")
    parser.add_argument("--set", action="append", default=[], metavar="ENV=VALUE", help="extra daemon settings")
    parser.add_argument("--no-naive", action="store_true", help="skip the naive baseline")
    parser.add_argument("--timeline", action="store_true", help="print the RSS every 0.25 s")
    args = parser.parse_args()
    env = {"INGESTD_JOBS__WORKERS": str(args.workers)}
    env.update(item.split("=", 1) for item in args.set)
    with tempfile.TemporaryDirectory(prefix="ingestd-memory-") as tmp:
        root = Path(tmp)
        for rows in args.events:
            path = root / f"{args.kind}-{rows}.csv"
            (write_ragged if args.kind == "ragged" else write_events)(path, rows)
            result = run(root, f"{args.kind}-{rows}", path, args.workers, env, args.timeline)
            total = rows * args.workers
            outcome = ", ".join(f"{s} {i:,}/{f:,}" for _, s, i, f in result["jobs"])
            print(
                f"[{args.kind} x{args.workers}] {rows:,} rows ({path.stat().st_size / 2**20:.0f} MiB): "
                f"{result['seconds']:.2f}s = {total / result['seconds']:,.0f} rows/s; RSS idle {result['idle']:,.0f} "
                f"MiB, peak {result['peak']:,.0f} MiB, after {result['after']:,.0f} MiB  ({outcome})"
            )
            if not args.no_naive and args.kind == "events":
                naive = naive_sqlite(path, root / f"naive-{rows}.sqlite3")
                print(
                    f"    naive csv.reader + executemany: {naive:,.0f} rows/s; ratio {total / result['seconds'] / naive:.2f}"
                )
            path.unlink()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
