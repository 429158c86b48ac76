"""`ingestd accounts set|list|show`: an account's contact addresses and allowed domains in the state DB."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from daemon.commands import open_state, print_table
from daemon.config import Config
from daemon.errors import NotFoundError
from daemon.store.accounts import AccountStore
from daemon.store.keys import check_account
from daemon.text import printable


def _store(config: Config, *, create: bool) -> AccountStore | None:
    db = open_state(config, create=create)
    return AccountStore(db) if db is not None else None


def _public(account: dict[str, Any]) -> dict[str, Any]:
    return {
        name: account[name] for name in ("account", "emails", "allowed_domains", "keys", "created_at", "updated_at")
    }


def _joined(values: list[str], empty: str) -> str:
    return ", ".join(printable(value) for value in values) if values else empty


def _describe(account: dict[str, Any]) -> list[str]:
    return [
        f"account          {printable(account['account'])}",
        f"contacts         {_joined(account['emails'], '(none: only the manifests name who is told)')}",
        f"allowed domains  {_joined(account['allowed_domains'], '(any)')}",
        f"keys             {account['keys']}",
        f"created          {account['created_at']}",
        f"updated          {account['updated_at'] or '-'}",
    ]


def set_account(args: argparse.Namespace, config: Config) -> int:
    """Options given replace their list (`--email ''` clears it); options not given keep theirs."""
    check_account(args.account)
    store = _store(config, create=True)
    assert store is not None
    account = store.set(args.account, emails=args.emails, allowed_domains=args.allowed_domains)
    # The partner's SFTP root exists from the start, as after `keys add`.
    (config.drop_root / args.account).mkdir(parents=True, exist_ok=True)
    if args.json:
        print(json.dumps(_public(account)))
    else:
        print("\n".join(_describe(account)))
    return 0


def list_accounts(args: argparse.Namespace, config: Config) -> int:
    store = _store(config, create=False)
    accounts = [_public(account) for account in store.list()] if store is not None else []
    if args.json:
        print(json.dumps(accounts))
        return 0
    if not accounts:
        print("no accounts", file=sys.stderr)
        return 0
    header = ("ACCOUNT", "KEYS", "CONTACTS", "ALLOWED DOMAINS")
    rows = [
        (printable(a["account"]), str(a["keys"]), _joined(a["emails"], "-"), _joined(a["allowed_domains"], "(any)"))
        for a in accounts
    ]
    print_table(header, rows)
    return 0


def show(args: argparse.Namespace, config: Config) -> int:
    check_account(args.account)
    store = _store(config, create=False)
    if store is None:
        raise NotFoundError(f"no account {printable(args.account)!r}")
    account = store.show(args.account)
    if args.json:
        print(json.dumps(_public(account)))
    else:
        print("\n".join(_describe(account)))
    return 0
