"""`ingestd bans list|lift`: addresses refused after too many failed SFTP logins."""

from __future__ import annotations

import argparse
import ipaddress
import json
import sys

from daemon.commands import open_state, print_table
from daemon.config import Config
from daemon.errors import NotFoundError, UsageError
from daemon.store.bans import BanStore
from daemon.text import printable


def _store(config: Config) -> BanStore | None:
    db = open_state(config, create=False)  # nothing to list or lift without a state database
    return BanStore(db) if db is not None else None


def list_bans(args: argparse.Namespace, config: Config) -> int:
    store = _store(config)
    bans = store.active() if store is not None else []
    if args.json:
        print(json.dumps([ban.as_json() for ban in bans]))
        return 0
    if not bans:
        print("no active bans", file=sys.stderr)
        return 0
    header = ("ADDRESS", "ACCOUNT", "REASON", "FAILURES", "BANNED UNTIL")
    rows = [
        (
            printable(ban.address),
            printable(ban.account) if ban.account else "(every account)",
            ban.reason,
            str(ban.failures),
            ban.as_json()["banned_until"],
        )
        for ban in bans
    ]
    print_table(header, rows)
    return 0


def lift(args: argparse.Namespace, config: Config) -> int:
    try:
        address = str(ipaddress.ip_address(args.address))
    except ValueError:
        raise UsageError(f"invalid address {printable(args.address)!r}: give an IPv4 or IPv6 address") from None
    store = _store(config)
    lifted = store.lift(address) if store is not None else 0
    if not lifted:
        raise NotFoundError(f"no active ban for {address}")
    print(f"lifted {lifted} ban{'s' if lifted != 1 else ''} of {address}; it takes effect at its next login")
    return 0
