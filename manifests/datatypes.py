"""The dataTypes a manifest may name: one table of (check, JSON value) expressions, so a new type is one entry."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import polars as pl

from manifests import rules


@dataclass(frozen=True)
class Context:
    """What a type's expressions may depend on: whether the batch needs lower-casing, the decimal mark."""

    lowered: bool = True
    decimal: str = "."


@dataclass(frozen=True)
class DataType:
    """`parse(text, ctx)`: a non-empty, non-date cell (stripped) read as this type; `check(parsed, ctx)`: whether
    it is valid; `value(parsed, ctx)`: its JSON. The plan parses a column once, for both its check and its value.

    STRING is the one type written as a JSON string; its rule is the length limit, applied by the plan."""

    name: str
    problem: str
    parse: Callable[[pl.Expr, Context], pl.Expr] | None
    check: Callable[[pl.Expr, Context], pl.Expr] | None
    value: Callable[[pl.Expr, Context], pl.Expr] | None
    lowers: bool = False  # reads the `upper` fact (case-insensitive words)
    words: bool = False  # a column of only "true", "false" and empty cells (the `worded` fact) is valid, its own JSON
    verbatim: bool = False  # a valid cell without white space, sign or leading zero (the `padded` fact) is its JSON


def _lower(text: pl.Expr, ctx: Context) -> pl.Expr:
    return text.str.to_lowercase() if ctx.lowered else text


def _float(text: pl.Expr, ctx: Context) -> pl.Expr:
    if ctx.decimal == ",":
        # A decimal comma: "12,5". A point is refused, so "1.234" (a thousands mark) is never read as 1.234.
        return pl.when(~text.str.contains(".", literal=True)).then(
            text.str.replace(",", ".", literal=True).cast(pl.Float64, strict=False)
        )
    return text.cast(pl.Float64, strict=False)


def _int(text: pl.Expr, ctx: Context) -> pl.Expr:
    return text.cast(pl.Int64, strict=False)


_WORDS = [*rules.TRUE_WORDS, *rules.FALSE_WORDS]

REGISTRY: dict[str, DataType] = {
    t.name: t
    for t in (
        DataType("STRING", rules.TYPE_PROBLEMS["STRING"], None, None, None),
        DataType(
            "INTEGER",
            rules.TYPE_PROBLEMS["INTEGER"],
            _int,
            lambda number, ctx: number.is_between(*rules.INT32),
            lambda number, ctx: number.cast(pl.String),
            verbatim=True,
        ),
        DataType(
            "FLOAT",
            rules.TYPE_PROBLEMS["FLOAT"],
            _float,
            lambda number, ctx: number.is_finite(),
            lambda number, ctx: number.cast(pl.String),
        ),
        DataType(
            "BOOLEAN",
            rules.TYPE_PROBLEMS["BOOLEAN"],
            _lower,
            lambda word, ctx: word.is_in(_WORDS),
            lambda word, ctx: (
                pl.when(word.is_in(list(rules.TRUE_WORDS))).then(pl.lit("true")).otherwise(pl.lit("false"))
            ),
            lowers=True,
            words=True,
        ),
        DataType(
            "LONG",
            rules.TYPE_PROBLEMS["LONG"],
            _int,
            lambda number, ctx: number.is_not_null(),
            lambda number, ctx: number.cast(pl.String),
            verbatim=True,
        ),
    )
}


def get(name: str) -> DataType:
    """The registered type; ValueError for a name not in the table (never a silent default)."""
    try:
        return REGISTRY[name]
    except KeyError:
        raise ValueError(f"unknown dataType {name!r}; known: {', '.join(REGISTRY)}") from None
