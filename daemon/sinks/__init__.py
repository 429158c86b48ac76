"""Sinks: where validated rows land, behind one interface, and the registry of drivers `sink.driver` names.

To add a driver: a Sink subclass (daemon/sinks/base.py says what each method promises), an export reader
(daemon/exports/selection.py's Selection), an entry in DRIVERS, its name in config.SinkConfig.driver, and the
shared sink suite run against it (tests/integration/test_sinks.py); docs/architecture.md has the steps.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from daemon.sinks.base import RowFailure, Sink, Written

if TYPE_CHECKING:
    from daemon.config import Config
    from daemon.exports.selection import Selection

__all__ = ["DRIVERS", "Driver", "RowFailure", "Sink", "Written", "driver", "open_sink"]


@dataclass(frozen=True)
class Driver:
    """One `sink.driver`: how it is opened for the daemon and for exports, and what a one-off read needs."""

    name: str
    open: Callable[[Config], Sink]  # nothing is opened or created until the sink's start()
    selection: Callable[[Config], Selection]  # the export reader over what this sink stores
    # Whether a one-off read (`ingestd profiles get`) has anything to read: a read must not create a data directory.
    stored: Callable[[Config], bool] = lambda config: True
    # Whether several nodes may share it (state.url on PostgreSQL): an embedded file on one machine may not.
    shared: bool = True


def _sqlite(config: Config) -> Sink:
    from daemon.sinks.sqlite import SQLiteSink

    return SQLiteSink(config.sink_db)


def _sqlite_selection(config: Config) -> Selection:
    from daemon.exports.selection import SQLiteSelection

    return SQLiteSelection(config.sink_db)


def _elasticsearch(config: Config) -> Sink:
    from daemon.sinks.elasticsearch import ElasticsearchSink

    return ElasticsearchSink(config.elasticsearch)


def _elasticsearch_selection(config: Config) -> Selection:
    from daemon.exports.es_selection import ElasticsearchSelection

    return ElasticsearchSelection(config.elasticsearch, config.exports.es_settle)


DRIVERS: dict[str, Driver] = {
    d.name: d
    for d in (
        Driver("sqlite", _sqlite, _sqlite_selection, stored=lambda config: config.sink_db.exists(), shared=False),
        Driver("elasticsearch", _elasticsearch, _elasticsearch_selection),
    )
}


def driver(config: Config) -> Driver:
    """The entry `sink.driver` names (the config allows only these names)."""
    return DRIVERS[config.sink.driver]


def open_sink(config: Config) -> Sink:
    """The sink `sink.driver` names; nothing is opened or created until `start()`."""
    return driver(config).open(config)
