"""Query-parameter parsing shared by the JSON API and the HTML pages: one error names one parameter."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from daemon.jobs.status import ACTIVE, STATUSES
from daemon.store.db import MAX_INTEGER
from daemon.store.keys import ACCOUNT_RE

# DESIGN.md's job statuses, in lifecycle order; "active" ones make the activity page refresh itself.
ACTIVE_STATUSES = frozenset(ACTIVE)
DEFAULT_LIMIT = 50
MAX_LIMIT = 500


class ParamError(ValueError):
    """A query parameter is invalid; `param` names it for the 400 body."""

    def __init__(self, param: str, message: str) -> None:
        super().__init__(f"{param}: {message}")
        self.param = param
        self.message = message


@dataclass(frozen=True)
class ImportFilter:
    account: str | None = None
    status: str | None = None
    limit: int = DEFAULT_LIMIT
    offset: int = 0


def _integer(query: Mapping[str, str], name: str, default: int, low: int, high: int | None) -> int:
    raw = query.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ParamError(name, f"expected an integer, found {raw!r}") from None
    high = MAX_INTEGER if high is None else high
    if value < low or value > high:
        bound = f"between {low} and {high}"
        raise ParamError(name, f"must be {bound}, found {value}")
    return value


def parse_job_id(raw: str) -> int:
    try:
        value = int(raw)
    except ValueError:
        raise ParamError("id", f"expected an import id (a positive integer), found {raw!r}") from None
    if not 1 <= value <= MAX_INTEGER:
        raise ParamError("id", f"expected an import id (a positive integer), found {raw!r}")
    return value


def parse_filter(query: Mapping[str, str]) -> ImportFilter:
    """account, status, limit, offset from a query string; empty values mean "not set"."""
    account = query.get("account") or None
    if account is not None and not ACCOUNT_RE.match(account):
        raise ParamError("account", f"expected an account id (letters, digits, '.', '_', '-'), found {account!r}")
    status = query.get("status") or None
    if status is not None and status not in STATUSES:
        raise ParamError("status", f"expected one of {', '.join(STATUSES)}, found {status!r}")
    limit = _integer(query, "limit", DEFAULT_LIMIT, 1, MAX_LIMIT)
    offset = _integer(query, "offset", 0, 0, None)
    return ImportFilter(account=account, status=status, limit=limit, offset=offset)
