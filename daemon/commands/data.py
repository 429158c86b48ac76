"""`ingestd profiles get` and `ingestd events list`: read back what was ingested, from the configured sink."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from daemon.config import Config
from daemon.errors import IngestdError, NotFoundError, UsageError
from daemon.sinks import Sink, driver, open_sink
from daemon.store.keys import ACCOUNT_RE
from daemon.text import json_text, printable

T = TypeVar("T")
MAX_IDENTITY = 1024  # the row rules' limit: nothing longer was ever stored
MAX_EVENTS = 10_000  # `events list --limit`: Elasticsearch answers at most this many hits at once


def get_profile(args: argparse.Namespace, config: Config) -> int:
    account, identity = _check(args.account, args.identity)
    profile = _read(config, lambda sink: sink.get_profile(account, identity))
    if profile is None:
        raise NotFoundError(f"no profile {identity!r} in account {account!r}")
    if args.json:
        print(json_text(profile, indent=2))
        return 0
    # Partner data is escaped (printable): control characters in a cell must not drive the operator's terminal.
    print(f"identity:   {printable(profile['identity'])}")
    print(f"updated:    {profile['ts']}")
    properties = profile["properties"]
    if not properties:
        print("properties: (none)")
        return 0
    print("properties:")
    shown = {printable(name): printable(_value(value)) for name, value in properties.items()}
    width = max(len(name) for name in shown)
    for name in sorted(shown):
        print(f"  {name.ljust(width)}  {shown[name]}")
    return 0


def list_events(args: argparse.Namespace, config: Config) -> int:
    account, identity = _check(args.account, args.identity)
    limit = getattr(args, "limit", 1000)
    if not 1 <= limit <= MAX_EVENTS:
        raise UsageError(f"--limit: expected a number of events from 1 to {MAX_EVENTS:,}, found {limit}")
    # One more than asked says whether there are more.
    events = _read(config, lambda sink: sink.list_events(account, identity, limit=min(limit + 1, MAX_EVENTS)))
    if not events:
        raise NotFoundError(f"no events for {identity!r} in account {account!r}")
    more = len(events) > limit
    events = events[:limit]
    if more:
        print(f"showing the first {limit:,} event{'' if limit == 1 else 's'}; --limit N shows more", file=sys.stderr)
    if args.json:
        print(json_text(events, indent=2))
        return 0
    rows = [(event["ts"], printable(event["name"]), json_text(event["properties"])) for event in events]
    name_width = max(len("NAME"), *(len(name) for _, name, _ in rows))
    ts_width = max(len("TS"), *(len(ts) for ts, _, _ in rows))
    print(f"{'TS'.ljust(ts_width)}  {'NAME'.ljust(name_width)}  PROPERTIES")
    for ts, name, properties in rows:
        print(f"{ts.ljust(ts_width)}  {name.ljust(name_width)}  {properties}")
    return 0


def _check(account: str, identity: str) -> tuple[str, str]:
    if not ACCOUNT_RE.match(account):
        raise UsageError(f"account {account!r}: expected letters, digits, '.', '_' or '-' (at most 64)")
    if not identity.strip():
        raise UsageError("identity: expected a non-empty identity")
    if len(identity) > MAX_IDENTITY:
        raise UsageError(f"identity: at most {MAX_IDENTITY} characters, found {len(identity)}")
    return account, identity


def _read(config: Config, query: Callable[[Sink], Awaitable[T]]) -> T | None:
    """Run one read against the configured sink; None when the sqlite sink was never created."""
    if not driver(config).stored(config):
        return None  # a read must not create a data directory
    return asyncio.run(_query(config, query))


async def _query(config: Config, query: Callable[[Sink], Awaitable[T]]) -> T:
    sink = open_sink(config)
    await sink.open_for_reading()
    try:
        return await query(sink)
    except IngestdError:
        raise
    except Exception as exc:
        # The store answered something unexpected: one line naming it, not a traceback.
        raise IngestdError(f"{config.sink.driver} sink: {type(exc).__name__}: {exc}") from exc
    finally:
        await sink.stop()


def _value(value: Any) -> str:
    # Strings as they are; everything else (numbers, booleans, multi-value arrays) as JSON, so true is not "True".
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
