"""Accounts' contact addresses and allowed domains: validation and the store the CLI and the notifier read."""

from __future__ import annotations

import builtins
import json
import re
import sqlite3
import time
from typing import Any

from email_validator import EmailNotValidError, validate_email

from daemon.errors import NotFoundError, UsageError
from daemon.store.db import StateDB
from daemon.store.keys import check_account
from daemon.text import printable

MAX_CONTACTS = 20
MAX_DOMAINS = 100
_LABEL = re.compile(r"\A(?!-)[a-z0-9-]{1,63}(?<!-)\Z")


def normalize_address(text: str) -> str:
    """A bare address (`a@example.com`) checked and normalised (domain lower-cased); ValueError says why not."""
    try:
        checked = validate_email(str(text).strip(), check_deliverability=False)
    except EmailNotValidError as exc:
        raise ValueError(str(exc)) from None
    return checked.normalized


def normalize_domain(text: str) -> str:
    """A domain name, lower-case, IDNA-encoded (`bücher.example` -> `xn--bcher-kva.example`); ValueError if not one."""
    name = str(text).strip().rstrip(".").lower()
    try:
        name = name.encode("idna").decode("ascii")
    except UnicodeError:
        raise ValueError("not a domain name") from None
    labels = name.split(".")
    if len(name) > 253 or len(labels) < 2 or not all(_LABEL.match(label) for label in labels):
        raise ValueError("not a domain name (expected something like example.com)")
    return name


def address_domain(address: str) -> str:
    """The domain of a normalised address, in the form normalize_domain() gives, for comparisons."""
    domain = address.rpartition("@")[2].strip().rstrip(".").lower()
    try:
        return domain.encode("idna").decode("ascii")
    except UnicodeError:
        return domain


def _list(raw: str | None) -> list[str]:
    value = json.loads(raw or "[]")
    return [str(item) for item in value] if isinstance(value, list) else []


def _account(row: sqlite3.Row, keys: int) -> dict[str, Any]:
    return {
        "account": row["id"],
        "emails": _list(row["emails"]),
        "allowed_domains": _list(row["allowed_domains"]),
        "keys": keys,
        "created_at": row["created_at"],
        "updated_at": row["updated_at"],
    }


class AccountStore:
    """Reads and writes of the accounts' contact settings; the notifier reads them at every email."""

    def __init__(self, db: StateDB) -> None:
        self.db = db

    def set(
        self, account: str, *, emails: list[str] | None = None, allowed_domains: list[str] | None = None
    ) -> dict[str, Any]:
        """Create the account if needed; a list given (even empty) replaces the stored one, None keeps it."""
        check_account(account)
        clean_emails = None if emails is None else _unique(_checked(emails, normalize_address, "address"))
        clean_domains = (
            None if allowed_domains is None else _unique(_checked(allowed_domains, normalize_domain, "domain"))
        )
        if clean_emails is not None and len(clean_emails) > MAX_CONTACTS:
            raise UsageError(f"at most {MAX_CONTACTS} contact addresses per account, {len(clean_emails)} given")
        if clean_domains is not None and len(clean_domains) > MAX_DOMAINS:
            raise UsageError(f"at most {MAX_DOMAINS} allowed domains per account, {len(clean_domains)} given")
        now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        with self.db.transaction() as conn:
            conn.execute("INSERT INTO accounts (id, created_at) VALUES (?, ?) ON CONFLICT DO NOTHING", (account, now))
            if clean_emails is not None:
                conn.execute(
                    "UPDATE accounts SET emails = ?, updated_at = ? WHERE id = ?",
                    (json.dumps(clean_emails), now, account),
                )
            if clean_domains is not None:
                conn.execute(
                    "UPDATE accounts SET allowed_domains = ?, updated_at = ? WHERE id = ?",
                    (json.dumps(clean_domains), now, account),
                )
        found = self.get(account)
        assert found is not None
        return found

    def get(self, account: str) -> dict[str, Any] | None:
        rows = self.db.query(
            "SELECT a.*, (SELECT COUNT(*) FROM keys k WHERE k.account = a.id) AS key_count"
            " FROM accounts a WHERE a.id = ?",
            (account,),
        )
        return _account(rows[0], rows[0]["key_count"]) if rows else None

    def show(self, account: str) -> dict[str, Any]:
        check_account(account)
        found = self.get(account)
        if found is None:
            raise NotFoundError(f"no account {account!r}")
        return found

    def list(self) -> list[dict[str, Any]]:
        rows = self.db.query(
            "SELECT a.*, (SELECT COUNT(*) FROM keys k WHERE k.account = a.id) AS key_count FROM accounts a ORDER BY a.id"
        )
        return [_account(row, row["key_count"]) for row in rows]

    def contacts(self, account: str) -> tuple[builtins.list[str], builtins.list[str]]:
        """(contact addresses, allowed domains) of `account`; both empty for an unknown account."""
        rows = self.db.query("SELECT emails, allowed_domains FROM accounts WHERE id = ?", (account,))
        if not rows:
            return [], []
        return _list(rows[0]["emails"]), _list(rows[0]["allowed_domains"])


def _checked(values: list[str], normalize: Any, what: str) -> list[str]:
    # An empty value clears the list: `--email ''`.
    kept = []
    for value in values:
        if not str(value).strip():
            continue
        try:
            kept.append(normalize(value))
        except ValueError as exc:
            # printable(): the value goes to an operator's terminal, bidi overrides and escapes included.
            raise UsageError(f"invalid {what} '{printable(str(value))}': {printable(str(exc))}") from None
    return kept


def _unique(values: list[str]) -> list[str]:
    seen: set[str] = set()
    kept = []
    for value in values:
        if value.lower() not in seen:
            seen.add(value.lower())
            kept.append(value)
    return kept
