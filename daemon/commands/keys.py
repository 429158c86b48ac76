"""`ingestd keys add|list|revoke`: partners' SSH public keys in the state DB."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from daemon.commands import open_state, print_table
from daemon.config import Config
from daemon.errors import UsageError
from daemon.store.keys import KeyStore, check_account

_MAX_KEY_FILE = 64 * 1024  # a public key is a few hundred bytes; anything bigger is the wrong file


def _store(config: Config) -> KeyStore:
    db = open_state(config, create=True)
    assert db is not None
    return KeyStore(db)


def _read_key_file(path: str) -> tuple[str, str]:
    if path == "-":
        return sys.stdin.read(_MAX_KEY_FILE + 1), "standard input"
    try:
        with open(path, encoding="utf-8", errors="replace") as handle:
            return handle.read(_MAX_KEY_FILE + 1), f"key file {path}"
    except FileNotFoundError:
        raise UsageError(f"key file {path}: not found") from None
    except IsADirectoryError:
        raise UsageError(f"key file {path}: is a directory") from None
    except OSError as exc:
        raise UsageError(f"key file {path}: cannot be read ({exc.strerror})") from None


def _public(key: dict[str, Any]) -> dict[str, Any]:
    return {
        name: key[name]
        for name in ("account", "name", "algorithm", "bits", "fingerprint", "comment", "created_at", "last_used")
    }


def add(args: argparse.Namespace, config: Config) -> int:
    check_account(args.account)
    text, source = _read_key_file(args.keyfile)
    if len(text) > _MAX_KEY_FILE:
        raise UsageError(f"{source}: too large for a public key")
    key = _store(config).add(args.account, text, name=args.name, source=source)
    # The partner's SFTP root exists from the start, so a first `ls` works.
    (config.drop_root / args.account).mkdir(parents=True, exist_ok=True)
    if args.json:
        print(json.dumps(_public(key)))
    else:
        print(
            f"added key {key['name']!r} to account {key['account']!r}: "
            f"{key['fingerprint']} ({key['algorithm']}, {key['bits']} bits)"
        )
    return 0


def list_keys(args: argparse.Namespace, config: Config) -> int:
    db = open_state(config, create=False)
    keys = [_public(key) for key in KeyStore(db).list_keys(args.account)] if db is not None else []
    if args.json:
        print(json.dumps(keys))
        return 0
    if not keys:
        print("no keys registered", file=sys.stderr)
        return 0
    header = ("ACCOUNT", "NAME", "TYPE", "BITS", "FINGERPRINT", "ADDED", "LAST USED")
    rows = [
        (
            k["account"],
            k["name"],
            k["algorithm"],
            str(k["bits"]),
            k["fingerprint"],
            k["created_at"],
            k["last_used"] or "never",
        )
        for k in keys
    ]
    print_table(header, rows)
    return 0


def revoke(args: argparse.Namespace, config: Config) -> int:
    key = _store(config).revoke(args.account, args.key)
    if args.json:
        print(json.dumps(_public(key)))
    else:
        print(f"revoked key {key['name']!r} ({key['fingerprint']}) of account {key['account']!r}")
    return 0
