"""Instants in cells, columnar: epoch seconds, epoch milliseconds (told apart by magnitude) and ISO 8601.

A whole number below 10^11 is seconds, from 10^11 on milliseconds: 10^11 seconds is the year 5138, and 10^11
milliseconds is 1973-03-03, so no instant a partner sends in either unit falls on the wrong side."""

from __future__ import annotations

import functools

import polars as pl

MS_FROM = 100_000_000_000  # 10^11: from here on a number is milliseconds
# ISO 8601 with a 'Z' or an offset (+02:00, +0200), optional fractional seconds; a space for the 'T' too.
_ISO_FORMATS = ("%Y-%m-%dT%H:%M:%S%.f%#z", "%Y-%m-%d %H:%M:%S%.f%#z")
_UTC = pl.Datetime("ms", "UTC")


def epoch_ms(text: pl.Expr, *, max_seconds: int, digits_only: bool = False, whole: pl.Expr | None = None) -> pl.Expr:
    """Milliseconds since the epoch of each cell (already stripped), null when not an instant from 1970 to
    `max_seconds`. `digits_only`: the batch's cells are known to be whole numbers, so no other form is tried.
    `whole`: a column of whole_number(text) computed beforehand (the range test reads it three times, and
    polars' common-subexpression pass does not always join them)."""
    if whole is None:
        whole = whole_number(text)
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


def whole_number(text: pl.Expr) -> pl.Expr:
    """The cell as a whole number (epoch seconds or milliseconds), null when it is not one."""
    return text.cast(pl.Int64, strict=False)


def _range(whole: pl.Expr, max_seconds: int) -> pl.Expr:
    return (
        pl.when(whole.is_between(0, min(max_seconds, MS_FROM - 1)))
        .then(whole * 1000)
        .when(whole.is_between(MS_FROM, max_seconds * 1000))
        .then(whole)
    )


ISO_FORMAT = "%Y-%m-%dT%H:%M:%S%.fZ"
_DAY_MS = 86_400_000
_SPAN_DAYS = 4096  # a batch's dates spread over more days than this are formatted one by one


def iso_text(ms: pl.Expr) -> pl.Expr:
    """ISO 8601 UTC text of an instant: seconds, and milliseconds only where there are some (chrono's `%.f`
    writes nothing for a whole second)."""
    return ms.map_batches(_iso_batch, return_dtype=pl.String)


def iso_parts(ms: pl.Expr) -> list[pl.Expr]:
    """iso_text() in two pieces, the date ("2020-05-12T") and the rest, for a caller that joins them into a
    longer text anyway (a JSON object): not joining them first saves a quarter of the time of the dates."""
    return [ms.map_batches(_date_part, return_dtype=pl.String), ms.map_batches(_rest_part, return_dtype=pl.String)]


def _iso_batch(ms: pl.Series) -> pl.Series:
    """strftime(ISO_FORMAT) of a batch, as three table look-ups joined: the date (of the few days a batch
    spans), the time of day and the milliseconds, each formatted once by strftime itself. Formatting every
    cell with chrono cost a third of an event batch's JSON properties."""
    days = _days(ms)
    if isinstance(days, pl.Series):
        return days
    return pl.select(pl.concat_str([_date(*days), _rest(days[0])])).to_series().alias(ms.name)


def _date_part(ms: pl.Series) -> pl.Series:
    days = _days(ms)
    return days if isinstance(days, pl.Series) else _date(*days).alias(ms.name)


def _rest_part(ms: pl.Series) -> pl.Series:
    """The time of day and milliseconds of _date_part's dates; empty where _date_part wrote the whole text."""
    days = _days(ms)
    if isinstance(days, pl.Series):
        return pl.Series(ms.name, [""] * ms.len(), dtype=pl.String).set(days.is_null(), None)
    return _rest(days[0]).alias(ms.name)


def _days(ms: pl.Series) -> tuple[pl.Series, int, int] | pl.Series:
    """(the instants as Int64, the first and the last day) for the look-ups, or the whole text of a batch
    formatted one by one (dates before 1970, or over more than _SPAN_DAYS days)."""
    ms = ms.cast(pl.Int64)
    first, last = ms.min(), ms.max()
    if first is None or last is None:
        return pl.Series(ms.name, [None] * ms.len(), dtype=pl.String)
    assert isinstance(first, int) and isinstance(last, int)
    first, last = first // _DAY_MS, last // _DAY_MS
    if first < 0 or last - first >= _SPAN_DAYS:
        return pl.from_epoch(ms, time_unit="ms").dt.strftime(ISO_FORMAT)
    return ms, first, last


def _date(ms: pl.Series, first: int, last: int) -> pl.Series:
    days = pl.int_range(first, last + 1, dtype=pl.Int64, eager=True) * 86_400
    return pl.from_epoch(days, time_unit="s").dt.strftime("%Y-%m-%dT").gather(ms // _DAY_MS - first)


def _rest(ms: pl.Series) -> pl.Series:
    rest = ms % _DAY_MS
    if (ms % 1000).max() == 0:  # whole seconds only (the usual case): one piece, the clock's with its Z
        return _clock("Z").gather(rest // 1000)
    return pl.select(
        pl.concat_str([pl.lit(_clock("").gather(rest // 1000)), pl.lit(_fractions().gather(rest % 1000))])
    ).to_series()


@functools.cache
def _clock(suffix: str) -> pl.Series:
    """HH:MM:SS of each second of a day, then `suffix`."""
    return pl.from_epoch(pl.int_range(0, 86_400, eager=True), time_unit="s").dt.strftime("%H:%M:%S" + suffix)


@functools.cache
def _fractions() -> pl.Series:
    """chrono's `%.f` of each millisecond of a second (nothing for 0, else ".001" to ".999"), then the Z."""
    return pl.from_epoch(pl.int_range(0, 1000, eager=True), time_unit="ms").dt.strftime("%.fZ")
