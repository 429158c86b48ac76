"""Instants in cells, columnar: epoch seconds, epoch milliseconds (told apart by magnitude) and ISO 8601.

A whole number below 10^11 is seconds, from 10^11 on milliseconds: 10^11 seconds is the year 5138, and 10^11
milliseconds is 1973-03-03, so no instant a partner sends in either unit falls on the wrong side."""

from __future__ import annotations

import polars as pl

MS_FROM = 100_000_000_000  # 10^11: from here on a number is milliseconds
# ISO 8601 with a 'Z' or an offset (+02:00, +0200), optional fractional seconds; a space for the 'T' too.
_ISO_FORMATS = ("%Y-%m-%dT%H:%M:%S%.f%#z", "%Y-%m-%d %H:%M:%S%.f%#z")
_UTC = pl.Datetime("ms", "UTC")


def epoch_ms(text: pl.Expr, *, max_seconds: int, digits_only: bool = False) -> pl.Expr:
    """Milliseconds since the epoch of each cell (already stripped), null when not an instant from 1970 to
    `max_seconds`. `digits_only`: the batch's cells are known to be whole numbers, so no other form is tried."""
    whole = text.cast(pl.Int64, strict=False)
    ms = _range(whole, max_seconds)
    if digits_only:
        return ms
    # Fractional epoch numbers ("1714557600.5"), rounded to the millisecond.
    number = text.cast(pl.Float64, strict=False)
    fractional = pl.when(number < MS_FROM).then(number * 1000).otherwise(number).round(0).cast(pl.Int64, strict=False)
    fractional = pl.when(fractional.is_between(0, max_seconds * 1000)).then(fractional)
    iso = pl.coalesce([text.str.strptime(_UTC, f, strict=False) for f in _ISO_FORMATS]).dt.epoch("ms")
    iso = pl.when(iso.is_between(0, max_seconds * 1000)).then(iso)
    return pl.coalesce([ms, fractional, iso])


def _range(whole: pl.Expr, max_seconds: int) -> pl.Expr:
    return (
        pl.when(whole.is_between(0, min(max_seconds, MS_FROM - 1)))
        .then(whole * 1000)
        .when(whole.is_between(MS_FROM, max_seconds * 1000))
        .then(whole)
    )


def iso_text(ms: pl.Expr) -> pl.Expr:
    """ISO 8601 UTC text of an instant: seconds, and milliseconds only where there are some (chrono's `%.f`
    writes nothing for a whole second)."""
    return pl.from_epoch(ms, time_unit="ms").dt.strftime("%Y-%m-%dT%H:%M:%S%.fZ")
