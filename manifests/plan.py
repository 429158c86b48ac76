"""The row rules as polars expressions: planned once per file, specialised per batch for speed."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field

import polars as pl

from manifests import datatypes, rules, timestamps
from manifests.batch import Facts, FileError
from manifests.model import Manifest

# JSON string escapes, applied in one Aho-Corasick pass only to columns that need them.
_ESCAPES = ["\\", '"', "\n", "\r", "\t"] + [chr(c) for c in range(32) if chr(c) not in "\n\r\t"]
# A `.operation` cell that may remove or delete (rules.OPERATIONS, in any case).
_DROPS = "(?i)remove|delete"
_ESCAPED = ["\\\\", '\\"', "\\n", "\\r", "\\t"] + [f"\\u{c:04x}" for c in range(32) if chr(c) not in "\n\r\t"]


@dataclass
class Check:
    """One rule: `failed` is a boolean expression over the batch; `column` is the header name or None.

    `shows`: the index of the column whose cell the problem quotes (", found '12,5'"), with `data_type` for a hint."""

    column: str | None
    message: str
    failed: pl.Expr
    shows: int | None = None
    data_type: str | None = None


@dataclass
class Prop:
    """A column that lands in a property (profiles: maybe with its `<col>.operation` column)."""

    index: int
    header: str
    name: str
    data_type: str
    message: str
    op_index: int | None = None
    value: bool = True  # False for a `<col>.operation` whose `<col>` is not in the file

    @property
    def raw(self) -> pl.Expr:
        return pl.col(f"f{self.index}")

    @property
    def present(self) -> pl.Expr:
        return self.raw.str.len_bytes() > 0


@dataclass(frozen=True)
class Stats:
    """What one batch holds, so its expressions skip what cannot occur (dates, escapes, empty cells, ...)."""

    empty: tuple[bool, ...]
    dated: tuple[bool, ...]
    escape: tuple[bool, ...]
    first_id_always: bool
    long: tuple[bool, ...] = ()  # a cell may exceed 1024 characters
    spaced: tuple[bool, ...] = ()  # a cell may need strip_chars
    upper: tuple[bool, ...] = ()  # a cell may need to_lowercase
    op_spaced: tuple[bool, ...] = ()  # per `.operation` column
    ts_dated: bool = True  # the ts column may hold a `$D_` date
    ts_spaced: bool = True  # the ts column may need strip_chars
    other: tuple[bool, ...] = ()  # a `$D_` date may hold more than digits: ISO 8601, a fraction
    op_upper: tuple[bool, ...] = ()  # per `.operation` column: may need to_lowercase
    ts_other: bool = True  # the ts column may hold more than digits
    undated: tuple[bool, ...] = ()  # a cell may be neither empty nor a `$D_` date
    worded: tuple[bool, ...] = ()  # a cell may be other than empty, "true" or "false"
    padded: tuple[bool, ...] = ()  # a whole number may be written otherwise than polars writes it ("+5", "007")
    op_drops: tuple[bool, ...] = ()  # per `.operation` column: may hold a $remove or $delete

    def get(self, name: str, k: int) -> bool:
        values: tuple[bool, ...] = getattr(self, name)
        return values[k] if k < len(values) else True


@dataclass
class Compiled:
    """`shared`: columns computed first, read by several checks and outputs (see _shared)."""

    checks: list[Check]
    outputs: dict[str, pl.Expr]
    hash_input: pl.Expr | None
    shared: dict[str, pl.Expr] = field(default_factory=dict)
    first: dict[str, pl.Expr] = field(default_factory=dict)  # columns computed before `shared`, which reads them


@dataclass
class Plan:
    """Everything known before the first row: roles of the columns and the file-wide constants."""

    kind: str
    header: list[str]
    props: list[Prop]
    ids: list[Prop]  # identity keys present, in priority order
    ts: Prop | None
    event_name: Prop | None
    op_indexes: list[int]
    account: str
    processing_ts: int
    restricted: list[str]
    decimal: str = "."
    notes: list[str] = field(default_factory=list)  # how the header was matched, for the report
    _cache: dict[Stats, Compiled] = field(default_factory=dict)

    @property
    def columns(self) -> list[str]:
        return [f"f{i}" for i in range(len(self.header))]

    def stats_exprs(self) -> list[pl.Expr]:
        exprs: list[pl.Expr] = []
        for k, p in enumerate(self.props):
            exprs.append((p.raw.str.len_bytes() == 0).any().alias(f"e{k}"))
            exprs.append(p.raw.str.starts_with(rules.DATE_PREFIX).any().alias(f"d{k}"))
            # Only strings are written as JSON strings (dates never need escaping).
            escape = p.raw.str.contains_any(_ESCAPES).any() if p.data_type == "STRING" else pl.lit(False)
            exprs.append(escape.alias(f"x{k}"))
        if self.ids:
            first = self.ids[0].raw
            usable = (first.str.len_bytes() > 0) & (first.str.len_chars() <= rules.MAX_CHARS)
            exprs.append(usable.all().alias("first_id"))
        return exprs

    def stats(self, frame: pl.DataFrame, flags: dict[int, Facts] | None = None) -> Stats:
        n = range(len(self.props))
        if not frame.height:
            return Stats((True,) * len(n), (True,) * len(n), (True,) * len(n), False)
        if flags is not None and all(p.index in flags for p in self.props):
            facts = [flags[p.index] for p in self.props]
            first = flags.get(self.ids[0].index) if self.ids else None
            ts = flags.get(self.ts.index) if self.ts is not None else None
            return Stats(
                tuple(f.empty for f in facts),
                tuple(f.dated for f in facts),
                tuple(f.escape for f in facts),
                first is not None and not first.empty and not first.long,
                long=tuple(f.long for f in facts),
                spaced=tuple(f.spaced for f in facts),
                upper=tuple(f.upper for f in facts),
                op_spaced=tuple(flags[i].spaced if i in flags else True for i in self.op_indexes),
                ts_dated=ts is None or ts.dated,
                ts_spaced=ts is None or ts.spaced,
                other=tuple(f.date_other for f in facts),
                op_upper=tuple(flags[i].upper if i in flags else True for i in self.op_indexes),
                ts_other=ts is None or ts.other,
                undated=tuple(f.undated for f in facts),
                worded=tuple(f.worded for f in facts),
                padded=tuple(f.padded for f in facts),
                op_drops=self._op_drops(frame),
            )
        row = frame.select(self.stats_exprs()).row(0, named=True) if self.props or self.ids else {}
        return Stats(
            tuple(bool(row[f"e{k}"]) for k in n),
            tuple(bool(row[f"d{k}"]) for k in n),
            tuple(bool(row[f"x{k}"]) for k in n),
            bool(row.get("first_id", False)),
            op_drops=self._op_drops(frame),
        )

    def _op_drops(self, frame: pl.DataFrame) -> tuple[bool, ...]:
        """Per `.operation` column, whether a cell may be a $remove or $delete (any case; also a cell that only
        holds such a word, which is refused): a batch without them has the `sets` of every row, and no `ops`."""
        if not self.op_indexes:
            return ()
        found = frame.select(pl.col(f"f{i}").str.contains(_DROPS).any().alias(str(i)) for i in self.op_indexes)
        return tuple(bool(value) for value in found.row(0))

    def wanted_facts(self) -> dict[int, Facts]:
        """Per column, the facts (see reader.Facts) that stats() and the compiled rules read; the reader skips the rest."""
        wanted: dict[int, set[str]] = {}

        def want(index: int, *facts: str) -> None:
            wanted.setdefault(index, set()).update(facts)

        for p in self.props:
            want(p.index, "empty", "dated", "date_other", "undated")  # empty cells, dates and their form: all
            want(p.index, *(("escape", "long") if p.data_type == "STRING" else ("spaced",)))
            if datatypes.get(p.data_type).lowers:
                want(p.index, "upper")
            if datatypes.get(p.data_type).verbatim:
                want(p.index, "padded")
            if datatypes.get(p.data_type).words:
                want(p.index, "worded")
        if self.ids:
            want(self.ids[0].index, "empty", "long")
        for i in self.op_indexes:
            want(i, "spaced", "upper")
        if self.ts is not None:
            want(self.ts.index, "dated", "spaced", "other")
        return {i: Facts(**{name: name in names for name in Facts._fields}) for i, names in wanted.items()}

    def compile(self, stats: Stats) -> Compiled:
        if stats not in self._cache:
            self._cache[stats] = _compile(self, stats)
        return self._cache[stats]


def build_plan(
    manifest: Manifest, header: list[str], *, account: str, processing_ts: int, restricted: Sequence[str]
) -> Plan:
    """The roles of the file's columns; FileError when the header and the manifest disagree."""
    keys, notes = match_columns(manifest, header)
    profile = manifest.type == "profile"

    def column(i: int) -> tuple[str, str]:
        """(property name, dataType) of the column at i: its manifest entry, else its header."""
        entry = manifest.columns.get(keys[i]) if i in keys else None
        name = entry.ct_name if entry is not None and entry.ct_name else (keys.get(i) or header[i])
        if entry is None or not entry.ct_name:
            name = _reserved(name, header[i], notes, profile)
        return name, entry.data_type if entry is not None else "STRING"

    op_columns: dict[str, int] = {}
    if profile:
        for i, name in enumerate(header):
            base = name[: -len(rules.OPERATION_SUFFIX)]
            if name.lower().endswith(rules.OPERATION_SUFFIX) and base:
                op_columns[_fold(base)] = i
    op_indexes = sorted(op_columns.values())
    props: list[Prop] = []
    ids: dict[str, Prop] = {}
    ts = event_name = None
    seen: dict[str, str] = {}
    for i, head in enumerate(header):
        if i in op_indexes:
            continue
        name, data_type = column(i)
        if name in seen:
            raise FileError(rules.file_same_property(seen[name], head, name))
        seen[name] = head
        message = datatypes.get(data_type).problem
        if name in rules.IDENTITY_KEYS or (name == rules.EVENT_NAME_KEY and not profile):
            data_type, message = "STRING", rules.TYPE_PROBLEMS["STRING"]
        elif name.startswith(rules.MSG_PREFIX):
            data_type, message = "BOOLEAN", rules.BAD_MSG
        prop = Prop(i, head, name, data_type, message, op_columns.pop(_fold(head), None))
        if name == rules.TS_KEY:
            ts = prop
        elif name == rules.EVENT_NAME_KEY and not profile:
            event_name = prop
        else:
            props.append(prop)
            if name in rules.IDENTITY_KEYS:
                ids[name] = prop
    for i in op_columns.values():  # `<col>.operation` without `<col>`: only $delete means something
        base = header[i][: -len(rules.OPERATION_SUFFIX)]
        props.append(Prop(i, base, manifest.property_name(base), "STRING", "", i, value=False))
    if header and not ids:
        raise FileError(rules.file_no_identity(manifest.type))
    if header and not profile and event_name is None:
        raise FileError(rules.FILE_NO_EVENT_NAME)
    if not profile:
        props.sort(key=lambda p: p.name)  # canonical key order, for the de-duplication id
    return Plan(
        kind=manifest.type,
        header=header,
        props=props,
        ids=[ids[key] for key in rules.IDENTITY_KEYS if key in ids],
        ts=ts,
        event_name=event_name,
        op_indexes=op_indexes,
        account=account,
        processing_ts=processing_ts,
        restricted=[name.lower() for name in restricted],
        decimal=manifest.decimal or ".",
        notes=notes,
    )


def _fold(name: str) -> str:
    return name.strip().casefold()


_RESERVED = {_fold(key): key for key in (*rules.IDENTITY_KEYS, rules.TS_KEY, rules.EVENT_NAME_KEY)}


def _reserved(name: str, head: str, notes: list[str], profile: bool) -> str:
    """An unmapped header that is a reserved property name written in another case ("IDENTITY", " ts ")."""
    key = _RESERVED.get(_fold(name))
    if key is None or key == name or (key == rules.EVENT_NAME_KEY and profile):
        return name
    notes.append(rules.note_reserved(head, key))
    return key


def match_columns(manifest: Manifest, header: list[str]) -> tuple[dict[int, str], list[str]]:
    """The manifest column each header position stands for, and notes for the report.

    A header matches a manifest column by its exact name, else ignoring case and surrounding space (when
    that finds exactly one column not matched yet). A manifest column the header lacks fails the file."""
    keys: dict[int, str] = {}
    notes: list[str] = []
    exact = {name: i for i, name in enumerate(header)}
    loose: dict[str, list[int]] = {}
    for i, name in enumerate(header):
        loose.setdefault(_fold(name), []).append(i)
    pending = []
    for key in manifest.columns:
        if key in exact:
            keys[exact[key]] = key
        else:
            pending.append(key)
    missing = []
    for key in pending:
        found = [i for i in loose.get(_fold(key), []) if i not in keys]
        if len(found) == 1:
            keys[found[0]] = key
            notes.append(rules.note_header_case(header[found[0]], key))
        else:
            missing.append(key)
    if missing and len(missing) == len(manifest.columns):
        raise FileError(rules.file_no_header_match(list(manifest.columns)))
    if missing:
        unmatched = [name for i, name in enumerate(header) if i not in keys]
        raise FileError(rules.file_missing_columns(missing, unmatched))
    return keys, notes


def _checks(plan: Plan, stats: Stats) -> list[Check]:
    checks: list[Check] = []
    by_column = sorted(enumerate(plan.props), key=lambda kp: kp[1].index)
    for k, p in by_column:
        if not p.value:
            continue
        raw, present = p.raw, p.present
        is_date = raw.str.starts_with(rules.DATE_PREFIX)
        kind = datatypes.get(p.data_type)
        typed_bad: pl.Expr | None = None  # None: cannot happen in this batch
        if kind.check is None:
            if stats.get("long", k):  # else no cell of this batch is over 1024 bytes
                typed_bad = present & (raw.str.len_chars() > rules.MAX_CHARS)
        elif not (kind.words and not stats.get("worded", k)):  # else every cell is "true", "false" or empty
            ok = kind.check(_parsed(p), _context(plan, stats, k))
            typed_bad = present & ~ok.fill_null(False)
        if stats.dated[k] and not stats.get("undated", k):  # every cell a date, or empty
            date_bad = _dated(p).is_null()
            checks.append(Check(p.header, rules.BAD_DATE, present & date_bad if stats.empty[k] else date_bad, p.index))
            typed_bad = None
        elif stats.dated[k]:
            date_ok = _dated(p).is_not_null()
            checks.append(Check(p.header, rules.BAD_DATE, is_date & ~date_ok, p.index))
            typed_bad = None if typed_bad is None else typed_bad & ~is_date
        if typed_bad is not None:
            quoted = p.index if kind.check is not None else None  # a long string is not quoted back
            checks.append(Check(p.header, p.message, typed_bad, quoted, p.data_type))
        if p.name == "Phone":
            checks.append(Check(p.header, rules.BAD_PHONE, present & ~raw.str.contains(rules.PHONE_PATTERN)))
        if p.name == "Email":
            checks.append(Check(p.header, rules.BAD_EMAIL, present & ~raw.str.contains(rules.EMAIL_PATTERN)))
    for n, i in enumerate(plan.op_indexes):
        cell = _op_cell(plan, stats, n, i)
        bad = (cell.str.len_bytes() > 0) & ~cell.is_in(list(rules.OPERATIONS))
        checks.append(Check(plan.header[i], rules.BAD_OPERATION, bad, i))
    if plan.ts is not None:
        present = plan.ts.present
        bad_ts = present & ~pl.col(_TS).is_not_null()
        checks.append(Check(plan.ts.header, rules.BAD_TS, bad_ts, plan.ts.index))
    if plan.event_name is not None:
        raw, head = plan.event_name.raw, plan.event_name.header
        checks.append(Check(head, rules.EVENT_NAME_MISSING, raw.str.len_bytes() == 0))
        restricted = _restricted(raw, plan.restricted) if plan.restricted else pl.lit(False)
        checks.append(Check(head, rules.EVENT_RESTRICTED, restricted, plan.event_name.index))
        checks.append(Check(head, rules.TYPE_PROBLEMS["STRING"], raw.str.len_chars() > rules.MAX_CHARS))
    position = {name: i for i, name in enumerate(plan.header)}
    checks.sort(key=lambda check: position[check.column or ""])  # stable: a column's own order is kept
    checks.append(Check(None, rules.IDENTITY_MISSING, _identity(plan, stats).is_null()))
    if plan.kind == "event" and len(plan.props) > rules.MAX_EVENT_PROPERTIES:
        count = pl.sum_horizontal([_keeps(plan, p, stats).cast(pl.Int32) for p in plan.props])
        checks.append(Check(None, rules.TOO_MANY_PROPERTIES, count > rules.MAX_EVENT_PROPERTIES))
    return checks


def _restricted(raw: pl.Expr, names: list[str]) -> pl.Expr:
    """Event names that are restricted, ignoring case. A batch holds few distinct names: those are lower-cased
    and looked up, and the column is then matched exactly (five times faster than lower-casing every cell)."""
    lowered = pl.Series(names, dtype=pl.String).implode()

    def hits(column: pl.Series) -> pl.Series:
        distinct = column.unique()
        restricted = distinct.filter(distinct.str.to_lowercase().is_in(lowered))
        return column.is_in(restricted.implode())

    return raw.map_batches(hits, return_dtype=pl.Boolean)


def _op_cell(plan: Plan, stats: Stats, n: int, i: int) -> pl.Expr:
    """A `.operation` cell as written, stripped and lower-cased as far as this batch needs it ("$ADD" is $add)."""
    cell = pl.col(f"f{i}")
    if stats.get("op_spaced", n):
        cell = cell.str.strip_chars()
    return cell.str.to_lowercase() if stats.get("op_upper", n) else cell


def _context(plan: Plan, stats: Stats, k: int) -> datatypes.Context:
    return datatypes.Context(lowered=stats.get("upper", k), decimal=plan.decimal)


def _clean(raw: pl.Expr, stats: Stats, k: int) -> pl.Expr:
    """The cell stripped, as far as this batch needs it."""
    return raw.str.strip_chars() if stats.get("spaced", k) else raw


def _date_text(raw: pl.Expr) -> pl.Expr:
    return raw.str.slice(len(rules.DATE_PREFIX))


def _date_ms(raw: pl.Expr, whole: pl.Expr, other: bool = True) -> pl.Expr:
    """Epoch milliseconds of a `$D_` date (seconds, milliseconds or ISO 8601 after the prefix), null when not valid.
    `whole`: the column of timestamps.whole_number(_date_text(raw))."""
    return timestamps.epoch_ms(_date_text(raw), max_seconds=rules.MAX_DATE, digits_only=not other, whole=whole)


def _ts_text(raw: pl.Expr, stats: Stats) -> pl.Expr:
    """A ts cell's instant as written (also as `$D_<instant>`), stripped as far as this batch needs it."""
    text = raw.str.strip_chars() if stats.ts_spaced else raw
    if stats.ts_dated:
        text = (
            pl.when(text.str.starts_with(rules.DATE_PREFIX))
            .then(text.str.slice(len(rules.DATE_PREFIX)))
            .otherwise(text)
        )
    return text


def _ts_ms(raw: pl.Expr, stats: Stats) -> pl.Expr:
    """Epoch milliseconds of a ts cell, null when not valid; reads the column _TS_WHOLE."""
    text = _ts_text(raw, stats)
    return timestamps.epoch_ms(text, max_seconds=rules.MAX_TS, digits_only=not stats.ts_other, whole=pl.col(_TS_WHOLE))


def _identity(plan: Plan, stats: Stats) -> pl.Expr:
    """The first usable of identity, objectId, fbId, gpId (non-empty, at most 1024 characters)."""
    if stats.first_id_always:
        return plan.ids[0].raw  # the buffers show every cell of the first key usable: no per-cell tests
    candidates = [_usable(p) for p in plan.ids]
    return pl.coalesce(candidates) if candidates else pl.lit(None, dtype=pl.String)


def _usable(p: Prop) -> pl.Expr:
    return pl.when(p.present & (p.raw.str.len_chars() <= rules.MAX_CHARS)).then(p.raw)


def _keeps(plan: Plan, p: Prop, stats: Stats) -> pl.Expr:
    """The cell has a value and is not the key the row's identity came from."""
    if p not in plan.ids:
        return p.present
    if stats.first_id_always:
        return p.present if p is not plan.ids[0] else pl.lit(False)
    earlier = [_usable(q).is_not_null() for q in plan.ids[: plan.ids.index(p)]]
    chosen_here = _usable(p).is_not_null() & ~pl.any_horizontal(earlier) if earlier else _usable(p).is_not_null()
    return p.present & ~chosen_here


def _kept_when_present(plan: Plan, p: Prop, stats: Stats) -> bool:
    """_keeps() is just `present` for this property (not an identity key that may be the row's identity)."""
    return p not in plan.ids or (stats.first_id_always and p is not plan.ids[0])


def _value(p: Prop, k: int, stats: Stats, plan: Plan) -> tuple[str, pl.Expr, str]:
    """(prefix, expression, suffix) whose concatenation is the cell's JSON value (where it has one)."""
    raw = p.raw
    kind = datatypes.get(p.data_type)
    if stats.dated[k] and not stats.get("undated", k):  # every cell a date, or empty (no value)
        return '"', _iso(p), '"'
    if kind.value is None:
        text = raw.str.replace_many(_ESCAPES, _ESCAPED) if stats.escape[k] else raw
        if stats.dated[k]:
            text = pl.when(raw.str.starts_with(rules.DATE_PREFIX)).then(_iso(p)).otherwise(text)
        return '"', text, '"'
    if kind.words and not stats.get("worded", k):
        typed = raw  # "true" and "false" as JSON (empty cells have no value)
    elif kind.verbatim and not stats.get("padded", k) and not stats.get("spaced", k):
        # The cells are written as polars writes the numbers: a valid one is its own JSON (no parse, no format).
        typed = raw
    else:
        typed = kind.value(_parsed(p), _context(plan, stats, k))
    if stats.dated[k]:
        dated = pl.concat_str([pl.lit('"'), _iso(p), pl.lit('"')])
        typed = pl.when(raw.str.starts_with(rules.DATE_PREFIX)).then(dated).otherwise(typed)
    return "", typed, ""


def _pieces(p: Prop, k: int, stats: Stats, always: bool, value: pl.Expr) -> list[pl.Expr]:
    """A value for _join: a date that is in every row in two pieces (timestamps.iso_parts), else itself."""
    if always and stats.dated[k] and not stats.get("undated", k):
        return timestamps.iso_parts(_dated(p))
    return [value]


def _iso(p: Prop) -> pl.Expr:
    return timestamps.iso_text(_dated(p))


_TS = "_ts"  # the shared column of the ts cell's epoch milliseconds
_TS_WHOLE = "_wts"  # the ts cell as a whole number, computed before _TS


def _parsed(p: Prop) -> pl.Expr:
    """The shared column of a typed property's cells as its type reads them (datatypes.DataType.parse)."""
    return pl.col(f"_t{p.index}")


def _dated(p: Prop) -> pl.Expr:
    """The shared column of a property's `$D_` dates in epoch milliseconds."""
    return pl.col(f"_d{p.index}")


def _shared(plan: Plan, stats: Stats) -> tuple[dict[str, pl.Expr], dict[str, pl.Expr]]:
    """What several checks and outputs read, computed once per batch before them: a typed cell is parsed for
    its check and for its value, a date for its check and its text, the ts for its check and the output (each
    parsed twice cost a tenth of an event batch: polars' common-subexpression pass did not join them)."""
    shared: dict[str, pl.Expr] = {}
    first: dict[str, pl.Expr] = {}  # the whole numbers the dates' and the ts' range tests read (computed before)
    for k, p in enumerate(plan.props):
        kind = datatypes.get(p.data_type)
        if kind.parse is not None:
            shared[_parsed(p).meta.output_name()] = kind.parse(_clean(p.raw, stats, k), _context(plan, stats, k))
        if stats.dated[k]:
            whole = f"_w{p.index}"
            first[whole] = timestamps.whole_number(_date_text(p.raw))
            shared[_dated(p).meta.output_name()] = _date_ms(p.raw, pl.col(whole), stats.get("other", k))
    if plan.ts is not None:
        first[_TS_WHOLE] = timestamps.whole_number(_ts_text(plan.ts.raw, stats))
        shared[_TS] = _ts_ms(plan.ts.raw, stats)
    return first, shared


def _join(items: list[tuple[bool, list[pl.Expr | str]]], open_: str, close: str) -> pl.Expr:
    """open_ + items joined by "," + close, where an item (always, parts) is left out when `always` is False
    and any of its parts is null. Items that are always there join in one flat concat_str (fast); the
    separators go before or after the first such item so that a missing item never leaves a stray comma."""
    first = next((n for n, (always, _) in enumerate(items) if always), None)
    if first is None:
        if not items:
            return pl.lit(open_ + close)
        inner = pl.concat_str([_concat(parts) for _, parts in items], separator=",", ignore_nulls=True)
        return pl.concat_str([pl.lit(open_), inner, pl.lit(close)])
    elements: list[pl.Expr | str] = [open_]
    for n, (always, parts) in enumerate(items):
        lead = "," if n > first else ""
        trail = "," if n < first else ""
        piece = [lead, *parts, trail]
        elements.extend(piece if always else [_concat(piece)])
    elements.append(close)
    return _concat(elements, ignore_nulls=True)


def _concat(parts: list[pl.Expr | str], *, ignore_nulls: bool = False) -> pl.Expr:
    merged: list[pl.Expr | str] = []
    for part in parts:
        if isinstance(part, str) and merged and isinstance(merged[-1], str):
            merged[-1] += part
        elif not (isinstance(part, str) and not part):
            merged.append(part)
    exprs = [pl.lit(part) if isinstance(part, str) else part for part in merged]
    return pl.concat_str(exprs, ignore_nulls=ignore_nulls) if len(exprs) > 1 else exprs[0]


def _properties(plan: Plan, stats: Stats) -> pl.Expr:
    items: list[tuple[bool, list[pl.Expr | str]]] = []
    for k, p in enumerate(plan.props):
        if p in plan.ids and stats.first_id_always and p is plan.ids[0]:
            continue
        prefix, value, suffix = _value(p, k, stats, plan)
        always = not stats.empty[k] and _kept_when_present(plan, p, stats)
        keep = pl.when(_keeps(plan, p, stats)).then(value) if not always else value
        items.append((always, [json.dumps(p.name) + ":" + prefix, *_pieces(p, k, stats, always, keep), suffix]))
    return _join(items, "{", "}")


def _ops(plan: Plan, stats: Stats) -> pl.Expr:
    items: list[tuple[bool, list[pl.Expr | str]]] = []
    for k, p in enumerate(plan.props):
        if p in plan.ids and stats.first_id_always and p is plan.ids[0]:
            continue
        key = json.dumps(p.name)
        prefix, value, suffix = _value(p, k, stats, plan) if p.value else ("", pl.lit(None, dtype=pl.String), "")
        always = p.op_index is None and not stats.empty[k] and _kept_when_present(plan, p, stats)
        if p.op_index is None:
            keep = value if always else pl.when(_keeps(plan, p, stats)).then(value)
            items.append((always, [f'["$set",{key},{prefix}', *_pieces(p, k, stats, always, keep), f"{suffix}]"]))
            continue
        cell = _op_cell(plan, stats, plan.op_indexes.index(p.op_index), p.op_index)
        op = pl.when(cell.str.len_bytes() == 0).then(pl.lit("$set")).otherwise(cell)
        entry = (
            pl.when(op == "$delete")
            .then(pl.lit(f'["$delete",{key},null]'))
            .when(_keeps(plan, p, stats) if p.value else pl.lit(False))
            .then(_concat(['["', op, f'",{key},{prefix}', value, f"{suffix}]"]))
        )
        items.append((False, [entry]))
    return _join(items, "[", "]")


def _sets(plan: Plan, stats: Stats) -> pl.Expr:
    """A profile row's new profile as one JSON object, for a batch whose rows neither remove nor delete: each $set
    (or empty operation) property its value, each $add property a list of its value. A sink stores or merges it
    as it is; `ops` is then null (a sink that needs the operations reads them out of it: profile_ops.with_ops)."""
    if not plan.op_indexes:
        return _properties(plan, stats)
    items: list[tuple[bool, list[pl.Expr | str]]] = []
    for k, p in enumerate(plan.props):
        if p in plan.ids and stats.first_id_always and p is plan.ids[0]:
            continue
        key = json.dumps(p.name)
        if not p.value:
            continue  # an operation column without its column: only its $delete means something
        prefix, value, suffix = _value(p, k, stats, plan)
        if p.op_index is None:
            always = not stats.empty[k] and _kept_when_present(plan, p, stats)
            keep = value if always else pl.when(_keeps(plan, p, stats)).then(value)
            items.append((always, [f"{key}:{prefix}", *_pieces(p, k, stats, always, keep), suffix]))
            continue
        cell = _op_cell(plan, stats, plan.op_indexes.index(p.op_index), p.op_index)
        kept = _keeps(plan, p, stats)
        member = (
            pl.when(kept & (cell == "$add"))
            .then(_concat([f"{key}:[{prefix}", value, f"{suffix}]"]))
            .when(kept)
            .then(_concat([f"{key}:{prefix}", value, suffix]))
        )
        items.append((False, [member]))
    return _join(items, "{", "}")


def _gives_ops(plan: Plan, stats: Stats) -> bool:
    """Whether a profile batch gives `ops` (a row may remove or delete) rather than `sets`."""
    return any(stats.get("op_drops", n) for n in range(len(plan.op_indexes)))


def _compile(plan: Plan, stats: Stats) -> Compiled:
    identity = _identity(plan, stats)
    if plan.ts is not None:
        ms = pl.col(_TS)
        ts_ms = pl.when(plan.ts.present).then(ms).otherwise(pl.lit(plan.processing_ts * 1000)).cast(pl.Int64)
        ts_cell: pl.Expr = plan.ts.raw
    else:
        ts_ms = pl.lit(plan.processing_ts * 1000, dtype=pl.Int64)
        ts_cell = pl.lit("")
    outputs: dict[str, pl.Expr] = {"line": pl.col("line").cast(pl.Int64), "identity": identity}
    if plan.kind == "profile":
        # A batch whose rows neither remove nor delete (every batch of a file without `.operation` columns): each
        # row's new profile as one JSON object, `sets`, and no `ops`. Else `ops` only: one JSON text per row.
        none = pl.lit(None, dtype=pl.String)
        if _gives_ops(plan, stats):
            outputs.update(ts=ts_ms, ops=_ops(plan, stats), sets=none)
        else:
            outputs.update(ts=ts_ms, ops=none, sets=_sets(plan, stats))
        first, shared = _shared(plan, stats)
        return Compiled(_checks(plan, stats), outputs, None, shared, first)
    name = plan.event_name.raw if plan.event_name is not None else pl.lit("")
    properties = _properties(plan, stats)
    outputs.update(name=name, ts=ts_ms, properties=properties, _ts_cell=ts_cell)
    # Evaluated on the outputs: the ts cell as written, so a re-import with an empty ts de-duplicates.
    parts = ["identity", "name", "_ts_cell", "properties"]
    key = pl.concat_str([pl.lit(plan.account), *[pl.col(c) for c in parts]], separator="\x1f")
    first, shared = _shared(plan, stats)
    return Compiled(_checks(plan, stats), outputs, key, shared, first)
