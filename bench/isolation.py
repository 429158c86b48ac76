"""One partner's sample import while others attack: idle-connection floods and hostile manifests, vs quiet.

Each round runs the same import twice on one daemon: once on a quiet daemon, once while
- 1,000 idle TCP connections to the SFTP port are held (from 100 loopback addresses, re-opened when dropped),
- 1,000 idle TCP connections to the HTTP port are held (re-opened when dropped),
- another partner has uploaded a 50 MB manifest and a manifest whose clientEmail is 1 MB of letters.
It prints both times and their ratio per round, then the medians (target: loaded <= 2x quiet).

    python3 bench/isolation.py [--rounds 3] [--sftp-flood 1000] [--http-flood 1000]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import resource
import selectors
import socket
import statistics
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.fixtures.daemon import Daemon, daemon_env
from tests.fixtures.samples import EVENTS_CSV, EVENTS_MANIFEST, PROFILES_CSV, PROFILES_MANIFEST
from tests.fixtures.sshkeys import make_keypair, sftp_batch

FLOOD_SOURCES = 100  # loopback addresses 127.0.1.1 ... the SFTP flood comes from
RECONNECTS_PER_SECOND = 500  # a held flood, not a CPU race with the daemon on a 2-core machine


class Flood:
    """`count` idle TCP connections to `port`, each re-opened (rate-limited) when the server drops it."""

    def __init__(self, port: int, count: int, sources: int = 1) -> None:
        self.port, self.count, self.sources = port, count, sources
        self.held: dict[socket.socket, str] = {}
        self.dropped = 0
        self.refused = 0
        self._stop = threading.Event()
        self._selector = selectors.DefaultSelector()  # epoll: select() stops at descriptor 1024
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _open(self, index: int) -> None:
        source = f"127.0.1.{1 + index % self.sources}" if self.sources > 1 else "127.0.0.1"
        sock = socket.socket()
        sock.setblocking(False)
        try:
            sock.bind((source, 0))
            sock.connect_ex(("127.0.0.1", self.port))
        except OSError:
            self.refused += 1
            sock.close()
            return
        self.held[sock] = source
        self._selector.register(sock, selectors.EVENT_READ)

    def _run(self) -> None:
        index = 0
        budget = float(RECONNECTS_PER_SECOND)
        last = time.monotonic()
        while not self._stop.is_set():
            now = time.monotonic()
            budget = min(float(RECONNECTS_PER_SECOND), budget + (now - last) * RECONNECTS_PER_SECOND)
            last = now
            while len(self.held) < self.count and budget >= 1:
                self._open(index)
                index += 1
                budget -= 1
            ready = self._selector.select(0.05) if self.held else []
            for key, _ in ready:
                sock = key.fileobj
                assert isinstance(sock, socket.socket)
                try:
                    data = sock.recv(4096)  # the SSH version line, or nothing when dropped
                except OSError:
                    data = b""
                if not data:
                    self.dropped += 1
                    del self.held[sock]
                    self._selector.unregister(sock)
                    sock.close()
            if not self.held:
                time.sleep(0.01)

    def __enter__(self) -> Flood:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        for sock in self.held:
            sock.close()
        self.held.clear()
        self._selector.close()


def api(daemon: Daemon, path: str) -> Any:
    assert daemon.http_url
    with urllib.request.urlopen(daemon.http_url + path, timeout=60) as response:
        return json.loads(response.read())


def sample_import(daemon: Daemon, key: Path, folder: Path, tag: str) -> float:
    """Upload the reference samples as `tag`-named files; seconds until both imports are finished."""
    folder.mkdir(parents=True, exist_ok=True)
    profiles = dict(PROFILES_MANIFEST, fileName=f"{tag}-profiles.csv")
    events = dict(EVENTS_MANIFEST, fileName=f"{tag}-events.csv")
    files = {
        f"{tag}-profiles.csv": PROFILES_CSV,
        f"{tag}-profiles.manifest": json.dumps(profiles),
        f"{tag}-events.csv": EVENTS_CSV,
        f"{tag}-events.manifest": json.dumps(events),
    }
    for name, content in files.items():
        (folder / name).write_text(content, encoding="utf-8")
    started = time.monotonic()
    for _ in range(30):  # a connection dropped by the flood is tried again, as a partner's script would
        result = sftp_batch(daemon.sftp_port, "quiet", key, [f'put "{folder / name}" "{name}"' for name in files])
        if result.returncode == 0:
            break
        time.sleep(0.5)
    else:
        raise SystemExit(f"the quiet partner could not upload: {result.stderr.strip()}")
    manifests = {f"{tag}-profiles.manifest", f"{tag}-events.manifest"}
    while True:
        try:
            jobs = api(daemon, "/api/imports?account=quiet&limit=500")["imports"]
        except OSError:
            jobs = []
        done = [job for job in jobs if job["manifest_name"] in manifests and job["finished_at"]]
        if len(done) == 2:
            bad = [job for job in done if job["status"] != "succeeded"]
            if bad:
                raise SystemExit(f"the sample import did not succeed: {bad}")
            return time.monotonic() - started
        if time.monotonic() - started > 600:
            raise SystemExit("the sample import did not finish within 10 minutes")
        time.sleep(0.05)


def hostile_uploads(daemon: Daemon, key: Path, folder: Path, tag: str) -> None:
    """The noisy partner: a 50 MB manifest and one whose clientEmail is 1 MB of letters (no CSV for either)."""
    folder.mkdir(parents=True, exist_ok=True)
    big = folder / f"{tag}-big.manifest"
    with open(big, "w", encoding="utf-8") as handle:
        handle.write('{"fileName": "never.csv", "type": "event", "clientEmail": "n@example.com", "pad": "')
        handle.write("x" * (50 * 1000 * 1000))
        handle.write('"}')
    letters = folder / f"{tag}-email.manifest"
    letters.write_text(json.dumps({"fileName": "never.csv", "type": "event", "clientEmail": "a" * 1_000_000}))
    result = sftp_batch(daemon.sftp_port, "noisy", key, [f'put "{big}"', f'put "{letters}"'], timeout=300)
    if result.returncode != 0:
        raise SystemExit(f"the noisy partner could not upload: {result.stderr.strip()}")


@contextlib.contextmanager
def attacked(daemon: Daemon, sftp_flood: int, http_flood: int) -> Iterator[tuple[Flood, Flood]]:
    assert daemon.http_port
    with Flood(daemon.sftp_port, sftp_flood, FLOOD_SOURCES) as sftp, Flood(daemon.http_port, http_flood) as http:
        deadline = time.monotonic() + 30
        while (len(sftp.held) < sftp_flood or len(http.held) < http_flood) and time.monotonic() < deadline:
            time.sleep(0.1)
        yield sftp, http


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--sftp-flood", type=int, default=1000)
    parser.add_argument("--http-flood", type=int, default=1000)
    args = parser.parse_args()
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))  # the flood itself needs the descriptors
    with tempfile.TemporaryDirectory(prefix="ingestd-isolation-") as tmp:
        root = Path(tmp)
        quiet_key, quiet_pub = make_keypair(root / "keys", "quiet")
        noisy_key, noisy_pub = make_keypair(root / "keys", "noisy")
        daemon = Daemon(root / "data", daemon_env(root / "data"))
        daemon.start()
        try:
            daemon.add_key("quiet", quiet_pub)
            daemon.add_key("noisy", noisy_pub)
            quiet_times, loaded_times = [], []
            for n in range(args.rounds):
                quiet = sample_import(daemon, quiet_key, root / "upload", f"q{n}")
                with attacked(daemon, args.sftp_flood, args.http_flood) as (sftp, http):
                    hostile_uploads(daemon, noisy_key, root / "noisy", f"h{n}")
                    held = (len(sftp.held), len(http.held))
                    loaded = sample_import(daemon, quiet_key, root / "upload", f"l{n}")
                    dropped = (sftp.dropped, http.dropped)
                quiet_times.append(quiet)
                loaded_times.append(loaded)
                print(
                    f"round {n + 1}: quiet {quiet:.2f} s, attacked {loaded:.2f} s, ratio {loaded / quiet:.2f}"
                    f"  (held at start: sftp {held[0]}, http {held[1]}; dropped by the daemon: sftp {dropped[0]},"
                    f" http {dropped[1]})",
                    flush=True,
                )
            quiet_median, loaded_median = statistics.median(quiet_times), statistics.median(loaded_times)
            print(
                f"median: quiet {quiet_median:.2f} s, attacked {loaded_median:.2f} s, "
                f"ratio {loaded_median / quiet_median:.2f} (target <= 2.0)"
            )
            traces = daemon.log().count("Traceback")
            print(f"daemon log: {len(daemon.log().splitlines())} lines, {traces} tracebacks")
        finally:
            daemon.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
