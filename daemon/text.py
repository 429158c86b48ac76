"""Text from partners and peers made safe to store, log, render and print, whatever its bytes."""

from __future__ import annotations

import json
import os
import re
from typing import Any

# Lone surrogates: what os.fsdecode makes of bytes that are not UTF-8 (U+DC80..U+DCFF), or what a JSON
# "\udcff" escape decodes to. SQLite, UTF-8 encoders and jinja2's output all fail on them.
_SURROGATE = re.compile("[\ud800-\udfff]")
# C0 and C1 controls, DEL, and the bidirectional overrides that reorder what a terminal shows.
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u200e\u200f\u202a-\u202e\u2066-\u2069]")


def _escape_surrogate(match: re.Match[str]) -> str:
    code = ord(match.group())
    return f"\\x{code - 0xDC00:02x}" if 0xDC80 <= code <= 0xDCFF else f"\\u{code:04x}"


def _escape_control(match: re.Match[str]) -> str:
    code = ord(match.group())
    named = {"\t": "\\t", "\n": "\\n", "\r": "\\r"}
    return named.get(match.group()) or (f"\\x{code:02x}" if code <= 0xFF else f"\\u{code:04x}")


def has_surrogates(text: str) -> bool:
    return _SURROGATE.search(text) is not None


def safe(text: str) -> str:
    """`text` with lone surrogates written as `\\xff` (an undecodable byte) or `\\udXXX`: valid UTF-8 always."""
    return _SURROGATE.sub(_escape_surrogate, text) if _SURROGATE.search(text) else text


def printable(text: str) -> str:
    """For a terminal: `safe(text)` with control characters escaped (`\\x1b`, `\\n`), so partner data
    cannot move the cursor, recolour or rewrite an operator's screen."""
    text = safe(text)
    return _CONTROL.sub(_escape_control, text) if _CONTROL.search(text) else text


def name_from_bytes(name: bytes) -> str:
    """A file name from the file system as safe text: undecodable bytes shown as `\\xff`."""
    return safe(os.fsdecode(name))


# What json.dumps(ensure_ascii=False) leaves raw that a terminal would act on or UTF-8 cannot encode.
_JSON_UNSAFE = re.compile("[\x7f-\x9f\u200e\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069\ud800-\udfff]")


def json_text(value: object, **options: Any) -> str:
    """json.dumps with non-ASCII text kept readable but DEL, C1 controls, bidi overrides and lone surrogates
    written as \\uXXXX escapes (json.dumps already escapes C0 controls): safe to print, same value when parsed."""
    dumped = json.dumps(value, ensure_ascii=False, **options)
    return _JSON_UNSAFE.sub(lambda m: f"\\u{ord(m.group()):04x}", dumped)
