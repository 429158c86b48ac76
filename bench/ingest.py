"""Ingest throughput of a running daemon against a naive csv+sqlite3 import and a raw Elasticsearch _bulk load."""

from __future__ import annotations

import argparse
import contextlib
import csv
import json
import os
import shutil
import signal
import sqlite3
import statistics
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

import xxhash

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.fixtures.csvgen import write_events, write_profiles
from tests.fixtures.daemon import Daemon as HarnessDaemon
from tests.fixtures.daemon import daemon_env
from tests.fixtures.noida import Noida

ROOT = Path(__file__).resolve().parent.parent
# The daemon runs in the harness's temp folder: this checkout's code, as when it ran in the caller's folder.
os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))

ACCOUNT = "bench"
EVENT_MANIFEST = {
    "fileName": "events.csv",
    "type": "event",
    "clientEmail": "bench@example.com",
    "columns": {
        "event_name": {"ctName": "evtName"},
        "time_stamp": {"ctName": "ts", "dataType": "LONG"},
        "item_price": {"ctName": "Price", "dataType": "FLOAT"},
        "quantity": {"ctName": "Quantity", "dataType": "INTEGER"},
        "delivered": {"ctName": "Delivered", "dataType": "BOOLEAN"},
    },
}
PROFILE_MANIFEST = {
    "fileName": "profiles.csv",
    "type": "profile",
    "clientEmail": "bench@example.com",
    "columns": {
        "time_stamp": {"ctName": "ts", "dataType": "LONG"},
        "age": {"ctName": "Age", "dataType": "INTEGER"},
        "married": {"ctName": "Married", "dataType": "BOOLEAN"},
    },
}


class Daemon(HarnessDaemon):
    """`ingestd serve` in a subprocess on its own data dir (tests/fixtures/daemon.py's), started; with the
    CPU, memory and job figures this bench reads."""

    def __init__(self, data_dir: Path, env: dict[str, str]) -> None:
        super().__init__(data_dir, daemon_env(data_dir, **env))
        try:
            self.start(timeout=60)
        except RuntimeError as exc:
            raise SystemExit(f"daemon did not start:\n{str(exc)[-3000:]}") from None

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def cpu_seconds(self) -> float:
        """User + system CPU the daemon used so far: a load-independent view beside the wall-clock rates."""
        fields = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def peak_rss_mib(self) -> float:
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
        return float("nan")

    def job(self, manifest_name: str) -> tuple[str, int, int] | None:
        conn = sqlite3.connect(f"file:{self.data_dir / 'state.sqlite3'}?mode=ro", uri=True, timeout=10)
        try:
            row = conn.execute(
                "SELECT status, rows_ingested, rows_failed FROM jobs WHERE manifest_name = ? ORDER BY id DESC",
                (manifest_name,),
            ).fetchone()
        except sqlite3.OperationalError:
            return None
        finally:
            conn.close()
        return row

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 60) -> int:
        """SIGTERM, then SIGKILL if it has not stopped within `timeout` (the fixture's, not raising)."""
        try:
            return super().stop(sig, timeout)
        except RuntimeError as exc:
            print(f"warning: {str(exc).splitlines()[0]}", file=sys.stderr)
            return self.returncode if self.returncode is not None else -signal.SIGKILL


def drop_and_wait(daemon: Daemon, csv_path: Path, manifest: dict[str, Any], name: str) -> tuple[float, tuple]:
    """Copy the CSV in, then the manifest by rename (as an upload completes); seconds until a final status."""
    folder = daemon.data_dir / "drop" / ACCOUNT
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(csv_path, folder / csv_path.name)
    temp = folder / f".ingestd-upload-bench.{name}.part"
    temp.write_text(json.dumps(manifest), encoding="utf-8")
    start = time.perf_counter()
    os.replace(temp, folder / name)
    while True:
        state = daemon.job(name)
        if state and state[0] in ("succeeded", "completed_with_errors", "failed"):
            return time.perf_counter() - start, state
        if not daemon.running:
            raise SystemExit(f"daemon died:\n{daemon.log()[-3000:]}")
        time.sleep(0.02)


def naive_sqlite(csv_path: Path, db_path: Path) -> float:
    """stdlib csv.reader + sqlite3 executemany, 10,000-row transactions, one table: rows/s."""
    start = time.perf_counter()
    conn = sqlite3.connect(db_path)
    with open(csv_path, newline="", encoding="utf-8") as handle:
        reader = csv.reader(handle)
        header = next(reader)
        columns = ", ".join(f"c{i} TEXT" for i in range(len(header)))
        conn.execute(f"CREATE TABLE rows ({columns})")
        insert = f"INSERT INTO rows VALUES ({', '.join('?' * len(header))})"
        rows = 0
        batch: list[list[str]] = []
        for row in reader:
            batch.append(row)
            if len(batch) == 10_000:
                with conn:
                    conn.executemany(insert, batch)
                rows += len(batch)
                batch = []
        if batch:
            with conn:
                conn.executemany(insert, batch)
            rows += len(batch)
    conn.close()
    return rows / (time.perf_counter() - start)


def naive_profiles(csv_path: Path, db_path: Path) -> float:
    """stdlib csv.reader + one sqlite upsert per row merging the row's JSON object into the stored one with
    json_patch, 10,000-row transactions (what a user would write for bench's profile file): rows/s."""
    start, cpu = time.perf_counter(), time.process_time()
    conn = sqlite3.connect(db_path)
    conn.execute("CREATE TABLE profiles (identity TEXT PRIMARY KEY, ts INTEGER NOT NULL, properties TEXT NOT NULL)")
    upsert = (
        "INSERT INTO profiles VALUES (?, ?, ?) ON CONFLICT (identity) DO UPDATE SET ts = excluded.ts, "
        "properties = json_patch(profiles.properties, excluded.properties)"
    )
    rows = 0
    with open(csv_path, newline="", encoding="utf-8") as handle:
        reader = csv.reader(handle)
        next(reader)
        conn.execute("BEGIN")
        for identity, ts, name, city, age, married, tag, _operation in reader:
            properties = {"Name": name, "City": city, "Age": int(age), "Married": married == "yes", "Tags": [tag]}
            conn.execute(upsert, (identity, int(ts) * 1000, json.dumps(properties)))
            rows += 1
            if rows % 10_000 == 0:
                conn.execute("COMMIT")
                conn.execute("BEGIN")
        conn.execute("COMMIT")
    conn.close()
    print(f"naive profiles CPU: {time.process_time() - cpu:.2f}s")
    return rows / (time.perf_counter() - start)


def raw_bulk(csv_path: Path, url: str, prefix: str, chunk: int = 5_000) -> float:
    """The same event documents, serialised before the clock starts, sent as plain _bulk requests: rows/s.

    Same mappings (the sink's index template), same `create` actions into monthly indices, same request size."""
    from daemon.sinks.elasticsearch import EVENT_MAPPINGS

    template = {"index_patterns": [f"{prefix}-events-*"], "priority": 200, "template": {"mappings": EVENT_MAPPINGS}}
    request = urllib.request.Request(
        f"{url}/_index_template/{prefix}-events",
        data=json.dumps(template).encode(),
        headers={"Content-Type": "application/json"},
        method="PUT",
    )
    urllib.request.urlopen(request, timeout=60).read()
    bodies: list[bytes] = []
    lines: list[bytes] = []
    with open(csv_path, newline="", encoding="utf-8") as handle:
        reader = csv.reader(handle)
        next(reader)
        for line, (identity, name, ts, item, price, quantity, delivered) in enumerate(reader, start=2):
            properties = {
                "Name": item,
                "Price": float(price),
                "Quantity": int(quantity),
                "Delivered": delivered == "true",
            }
            doc_id = str(
                xxhash.xxh3_128_intdigest(f"{ACCOUNT}|{identity}|{name}|{ts}|{json.dumps(properties)}".encode())
            )
            month = time.strftime("%Y.%m", time.gmtime(int(ts)))
            lines.append(json.dumps({"create": {"_index": f"{prefix}-events-{month}", "_id": doc_id}}).encode())
            doc = {
                "account": ACCOUNT,
                "identity": identity,
                "name": name,
                "ts": int(ts) * 1000,
                "line": line,
                "properties": properties,
            }
            lines.append(json.dumps(doc).encode())
            if len(lines) >= 2 * chunk:
                bodies.append(b"\n".join(lines) + b"\n")
                lines = []
    if lines:
        bodies.append(b"\n".join(lines) + b"\n")
    rows = sum(body.count(b"\n") for body in bodies) // 2
    start = time.perf_counter()
    for body in bodies:
        request = urllib.request.Request(
            f"{url}/_bulk?filter_path=errors",
            data=body,
            headers={"Content-Type": "application/x-ndjson"},
            method="POST",
        )
        with urllib.request.urlopen(request, timeout=300) as response:
            if json.loads(response.read()).get("errors"):
                raise SystemExit("raw _bulk load reported errors")
    urllib.request.urlopen(
        urllib.request.Request(f"{url}/{prefix}-events-*/_refresh", method="POST"), timeout=300
    ).read()
    return rows / (time.perf_counter() - start)


def start_noida(workdir: Path) -> tuple[Noida, str]:
    """A local Elasticsearch-compatible server (noida-db, tests/fixtures/noida.py's) on a free port, data under
    workdir."""
    noida = Noida(workdir / "noida")
    try:
        noida.start(timeout=60)
    except RuntimeError as exc:
        raise SystemExit(f"noida-db (Elasticsearch) did not start: {str(exc)[-2000:]}") from None
    return noida, noida.url


def run_sink(
    driver: str,
    workdir: Path,
    events: Path,
    profiles: Path,
    n_events: int,
    n_profiles: int,
    es_url: str,
    verbose: bool = False,
    prefix: str = "benchingest",
) -> tuple[float, float, float, float, float]:
    """-> (events rows/s, profiles rows/s, their daemon CPU seconds, peak RSS MiB) of one daemon importing the
    event file, then the profile file."""
    env = {"INGESTD_SINK__DRIVER": driver}
    if driver == "elasticsearch":
        env["INGESTD_ELASTICSEARCH__URL"] = es_url
        env["INGESTD_ELASTICSEARCH__INDEX_PREFIX"] = prefix
    daemon = Daemon(workdir / f"{driver}-data", env)
    try:
        cpu = daemon.cpu_seconds()
        ev_seconds, ev_state = drop_and_wait(daemon, events, EVENT_MANIFEST, "events.manifest")
        ev_cpu, cpu = daemon.cpu_seconds() - cpu, daemon.cpu_seconds()
        pr_seconds, pr_state = drop_and_wait(daemon, profiles, PROFILE_MANIFEST, "profiles.manifest")
        pr_cpu = daemon.cpu_seconds() - cpu
        rss = daemon.peak_rss_mib()
    finally:
        daemon.stop()
    if verbose:
        for line in daemon.log().splitlines():
            if " job." in line:
                print(f"    {line}")
    print(
        f"[{driver}] events:   {n_events:,} rows in {ev_seconds:.2f}s = {n_events / ev_seconds:,.0f} rows/s, daemon CPU {ev_cpu:.2f}s  ({ev_state[0]}, ingested {ev_state[1]:,}, failed {ev_state[2]:,})"
    )
    print(
        f"[{driver}] profiles: {n_profiles:,} rows in {pr_seconds:.2f}s = {n_profiles / pr_seconds:,.0f} rows/s, daemon CPU {pr_cpu:.2f}s  ({pr_state[0]}, ingested {pr_state[1]:,}, failed {pr_state[2]:,})"
    )
    print(f"[{driver}] daemon peak RSS: {rss:,.0f} MiB")
    ratio = (n_profiles / pr_seconds) / (n_events / ev_seconds)
    print(f"[{driver}] ratio profiles / events: {ratio:.2f}  (target >= 0.5)")
    return n_events / ev_seconds, n_profiles / pr_seconds, ev_cpu, pr_cpu, rss


def print_profile_ratio(driver: str, ours: float, naive: float) -> float:
    print(f"[{driver}] ratio ingestd profiles / naive profiles: {ours / naive:.2f}  (target >= 3.0)")
    return ours / naive


def load_average() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def print_medians(runs: list[dict[str, float]]) -> None:
    """The median of each figure over the runs (each ratio taken within its own run), and its range."""
    print(f"medians of {len(runs)} runs (min-max):")
    for name in runs[0]:
        values = [run[name] for run in runs]
        print(f"  {name}: {statistics.median(values):,.2f}  ({min(values):,.2f}-{max(values):,.2f})")


def measure(args: argparse.Namespace, workdir: Path, events: Path, profiles: Path, run: int) -> dict[str, float]:
    """One run of each chosen sink and its baselines on the same files, in a folder (and index names) of its own:
    the figures by name."""
    figures: dict[str, float] = {}
    workdir = workdir / f"run{run}"
    workdir.mkdir()
    measured: list[float] = []

    def naive_profile() -> float:
        """The naive profile script on the same file, once per run."""
        if not measured:
            measured.append(naive_profiles(profiles, workdir / "naive-profiles.sqlite3"))
            print(f"naive profiles, csv.reader + one json_patch upsert per row: {measured[0]:,.0f} rows/s")
        return measured[0]

    if args.sink in ("sqlite", "both"):
        ours, ours_profiles, ev_cpu, pr_cpu, rss = run_sink(
            "sqlite", workdir, events, profiles, args.events, args.profiles, "", args.verbose
        )
        naive = naive_sqlite(events, workdir / "naive.sqlite3")
        print(f"[sqlite] naive csv.reader + executemany: {naive:,.0f} rows/s")
        print(f"[sqlite] ratio ingestd / naive: {ours / naive:.2f}  (target >= 1.0)")
        figures |= {
            "sqlite events / naive": ours / naive,
            "sqlite profiles / naive profiles": print_profile_ratio("sqlite", ours_profiles, naive_profile()),
            "sqlite profiles / events": ours_profiles / ours,
            "sqlite events rows/s": ours,
            "sqlite profiles rows/s": ours_profiles,
            "sqlite events daemon CPU s": ev_cpu,
            "sqlite profiles daemon CPU s": pr_cpu,
            "sqlite daemon peak RSS MiB": rss,
        }
    if args.sink in ("elasticsearch", "both"):
        noida = None
        url = args.es_url
        if url is None:
            noida, url = start_noida(workdir)  # one per run, its data in the run's folder
        try:
            ours, ours_profiles, ev_cpu, pr_cpu, rss = run_sink(
                "elasticsearch",
                workdir,
                events,
                profiles,
                args.events,
                args.profiles,
                url,
                args.verbose,
                prefix=f"benchingest{run}",
            )
            figures["elasticsearch profiles / naive profiles"] = print_profile_ratio(
                "elasticsearch", ours_profiles, naive_profile()
            )
            raw = raw_bulk(events, url, f"benchraw{run}")
            print(f"[elasticsearch] raw pre-serialised _bulk: {raw:,.0f} rows/s")
            print(f"[elasticsearch] ratio ingestd / raw _bulk: {ours / raw:.2f}  (target >= 0.7)")
            figures |= {
                "elasticsearch events / raw _bulk": ours / raw,
                "elasticsearch events daemon CPU s": ev_cpu,
                "elasticsearch profiles daemon CPU s": pr_cpu,
            }
        finally:
            if noida is not None:
                with contextlib.suppress(RuntimeError):  # killed if it hangs
                    noida.stop()
    return figures


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--profiles", type=int, default=200_000)
    parser.add_argument("--sink", choices=["sqlite", "elasticsearch", "both"], default="both")
    parser.add_argument("--es-url", help="an Elasticsearch to use (default: start noida-db)")
    parser.add_argument("--verbose", action="store_true", help="also print the daemon's job log lines")
    parser.add_argument("--runs", type=int, default=1, help="measure this many times, then print the medians")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="ingestd-bench-") as tmp:
        workdir = Path(tmp)
        events, profiles = workdir / "events.csv", workdir / "profiles.csv"
        write_events(events, args.events)
        write_profiles(profiles, args.profiles)
        print(
            f"files: {events.stat().st_size / 2**20:.0f} MiB events, {profiles.stat().st_size / 2**20:.0f} MiB profiles"
        )
        runs: list[dict[str, float]] = []
        for run in range(args.runs):
            print(f"run {run + 1} of {args.runs}, load average {load_average()}")
            runs.append(measure(args, workdir, events, profiles, run))
        if args.runs > 1:
            print_medians(runs)
    return 0


if __name__ == "__main__":
    sys.exit(main())
