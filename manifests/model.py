"""The manifest: a pydantic model, and load_manifest() whose errors a partner can act on."""

from __future__ import annotations

import json
import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator
from pydantic_core import ErrorDetails

from daemon.text import has_surrogates, safe
from manifests import datatypes, rules

_EMAIL = re.compile(rules.EMAIL_PATTERN)
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f]")
# Linear whatever the text: an address starts only where a run of address characters starts (the
# lookbehind), and the possessive, bounded parts never give back what they took, so a megabyte of
# letters is one failed attempt, not one per position.
_LOCAL = r"[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]"
_EMAIL_FIND = re.compile(rf"(?<!{_LOCAL}){_LOCAL}{{1,64}}+@[A-Za-z0-9-]{{1,63}}+(?:\.[A-Za-z0-9-]{{1,63}}+){{1,8}}+")
_CLIENT_EMAIL = re.compile(r'"clientEmail"\s*+:\s*+(\[[^\]]*+\]?|"(?:[^"\\]|\\.)*+"?)', re.S)
_TYPE_NAMES = {
    "string_type": "a string",
    "dict_type": "an object",
    "model_type": "an object",
    "list_type": "a list",
}


class ManifestError(Exception):
    """The manifest cannot be used; `problems` name the key path, what was expected and what was found."""

    def __init__(self, problems: list[str], client_emails: list[str] | None = None, total: int | None = None) -> None:
        # Bounded, whatever the manifest holds: a problem quotes at most a short piece of a value.
        shown = [safe(_clip(problem, rules.MAX_PROBLEM_CHARS)) for problem in problems[: rules.MAX_PROBLEMS]]
        total = max(total or 0, len(problems))
        if total > rules.MAX_PROBLEMS:
            shown.append(rules.more_problems(total - rules.MAX_PROBLEMS))
        problems = shown
        super().__init__("Incorrect details in manifest file: " + "; ".join(problems))
        self.problems = problems
        self.client_emails = client_emails or []


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True, strict=True)


class Column(_Strict):
    """How one CSV column maps: `ct_name` (None keeps the header) and `data_type` (upper case)."""

    ct_name: str | None = Field(None, alias="ctName")
    data_type: str = Field("STRING", alias="dataType")

    @field_validator("ct_name")
    @classmethod
    def _non_empty(cls, value: str | None) -> str | None:
        if value is not None and not value.strip():
            raise ValueError(f"expected a property name, found {value!r}")
        return value

    @field_validator("data_type", mode="before")
    @classmethod
    def _data_type(cls, value: Any) -> Any:
        if not isinstance(value, str):
            return value
        known = tuple(datatypes.REGISTRY)
        if value.strip().upper() in known:
            return value.strip().upper()
        hint = rules.did_you_mean(value, known)
        raise ValueError(f"expected one of {', '.join(known)}, found {value!r}{hint}")


class Manifest(_Strict):
    """A validated manifest; `encoding`/`delimiter`/`decimal` are None when the partner left them out."""

    file_name: str = Field(alias="fileName")
    type: Literal["event", "profile"]
    client_emails: list[str] = Field(alias="clientEmail")
    columns: dict[str, Column] = Field(default_factory=dict)
    encoding: str | None = None
    delimiter: str | None = None
    dry_run: bool = Field(False, alias="dryRun")  # validate and report as usual, store nothing
    decimal: str | None = None  # the decimal mark of FLOAT cells: "." (default) or ","

    @field_validator("file_name")
    @classmethod
    def _plain_name(cls, value: str) -> str:
        bad = not value or value in (".", "..") or value.startswith(".") or any(c in value for c in "/\\\0")
        if bad or value != value.strip():
            raise ValueError(f"expected a plain file name in the same folder (no '/', no '..'), found {_show(value)}")
        if len(value.encode("utf-8", "surrogatepass")) > rules.MAX_FILE_NAME_BYTES:
            raise ValueError(f"expected a file name of at most {rules.MAX_FILE_NAME_BYTES} bytes, found {_show(value)}")
        if _CONTROL.search(value):
            # An upload's name cannot hold them either (the SFTP server refuses it), and they would reach subjects.
            raise ValueError(f"expected a file name without control characters, found {_show(value)}")
        return value

    @field_validator("type", mode="before")
    @classmethod
    def _type(cls, value: Any) -> Any:
        if isinstance(value, str) and value.strip().lower() in rules.TYPES:
            return value.strip().lower()
        if isinstance(value, str):
            raise ValueError(f"expected 'event' or 'profile', found {value!r}{rules.did_you_mean(value, rules.TYPES)}")
        return value

    @field_validator("client_emails", mode="before")
    @classmethod
    def _emails(cls, value: Any, info: ValidationInfo) -> Any:
        if isinstance(value, str):
            value = [part for part in (p.strip() for p in value.split(",")) if part]
        if not isinstance(value, list):
            return value
        if not value:
            raise ValueError("expected at least one email address")
        limit = (info.context or {}).get("max_recipients")
        if limit is not None and len(value) > limit:
            raise ValueError(rules.too_many_recipients(limit, len(value)))
        for item in value:
            # 254 characters: the longest address SMTP can carry (RFC 5321's 256-octet path, less the <>).
            too_long = isinstance(item, str) and len(item.strip()) > rules.MAX_EMAIL_CHARS
            if not isinstance(item, str) or too_long or not _EMAIL.match(item.strip()):
                shown = repr(_clip(item)) if isinstance(item, str) else _show(item)
                raise ValueError(f"expected email addresses, found {shown}")
        return [item.strip() for item in value]

    @field_validator("encoding", mode="before")
    @classmethod
    def _encoding(cls, value: Any) -> Any:
        if not isinstance(value, str):
            return value
        codec = rules.resolve_encoding(value)
        if codec is None:
            shown = list(rules.ENCODINGS.values())
            hint = rules.did_you_mean(value, shown)
            raise ValueError(f"expected one of {', '.join(shown)}, found {value!r}{hint}")
        return codec

    @field_validator("delimiter", mode="before")
    @classmethod
    def _delimiter(cls, value: Any) -> Any:
        if not isinstance(value, str):
            return value
        char = rules.resolve_delimiter(value)
        if char is None:
            shown = ", ".join(f"{name} {char!r}" for char, name in rules.DELIMITERS.items())
            raise ValueError(f"expected one of {shown}, found {value!r}")
        return char

    @field_validator("decimal", mode="before")
    @classmethod
    def _decimal(cls, value: Any) -> Any:
        if not isinstance(value, str):
            return value
        if value.strip() in rules.DECIMALS:
            return value.strip()
        raise ValueError(f'expected "." or "," (the decimal mark of FLOAT values), found {value!r}')

    def property_name(self, header: str) -> str:
        """The property a CSV column lands in: its ctName, or the header itself."""
        column = self.columns.get(header)
        return column.ct_name if column and column.ct_name else header

    def data_type(self, header: str) -> str:
        column = self.columns.get(header)
        return column.data_type if column else "STRING"


def load_manifest(raw: bytes, *, max_size: int | None = None, max_recipients: int | None = None) -> Manifest:
    """Parse and validate a manifest file's bytes; ManifestError lists every problem at once.

    `max_size`: longer bytes are refused unparsed; `max_recipients`: addresses clientEmail may name
    (also the most addresses recovered from a failed manifest to tell it why)."""
    if max_size is not None and len(raw) > max_size:
        prefix = raw[: rules.RECOVER_CHARS].decode("utf-8", "replace")
        raise ManifestError([rules.manifest_too_large(max_size)], _recover_emails(prefix, limit=max_recipients))
    text, problem = _decode(raw)
    if problem:
        raise ManifestError([problem], _recover_emails(raw.decode("utf-8", "replace"), limit=max_recipients))
    duplicates: list[str] = []
    try:
        data = json.loads(text, object_pairs_hook=lambda pairs: _no_duplicates(pairs, duplicates))
    except json.JSONDecodeError as exc:
        problem = f"the manifest is not valid JSON: {exc.msg} at line {exc.lineno}, column {exc.colno}"
        raise ManifestError([problem], _recover_emails(text, limit=max_recipients)) from None
    except RecursionError:
        raise ManifestError(["the manifest is not valid JSON: it is nested too deeply"], []) from None
    except ValueError as exc:  # e.g. an integer of more than 4,300 digits (Python's int_max_str_digits)
        problem = f"the manifest is not valid JSON: {_clip(str(exc))}"
        raise ManifestError([problem], _recover_emails(text[: rules.RECOVER_CHARS], limit=max_recipients)) from None
    if not isinstance(data, dict):
        raise ManifestError([f"the manifest must be a JSON object, found {_json_kind(data)}"], [])
    # A "\udcff" escape decodes to a lone surrogate: no UTF-8 encoder (SQLite, email, logs) can write it.
    broken = _not_unicode(data) if "\\ud" in text.lower() else []
    if broken:
        raise ManifestError(broken, [])
    problems = [f"duplicate key '{_clip(key)}'" for key in duplicates]
    try:
        manifest = Manifest.model_validate(data, context={"max_recipients": max_recipients})
    except ValidationError as exc:
        errors = exc.errors()
        total = len(problems) + len(errors)
        problems += [_describe(error) for error in errors[: rules.MAX_PROBLEMS]]
        emails = json.dumps(data.get("clientEmail"))[: rules.RECOVER_CHARS]
        raise ManifestError(problems, _recover_emails(emails, key=False, limit=max_recipients), total) from None
    if problems:
        raise ManifestError(problems, manifest.client_emails)
    return manifest


def _decode(raw: bytes) -> tuple[str, str | None]:
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        return "", f"the manifest is not UTF-8 text (byte 0x{raw[exc.start]:02x} at line {line})"
    if not text.strip():
        return "", "the manifest is empty"
    return text, None


def _no_duplicates(pairs: list[tuple[str, Any]], duplicates: list[str]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            duplicates.append(key)
        result[key] = value
    return result


def _recover_emails(text: str, *, key: bool = True, limit: int | None = None) -> list[str]:
    """The partner's addresses from a manifest that failed, so they can be told why.

    Only a bounded prefix is searched; more addresses than `limit` are none (they cannot all be told)."""
    text = text[: rules.RECOVER_CHARS]
    if key:
        match = _CLIENT_EMAIL.search(text)
        if not match:
            return []
        text = match.group(1)
    found = list(dict.fromkeys(_EMAIL_FIND.findall(text)))
    return [] if limit is not None and len(found) > limit else found


def _not_unicode(data: Any) -> list[str]:
    """ "<key path>: ... is not valid Unicode text" for every key and string holding a lone surrogate."""
    problems: list[str] = []
    stack: list[tuple[str, Any]] = [("", data)]
    while stack:
        path, value = stack.pop()
        items: list[tuple[str, Any]] = []
        if isinstance(value, dict):
            for key, item in value.items():
                if has_surrogates(key):
                    problems.append(f"{path + ': ' if path else ''}the key {_quote(key)} {rules.MANIFEST_NOT_UNICODE}")
                items.append((f"{path}.{safe(key)}" if path else safe(key), item))
        elif isinstance(value, list):
            items = [(f"{path}.{i}", item) for i, item in enumerate(value)]
        elif isinstance(value, str) and has_surrogates(value):
            problems.append(f"{path}: {_quote(value)} {rules.MANIFEST_NOT_UNICODE}")
        stack.extend(reversed(items))
    return problems


def _quote(text: str) -> str:
    return "'" + _clip(safe(text), 60) + "'"


def _clip(text: str, limit: int = 60) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _json_kind(value: Any) -> str:
    kinds = {list: "an array", str: "a string", bool: "a boolean", int: "a number", float: "a number"}
    return "null" if value is None else kinds.get(type(value), type(value).__name__)


def _describe(error: ErrorDetails) -> str:
    """One pydantic error as "key.path: expected ..., found ..." with a did-you-mean for unknown keys."""
    loc = [str(part) for part in error["loc"]]
    path = ".".join(loc)
    kind = error["type"]
    if kind == "extra_forbidden":
        name, parent = loc[-1], loc[:-1]
        known = rules.COLUMN_KEYS if parent and parent[0] == "columns" else rules.MANIFEST_KEYS
        where = f"{'.'.join(parent)}: " if parent else ""
        hint = rules.did_you_mean(name, known) if len(name) <= 100 else ""
        return f"{where}unknown key '{_clip(name)}'{hint}"
    if kind == "missing":
        return f"{path}: required key is missing"
    if kind == "value_error":
        return f"{path}: {error['msg'].removeprefix('Value error, ')}"
    if kind == "literal_error":
        return f"{path}: expected 'event' or 'profile', found {_show(error.get('input'))}"
    expected = _TYPE_NAMES.get(kind)
    if expected:
        found = error.get("input")
        shown = "null" if found is None else f"{_json_kind(found)} {_show(found)}"
        return f"{path}: expected {expected}, found {shown}"
    return f"{path}: {error['msg']}, found {_show(error.get('input'))}"


def _show(value: Any) -> str:
    text = json.dumps(value, ensure_ascii=False)
    return text if len(text) <= 60 else text[:57] + "..."
