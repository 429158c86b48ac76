"""Stable xxh3 hashes of string columns: polars-hash's plugin when it loads, else xxhash per value (same results).

Stable across versions and processes (polars' own `hash` is not): event ids and the sqlite sink's identity hashes
are stored, and a later import or look-up must compute the same values."""

from __future__ import annotations

from types import ModuleType

import polars as pl
import xxhash


def event_ids(keys: pl.Series) -> pl.Series:
    """The 128-bit xxh3 of each key as a decimal string.

    xxh3 rather than sha256: the key is the partner's own data in their own account, so nothing is gained by a
    cryptographic hash, and sha256 with hex formatting was a sixth of the engine's CPU."""
    if _plh is not None:
        return keys.to_frame("k").select(_plh.col("k").nchash.xxh3_128().cast(pl.String)).to_series()
    digest = xxhash.xxh3_128_intdigest
    return pl.Series([str(digest(key.encode())) for key in keys.to_list()], dtype=pl.String)


def signed_xxh3_64(column: str) -> pl.Expr:
    """The 64-bit xxh3 of a string column's UTF-8 bytes as a signed 64-bit integer (SQLite's INTEGER); the same
    as `signed_xxh3_64_of` for each value."""
    if _plh is not None:
        hashed = _plh.col(column).nchash.xxh3_64()
    else:
        hashed = pl.col(column).map_elements(
            lambda text: xxhash.xxh3_64_intdigest(text.encode()), return_dtype=pl.UInt64, skip_nulls=True
        )
    return hashed.reinterpret(signed=True)


def signed_xxh3_64_of(text: str) -> int:
    """The 64-bit xxh3 of one string's UTF-8 bytes, as a signed 64-bit integer."""
    value = xxhash.xxh3_64_intdigest(text.encode())
    return value - 2**64 if value >= 2**63 else value


def _load_polars_hash() -> ModuleType | None:
    try:
        import polars_hash
    except ImportError:
        return None
    try:
        probe = pl.DataFrame({"k": ["abc"]}).select(
            polars_hash.col("k").nchash.xxh3_128().alias("long"), polars_hash.col("k").nchash.xxh3_64().alias("short")
        )
    except Exception:  # an ABI mismatch with this polars: fall back to xxhash rather than fail
        return None
    same = probe.row(0) == (xxhash.xxh3_128_intdigest(b"abc"), xxhash.xxh3_64_intdigest(b"abc"))
    return polars_hash if same else None


_plh = _load_polars_hash()
