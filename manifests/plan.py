"""The row rules as polars expressions, planned once per file from the manifest and the header."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field

import polars as pl

from manifests import rules
from manifests.model import Manifest
from manifests.reader import FileError

_ISO = "%Y-%m-%dT%H:%M:%SZ"


@dataclass
class Check:
    """One rule: `failed` is a boolean expression over the batch; `column` is the header name or None."""

    column: str | None
    message: str
    failed: pl.Expr


@dataclass
class Property:
    """A column that lands in a property: its typed JSON value and whether the cell has a value."""

    index: int
    header: str
    name: str
    present: pl.Expr
    value_json: pl.Expr
    operation: pl.Expr | None = None  # profiles: the `<col>.operation` cell, "" when empty


@dataclass
class Plan:
    """Everything the engine evaluates per batch: checks, then the output columns of good rows."""

    kind: str
    columns: list[str]
    checks: list[Check] = field(default_factory=list)
    outputs: dict[str, pl.Expr] = field(default_factory=dict)
    hash_input: pl.Expr | None = None


def _typed(raw: pl.Expr, data_type: str) -> tuple[pl.Expr, pl.Expr]:
    """(ok, JSON text) for a non-date cell of this data type; both only meaningful where the cell has a value."""
    text = raw.str.strip_chars()
    if data_type in ("INTEGER", "LONG"):
        value = text.cast(pl.Int64, strict=False)
        low, high = rules.INT32 if data_type == "INTEGER" else rules.INT64
        return value.is_between(low, high), value.cast(pl.String)
    if data_type == "FLOAT":
        value = text.cast(pl.Float64, strict=False)
        return value.is_finite(), value.cast(pl.String)
    if data_type == "BOOLEAN":
        lowered = text.str.to_lowercase()
        truth = pl.when(lowered.is_in(list(rules.TRUE_WORDS))).then(pl.lit("true")).otherwise(pl.lit("false"))
        return lowered.is_in([*rules.TRUE_WORDS, *rules.FALSE_WORDS]), truth
    return raw.str.len_chars() <= rules.MAX_CHARS, _json_string(raw)


def _json_string(value: pl.Expr) -> pl.Expr:
    """A string as a JSON string literal, escaped by polars' JSON writer (no per-row Python)."""
    return pl.struct(value.alias("v")).struct.json_encode().str.strip_prefix('{"v":').str.strip_suffix("}")


def _date_seconds(raw: pl.Expr) -> pl.Expr:
    return raw.str.slice(len(rules.DATE_PREFIX)).cast(pl.Int64, strict=False)


def build_plan(
    manifest: Manifest, header: list[str], *, account: str, processing_ts: int, restricted: Sequence[str]
) -> Plan:
    """The checks and outputs for this file; FileError when the header and the manifest disagree."""
    _check_header(manifest, header)
    plan = Plan(manifest.type, [f"f{i}" for i in range(len(header))])
    profile = manifest.type == "profile"
    position = {name: i for i, name in enumerate(header)}
    op_columns: dict[str, int] = {}
    if profile:
        for i, name in enumerate(header):
            base = name.removesuffix(rules.OPERATION_SUFFIX)
            if name.endswith(rules.OPERATION_SUFFIX) and base:
                op_columns[base] = i
    op_indexes = set(op_columns.values())

    props: list[Property] = []
    ids: dict[str, tuple[int, pl.Expr]] = {}
    ts_raw: pl.Expr | None = None
    ts_head = ""
    name_index: int | None = None
    row_checks: list[Check] = []
    seen: dict[str, str] = {}
    for i, head in enumerate(header):
        if i in op_indexes:
            continue
        name = manifest.property_name(head)
        if name in seen:
            raise FileError(rules.file_same_property(seen[name], head, name))
        seen[name] = head
        raw = pl.col(f"f{i}")
        present = raw.str.len_bytes() > 0
        if name == rules.TS_KEY:
            ts_raw, ts_head = raw, head
            continue
        if name == rules.EVENT_NAME_KEY and not profile:
            name_index = i
            plan.checks.append(Check(head, rules.EVENT_NAME_MISSING, ~present))
            plan.checks.append(
                Check(head, rules.EVENT_RESTRICTED, raw.is_in(pl.Series(list(restricted), dtype=pl.String)))
            )
            plan.checks.append(Check(head, rules.TYPE_PROBLEMS["STRING"], raw.str.len_chars() > rules.MAX_CHARS))
            continue
        data_type = manifest.data_type(head)
        message = rules.TYPE_PROBLEMS.get(data_type, "")
        if name in rules.IDENTITY_KEYS:
            data_type, message = "STRING", rules.TYPE_PROBLEMS["STRING"]
            ids[name] = (i, raw)
        elif name.startswith(rules.MSG_PREFIX):
            data_type, message = "BOOLEAN", rules.BAD_MSG
        is_date = raw.str.starts_with(rules.DATE_PREFIX)
        seconds = _date_seconds(raw)
        ok, typed_json = _typed(raw, data_type)
        plan.checks.append(Check(head, message, present & ~is_date & ~ok.fill_null(False)))
        date_ok = seconds.is_between(0, rules.MAX_DATE).fill_null(False)
        plan.checks.append(Check(head, rules.BAD_DATE, is_date & ~date_ok))
        if name == "Phone":
            plan.checks.append(Check(head, rules.BAD_PHONE, present & ~raw.str.contains(rules.PHONE_PATTERN)))
        if name == "Email":
            plan.checks.append(Check(head, rules.BAD_EMAIL, present & ~raw.str.contains(rules.EMAIL_PATTERN)))
        date_json = pl.concat_str([pl.lit('"'), pl.from_epoch(seconds, time_unit="s").dt.strftime(_ISO), pl.lit('"')])
        value_json = pl.when(is_date).then(date_json).otherwise(typed_json)
        operation = None
        if head in op_columns:
            operation = pl.col(f"f{op_columns.pop(head)}").str.strip_chars()
        props.append(Property(i, head, name, present, value_json, operation))
    if name_index is None and not profile:
        row_checks.append(Check(None, rules.EVENT_NAME_MISSING, pl.lit(True)))
    # `<col>.operation` without `<col>`: only $delete means something there.
    for base, i in op_columns.items():
        name = manifest.property_name(base)
        props.append(Property(i, base, name, pl.lit(False), pl.lit("null"), pl.col(f"f{i}").str.strip_chars()))
    for i in sorted(op_indexes):
        cell = pl.col(f"f{i}").str.strip_chars()
        bad = (cell.str.len_bytes() > 0) & ~cell.is_in(list(rules.OPERATIONS))
        plan.checks.append(Check(header[i], rules.BAD_OPERATION, bad))
    plan.checks.sort(key=lambda check: position.get(check.column or "", len(header)))

    # Identity: the first usable of identity, objectId, fbId, gpId; that key is not repeated in the properties.
    candidates = [
        (key, pl.when((raw.str.len_bytes() > 0) & (raw.str.len_chars() <= rules.MAX_CHARS)).then(raw))
        for key in rules.IDENTITY_KEYS
        if key in ids
        for raw in [ids[key][1]]
    ]
    identity = pl.coalesce([c for _, c in candidates]) if candidates else pl.lit(None, dtype=pl.String)
    chosen = (
        pl.coalesce([pl.when(c.is_not_null()).then(pl.lit(key)) for key, c in candidates])
        if candidates
        else pl.lit(None, dtype=pl.String)
    )
    row_checks.append(Check(None, rules.IDENTITY_MISSING, identity.is_null()))

    if not profile:
        props = sorted(props, key=lambda p: p.name)  # canonical: keys sorted, for the de-duplication id
        if len(props) > rules.MAX_EVENT_PROPERTIES:
            count = pl.sum_horizontal([_keeps(p, chosen).cast(pl.Int32) for p in props])
            row_checks.append(Check(None, rules.TOO_MANY_PROPERTIES, count > rules.MAX_EVENT_PROPERTIES))
    plan.checks.extend(row_checks)

    if ts_raw is not None:
        ts_present = ts_raw.str.len_bytes() > 0
        ts_dated = ts_raw.str.starts_with(rules.DATE_PREFIX)
        seconds = (
            pl.when(ts_dated)
            .then(_date_seconds(ts_raw))
            .otherwise(ts_raw.str.strip_chars().cast(pl.Int64, strict=False))
        )
        ts_ok = seconds.is_between(0, rules.MAX_TS).fill_null(False)
        plan.checks.append(Check(ts_head, rules.BAD_TS, ts_present & ~ts_ok))
        plan.checks.sort(key=lambda check: position.get(check.column or "", len(header)))
        ts_ms = (pl.when(ts_present).then(seconds).otherwise(pl.lit(processing_ts)) * 1000).cast(pl.Int64)
        ts_cell = ts_raw
    else:
        ts_ms = pl.lit(processing_ts * 1000, dtype=pl.Int64)
        ts_cell = pl.lit("")

    plan.outputs["line"] = pl.col("line").cast(pl.Int64)
    if profile:
        plan.outputs["identity"] = identity
        plan.outputs["ts"] = ts_ms
        plan.outputs["ops"] = _ops_json(props, chosen)
    else:
        name_expr = pl.col(f"f{name_index}") if name_index is not None else pl.lit("")
        properties = _properties_json(props, chosen)
        plan.outputs["identity"] = identity
        plan.outputs["name"] = name_expr
        plan.outputs["ts"] = ts_ms
        plan.outputs["properties"] = properties
        plan.hash_input = pl.concat_str([pl.lit(account), identity, name_expr, ts_cell, properties], separator="\x1f")
    return plan


def _keeps(prop: Property, chosen: pl.Expr) -> pl.Expr:
    """The cell has a value and is not the row's identity key."""
    if prop.name in rules.IDENTITY_KEYS:
        return prop.present & (chosen != pl.lit(prop.name)).fill_null(True)
    return prop.present


def _properties_json(props: list[Property], chosen: pl.Expr) -> pl.Expr:
    fragments = [
        pl.when(_keeps(p, chosen)).then(pl.concat_str([pl.lit(json.dumps(p.name) + ":"), p.value_json])) for p in props
    ]
    if not fragments:
        return pl.lit("{}")
    inner = pl.concat_str(fragments, separator=",", ignore_nulls=True)
    return pl.concat_str([pl.lit("{"), inner, pl.lit("}")])


def _ops_json(props: list[Property], chosen: pl.Expr) -> pl.Expr:
    fragments = []
    for p in props:
        key = json.dumps(p.name)
        op = (
            pl.lit("$set")
            if p.operation is None
            else pl.when(p.operation == "").then(pl.lit("$set")).otherwise(p.operation)
        )
        fragments.append(
            pl.when(op == "$delete")
            .then(pl.lit(f'["$delete",{key},null]'))
            .when(_keeps(p, chosen))
            .then(pl.concat_str([pl.lit('["'), op, pl.lit(f'",{key},'), p.value_json, pl.lit("]")]))
        )
    if not fragments:
        return pl.lit("[]")
    inner = pl.concat_str(fragments, separator=",", ignore_nulls=True)
    return pl.concat_str([pl.lit("["), inner, pl.lit("]")])


def _check_header(manifest: Manifest, header: list[str]) -> None:
    missing = [name for name in manifest.columns if name not in header]
    if missing and len(missing) == len(manifest.columns):
        raise FileError(rules.file_no_header_match(list(manifest.columns)))
    if missing:
        raise FileError(rules.file_missing_columns(missing, header))
