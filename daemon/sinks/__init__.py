"""Sinks: where validated rows land (sqlite, elasticsearch), behind one interface."""

from __future__ import annotations

from typing import TYPE_CHECKING

from daemon.sinks.base import RowFailure, Sink, Written

if TYPE_CHECKING:
    from daemon.config import Config

__all__ = ["RowFailure", "Sink", "Written", "open_sink"]


def open_sink(config: Config) -> Sink:
    """The driver `sink.driver` names; nothing is opened or created until `start()`."""
    if config.sink.driver == "elasticsearch":
        from daemon.sinks.elasticsearch import ElasticsearchSink

        return ElasticsearchSink(config.elasticsearch)
    from daemon.sinks.sqlite import SQLiteSink

    return SQLiteSink(config.sink_db)
