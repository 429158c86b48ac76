"""The row rules' constants and every partner-facing text of the engine, in one place for review."""

from __future__ import annotations

import codecs
import difflib
import re

from daemon.config import DEFAULT_RESTRICTED_EVENTS
from daemon.units import size_text

# -- manifest vocabulary ------------------------------------------------------------------------

MANIFEST_KEYS = ("fileName", "type", "clientEmail", "columns", "encoding", "delimiter", "decimal")
COLUMN_KEYS = ("ctName", "dataType")
TYPES = ("event", "profile")
DECIMALS = (".", ",")  # the manifest's `decimal`: the decimal mark of FLOAT cells

# Bloomreach's list: UTF-8, UTF-16, cp1250–cp1258, latin1, iso-8859-2 (codec name -> name shown to partners).
ENCODINGS = {
    "utf-8": "UTF-8",
    "utf-16": "UTF-16",
    "utf-16-le": "UTF-16LE",
    "utf-16-be": "UTF-16BE",
    **{f"cp{n}": f"cp{n}" for n in range(1250, 1259)},
    "iso8859-1": "latin1",
    "iso8859-2": "iso-8859-2",
}

# Bloomreach's delimiters: space, tab, comma, period, semicolon, colon, hyphen, pipe, tilde.
DELIMITERS = {
    " ": "space",
    "\t": "tab",
    ",": "comma",
    ".": "period",
    ";": "semicolon",
    ":": "colon",
    "-": "hyphen",
    "|": "pipe",
    "~": "tilde",
}
# Sniffed from the header line only: the others also occur inside ordinary column names
# ("MSG-sms", "Playlist.operation", "first name"), so they must be named in the manifest.
SNIFFED_DELIMITERS = (",", ";", "\t", "|", "~", ":")


def resolve_encoding(name: str) -> str | None:
    """The codec name for a manifest `encoding` value, or None when it is not supported."""
    try:
        codec = codecs.lookup(name.strip()).name
    except LookupError:
        return None
    codec = {"utf-8-sig": "utf-8", "latin-1": "iso8859-1"}.get(codec, codec)
    return codec if codec in ENCODINGS else None


def resolve_delimiter(value: str) -> str | None:
    """The delimiter character for a manifest `delimiter` value ("|", "\\t", "tab", "semicolon"), or None."""
    if value in DELIMITERS:
        return value
    named = {name: char for char, name in DELIMITERS.items()}
    return {"\\t": "\t", **named}.get(value.strip().lower())


def did_you_mean(value: str, choices: list[str] | tuple[str, ...]) -> str:
    """ " — did you mean 'x'?" for a near miss (case-insensitive), else ""."""
    lowered = {choice.lower(): choice for choice in choices}
    guess = difflib.get_close_matches(value.lower(), list(lowered), n=1, cutoff=0.6)
    return f" — did you mean '{lowered[guess[0]]}'?" if guess else ""


# -- manifest problems (each is "<key path>: ..." where a key is concerned) ------------------------

MAX_PROBLEMS = 20  # problems listed per manifest; the rest are counted
MAX_PROBLEM_CHARS = 300  # a problem quoting a partner's value is shortened to this
RECOVER_CHARS = 64 << 10  # addresses of a failed manifest are looked for in this prefix only
MANIFEST_NOT_UNICODE = "is not valid Unicode text (it holds a lone surrogate escape such as \\udcff)"


def manifest_too_large(limit: int) -> str:
    return f"the manifest is larger than {size_text(limit)} (it was not read); a manifest is a small JSON object"


def too_many_recipients(limit: int, found: int) -> str:
    return f"at most {limit} addresses, found {found}"


def more_problems(count: int) -> str:
    return f"... and {count} more problems"


# -- row rules ----------------------------------------------------------------------------------

IDENTITY_KEYS = ("identity", "objectId", "fbId", "gpId")  # priority order for the profile's identity
TS_KEY = "ts"
EVENT_NAME_KEY = "evtName"
OPERATION_SUFFIX = ".operation"
OPERATIONS = ("$set", "$add", "$remove", "$delete")
DATE_PREFIX = "$D_"
MAX_FILE_NAME_BYTES = 255  # NAME_MAX: a longer fileName can name no file
MAX_COLUMNS = 260
MAX_EVENT_PROPERTIES = 100
MAX_CHARS = 1024
INT32 = (-(2**31), 2**31 - 1)
MAX_TS = 9_999_999_999  # epoch seconds up to 2286: longer values are milliseconds by mistake
MAX_DATE = 253_402_300_799  # 9999-12-31T23:59:59Z
TRUE_WORDS = ("true", "1", "yes", "y")
FALSE_WORDS = ("false", "0", "no", "n")
PHONE_PATTERN = r"^\+[1-9][0-9]{6,14}$"  # E.164
# Pragmatic address check (one @, a dotted domain, no spaces): email-validator is too slow per row.
MAX_EMAIL_CHARS = 254
EMAIL_PATTERN = r"^[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]+@[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)+$"
MSG_PREFIX = "MSG-"
RESTRICTED_EVENTS: tuple[str, ...] = tuple(DEFAULT_RESTRICTED_EVENTS)

# -- row problems (the reference page's wording where it has one) -------------------------------

IDENTITY_MISSING = (
    "At least one of identity / fbId / gpId / objectId is mandatory under 1024 chars to identify the user"
)
EVENT_NAME_MISSING = "Event name is mandatory"
EVENT_RESTRICTED = "Event name is a restricted system event name (reserved by ingestd)"
TOO_MANY_PROPERTIES = "Cannot have more than 100 event properties"
BAD_OPERATION = "Profile operation must be one of $add, $set, $remove, $delete"
BAD_PHONE = "Phone number is not valid"
BAD_EMAIL = "Email address is not valid"
BAD_MSG = "Communication preference must be a boolean: true, false, 1, 0, yes, no, y or n"
BAD_TS = "expected epoch seconds, epoch milliseconds or ISO 8601 like 2024-05-01T10:00:00Z"
BAD_DATE = "expected $D_ followed by epoch seconds, epoch milliseconds or ISO 8601 like $D_2024-05-01T10:00:00Z"
TYPE_PROBLEMS = {
    "INTEGER": "Value must be an INTEGER: a whole number from -2147483648 to 2147483647",
    "LONG": "Value must be a LONG: a whole number from -9223372036854775808 to 9223372036854775807",
    "FLOAT": "Value must be a FLOAT: a finite decimal number",
    "BOOLEAN": "Value must be a BOOLEAN: true, false, 1, 0, yes, no, y or n",
    "STRING": "Value must be at most 1024 characters",
}


FOUND = ", found "
_DECIMAL_COMMA = re.compile(r"^\s*[-+]?[0-9]*,[0-9]+\s*$")
_SHOWN_CHARS = 60


def found(message: str, cell: str, data_type: str | None = None, decimal: str = ".") -> str:
    """A problem with the cell that caused it, and a hint where one helps ("12,5" in a FLOAT column)."""
    shown = cell if len(cell) <= _SHOWN_CHARS else cell[: _SHOWN_CHARS - 1] + "…"
    text = f"{message}{FOUND}{shown!r}"
    if data_type == "FLOAT" and decimal == "." and _DECIMAL_COMMA.match(cell):
        text += ' (a decimal comma: add "decimal": "," to the manifest)'
    elif data_type == "FLOAT" and decimal == "," and "." in cell:
        text += ' (the manifest says "decimal": ",": write 12,5, without thousands marks)'
    return text


def reason(message: str) -> str:
    """A problem without the cell it quotes: what the report counts (so 1,000 bad values are one reason)."""
    head, sep, _ = message.partition(FOUND + "'")
    if not sep:
        head, sep, _ = message.partition(FOUND + '"')
    return head


def ragged_row(fields: int, expected: int) -> str:
    return f"Row has {fields} fields but the header has {expected}"


# -- file errors (str(FileError) is "File couldn't be read: <detail>") --------------------------

FILE_PREFIX = "File couldn't be read: "
FILE_EMPTY = "the file is empty"
FILE_NO_HEADER = "no header row (the first line is empty)"


def file_no_header_match(expected: list[str]) -> str:
    shown = ", ".join(f"'{name}'" for name in expected[:5]) + (", …" if len(expected) > 5 else "")
    return f"no header row: the first line has none of the manifest's columns ({shown}), even ignoring case"


def file_missing_columns(missing: list[str], header: list[str]) -> str:
    shown = ", ".join(f"'{name}'" for name in missing[:10]) + (", …" if len(missing) > 10 else "")
    noun = "column" if len(missing) == 1 else "columns"
    text = f"the manifest maps the {noun} {shown}, which the header does not have (even ignoring case)"
    guesses = [(name, did_you_mean(name, header)) for name in missing[:10]]
    hints = [f"'{guess.split(chr(39))[1]}' for '{name}'" for name, guess in guesses if guess]
    return text + (f"; did you mean {', '.join(hints)}?" if hints else "")


def file_no_identity(kind: str) -> str:
    what = "profile" if kind == "profile" else "event's user"
    return (
        f"the header has no column for the {what}'s identity: name one identity, objectId, fbId or gpId, "
        'or map one with "ctName" in the manifest\'s columns'
    )


FILE_NO_EVENT_NAME = 'the header has no event name column: name it evtName, or map one with "ctName": "evtName" in the manifest\'s columns'


def note_header_case(found_name: str, key: str) -> str:
    return f"the header's column '{found_name}' was matched to the manifest's '{key}' ignoring case and spaces"


def note_reserved(found_name: str, key: str) -> str:
    return f"the header's column '{found_name}' was read as '{key}' (ignoring case and spaces)"


def file_empty_name(position: int) -> str:
    return f"column {position} of the header row has no name"


def file_duplicate(name: str, first: int, second: int) -> str:
    return f"duplicate column name '{name}' in the header (columns {first} and {second})"


def file_same_property(first: str, second: str, prop: str) -> str:
    return f"columns '{first}' and '{second}' both map to the property '{prop}'"


def file_too_many_columns(count: int) -> str:
    return f"the header has {count} columns; at most {MAX_COLUMNS} are allowed"


def file_undecodable(byte: int, line: int, encoding: str) -> str:
    return f"byte 0x{byte:02x} at line {line} is not valid {encoding}"


def file_not_encoded(encoding: str) -> str:
    return f"the file is not valid {encoding} text"


def file_unclosed_quote(line: int) -> str:
    return f'the quoted field in the row at line {line} is never closed (a " is missing)'


def file_row_too_long(line: int, limit: int) -> str:
    return f"the row starting near line {line} is longer than {limit // (1 << 20)} MiB (is a quoted field left open?)"


FILE_NOT_REGULAR = "the data file is not a regular file (a link, a folder or a special file)"
MAX_HEADER_BYTES = 4 << 20
MAX_HEADER_NAME = 1024  # characters of one column name


def file_header_too_long(limit: int) -> str:
    return f"the header row is longer than {limit // (1 << 20)} MiB"


def file_long_name(position: int, limit: int) -> str:
    return f"column {position} of the header row is longer than {limit} characters"


def file_field_too_long(line: int, limit: int) -> str:
    return f"line {line}: a field is longer than {limit // 1024} KiB"


def file_malformed(line: int, detail: str) -> str:
    return f"the CSV is malformed near line {line} ({detail})"


# -- compressed data files (gzip, zip with one member) ------------------------------------------

MAX_UNCOMPRESSED = 5 << 30  # default cap of a file's uncompressed bytes (the worker passes sftp.max_file_size)
MAX_RATIO = 200  # real CSVs compress 5-20x, very repetitive ones ~100x; deflate bombs ~1000x
RATIO_FLOOR = 64 << 20  # a small file may always expand to this much


def file_uncompressed_too_large(kind: str, limit: int) -> str:
    return (
        f"the {kind} file uncompresses to more than {size_text(limit)}, the largest data file accepted "
        "(sftp.max_file_size); split it into smaller files"
    )


def file_bomb(kind: str, compressed: int) -> str:
    return (
        f"the {kind} file uncompresses to more than {MAX_RATIO} times its compressed size ({size_text(compressed)}): "
        "refused as a decompression bomb"
    )


def file_truncated(kind: str) -> str:
    return f"the {kind} file is cut short (it ends before its compressed data does); upload it again"


def file_damaged(kind: str, detail: str) -> str:
    return f"the {kind} file is damaged ({detail[:200]})"


def file_zip_members(names: list[str]) -> str:
    if not names:
        return "the zip file holds no file; it must hold exactly one CSV"
    shown = ", ".join(f"'{name[:100]}'" for name in names[:5]) + (", …" if len(names) > 5 else "")
    return f"the zip file holds {len(names)} files ({shown}); it must hold exactly one CSV"


FILE_ZIP_ENCRYPTED = "the zip file is encrypted (password-protected); upload it without a password"
_ZIP_METHODS = {9: "deflate64", 12: "bzip2", 14: "lzma", 93: "zstandard", 95: "xz", 98: "ppmd"}


def file_zip_method(method: int) -> str:
    name = _ZIP_METHODS.get(method, f"method {method}")
    return f"the zip file is compressed with {name}; only deflate (the usual) and stored are read"
