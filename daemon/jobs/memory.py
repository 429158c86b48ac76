"""Allocator settings that give an import's freed memory back to the system (docs/ops-guide.md, "Memory").

Three allocators hold an import's buffers: pyarrow's mimalloc (the CSV parser's blocks), polars' jemalloc
(frames) and glibc's malloc (Python objects, SQLite's page cache). Each keeps freed memory for reuse: mimalloc
commits its arena eagerly, polars' jemalloc keeps dirty pages 500 ms and muzzy ones 1 s, and glibc gives every
thread that allocates its own arena (up to 8 per core), each holding on to what its thread freed.
bench/memory.py, one 1M-row event import: these settings take about 70 MiB off the daemon's peak RSS.
mimalloc and jemalloc read theirs from the environment when the library loads, so apply() runs before polars
or pyarrow is imported: in daemon/__init__.py (the daemon and its CLI) and in manifests/__init__.py (the
engine wherever it runs: bench/validate.py's engine child, tests), each before its own modules import either
library. A value already set in the environment is kept.

The cyclic garbage collector runs after every GC_YOUNG container objects made and not freed (Python's default is
700). An import's bad rows are such objects (a row, its cells, its problems): at 700, the collector's passes were
half the time of building a 1%-bad event batch's bad rows; at 50,000 they are a tenth of it.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
import os
import sys

ENVIRONMENT = {
    # Freed pages go back after 10 ms of quiet (mimalloc's own default). At once ("0") cost about 6% of the
    # engine's CPU (bench/validate.py) for a daemon peak within noise of it (bench/memory.py, six paired
    # 1M-row runs: median 377 MiB against 370, highest 385 against 386).
    "MIMALLOC_PURGE_DELAY": "10",
    "MIMALLOC_ARENA_EAGER_COMMIT": "0",  # commit arena memory as it is used, not the whole arena
    "_RJEM_MALLOC_CONF": "dirty_decay_ms:100,muzzy_decay_ms:0",  # appended to polars' own settings
}
ARENAS = 2  # glibc malloc arenas: one for the event loop, one shared by the worker threads
_M_ARENA_MAX = -8  # mallopt's parameter number, from malloc.h
GC_YOUNG = 50_000
_GC_DEFAULT = 700


def apply() -> None:
    """Set the allocators' options unless the environment already does, and the collector's threshold unless
    the process already changed it; idempotent."""
    threshold = gc.get_threshold()
    if threshold[0] == _GC_DEFAULT:
        gc.set_threshold(GC_YOUNG, *threshold[1:])
    if "polars" in sys.modules or "pyarrow" in sys.modules:
        return  # too late for the libraries' own settings; keep the process as it is
    for name, value in ENVIRONMENT.items():
        os.environ.setdefault(name, value)
    if "MALLOC_ARENA_MAX" in os.environ or not sys.platform.startswith("linux"):
        return
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # not glibc (musl has no mallopt arenas): nothing to set
        return
    mallopt(_M_ARENA_MAX, ARENAS)
