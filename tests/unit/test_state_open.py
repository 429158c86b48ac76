"""Several processes opening one new state database at once: every one of them opens it (two nodes or a `serve`
and a CLI call started together; SQLite refused the switch to WAL to all but one, with a traceback)."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

OPEN = """
import sys, time
from daemon.store.db import StateDB
start = float(sys.argv[2])
while time.time() < start:
    pass
StateDB(sys.argv[1]).query("SELECT 1")
print("opened")
"""


def test_processes_opening_one_new_state_database_at_once_all_open_it(tmp_path: Path) -> None:
    for round_ in range(4):
        path = tmp_path / f"state{round_}.db"
        start = time.time() + 1.5  # every process imported and spinning before any opens the file
        processes = [
            subprocess.Popen(
                [sys.executable, "-c", OPEN, str(path), str(start)],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            for _ in range(6)
        ]
        results = [process.communicate(timeout=60) for process in processes]
        for (out, err), process in zip(results, processes, strict=True):
            assert (process.returncode, out.strip()) == (0, "opened"), err
