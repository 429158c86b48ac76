"""Logging set-up: one line per state change, plain text or JSON lines, with structured fields."""

from __future__ import annotations

import logging
import re
import sys
import time
from typing import Any, TextIO

from daemon.text import json_text

_RESERVED = set(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {"message", "asctime"}


def event(logger: logging.Logger, name: str, level: int = logging.INFO, **fields: Any) -> None:
    """Log one state change, e.g. event(log, "job.started", account="acme", job_id=3, elapsed_ms=12)."""
    logger.log(level, name, extra={"fields": fields})


class TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        fields = getattr(record, "fields", {})
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
        extra = " ".join(f"{key}={_text(value)}" for key, value in fields.items())
        line = f"{stamp}.{int(record.msecs):03d}Z {record.levelname:<7} {record.name}: {record.getMessage()}"
        if extra:
            line = f"{line} {extra}"
        if record.exc_info:
            line = f"{line}\n{self.formatException(record.exc_info)}"
        return line


class JSONFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
        body: dict[str, Any] = {
            "time": f"{stamp}.{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "event": record.getMessage(),
        }
        for key, value in getattr(record, "fields", {}).items():
            # A field never overwrites the envelope ("time", "level", ...): it gets a trailing underscore.
            body[f"{key}_" if key in body else key] = value
        if record.exc_info:
            body["exception"] = self.formatException(record.exc_info)
        return json_text(body, default=str)


# Quoted (JSON string escapes) when a value would otherwise break `key=value` parsing or the one-line rule.
_NEEDS_QUOTES = re.compile(
    r'[\s"=\\]|[^\x20-\x7e\u00a0-\U0010ffff]|[\u200e\u200f\u202a-\u202e\u2066-\u2069\ud800-\udfff]'
)


def _text(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, list | tuple | dict):
        # Compact JSON is already unambiguous; quote it only if it holds whitespace.
        text = json_text(value, default=str, separators=(",", ":"))
        return json_text(text) if re.search(r"\s", text) else text
    text = str(value)
    # json_text: control characters, C1, bidi overrides and lone surrogates become escapes, so partner text
    # can neither forge a log line nor fail the write.
    return json_text(text) if (not text or _NEEDS_QUOTES.search(text)) else text


def setup_logging(fmt: str = "text", level: str = "info", stream: TextIO | None = None) -> None:
    """Send every log record to stderr (or `stream`) as text lines or JSON lines."""
    handler = logging.StreamHandler(stream if stream is not None else sys.stderr)
    handler.setFormatter(JSONFormatter() if fmt == "json" else TextFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for noisy in ("asyncssh", "elastic_transport", "aiohttp.access", "mail.log"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
