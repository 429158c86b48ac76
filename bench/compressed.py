"""Upload + import of the same events file plain and gzipped, through SFTP to one `ingestd serve`, in one run.

    python bench/compressed.py                  # 1M events, 2 rounds, the link limited to 100 Mbit/s
    python bench/compressed.py --rows 3000000 --rounds 3 --limit-mbit 0   # loopback, no limit

Each figure is from the moment `sftp` starts the upload until the job's final status: what a partner waits.
The link is limited with sftp's own `-l` (default 100 Mbit/s, a partner's uplink; 0: loopback speed).
The gzip file is made once with `gzip -6` (the command's default); its time is not counted. Prints figures,
asserts nothing."""

from __future__ import annotations

import argparse
import gzip
import json
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from ingest import ACCOUNT, EVENT_MANIFEST, Daemon, write_events  # noqa: E402

FINAL = ("succeeded", "completed_with_errors", "failed")


def sftp_port(daemon: Daemon) -> int:
    out = daemon.log.with_suffix(".out")
    match = re.search(r"^\s+sftp\s+\S+:(\d+)", out.read_text(errors="replace"), re.MULTILINE)
    if not match:
        raise SystemExit("no sftp port in the daemon's banner")
    return int(match.group(1))


def upload_and_import(
    daemon: Daemon, port: int, key: Path, data: Path, manifest: Path, limit_mbit: int
) -> tuple[float, float]:
    """(upload seconds, seconds from the upload's start to the job's final status)."""
    command = ["sftp", "-b", "-", "-P", str(port), "-i", str(key), "-o", "IdentitiesOnly=yes"]
    if limit_mbit:
        command += ["-l", str(limit_mbit * 1000)]  # Kbit/s
    command += ["-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null", f"{ACCOUNT}@127.0.0.1"]
    batch = f'put "{data}" "{data.name}"\nput "{manifest}" "{manifest.name}"\n'
    started = time.perf_counter()
    result = subprocess.run(command, input=batch, capture_output=True, text=True)
    uploaded = time.perf_counter() - started
    if result.returncode != 0:
        raise SystemExit(f"sftp failed: {result.stderr[-2000:]}")
    while True:
        state = daemon.job(manifest.name)
        if state and state[0] in FINAL:
            if state[0] == "failed":
                raise SystemExit(f"the import failed: {state}\n{daemon.log.read_text(errors='replace')[-3000:]}")
            return uploaded, time.perf_counter() - started
        if daemon.process.poll() is not None:
            raise SystemExit(f"daemon died:\n{daemon.log.read_text(errors='replace')[-3000:]}")
        time.sleep(0.02)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--limit-mbit", type=int, default=100, help="sftp -l, in Mbit/s; 0: no limit")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="ingestd-bench-gz-") as tmp:
        work = Path(tmp)
        plain = work / "events.csv"
        write_events(plain, args.rows)
        packed = work / "events.csv.gz"
        with open(plain, "rb") as source, gzip.open(packed, "wb", compresslevel=6) as target:
            shutil.copyfileobj(source, target, 1 << 20)
        key = work / "key"
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
        daemon = Daemon(work / "data", {"INGESTD_JOBS__WORKERS": "1"})
        try:
            env_cli = [sys.executable, "-m", "daemon.cli", "keys", "add", ACCOUNT, str(key) + ".pub"]
            subprocess.run(env_cli, check=True, capture_output=True, env=_env(daemon))
            port = sftp_port(daemon)
            times: dict[str, list[tuple[float, float]]] = {"plain": [], "gzip": []}
            for n in range(args.rounds):
                order = ["plain", "gzip"] if n % 2 == 0 else ["gzip", "plain"]
                for kind in order:
                    data = plain if kind == "plain" else packed
                    manifest = work / f"{kind}-{n}.manifest"
                    manifest.write_text(json.dumps({**EVENT_MANIFEST, "fileName": data.name}))
                    times[kind].append(upload_and_import(daemon, port, key, data, manifest, args.limit_mbit))
        finally:
            daemon.stop()
        size, packed_size = plain.stat().st_size, packed.stat().st_size
        print(
            f"{args.rows:,} events: plain {size / 1e6:,.1f} MB, gzip -6 {packed_size / 1e6:,.1f} MB "
            f"({size / packed_size:.1f}x smaller); OpenSSH sftp defaults, "
            f"link {f'{args.limit_mbit} Mbit/s' if args.limit_mbit else 'unlimited (loopback)'}, "
            f"{args.rounds} round(s), median"
        )
        median = {
            kind: (statistics.median(u for u, _ in runs), statistics.median(t for _, t in runs))
            for kind, runs in times.items()
        }
        for kind in ("plain", "gzip"):
            upload, total = median[kind]
            print(
                f"  {kind:5}  upload {upload:6.2f}s   upload + import {total:6.2f}s   "
                f"(runs: {', '.join(f'{t:.2f}' for _, t in times[kind])})"
            )
        print(
            f"  gzip / plain, upload + import: {median['gzip'][1] / median['plain'][1]:.2f} "
            f"(upload alone: {median['gzip'][0] / median['plain'][0]:.2f})"
        )
    return 0


def _env(daemon: Daemon) -> dict[str, str]:
    import os

    env = {k: v for k, v in os.environ.items() if not k.startswith("INGESTD_")}
    env["INGESTD_DATA_DIR"] = str(daemon.data_dir)
    return env


if __name__ == "__main__":
    raise SystemExit(main())
