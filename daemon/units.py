"""Sizes and durations written for people, in one way everywhere (emails, reports, the activity log, logs)."""

from __future__ import annotations

import math

_BINARY = (("TiB", 1 << 40), ("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10))


def size_text(size: float) -> str:
    """297 bytes, 1.5 KiB, 10 MiB, 5 GiB: one decimal at most, none when it is 0."""
    size = max(0, int(size))
    for unit, scale in _BINARY:
        if size >= scale:
            value = f"{size / scale:.1f}".removesuffix(".0")
            return f"{value} {unit}"
    return f"{size:,} bytes"


def setting_text(seconds: float) -> str:
    """A duration as the config writes it: 15m, 2h, 90s."""
    if seconds >= 3600 and seconds % 3600 == 0:
        return f"{int(seconds // 3600)}h"
    if seconds >= 60 and seconds % 60 == 0:
        return f"{int(seconds // 60)}m"
    return f"{seconds:g}s"


def duration_text(seconds: float | None, *, precise: bool = False) -> str:
    """12 s, 4 min 5 s, 2 h 5 min, 1 d 3 h: two units at most, enough for a person. `precise` (the activity log,
    where imports take seconds) keeps what a short run took: 350 ms, 12.3 s."""
    value = max(0.0, float(seconds or 0))
    if precise and value < 1:
        return f"{math.floor(value * 1000)} ms"
    if precise and value < 60:
        return f"{value:.1f} s"
    if 0 < value < 0.5:
        return "<1 s"
    total = round(value)
    if total < 60:
        return f"{total} s"
    minutes, secs = divmod(total, 60)
    if minutes < 60:
        return f"{minutes} min {secs} s" if secs else f"{minutes} min"
    hours, minutes = divmod(minutes, 60)
    if hours < 24:
        return f"{hours} h {minutes} min" if minutes else f"{hours} h"
    days, hours = divmod(hours, 24)
    return f"{days} d {hours} h" if hours else f"{days} d"
