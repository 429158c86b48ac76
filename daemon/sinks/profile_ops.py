"""Profile operations applied per batch, column-wise. Rows that need no folding (`quick`: an identity on one row of
the batch, the engine's tight cell) become a JSON object or merge patch by literal replacements on the cell; for
the others the ops cells split into one row per operation by regex, and each (identity, property)'s operations
fold by group-bys into the property's last value.

The result is the one `base.apply_ops` gives when it applies the rows one by one in frame order (it stays the
reference): for each property only its last `$set` or `$delete` and the `$add`/`$remove` after it count; a value
is in a multi-value property when an `$add` of it came after its last `$remove`, in the order it was added.
Cells outside the plain form the validation engine writes (`[["$op","key",scalar], ...]`: no nested values,
no null but after `$delete`) are not guessed at: their identity's rows are applied one by one by `apply_ops`.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import polars as pl

from daemon.sinks.base import INCOMPLETE_PROFILE, RowFailure, apply_ops, check_ops

_WS = r"[ \t\n\r]*"
# A JSON string as json.loads reads it: no raw control character, escapes of one character or a code point
# (a surrogate only as a pair, which json.loads joins; a lone one could not be stored as UTF-8).
_HEX = "[0-9a-fA-F]"
_ESCAPE = rf"\\(?:[\"\\/bfnrt]|u(?:[0-9a-cA-Ce-fE-F]{_HEX}{{3}}|[dD][0-7]{_HEX}{{2}}|[dD][89abAB]{_HEX}{{2}}\\u[dD][c-fC-F]{_HEX}{{2}}))"
_STRING = rf'"(?:[^"\\\x00-\x1f]|{_ESCAPE})*"'
_NUMBER = r"-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?"
_SCALAR = rf"(?:{_STRING}|{_NUMBER}|true|false|null)"
_OP = r'"(\$set|\$add|\$remove|\$delete)"'
ELEMENT = rf"\[{_WS}{_OP}{_WS},{_WS}({_STRING}){_WS},{_WS}({_SCALAR}){_WS}\]"
_PLAIN_ELEMENT = (
    ELEMENT.replace("(\\$set", "(?:\\$set").replace(f"({_STRING})", _STRING).replace(f"({_SCALAR})", _SCALAR)
)
CELL = rf"^{_WS}\[{_WS}(?:{_PLAIN_ELEMENT}(?:{_WS},{_WS}{_PLAIN_ELEMENT})*)?{_WS}\]{_WS}$"

TOKEN = rf"{_STRING}|{_NUMBER}|true|false|null"
# The engine's own form, tight: no whitespace and no escape in any string, so no string holds a quote. In it `",`
# follows only an operation or a key (a value is followed by `]`), and `],["$` only starts the next element:
# literal replacements turn such a cell into JSON object members, with no parsing and no per-row Python.
_TIGHT_STRING = r'"[^"\\\x00-\x1f]*"'
# No null but after $delete, and only null there: a set, added or removed null is stored or compared by apply_ops,
# where a merge patch would delete the property.
_TIGHT_ELEMENT = (
    rf'\["\$(?:set|add|remove)",{_TIGHT_STRING},(?:{_TIGHT_STRING}|{_NUMBER}|true|false)\]'
    rf'|\["\$delete",{_TIGHT_STRING},null\]'
)
TIGHT = rf"^\[(?:(?:{_TIGHT_ELEMENT})(?:,(?:{_TIGHT_ELEMENT}))*)?\]$"
_TIGHT_VALUE = r'(?:"[^"]*"|[^"\]]*)'


# A tight cell's elements as JSON object members, `"key":value` for $set, `"key":null` for $delete, `"key":[value]`
# for $add, never by splitting on punctuation a string value may hold. The few $add and $delete elements become
# members by a regex each (key and value captured), marked \x02 before and \x01 after (no tight string holds a
# control character); then one pass of literal replacements (`_JOINS`) turns the $set elements into members and
# joins them all. Each pattern starts at a quote, a bracket or a marker no string can end in or hold (a `"` in it
# would have to close a string followed by `$`), but for `",`: in a tight cell, with its $set elements' operations
# taken out, it follows only a $set's key, unless some string starts with a comma (`",",` is in the cell then:
# such a row is not quick). The cell ends `]]` or `\x01]`: two characters that `_members` replaces by `}`.
_ADD = rf'\["\$add",("[^"]*"),({_TIGHT_VALUE})\]'
_ADDED = "\x02${1}:[${2}]\x01"
_DELETE = r'\["\$delete",("[^"]*"),null\]'
_DELETED = "\x02${1}:null\x01"
_JOINS = {
    '[["$set","': '{"',  # the cell starts with a $set
    "[\x02": "{",  # or with a member
    '],["$set","': ',"',  # a $set after a $set
    '\x01,["$set","': ',"',  # after a member
    "],\x02": ",",  # a member after a $set
    "\x01,\x02": ",",  # after a member
    '",': '":',  # a $set's key
}
_COMMA_FIRST = '",",'


def _dropped(ops: str) -> str:
    """The tight elements of the operations `ops` (a regex alternation of names), each with one comma next to it."""
    element = rf'\["\$(?:{ops})","[^"]*",{_TIGHT_VALUE}\]'
    return rf",{element}|{element},|{element}"


_RESETS = ["$set", "$delete"]

# A `sets` object in the engine's compact form with no backslash (no string in it holds a quote or an escape) as
# its operations: one regex replacement takes the members one after the other, each from the `{` or `,` before it
# (so no match starts inside a string), marking each \x01, then [ for an $add's list, then \x02 (no such object
# holds a control character); literal replacements make the marks operations, the braces the list's brackets.
_MEMBER = r'([{,])("[^"]*"):(\[?)("[^"]*"|[^",}\]]+)\]?'
_VALUE = r'(?:"[^"]*"|[^",}\[\]]+)'
_COMPACT = rf'^\{{(?:"[^"]*":(?:{_VALUE}|\[{_VALUE}\])(?:,"[^"]*":(?:{_VALUE}|\[{_VALUE}\]))*)?\}}$'


def with_ops(frame: pl.DataFrame, source: str = "sets", only: pl.Expr | None = None) -> pl.DataFrame:
    """The frame with each null `ops` cell made from the row's `source` column (the engine's `sets`: a row given
    as its new profile), for the paths that read operations: folding, a stored profile's $add, Elasticsearch's
    script; `only`: in the rows it selects. Column-wise, but for an object with an escape (or not in the compact
    form), which is decoded."""
    if source not in frame.columns or frame["ops"].null_count() == 0:
        return frame
    sets = pl.col(source)
    need = pl.col("ops").is_null() & sets.is_not_null() & (pl.lit(True) if only is None else only)
    plain = ~sets.str.contains("\\", literal=True) & sets.str.contains(_COMPACT)
    marked = sets.str.replace_all(_MEMBER, "${1}\x01${3}\x02${2},${4}]")
    members = marked.str.replace_many(["\x01[\x02", "\x01\x02"], ['["$add",', '["$set",'])
    made = frame.select(
        pl.when(need & plain)
        .then(pl.lit("[") + members.str.slice(1).str.head(-1) + pl.lit("]"))
        .otherwise(pl.col("ops"))
        .alias("ops"),
        (need & ~plain).fill_null(False).alias("decode"),
    )
    ops = made["ops"]
    if made["decode"].any():
        at = made["decode"].arg_true()
        ops = ops.scatter(at, [_ops_text(text) for text in frame[source].gather(at).to_list()])
    return frame.with_columns(ops)


def _ops_text(text: str) -> str:
    """A `sets` object's operations (with_ops), decoded; text that is not an object is left for check_ops to refuse."""
    try:
        value = json.loads(text)
    except ValueError:
        return text
    if not isinstance(value, dict):
        return text
    ops = [
        op
        for key, given in value.items()
        for op in (([["$add", key, item] for item in given]) if isinstance(given, list) else [["$set", key, given]])
    ]
    return json.dumps(ops, ensure_ascii=False, separators=(",", ":"))


@dataclass
class ProfileBatch:
    """A profiles frame split for applying.

    `failures`: rows lacking an identity, ts or ops. `rows`: the rows (pos in the frame, line, identity, ts, ops,
    who: the identity's number in this batch) of identities whose cells are all plain, and `ops` their operations,
    one per row in application order (who, key: a number into `keys`, op, tok: the value's JSON text, seq, group:
    the (identity, key) number, multi: whether that group has other operations). `slow`: the complete rows of the other
    identities, for `row_by_row`."""

    failures: list[RowFailure]
    rows: pl.DataFrame
    ops: pl.DataFrame
    keys: list[str]
    slow: pl.DataFrame


def split(frame: pl.DataFrame) -> ProfileBatch:
    """Rows lacking an identity, ts or ops fail; an identity goes row by row when any of its cells is not plain."""
    frame = with_ops(frame)
    present = pl.col("identity").is_not_null() & pl.col("ts").is_not_null() & pl.col("ops").is_not_null()
    indexed = frame.select("line", "identity", "ts", "ops").with_row_index("pos")
    failures = [RowFailure(line, INCOMPLETE_PROFILE) for line in indexed.filter(~present)["line"].to_list()]
    rows = indexed.filter(present).with_columns(
        who=pl.col("identity").rank("dense").cast(pl.Int64), plain=pl.col("ops").str.contains(CELL)
    )
    plain = rows.filter(pl.col("plain"))
    # A plain cell is its tokens in threes (op, key, value): the regex finds them, list slices deal them out.
    tokens = plain.select("who", pl.col("ops").str.extract_all(TOKEN).alias("tokens"))
    flat = tokens["tokens"].explode().drop_nulls()  # an empty list explodes to one null
    who = tokens.select(pl.col("who").repeat_by(pl.col("tokens").list.len() // 3)).to_series().explode().drop_nulls()
    key_tokens = flat.gather_every(3, 1)
    names: dict[str, int] = {}
    codes = {token: names.setdefault(json.loads(token), len(names)) for token in key_tokens.unique().to_list()}
    ops = pl.DataFrame(
        {
            "who": who,
            "key": key_tokens.replace_strict(codes, return_dtype=pl.Int64) if codes else key_tokens.cast(pl.Int64),
            "op": flat.gather_every(3, 0).str.slice(1, 20).str.head(-1),
            "tok": flat.gather_every(3, 2),
        }
    ).with_columns(seq=pl.int_range(pl.len(), dtype=pl.Int64), group=pl.col("who") * max(len(names), 1) + pl.col("key"))
    # `multi`: the property has other operations in the batch (never, when each identity has one row).
    single = ops["group"].n_unique() == ops.height
    ops = ops.with_columns(multi=pl.lit(False) if single else pl.col("group").is_duplicated())
    # A null after anything but $delete (which ignores its value) is left to apply_ops, and so is a value that
    # must be compared (its property has other operations in the batch) but does not compare exactly by text.
    valued = pl.col("op") != "$delete"
    nulls = ops.filter(valued & (pl.col("tok") == "null"))["who"]
    odd = ops.filter(valued & pl.col("multi")).filter(_equality(pl.col("tok")).is_null())["who"]
    slow = pl.concat([rows.filter(~pl.col("plain"))["who"], nulls, odd]).unique()
    rows = rows.drop("plain")
    if slow.is_empty():
        return ProfileBatch(failures, rows, ops, list(names), rows.clear())
    is_slow = pl.col("who").is_in(slow.implode())
    return ProfileBatch(failures, rows.filter(~is_slow), ops.filter(~is_slow), list(names), rows.filter(is_slow))


@dataclass
class Quick:
    """`quick`'s split of a profiles frame. `rows`: the quick rows (pos, identity, ts, ops, grows: the cell has an
    $add or $remove, properties: the JSON object of a new profile made by the cell), `indexed`: the frame with pos
    and quick, for `rest`."""

    rows: pl.DataFrame
    indexed: pl.DataFrame

    def rest(self, slow: pl.Series | None = None) -> pl.DataFrame:
        """The rows that are not quick, and those of the quick rows at `slow` positions: every column, in frame
        order, for `split`."""
        is_rest = ~pl.col("quick")
        if slow is not None and not slow.is_empty():
            is_rest = is_rest | pl.col("pos").is_in(slow.implode())
        return self.indexed.filter(is_rest).drop("pos", "quick")


def quick(frame: pl.DataFrame, unique: pl.Series | None = None, offset: int = 0) -> Quick:
    """The rows that need no folding when their identity has no stored profile, each with that new profile.

    A row is quick when it is complete, its cell tight, its identity on no other row of the batch, no property in
    its cell twice. The new profile: $set, then $add (a list of the value); $remove and $delete find nothing. Each
    property has one operation, so their order within the row changes no value. For a quick row whose identity
    has a stored profile, `patches` gives its merge patch when it only sets and deletes; the others are `rest`.

    `frame` may be a slice of the batch, its first row at `offset`: `unique` then says, per row, whether its
    identity is on no other row of the whole batch."""
    # The engine's `sets` (the new profile of a row without $remove or $delete, as one JSON object): stored as it
    # is, no cell to read. (Over a stored profile, a row that also $adds has its operations read after all.)
    given = pl.col("sets").is_not_null() if "sets" in frame.columns else pl.lit(False)
    present = pl.col("identity").is_not_null() & pl.col("ts").is_not_null() & (pl.col("ops").is_not_null() | given)
    tight = _tight(pl.col("ops"))
    # An $add is a list in `sets` (every other value a scalar): `:[` may also be in a string, a false alarm.
    adds = pl.col("ops").str.contains('["$add"', literal=True)
    if "sets" in frame.columns:
        adds = pl.coalesce(adds, pl.col("sets").str.contains(":[", literal=True))
    every = "sets" in frame.columns and frame["sets"].null_count() == 0  # no cell needs the regex at all
    shaped = given if every else given | tight
    indexed = frame.with_row_index("pos", offset=offset).with_columns(
        quick=present & (pl.col("identity").is_unique() if unique is None else pl.lit(unique)) & shaped
    )
    chosen = indexed.filter(pl.col("quick"))
    direct = None
    if "sets" in frame.columns:
        direct = chosen.filter(given).select(
            "pos", "identity", "ts", "ops", grows=adds, removes=False, properties="sets", given=True
        )
        chosen = chosen.filter(~given)
        if chosen.is_empty():  # every quick row given (a file without `.operation` columns)
            return Quick(direct, indexed)
    ops = pl.col("ops")
    candidates = chosen.select(
        "pos",
        "identity",
        "ts",
        "ops",
        # `","key",` is in every element once: a key named twice is in the list twice.
        twice=ops.str.extract_all(r'","[^"]*",').list.n_unique()
        < ops.str.count_matches('],["$', literal=True) + 1 - (ops == "[]").cast(pl.UInt32),
        adds=ops.str.contains('["$add"', literal=True),
        removes=ops.str.contains('["$remove"', literal=True),
        deletes=ops.str.contains('["$delete"', literal=True),
    ).with_columns(grows=pl.col("adds") | pl.col("removes"), drops=pl.col("removes") | pl.col("deletes"))
    twice = candidates.filter(pl.col("twice"))["pos"]
    rows = candidates.filter(~pl.col("twice"))
    cell = ops
    if rows["drops"].any():
        cell = pl.when(pl.col("drops")).then(cell.str.replace_all(_dropped(r"remove|delete"), "")).otherwise(cell)
    if rows["grows"].any():
        cell = cell.str.replace_all(_ADD, _ADDED)
    rows = rows.with_columns(cell=cell).select(
        "pos", "identity", "ts", "ops", "grows", "removes", properties=_members(), given=False
    )
    if direct is not None and not direct.is_empty():
        rows = pl.concat([direct, rows]).sort("pos")  # in frame order, as `prepare` expects
    if not twice.is_empty():
        indexed = indexed.with_columns(quick=pl.col("quick") & ~pl.col("pos").is_in(twice.implode()))
    return Quick(rows, indexed)


# `prepare`'s columns: Quick.indexed's pos and quick, Quick.rows' grows, removes and properties (null if not quick).
_PREPARED = {
    "pos": "_pos",
    "quick": "_quick",
    "grows": "_grows",
    "removes": "_removes",
    "properties": "_properties",
    "given": "_given",
}


# Rows from which `prepare` works on the two halves of a frame at once: two cores for the regexes of a large batch.
HALVES_FROM = 20_000
_OTHER_HALF = ThreadPoolExecutor(max_workers=1, thread_name_prefix="ingestd-prepare")


def prepare(frame: pl.DataFrame) -> pl.DataFrame:
    """`quick`'s result kept in the frame (the sqlite sink's Sink.prepare, run ahead of the write): the frame's
    columns, then those of _PREPARED. A frame prepared before is prepared again, as a whole. A large frame's
    second half is prepared in another thread meanwhile (polars lets go of the GIL)."""
    frame = frame.drop(_PREPARED.values(), strict=False)
    if frame.height < HALVES_FROM:
        return _prepared(quick(frame))
    unique = frame.select(pl.col("identity").is_unique()).to_series()
    half = frame.height // 2
    second = _OTHER_HALF.submit(lambda: _prepared(quick(frame.slice(half), unique.slice(half), offset=half)))
    first = _prepared(quick(frame.slice(0, half), unique.slice(0, half)))
    return pl.concat([first, second.result()], how="vertical_relaxed")


def _prepared(found: Quick) -> pl.DataFrame:
    rows = found.rows.select("pos", "grows", "removes", "properties", "given")
    if rows.height == found.indexed.height:  # every row quick (most often): the same rows in the same order
        return pl.concat([found.indexed, rows.drop("pos")], how="horizontal").rename(_PREPARED)
    return found.indexed.join(rows, on="pos", how="left", maintain_order="left").rename(_PREPARED)


def quick_of(frame: pl.DataFrame) -> Quick:
    """quick(frame), or for a frame `prepare` made, the Quick it holds."""
    if "_quick" not in frame.columns:
        return quick(frame)
    names = {new: old for old, new in _PREPARED.items()}
    rows = frame.filter(pl.col("_quick")).select(
        pl.col("_pos").alias("pos"),
        "identity",
        "ts",
        "ops",
        *(pl.col(new).alias(names[new]) for new in names if new not in ("_pos", "_quick")),
    )
    return Quick(
        rows, frame.drop("_grows", "_removes", "_properties", "_given").rename({"_pos": "pos", "_quick": "quick"})
    )


def _tight(cell: pl.Expr) -> pl.Expr:
    return cell.str.contains(TIGHT) & ~cell.str.contains(_COMMA_FIRST, literal=True)


def loose(rows: pl.DataFrame) -> pl.Series:
    """The positions of quick rows given as `sets` that $add and whose cell is not tight: for a stored profile
    their $add elements cannot be read out of the cell by `patches` and `stored_adds`, so they fold row by row."""
    return rows.filter(pl.col("given") & pl.col("grows") & ~_tight(pl.col("ops")))["pos"]


def patches(rows: pl.DataFrame) -> pl.DataFrame:
    """(identity, ts, properties) of quick rows with no $remove, for identities with a stored profile: properties a
    JSON merge patch for `json_patch` ($set, and null for $delete); their $add elements are left to `stored_adds`."""
    whole = pl.col("given") & ~pl.col("grows")  # the engine's object of $set only: its own merge patch
    if rows.select(whole.all()).item():
        return rows.select("identity", "ts", "properties")
    cell = pl.col("ops")
    if rows["grows"].any():
        cell = pl.when(pl.col("grows")).then(cell.str.replace_all(_dropped("add"), "")).otherwise(cell)
    return rows.with_columns(cell=cell.str.replace_all(_DELETE, _DELETED)).select(
        "identity", "ts", properties=pl.when(whole).then(pl.col("properties")).otherwise(_members())
    )


# A number SQLite and Python read as the same value and compare alike: at most 15 significant digits, no exponent.
_EXACT_NUMBER = r"^-?[0-9]{1,15}(?:\.[0-9]{1,15})?$"


def stored_adds(rows: pl.DataFrame) -> tuple[pl.DataFrame, pl.Series]:
    """The $add operations of quick rows with no $remove, for identities with a stored profile, for `ADD_SQL`:
    (identity, path: the property's JSON path, value: its JSON text, kind: s, n, t or f, plain: the value as SQL
    compares it), one per operation; and the pos of rows whose values could not be compared in SQL exactly as
    base._same does (a number of more than 15 digits or with an exponent: they fold instead)."""
    element = rf'\["\$add","[^"]*",{_TIGHT_VALUE}\]'
    adds = (
        rows.filter(pl.col("grows"))
        .select("pos", "identity", element=pl.col("ops").str.extract_all(element))
        .explode("element")
        .drop_nulls("element")
        .with_columns(key=pl.col("element").str.extract(_ADD, 1), value=pl.col("element").str.extract(_ADD, 2))
    )
    value = pl.col("value")
    first = value.str.slice(0, 1)
    adds = adds.with_columns(
        kind=pl.when(first == '"')
        .then(pl.lit("s"))
        .when(value == "true")
        .then(pl.lit("t"))
        .when(value == "false")
        .then(pl.lit("f"))
        .otherwise(pl.lit("n"))
    )
    odd = adds.filter((pl.col("kind") == "n") & ~value.str.contains(_EXACT_NUMBER))["pos"].unique()
    out = adds.filter(~pl.col("pos").is_in(odd.implode())).select(
        "identity",
        path=pl.lit("$.") + pl.col("key"),
        value="value",
        kind="kind",
        plain=pl.when(pl.col("kind") == "s").then(value.str.slice(1).str.head(-1)).otherwise(value),
    )
    return out, odd


def _members() -> pl.Expr:
    """The column `cell`, a tight cell with its $add and $delete elements made members (or none), as an object."""
    cell = pl.col("cell")
    joined = cell.str.replace_many(list(_JOINS), list(_JOINS.values()), leftmost=True).str.head(-2)
    return pl.when(cell == "[]").then(pl.lit("{}")).otherwise(joined + pl.lit("}"))


def checked(frame: pl.DataFrame) -> tuple[list[RowFailure], pl.DataFrame]:
    """(failures, rows): rows lacking a column or whose ops cell is not a list of known operations fail, each alone
    and with the message of check_ops; the others (line, identity, ts, ops) stay, in frame order. Only cells that
    are not plain are read one by one."""
    frame = with_ops(frame)
    present = pl.col("identity").is_not_null() & pl.col("ts").is_not_null() & pl.col("ops").is_not_null()
    indexed = frame.select("line", "identity", "ts", "ops").with_row_index("pos")
    indexed = indexed.with_columns(plain=present & pl.col("ops").str.contains(CELL))
    failures: list[RowFailure] = []
    refused: list[int] = []
    for pos, line, complete, text in indexed.filter(~pl.col("plain")).select("pos", "line", present, "ops").iter_rows():
        if not complete:
            failures.append(RowFailure(line, INCOMPLETE_PROFILE))
            refused.append(pos)
            continue
        try:
            check_ops(json.loads(text), text)
        except ValueError as exc:
            failures.append(RowFailure(line, str(exc)))
            refused.append(pos)
    rows = indexed.drop("plain")
    return failures, rows.filter(~pl.col("pos").is_in(refused)) if refused else rows


def _equality(tok: pl.Expr) -> pl.Expr:
    """A text per JSON value under base._same: numbers by value (1 == 1.0), strings decoded, true apart from 1.

    Null where the value cannot be compared exactly this way (a float beyond 128-bit integers, an overflow)."""
    first = tok.str.slice(0, 1)
    is_string = first == '"'
    is_bool = (tok == "true") | (tok == "false")
    is_int = ~is_string & ~is_bool & ~tok.str.contains(r"[.eE]")
    as_float = tok.cast(pl.Float64, strict=False)
    integral = as_float.is_finite() & (as_float == as_float.floor())
    decoded = (
        pl.when(tok.str.contains("\\", literal=True))
        .then(tok.str.json_decode(pl.String))
        .otherwise(tok.str.slice(1, tok.str.len_chars() - 2))
    )
    return (
        pl.when(is_string)
        .then(pl.lit("s") + decoded)
        .when(is_bool)
        .then(pl.lit("b") + tok)
        .when(is_int)
        .then(pl.lit("i") + pl.when(tok == "-0").then(pl.lit("0")).otherwise(tok))
        .when(integral)
        .then(pl.lit("i") + as_float.cast(pl.Int128, strict=False).cast(pl.String))
        .when(as_float.is_finite())
        .then(pl.lit("f") + as_float.cast(pl.String))
    )


@dataclass
class Folded:
    """`values`: (who, key, value, first) per property the batch decides, value its JSON text or null (absent),
    first the seq of its first operation; `dependent`: (who, key, op, tok) of the operations of properties whose
    value depends on the stored one (a stored identity, no $set or $delete of it in the batch), in order."""

    values: pl.DataFrame
    dependent: pl.DataFrame


def fold(ops: pl.DataFrame, stored: pl.Series) -> Folded:
    """Fold each (identity, key)'s operations; `stored`: the `who` of the identities that have a stored profile."""
    is_stored = pl.col("who").is_in(stored.implode())
    single = ops.filter(~pl.col("multi"))
    depends = is_stored & pl.col("op").is_in(["$add", "$remove"])
    values = [
        single.filter(~depends).select(
            "who",
            "key",
            pl.when(pl.col("op") == "$set")
            .then(pl.col("tok"))
            .when(pl.col("op") == "$add")
            .then(pl.lit("[") + pl.col("tok") + pl.lit("]"))
            .alias("value"),
            pl.col("seq").alias("first"),
        )
    ]
    dependent = [single.filter(depends)]
    many = ops.filter(pl.col("multi"))
    if not many.is_empty():
        folded, waiting = _fold_groups(many, is_stored)
        values.append(folded)
        dependent.append(waiting)
    return Folded(
        pl.concat(values).sort("first"),
        pl.concat([part.select("who", "key", "op", "tok", "seq") for part in dependent]).sort("seq"),
    )


def _fold_groups(ops: pl.DataFrame, is_stored: pl.Expr) -> tuple[pl.DataFrame, pl.DataFrame]:
    """fold() for properties with several operations in the batch: -> (values, dependent operations)."""
    ops = ops.with_columns(
        reset=pl.col("seq").filter(pl.col("op").is_in(_RESETS)).max().over("group"),
        first=pl.col("seq").min().over("group"),
    )
    depends = pl.col("reset").is_null() & is_stored
    dependent = ops.filter(depends)
    ops = ops.filter(~depends)
    keys = ops.group_by("group").agg(pl.col("who", "key", "first").first())
    # From the last $set or $delete on: the $set's value is where the property starts (as if added to nothing),
    # a $delete leaves it absent; a value is in the result when added after its last removal.
    tail = ops.filter(
        (pl.col("reset").is_null() | (pl.col("seq") >= pl.col("reset"))) & (pl.col("op") != "$delete")
    ).with_columns(eq=_equality(pl.col("tok")))
    shape = tail.group_by("group").agg(listed=(pl.col("op") == "$add").any())
    members = (
        tail.with_columns(
            removed=pl.col("seq").filter(pl.col("op") == "$remove").max().over("group", "eq").fill_null(-1)
        )
        .filter((pl.col("op") != "$remove") & (pl.col("seq") > pl.col("removed")))
        .group_by("group", "eq")
        .agg(pl.col("seq").min().alias("added"), pl.col("tok").sort_by("seq").first())
        .sort("added")
        .group_by("group", maintain_order=True)
        .agg(pl.col("tok"))
    )
    values = (
        keys.join(members, on="group", how="left")
        .join(shape, on="group", how="left")
        .select(
            "who",
            "key",
            pl.when(pl.col("tok").list.len().fill_null(0) == 0)
            .then(None)
            .when(pl.col("listed").fill_null(False))
            .then(pl.lit("[") + pl.col("tok").list.join(",") + pl.lit("]"))
            .otherwise(pl.col("tok").list.first())
            .alias("value"),
            "first",
        )
    )
    return values, dependent


def apply_dependent(
    dependent: pl.DataFrame, names: list[str], stored: dict[int, dict[str, Any]], encode: Callable[[Any], str]
) -> list[tuple[int, int, str | None]]:
    """(who, key, JSON text of the new value, or None: removed) per property whose operations apply to its stored
    value and change it (`stored`: by who, decoded, changed in place). By apply_ops, the operations in order."""
    out: list[tuple[int, int, str | None]] = []
    ordered = dependent.sort("who", "key", "seq")
    whos, keys, ops = (ordered[name].to_list() for name in ("who", "key", "op"))
    values = json.loads("[" + ",".join(ordered["tok"].to_list()) + "]")  # one call for them all
    start = 0
    while start < len(whos):
        who, key = whos[start], keys[start]
        end = start + 1
        while end < len(whos) and whos[end] == who and keys[end] == key:
            end += 1
        name, properties = names[key], stored[who]
        before = encode(properties[name]) if name in properties else None
        apply_ops(properties, [[ops[i], name, values[i]] for i in range(start, end)])
        after = encode(properties[name]) if name in properties else None
        if after != before:
            out.append((who, key, after))
        start = end
    return out


def row_by_row(
    rows: pl.DataFrame, stored: dict[str, dict[str, Any]]
) -> tuple[list[RowFailure], dict[str, tuple[int, dict[str, Any]]]]:
    """The reference path: each row's ops checked then applied in frame order. -> failures, {identity: (ts, props)}."""
    failures: list[RowFailure] = []
    profiles: dict[str, tuple[int, dict[str, Any]]] = {}
    for line, identity, ts, text in rows.select("line", "identity", "ts", "ops").iter_rows():
        try:
            ops = check_ops(json.loads(text), text)
        except ValueError as exc:
            failures.append(RowFailure(line, str(exc)))
            continue
        _, properties = profiles.get(identity) or (ts, stored.get(identity, {}))
        apply_ops(properties, ops)
        profiles[identity] = (ts, properties)
    return failures, profiles
