"""The row rules' constants and every partner-facing text of the engine, in one place for review."""

from __future__ import annotations

import codecs
import difflib

from daemon.config import DEFAULT_RESTRICTED_EVENTS

# -- manifest vocabulary ------------------------------------------------------------------------

MANIFEST_KEYS = ("fileName", "type", "clientEmail", "columns", "encoding", "delimiter")
REQUIRED_KEYS = ("fileName", "type", "clientEmail")
COLUMN_KEYS = ("ctName", "dataType")
TYPES = ("event", "profile")
DATA_TYPES = ("STRING", "INTEGER", "FLOAT", "BOOLEAN", "LONG")

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
    return f"the manifest is larger than {_size(limit)} (it was not read); a manifest is a small JSON object"


def too_many_recipients(limit: int, found: int) -> str:
    return f"at most {limit} addresses, found {found}"


def more_problems(count: int) -> str:
    return f"... and {count} more problems"


def _size(limit: int) -> str:
    for unit, factor in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if limit >= factor and limit % factor == 0:
            return f"{limit // factor} {unit}"
    return f"{limit} bytes"


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
INT64 = (-(2**63), 2**63 - 1)
MAX_TS = 9_999_999_999  # epoch seconds up to 2286: longer values are milliseconds by mistake
MAX_DATE = 253_402_300_799  # 9999-12-31T23:59:59Z
TRUE_WORDS = ("true", "1", "yes", "y")
FALSE_WORDS = ("false", "0", "no", "n")
PHONE_PATTERN = r"^\+[1-9][0-9]{6,14}$"  # E.164
# Pragmatic address check (one @, a dotted domain, no spaces): email-validator is too slow per row.
EMAIL_PATTERN = r"^[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]+@[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)+$"
MSG_PREFIX = "MSG-"
RESTRICTED_EVENTS: tuple[str, ...] = tuple(DEFAULT_RESTRICTED_EVENTS)

# -- row problems (the reference page's wording where it has one) -------------------------------

IDENTITY_MISSING = (
    "At least one of identity / fbId / gpId / objectId is mandatory under 1024 chars to identify the user"
)
EVENT_NAME_MISSING = "Event name is mandatory"
EVENT_RESTRICTED = "Event name belongs to CleverTap restricted system events"
TOO_MANY_PROPERTIES = "Cannot have more than 100 event properties"
BAD_OPERATION = "Profile operation must be one of $add, $set, $remove, $delete"
BAD_PHONE = "Phone number is not valid"
BAD_EMAIL = "Email address is not valid"
BAD_MSG = "Communication preference must be a boolean: true, false, 1, 0, yes, no, y or n"
BAD_TS = "Timestamp must be in epoch seconds"
BAD_DATE = "Date must be $D_ followed by epoch seconds"
TYPE_PROBLEMS = {
    "INTEGER": "Value must be an INTEGER: a whole number from -2147483648 to 2147483647",
    "LONG": "Value must be a LONG: a whole number from -9223372036854775808 to 9223372036854775807",
    "FLOAT": "Value must be a FLOAT: a finite decimal number",
    "BOOLEAN": "Value must be a BOOLEAN: true, false, 1, 0, yes, no, y or n",
    "STRING": "Value must be at most 1024 characters",
}


def ragged_row(fields: int, expected: int) -> str:
    return f"Row has {fields} fields but the header has {expected}"


# -- file errors (str(FileError) is "File couldn't be read: <detail>") --------------------------

FILE_PREFIX = "File couldn't be read: "
FILE_EMPTY = "the file is empty"
FILE_NO_HEADER = "no header row (the first line is empty)"


def file_no_header_match(expected: list[str]) -> str:
    shown = ", ".join(f"'{name}'" for name in expected[:5]) + (", …" if len(expected) > 5 else "")
    return f"no header row: the first line has none of the manifest's columns ({shown})"


def file_missing_columns(missing: list[str], header: list[str]) -> str:
    parts = [f"'{name}'{did_you_mean(name, header)}" for name in missing]
    return f"the header has no column {', '.join(parts)} named in the manifest's columns"


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
