"""The manifest model and the columnar row-validation engine (pure: no servers).

The allocator settings (daemon/jobs/memory.py) are applied here, before any module of the engine imports
polars or pyarrow: their allocators read them when the libraries load, so whatever runs the engine (the
daemon, bench/validate.py's engine child, a test) gets the daemon's memory behaviour."""

from daemon.jobs import memory as _memory

_memory.apply()
