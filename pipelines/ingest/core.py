"""Core landing files (CSV, CSV.gz, Parquet) -> typed bronze rows + quarantine rows.

Every column is read as text; SQL compiled from the landing contract (config/landing.yaml) then finds, in one pass
over the file, the rows that break a rule and, for those only, the list of rules each breaks. The other rows are
cast to their bronze types when they are written; the broken ones go to the quarantine, one row per broken rule,
with the physical line of the record. A file that cannot be read at all is quarantined whole. Nothing here raises
on bad input: bad input is data. See docs/architecture.md, "Ingest and quarantine rules".
"""
from __future__ import annotations

import csv
import functools
import io
import itertools
import re
import unicodedata
import zlib
from dataclasses import dataclass, field
from datetime import date, timedelta
from decimal import Decimal
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd

from pipelines.contract import Column, FileContract, text_limits
from pipelines.ingest import limits as bounds
from pipelines.ingest.limits import IngestLimits, OverLimit, TextScan, ingest_limits

QUARANTINE_COLUMNS = ["file", "line", "column_name", "reason", "raw_value"]
RAW_VALUE_MAX_CHARS = bounds.RAW_VALUE_HARD_LIMIT  # while working; the quarantine writer applies the configured cap
# A header line longer than this is not a header (a 50 MB single-line file is quarantined without reading it all).
HEADER_MAX_BYTES = 1 << 20

BRONZE_TYPES = {
    "id": "varchar", "text": "varchar", "enum": "varchar", "currency": "varchar", "country": "varchar",
    "mcc": "varchar", "int": "bigint", "decimal2": "decimal(18,2)", "decimal6": "decimal(18,6)", "date": "date",
    "timestamptz": "timestamptz", "bool": "boolean",
}

# The Parquet physical types each contract type takes (DuckDB's names). Each is read through its text form and then
# judged by the type's rules, as a CSV field is: a string always; an integer where the contract's type is an id or a
# number (its text is lossless: int32 -> bigint, 7 -> decimal 7); a decimal or float for a decimal (a float whose text
# has more decimals than the contract allows is quarantined by the row rule); DATE, TIMESTAMP WITH TIME ZONE and
# BOOLEAN for date, timestamptz and bool. Anything else (STRUCT, LIST, MAP, BLOB, a naive TIMESTAMP for an instant,
# TIME, UUID, a DATE for an instant, ...) has no faithful text: the file is quarantined, naming the column and type.
_PARQUET_STRINGS = ("VARCHAR", "NULL")  # NULL: Parquet's null type, a column without a value (read as empty)
_PARQUET_INTEGERS = ("TINYINT", "SMALLINT", "INTEGER", "BIGINT", "HUGEINT",
                     "UTINYINT", "USMALLINT", "UINTEGER", "UBIGINT", "UHUGEINT")
PARQUET_TYPES = {
    "id": _PARQUET_STRINGS + _PARQUET_INTEGERS, "text": _PARQUET_STRINGS, "enum": _PARQUET_STRINGS,
    "currency": _PARQUET_STRINGS, "country": _PARQUET_STRINGS, "mcc": _PARQUET_STRINGS,
    "int": _PARQUET_STRINGS + _PARQUET_INTEGERS,
    "decimal2": _PARQUET_STRINGS + _PARQUET_INTEGERS + ("DECIMAL", "FLOAT", "DOUBLE"),
    "decimal6": _PARQUET_STRINGS + _PARQUET_INTEGERS + ("DECIMAL", "FLOAT", "DOUBLE"),
    "date": _PARQUET_STRINGS + ("DATE",), "timestamptz": _PARQUET_STRINGS + ("TIMESTAMP WITH TIME ZONE",),
    "bool": _PARQUET_STRINGS + ("BOOLEAN",),
}


def parquet_type_faults(contract: FileContract, names: list[str], types: list[str],
                        mapping: dict[str, int]) -> list[str]:
    """'column: TYPE in the Parquet file, the contract's <type> takes ...' for every contract column of the file
    whose physical type has no faithful text form (PARQUET_TYPES); [] when every column can be read."""
    faults = []
    for column in contract.columns:
        if column.name not in mapping:
            continue
        physical = types[mapping[column.name]]
        base = physical.split("(", 1)[0].strip().strip('"')  # DECIMAL(18,2) -> DECIMAL; DuckDB writes "NULL"
        if physical.endswith("]") or base not in PARQUET_TYPES[column.type]:  # INTEGER[], DECIMAL(2,1)[3]: lists
            shown = physical if len(physical) <= 80 else physical[:77] + "..."
            faults.append(f"{column.name} is {shown} in the Parquet file (the contract's {column.type} takes "
                          f"{', '.join(PARQUET_TYPES[column.type])})")
    return faults


# Regular expressions of the contract's types (DuckDB regexp_full_match: anchored at both ends).
FORMAT_REGEX = {
    "id": r"[A-Za-z0-9_.:-]{1,64}",
    "int": r"-?[0-9]+",
    "decimal2": r"-?[0-9]+(\.[0-9]{1,2})?",
    "decimal6": r"-?[0-9]+(\.[0-9]{1,6})?",
    "date": r"[0-9]{4}-[0-9]{2}-[0-9]{2}",
    "timestamptz": r"[0-9]{4}-[0-9]{2}-[0-9]{2}[T ][0-9]{2}:[0-9]{2}(:[0-9]{2}(\.[0-9]{1,9})?)?(Z|[+-][0-9]{2}(:?[0-9]{2})?)",
    "currency": r"[A-Z]{3}",
    "country": r"[A-Z]{2}",
    "mcc": r"[0-9]{4}",
}
FORMAT_WORDS = {
    "id": "not an id (1-64 characters of A-Z a-z 0-9 _ . : -)",
    "int": "not an integer",
    "decimal2": "not a decimal with at most 2 decimals",
    "decimal6": "not a decimal with at most 6 decimals",
    "date": "not a date (YYYY-MM-DD)",
    "timestamptz": "not an ISO 8601 timestamp with a zone offset or Z",
    "currency": "not a currency code (3 capital letters)",
    "country": "not a country code (2 capital letters)",
    "mcc": "not a merchant category code (4 digits)",
}
NUMERIC_TYPES = {"int", "decimal2", "decimal6"}
# A timestamp's zone offset runs from -14:00 to +14:00 with minutes below 60 (what real zones use), its hour from 00
# to 23 (DuckDB reads 24:00 as the next day, so the date as written would not be the instant's date).
OFFSET_REGEX = r".*(Z|[+-](0[0-9]|1[0-3])(:?[0-5][0-9])?|[+-]14(:?00)?)"
HOUR_REGEX = r"[0-9]{4}-[0-9]{2}-[0-9]{2}[T ]([01][0-9]|2[0-3]):.*"
# The three in one pattern, for the accept filter (one regex per value; the three above only word the reason).
STRICT_TIMESTAMPTZ_REGEX = (r"[0-9]{4}-[0-9]{2}-[0-9]{2}[T ]([01][0-9]|2[0-3]):[0-9]{2}(:[0-9]{2}(\.[0-9]{1,9})?)?"
                            r"(Z|[+-](0[0-9]|1[0-3])(:?[0-5][0-9])?|[+-]14(:?00)?)")
# Dates and instants the lake's readers (Python, pandas) can hold: the years 0001-9999, for an instant in UTC. DuckDB
# reads 0000-01-01 as a date and 0001-01-01T00:00+14:00 as an instant of year 0; either would break a later stage.
FIRST_INSTANT = "timestamptz '0001-01-01 00:00:00+00'"
LAST_INSTANT = "timestamptz '9999-12-31 23:59:59.999999+00'"
DATE_OUT_OF_RANGE = "out of range: outside the years 0001-9999"
INSTANT_OUT_OF_RANGE = "out of range: as UTC it falls outside the years 0001-9999"
# Control characters a free text may not hold: C0 codes but tab and line breaks (a CSV field may span lines), DEL.
CONTROL_REGEX = r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]"
# Unicode bidirectional embeddings, overrides and isolates (U+202A-U+202E, U+2066-U+2069): a text holding one shows
# something other than what it stores (a merchant "Cafe\u202eevil" reads backwards) in any report or screen.
BIDI_REGEX = "[\u202a-\u202e\u2066-\u2069]"
BIDI_REASON = ("contains a Unicode bidirectional control (U+202A-U+202E or U+2066-U+2069): it would display other "
               "than it reads")
# Characters that display as nothing: the soft hyphen U+00AD, combining grapheme joiner U+034F, Arabic letter mark
# U+061C, Hangul fillers U+115F U+1160 U+3164 U+FFA0, Khmer inherent vowels U+17B4 U+17B5, Mongolian selectors and
# vowel separator U+180B-U+180F, zero-width space, non-joiner and joiner and the left-to-right / right-to-left marks
# U+200B-U+200F, word joiner and invisible operators U+2060-U+2064, deprecated format characters U+206A-U+206F,
# variation selectors U+FE00-U+FE0F and U+E0100-U+E01EF, U+FEFF inside a value (at the start of a file it is read as
# the BOM), interlinear annotation U+FFF9-U+FFFB, tag characters U+E0000-U+E007F. An id or a label holding one looks
# like another value and is not equal to it: a second customer, region or merchant that reads the same. Free text
# (a description, a message) keeps them: a joiner builds an emoji, a non-joiner spells Persian.
INVISIBLE_REGEX = ("[\u00ad\u034f\u061c\u115f\u1160\u17b4\u17b5\u180b-\u180f\u200b-\u200f\u2060-\u2064"
                   "\u206a-\u206f\u3164\ufe00-\ufe0f\ufeff\uffa0\ufff9-\ufffb\U000e0000-\U000e007f"
                   "\U000e0100-\U000e01ef]")
INVISIBLE_WORDS = ("contains an invisible character (U+{codepoint}: zero-width, joiner, direction mark, soft hyphen, "
                   "selector or another that displays as nothing): it would read as another value")
INVISIBLE_CHARACTER = re.compile(INVISIBLE_REGEX)
# U+FFFD, the replacement character, stands where a character was lost before the value reached the bank (bytes that
# were not UTF-8 decoded by a lenient reader upstream, a lone surrogate escape in JSON): CAF\ufffd of CAFE and of CAFE
# with another accent are one value. An id or a label holding it is refused as one that reads as another; free text
# keeps it.
REPLACEMENT_REGEX = "\ufffd"
REPLACEMENT_REASON = ("contains U+FFFD, the replacement character: a character was lost before it reached the bank "
                      "(not UTF-8 upstream, or a lone surrogate escape), so it would read as another value")
# Hostile but visible text in an id or a label (config/landing.yaml `text`, docs/architecture.md "Hostile files").
# An id is ASCII (its format); the reason names the first other character, as it may look like an ASCII one.
NON_ASCII_REGEX = r"[^\x00-\x7f]"
NON_ASCII_WORDS = ("contains U+{nonascii}, not ASCII (a full-width, look-alike or accented character): an id is "
                   "matched as written, never normalised")
# The full-width forms of ASCII (U+FF01-U+FF5E): NFKC reads them as ASCII, so a label of them is another group that
# reads the same ("ＮＥＴＦＬＩＸ").
FULLWIDTH_REGEX = "[\uff01-\uff5e]"
FULLWIDTH_WORDS = ("contains the full-width character U+{fullwidth} (U+FF01-U+FF5E, a compatibility form of ASCII): "
                   "it would read as the ASCII value, a second group; not normalised")
# A word (letters, marks and digits) holding Latin and Cyrillic or Greek letters: "Lоndon" with a Cyrillic 'о'
# (U+043E) reads as London. RE2 script classes (DuckDB); pipelines/ingest/core.py mixed_script_word says the same in
# Python (tests/test_hostile_files.py checks they agree).
MIXED_SCRIPT_REGEX = ("\\p{Latin}[\\p{L}\\p{M}\\p{N}]*[\\p{Cyrillic}\\p{Greek}]|"
                      "[\\p{Cyrillic}\\p{Greek}][\\p{L}\\p{M}\\p{N}]*\\p{Latin}")
MIXED_SCRIPT_WORDS = ("mixes Latin with Cyrillic or Greek letters in one word (a look-alike such as a Cyrillic 'а' in "
                      "a Latin word): it would read as another value")


def combining_regex(max_marks: int) -> str:
    """More than `max_marks` combining marks in a row (on one character): Zalgo text (RE2)."""
    return f"\\pM{{{int(max_marks) + 1},}}"


def combining_words(max_marks: int) -> str:
    return (f"stacks more than {int(max_marks)} combining marks on one character (Zalgo text; "
            f"text.label_max_combining_marks): it draws over the text around it")


# The mixed-script and Zalgo rules for Python's `re`, which has no script or category classes: the Great
# Expectations suites check bronze with pandas (`str.contains`), so the classes are spelt out as ranges from this
# Python's Unicode database, the same letters `_script` and `longest_combining_run` judge by.
def _ranges_class(codepoints: list[int]) -> str:
    """A character class of code points, runs written as ranges."""
    runs: list[list[int]] = []
    for codepoint in codepoints:
        if runs and codepoint == runs[-1][1] + 1:
            runs[-1][1] = codepoint
        else:
            runs.append([codepoint, codepoint])
    return "[" + "".join(chr(a) if a == b else f"{chr(a)}-{chr(b)}" for a, b in runs) + "]"


@functools.lru_cache(maxsize=None)
def _python_classes() -> tuple[str, str, str]:
    """(Latin letters, Cyrillic and Greek letters, combining marks) as `re` classes."""
    latin, other, marks = [], [], []
    for codepoint in range(0x110000):
        character = chr(codepoint)
        if unicodedata.category(character)[0] == "M":
            marks.append(codepoint)
        elif character.isalpha():
            script = _script(character)
            if script == "LATIN":
                latin.append(codepoint)
            elif script is not None:
                other.append(codepoint)
    return _ranges_class(latin), _ranges_class(other), _ranges_class(marks)


def python_mixed_script_regex() -> str:
    """MIXED_SCRIPT_REGEX for Python's `re`: a Latin letter and a Cyrillic or Greek one in a run of letters, marks
    and digits (`[^\W_]` is a letter or a digit)."""
    latin, other, marks = _python_classes()
    word = f"(?:[^\W_]|{marks})*"
    return f"{latin}{word}{other}|{other}{word}{latin}"


def python_combining_regex(max_marks: int) -> str:
    """combining_regex for Python's `re`."""
    return f"{_python_classes()[2]}{{{int(max_marks) + 1},}}"


# A required free text of only whitespace is empty.
BLANK_REGEX = r"\s*"


def withheld_sql(value: str) -> str:
    """What the quarantine shows instead of a personal value: its length, never its content."""
    return f"'[withheld: personal text of ' || length({value}) || ' characters]'"


def withheld_text(raw: str | None) -> str | None:
    """The same for a raw record of a file kind that holds personal text (a malformed record)."""
    return None if raw is None else f"[withheld: a record of {len(raw)} characters with personal text]"
NOT_A_NUMBER_TEXT = ("nan", "+nan", "-nan", "inf", "+inf", "-inf", "infinity", "+infinity", "-infinity")

# The order in which DuckDB's structural errors of one record are reported (the first one wins).
STRUCTURAL_PRECEDENCE = ["INVALID ENCODING", "LINE SIZE OVER MAXIMUM", "UNQUOTED VALUE", "TOO MANY COLUMNS",
                         "MISSING COLUMNS"]

# A file whose lines end in more than one way (CRLF and LF, or CR) cannot be delimited by the strict RFC 4180 reader.
MIXED_LINE_ENDS = ("mixed line endings (CRLF, LF or CR in one file): the records cannot be delimited; not read "
                   "(deliver the file with one line ending throughout, CRLF or LF)")

_names = itertools.count()


@dataclass
class CoreFileResult:
    """One landing file after validation.

    `accepted_sql` selects the typed rows (contract columns in contract order, `booking_date` for transactions,
    `source_file`, `source_line`) from temporary tables on `con`; empty when the file was quarantined whole.
    """

    file: str
    kind: str
    con: duckdb.DuckDBPyConnection
    accepted_sql: str
    quarantine: pd.DataFrame
    rows_read: int = 0
    rows_accepted: int = 0
    rows_quarantined: int = 0
    whole_file_quarantined: bool = False
    warnings: list[str] = field(default_factory=list)
    temp_objects: list[tuple[str, str]] = field(default_factory=list)

    @property
    def accepted(self) -> duckdb.DuckDBPyRelation:
        return self.con.sql(self.accepted_sql)


class UnreadableFile(Exception):
    """The file as a whole cannot be used; the message says why (it goes to the quarantine)."""


# What reading a broken file raises; a binder or catalog error would be a bug here and is not caught.
READ_ERRORS = (UnreadableFile, OverLimit, OSError, EOFError, zlib.error, UnicodeError, duckdb.IOException,
               duckdb.InvalidInputException, duckdb.ConversionException)


def quote_ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def quote_literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def bronze_columns_sql(contract: FileContract) -> list[tuple[str, str]]:
    """(name, DuckDB type) of a kind's bronze table, in order."""
    columns = [(c.name, BRONZE_TYPES[c.type]) for c in contract.columns]
    if contract.name == "transactions":
        columns.append(("booking_date", "date"))
    return columns + [("source_file", "varchar"), ("source_line", "bigint")]


def empty_accepted_sql(contract: FileContract) -> str:
    """A query with the bronze schema of a kind and no rows."""
    return "select " + ", ".join(
        f"cast(null as {sql_type}) as {quote_ident(name)}" for name, sql_type in bronze_columns_sql(contract)
    ) + " where false"


def empty_quarantine() -> pd.DataFrame:
    return pd.DataFrame({
        "file": pd.Series([], dtype="object"), "line": pd.Series([], dtype="Int64"),
        "column_name": pd.Series([], dtype="object"), "reason": pd.Series([], dtype="object"),
        "raw_value": pd.Series([], dtype="object"),
    })


def quarantine_frame(rows: list[tuple[str, int | None, str | None, str, str | None]]) -> pd.DataFrame:
    if not rows:
        return empty_quarantine()
    frame = pd.DataFrame(rows, columns=QUARANTINE_COLUMNS, dtype="object")
    frame["line"] = frame["line"].astype("Int64")
    frame["raw_value"] = frame["raw_value"].map(lambda v: None if v is None else str(v)[:RAW_VALUE_MAX_CHARS])
    return frame


# ---------------------------------------------------------------------------------------------------------------
# Rules compiled from the contract
# ---------------------------------------------------------------------------------------------------------------

def column_rules(column: Column, value: str, business_date: date | None, late_before: date | None,
                 controls_possible: bool = True) -> list[tuple[str, str, bool]]:
    """The column's rules in the order they are checked, for a non-null `value` (SQL text): (condition that is true
    when the rule is broken, the reason in words, whether the accept filter needs it; a rule implied by another
    one only sharpens the reason). controls_possible: False when the file holds no control byte at all (the scan
    says so), which makes the text rule moot."""
    rules: list[tuple[str, str, bool]] = []
    if column.type in NUMERIC_TYPES:
        rules.append((f"lower({value}) in ({', '.join(map(quote_literal, NOT_A_NUMBER_TEXT))})",
                      "NaN or infinity is not a number", False))
    if column.type == "id":  # implied by the id's format; named, since the raw value shows as a valid id
        rules.append((f"regexp_matches({value}, {quote_literal(INVISIBLE_REGEX)})",
                      f"{FORMAT_WORDS['id']}: {INVISIBLE_WORDS}", False))
        rules.append((f"regexp_matches({value}, {quote_literal(NON_ASCII_REGEX)})",
                      f"{FORMAT_WORDS['id']}: {NON_ASCII_WORDS}", False))
    if column.type in FORMAT_REGEX:
        rules.append((f"not regexp_full_match({value}, {quote_literal(FORMAT_REGEX[column.type])})",
                      FORMAT_WORDS[column.type], column.type != "timestamptz"))
    if column.type == "text" and controls_possible:
        rules.append((f"regexp_matches({value}, {quote_literal(CONTROL_REGEX)})",
                      "contains a control character (NUL or another C0 code other than tab and line breaks, "
                      "or DEL)", True))
    if column.type == "text":  # multi-byte characters: the byte scan behind controls_possible does not see them
        rules.append((f"regexp_matches({value}, {quote_literal(BIDI_REGEX)})", BIDI_REASON, True))
    if column.type == "text" and column.label:
        rules.append((f"regexp_matches({value}, {quote_literal(INVISIBLE_REGEX)})", INVISIBLE_WORDS, True))
        rules.append((f"contains({value}, {quote_literal(REPLACEMENT_REGEX)})", REPLACEMENT_REASON, True))
        limits = text_limits()
        rules.append((f"regexp_matches({value}, {quote_literal(FULLWIDTH_REGEX)})", FULLWIDTH_WORDS, True))
        rules.append((f"regexp_matches({value}, {quote_literal(MIXED_SCRIPT_REGEX)})", MIXED_SCRIPT_WORDS, True))
        rules.append((f"regexp_matches({value}, {quote_literal(combining_regex(limits.label_max_combining_marks))})",
                      combining_words(limits.label_max_combining_marks), True))
    if column.type == "timestamptz":
        rules.append((f"not regexp_full_match({value}, {quote_literal(OFFSET_REGEX)})",
                      "zone offset out of range (-14:00 to +14:00, minutes below 60)", False))
        rules.append((f"not regexp_full_match({value}, {quote_literal(HOUR_REGEX)})",
                      "hour out of range (00 to 23)", False))
        rules.append((f"not regexp_full_match({value}, {quote_literal(STRICT_TIMESTAMPTZ_REGEX)})",
                      FORMAT_WORDS[column.type], True))
    if column.type == "int":
        rules.append((f"try_cast({value} as bigint) is null", "integer out of range", True))
    elif column.type in ("decimal2", "decimal6"):
        rules.append((f"try_cast({value} as {BRONZE_TYPES[column.type]}) is null",
                      f"out of range for {BRONZE_TYPES[column.type]}", True))
    elif column.type == "date":
        rules.append((f"try_cast({value} as date) is null", "not a real date", True))
        rules.append((f"try_cast({value} as date) < date '0001-01-01'", DATE_OUT_OF_RANGE, True))
    elif column.type == "timestamptz":
        rules.append((f"try_cast({value} as timestamptz) is null", "not a real instant", True))
        rules.append((f"try_cast({value} as timestamptz) not between {FIRST_INSTANT} and {LAST_INSTANT}",
                      INSTANT_OUT_OF_RANGE, True))
    elif column.type == "bool":
        rules.append((f"lower({value}) not in ('true', 'false')", "not a boolean (true or false)", True))
    elif column.type == "enum":
        rules.append((f"{value} not in ({', '.join(map(quote_literal, column.values))})",
                      f"not one of: {', '.join(column.values)}", True))
    if column.type == "text" and column.required:
        rules.append((f"regexp_full_match({value}, {quote_literal(BLANK_REGEX)})",
                      "only whitespace: the text is empty", True))
    if column.max_length is not None:
        rules.append((f"length({value}) > {int(column.max_length)}",
                      f"longer than {int(column.max_length)} characters", True))
    if column.type in NUMERIC_TYPES:
        if column.min is not None:
            low = plain_number(column.min)
            rules.append((f"try_cast({value} as decimal(38,6)) < {low}", f"below the minimum {low}", True))
        if column.max is not None:
            high = plain_number(column.max)
            rules.append((f"try_cast({value} as decimal(38,6)) > {high}", f"above the maximum {high}", True))
    local_date = None
    if column.type == "date":
        local_date = f"try_cast({value} as date)"
    elif column.type == "timestamptz":
        # The calendar date as written (the sender's local date), not the UTC date of the instant.
        local_date = f"try_cast(left({value}, 10) as date)"
    if column.not_after_d and business_date is not None and local_date is not None:
        rules.append((f"{local_date} > date '{business_date.isoformat()}'",
                      f"in the future: after the business date {business_date.isoformat()}", True))
    if late_before is not None and local_date is not None:
        rules.append((f"{local_date} < date '{late_before.isoformat()}'",
                      f"booked before {late_before.isoformat()}: more than the allowed days late", True))
    return rules


def plain_number(number: float | int) -> str:
    """A number as a SQL decimal literal and as people write it: 0.000001, not 1e-06."""
    return format(Decimal(str(number)).normalize(), "f")


def column_reason_sql(column: Column, value: str, rules: list[tuple[str, str, bool]]) -> str:
    """A CASE that is null when the column is fine, else its first broken rule in words."""
    missing = quote_literal(f"{column.name}: required value is missing") if column.required else "null"
    parts = [f"when {value} is null then {missing}"]
    parts += [f"when {cond} then {reason_sql(f'{column.name}: {words}', value)}" for cond, words, _ in rules]
    return "case " + " ".join(parts) + " end"


# Placeholders of a reason: the code point of the first character of `value` matching the pattern (e.g. 200B).
CODEPOINT_PLACEHOLDERS = {"{codepoint}": INVISIBLE_REGEX, "{nonascii}": NON_ASCII_REGEX,
                          "{fullwidth}": FULLWIDTH_REGEX}


def reason_sql(words: str, value: str) -> str:
    """A reason as SQL text; a placeholder of CODEPOINT_PLACEHOLDERS in it becomes the code point of the first
    character of `value` its pattern matches (`{codepoint}`: the first invisible character, e.g. 200B)."""
    for placeholder, pattern in CODEPOINT_PLACEHOLDERS.items():
        if placeholder in words:
            before, after = words.split(placeholder, 1)
            found = f"printf('%04X', unicode(regexp_extract({value}, {quote_literal(pattern)})))"
            return f"{quote_literal(before)} || {found} || {quote_literal(after)}"
    return quote_literal(words)


def invisible_reason(value: str) -> str | None:
    """INVISIBLE_WORDS for the first invisible character of a Python string; None when it holds none."""
    found = INVISIBLE_CHARACTER.search(value)
    return None if found is None else INVISIBLE_WORDS.replace("{codepoint}", f"{ord(found[0]):04X}")


def _script(character: str) -> str | None:
    """'LATIN', 'CYRILLIC' or 'GREEK' for a letter of those scripts (by its Unicode name), else None. The Greek
    numeral sign U+0374 is named Greek and is of no script (Common), as RE2 has it."""
    name = unicodedata.name(character, "")
    if "NUMERAL SIGN" in name:
        return None
    for word in name.split():
        if word in ("LATIN", "CYRILLIC", "GREEK"):
            return word
    return None


def mixed_script_word(value: str) -> str | None:
    """The first word (a run of letters, marks and digits) of `value` holding Latin and Cyrillic or Greek letters,
    as MIXED_SCRIPT_REGEX finds in SQL; None when there is none."""
    if value.isascii():
        return None
    word: list[str] = []
    scripts: set[str] = set()
    for character in value + " ":
        if unicodedata.category(character)[0] in "LMN":
            word.append(character)
            script = _script(character) if character.isalpha() else None
            if script is not None:
                scripts.add(script)
            continue
        if "LATIN" in scripts and scripts & {"CYRILLIC", "GREEK"}:
            return "".join(word)
        word, scripts = [], set()
    return None


def longest_combining_run(value: str) -> int:
    """The most combining marks (Unicode category M) in a row in `value`."""
    longest = run = 0
    for character in value:
        run = run + 1 if unicodedata.category(character)[0] == "M" else 0
        longest = max(longest, run)
    return longest


def lookalike_reason(value: str) -> str | None:
    """Why a label or an open-banking id holding no invisible character still reads as another value or draws
    over its neighbours (full-width forms, mixed scripts in one word, Zalgo), as the core SQL rules word it; None
    when it does not. ASCII is never such a value."""
    if value.isascii():
        return None
    found = re.search(FULLWIDTH_REGEX, value)
    if found is not None:
        return FULLWIDTH_WORDS.replace("{fullwidth}", f"{ord(found[0]):04X}")
    if mixed_script_word(value) is not None:
        return MIXED_SCRIPT_WORDS
    max_marks = text_limits().label_max_combining_marks
    if longest_combining_run(value) > max_marks:
        return combining_words(max_marks)
    return None


def column_ok_sql(column: Column, value: str, rules: list[tuple[str, str, bool]]) -> str:
    """A boolean that is true when the column is fine: plain conjunctions, cheap enough for every row."""
    broken = " or ".join(f"({cond})" for cond, _, needed in rules if needed)
    if column.required:
        return f"({value} is not null and not ({broken}))" if broken else f"({value} is not null)"
    return f"({value} is null or not ({broken}))" if broken else "true"


def typed_value_sql(column: Column, value: str) -> str:
    if column.label:  # a decomposed "Cafe\u0301" is the composed "Caf\u00e9": one group, one merchant
        return f"nfc_normalize({value})"
    if column.type == "bool":
        return f"cast(lower({value}) as boolean)"
    sql_type = BRONZE_TYPES[column.type]
    return value if sql_type == "varchar" else f"cast({value} as {sql_type})"


def key_value_sql(column: Column, value: str) -> str:
    """A key part compared by meaning: the same instant written two ways is the same key."""
    if column.type == "timestamptz":
        return f"coalesce(cast(try_cast({value} as timestamptz) as varchar), {value})"
    if column.type in ("decimal2", "decimal6"):
        return f"coalesce(cast(try_cast({value} as decimal(38,6)) as varchar), {value})"
    return value


# ---------------------------------------------------------------------------------------------------------------
# Reading
# ---------------------------------------------------------------------------------------------------------------

def read_csv_header(path: Path) -> list[str]:
    """The header's column names (BOM and surrounding spaces removed); UnreadableFile when there is none."""
    try:
        with bounds.open_bytes(path) as handle:
            head = handle.readline(HEADER_MAX_BYTES + 1)
    except (OSError, EOFError, zlib.error) as err:
        raise UnreadableFile(f"cannot read the header: {err}") from err
    if not head:
        raise UnreadableFile("empty file: no header row")
    if len(head) > HEADER_MAX_BYTES:
        raise UnreadableFile(f"the first line is longer than {HEADER_MAX_BYTES} bytes: not a CSV header")
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError as err:
        raise UnreadableFile(f"not UTF-8: {err}") from err
    text = text.removeprefix("\ufeff").rstrip("\r\n").split("\r")[0]  # old Mac files end lines with CR only
    if not text.strip():
        raise UnreadableFile("the first line is empty: no header row")
    try:
        names = next(csv.reader([text], delimiter=",", quotechar='"', doublequote=True, strict=False))
    except csv.Error as err:
        raise UnreadableFile(f"the header cannot be parsed: {err}") from err
    return [n.strip() for n in names]


def _record_starts_fast(path: Path) -> tuple[np.ndarray, np.ndarray] | None:
    """(DuckDB line, physical line) of each non-empty record after the header, by quote parity, streamed.

    Exact for RFC 4180 files (quotes only in quoted fields). DuckDB numbers a record by the newlines before it that
    end a record (blank lines count, newlines inside quotes do not); the physical line counts every newline. The file
    is read in chunks of `limits.CHUNK_BYTES`: the work arrays are a few bytes per byte of one chunk and the result is
    one entry per record, so a file of blank lines costs no more memory than a chunk.
    """
    logical_parts: list[np.ndarray] = []
    physical_parts: list[np.ndarray] = []
    offset = quotes_before = newlines_before = records_before = 0
    start, start_line = 0, 1  # the open record: where it starts and its physical line
    previous_last = -1  # the last byte of the previous chunk
    header_seen = False

    def close(starts: np.ndarray, lines: np.ndarray, lengths: np.ndarray, first_bytes: np.ndarray) -> bool:
        """Keep the non-empty records after the header; False when the header itself is empty."""
        nonlocal records_before, header_seen
        empty = (lengths == 0) | ((lengths == 1) & (first_bytes == 13))
        logical = records_before + 1 + np.arange(len(starts), dtype=np.int64)
        records_before += len(starts)
        if not header_seen and len(starts):
            if empty[0]:
                return False
            header_seen = True
        keep = ~empty & (logical > 1)
        logical_parts.append(logical[keep])
        physical_parts.append(lines[keep])
        return True

    with bounds.open_bytes(path) as handle:
        while True:
            chunk = handle.read(bounds.CHUNK_BYTES)
            if not chunk:
                break
            buf = np.frombuffer(chunk, dtype=np.uint8)
            newlines = np.flatnonzero(buf == 10)
            quotes = np.flatnonzero(buf == 34)
            if quotes.size or quotes_before & 1:  # a newline inside quotes does not end a record
                is_end = ((quotes_before + np.searchsorted(quotes, newlines)) & 1) == 0
                ends, index = newlines[is_end], newlines_before + np.flatnonzero(is_end)
            else:
                ends, index = newlines, newlines_before + np.arange(newlines.size, dtype=np.int64)
            if ends.size:  # index: each end's number among all newlines of the file
                ends_global = ends.astype(np.int64) + offset
                starts = np.concatenate(([start], ends_global[:-1] + 1))
                lines = np.concatenate(([start_line], index[:-1] + 2))
                lengths = ends_global - starts
                first = np.full(len(starts), -1, dtype=np.int64)
                one = np.flatnonzero(lengths == 1)
                local = starts[one] - offset
                first[one] = np.where(local >= 0, buf[np.maximum(local, 0)], previous_last)
                if not close(starts, lines, lengths, first):
                    return None
                start, start_line = int(ends_global[-1]) + 1, int(index[-1]) + 2
            quotes_before += int(quotes.size)
            newlines_before += int(newlines.size)
            offset += len(chunk)
            previous_last = int(buf[-1])
    length = offset - start  # the last record, up to the end of the file
    if not close(np.array([start]), np.array([start_line]), np.array([length]),
                 np.array([previous_last if length == 1 else -1])):
        return None
    return np.concatenate(logical_parts), np.concatenate(physical_parts)


def _record_starts_csv(path: Path) -> tuple[np.ndarray, np.ndarray] | None:
    """The same numbering with Python's csv module, which reads a stray quote inside an unquoted field as a
    character, as DuckDB does (slower; used only when the fast numbering disagrees with DuckDB). Streamed too."""
    logical_list: list[int] = []
    physical_list: list[int] = []
    previous_end = 0
    with bounds.open_bytes(path) as raw:
        text = io.TextIOWrapper(raw, encoding="utf-8-sig", errors="replace", newline="")
        reader = csv.reader(text, delimiter=",", quotechar='"', doublequote=True, strict=False)
        try:
            for logical, row in enumerate(reader, start=1):
                start = previous_end + 1
                previous_end = reader.line_num
                if logical > 1 and row:
                    logical_list.append(logical)
                    physical_list.append(start)
        except csv.Error:
            return None
    return np.array(logical_list, dtype=np.int64), np.array(physical_list, dtype=np.int64)


_COLUMN_NAME = re.compile(r"[A-Za-z0-9_ .-]{1,64}")


def _shown_name(name: str, position: int) -> str:
    """A header name as reasons and column_name show it: as written when it looks like a column name, else by its
    position (a header of junk must not be copied into the quarantine; raw_value keeps it, capped)."""
    return name if _COLUMN_NAME.fullmatch(name) else f"column {position + 1} (not a column name)"


def _match_header(names: list[str], contract: FileContract, file: str,
                  quarantine_rows: list, warnings: list[str]) -> dict[str, int]:
    """Contract column -> position in the file. Raises UnreadableFile when a required column is missing."""
    duplicated = sorted({n for n in names if names.count(n) > 1})
    if duplicated:
        shown = [n for n in duplicated if n in contract.column_names]
        others = len(duplicated) - len(shown)
        if others:
            shown.append(f"{others} other name{'s' if others > 1 else ''}")
        raise UnreadableFile(f"duplicate column names in the header: {', '.join(shown)}")
    position = {n: i for i, n in enumerate(names)}
    missing_required = [c.name for c in contract.columns if c.required and c.name not in position]
    if missing_required:
        raise UnreadableFile(f"missing required columns: {', '.join(missing_required)}")
    missing_optional = [c.name for c in contract.columns if not c.required and c.name not in position]
    if missing_optional:
        warnings.append(f"{file}: optional columns absent, read as empty: {', '.join(missing_optional)}")
    for i, name in enumerate(names):
        if name not in contract.column_names:
            shown = _shown_name(name, i)
            quarantine_rows.append((file, 1, shown, f"{shown}: extra column not in the contract: its values are "
                                                    f"ignored", name))
            warnings.append(f"{file}: extra column ignored: {shown}")
    return {c.name: position[c.name] for c in contract.columns if c.name in position}


# A record holding bytes that are not UTF-8 (a Latin-1 "caf\xe9", a truncated multi-byte character, an overlong or
# surrogate encoding): quarantined alone, the file's other records read (DuckDB's message says the whole file is not
# UTF-8, which is not so; the raw record shows each undecodable byte as "?").
NOT_UTF8_REASON = ("malformed record: not UTF-8: it holds bytes that are not valid UTF-8 (shown as ? in the raw "
                   "value); the file's other records are read")


def _structural_reason(error_type: str, message: str) -> str:
    if error_type == "INVALID ENCODING":
        return NOT_UTF8_REASON
    return f"malformed record: {error_type.lower()}: {message}"


def _load_csv(con: duckdb.DuckDBPyConnection, path: Path, names: list[str], raw: str, tag: str,
              scan: TextScan | None, scan_error: str | None, max_malformed: int | None = None
              ) -> list[tuple[int, str, str, str]]:
    """Read a CSV as text into the table `raw` (`line`, c0, c1, ...); returns its structural rejects as
    (physical line, DuckDB error type, message, raw record).

    `scan` is the streaming pass that checked the file's bounds; when that pass could not read the file
    (`scan_error`, e.g. a truncated gzip) DuckDB is left to say why, and if it reads the file anyway it is unusable."""
    columns = "{" + ", ".join(f"'c{i}': 'varchar'" for i in range(len(names))) + "}"
    rejects, scans = f"rej_{tag}", f"rejscan_{tag}"
    options = (f"header = true, auto_detect = false, columns = {columns}, delim = ',', quote = '\"', escape = '\"', "
               f"strict_mode = true")
    n_rows = None
    if scan is not None and scan.returns == scan.crlf:  # LF or CRLF line ends throughout: one line per record?
        # First the plain strict read, which stops at the first malformed record and keeps no error: when it reads
        # one record per line after the header, no record was malformed, blank or spread over lines: that is the file.
        try:
            con.execute(f"create temp table {raw}_text as select * from read_csv({quote_literal(str(path))}, "
                        f"{options})")
            n_rows = int(con.execute(f"select count(*) from {raw}_text").fetchall()[0][0])
        except duckdb.Error:  # whatever it is, the reading with rejects below says it with the record's line
            pass
        if n_rows == scan.physical_lines - 1:
            text_columns = ", ".join(f"t.c{i}" for i in range(len(names)))
            con.execute(f"create temp view {raw} as select t.rowid + 2 as line, {text_columns} from {raw}_text t")
            return []
        con.execute(f"drop table if exists {raw}_text")
    if n_rows is None and scan is not None:
        _check_malformed(path, len(names), scan, max_malformed)
    con.execute(
        f"create temp table {raw}_text as select * from read_csv({quote_literal(str(path))}, {options}, "
        f"store_rejects = true, rejects_table = '{rejects}', rejects_scan = '{scans}', rejects_limit = 0)"
    )
    reject_rows = con.execute(
        f"select line, error_type, error_message, csv_line from {rejects} order by line, column_idx"
    ).fetchall()
    con.execute(f"drop table if exists {rejects}")
    con.execute(f"drop table if exists {scans}")
    first_by_line: dict[int, tuple[str, str, str]] = {}
    for line, error_type, message, csv_line in reject_rows:
        current = first_by_line.get(int(line))
        if current is None or _precedence(error_type) < _precedence(current[0]):
            first_by_line[int(line)] = (error_type, message, (csv_line or "").lstrip("\r\n"))
    if scan is None:
        raise UnreadableFile(f"unreadable file: {scan_error}")
    n_rows = int(con.execute(f"select count(*) from {raw}_text").fetchall()[0][0])
    rejected = np.array(sorted(first_by_line), dtype=np.int64)
    accepted_lines, rejected_physical = _number_records(path, scan, rejected, n_rows)
    text_columns = ", ".join(f"t.c{i}" for i in range(len(names)))
    if n_rows and accepted_lines[-1] == n_rows + 1:  # lines 2, 3, ..., n+1: no gaps
        con.execute(f"create temp view {raw} as select t.rowid + 2 as line, {text_columns} from {raw}_text t")
    else:
        frame = pd.DataFrame({"row_index": np.arange(n_rows, dtype=np.int64), "line": accepted_lines})
        con.register(f"{raw}_frame", frame)
        con.execute(f"create temp table {raw}_lines as select * from {raw}_frame")
        con.unregister(f"{raw}_frame")
        con.execute(f"create temp view {raw} as select l.line, {text_columns} "
                    f"from {raw}_text t join {raw}_lines l on t.rowid = l.row_index")
    return [(rejected_physical[line], kind, message, raw_record)
            for line, (kind, message, raw_record) in sorted(first_by_line.items())]


_UNDECODED = re.compile("[\udc80-\udcff]")  # bytes that are not UTF-8, as errors="surrogateescape" reads them


def _check_malformed(path: Path, n_columns: int, scan: TextScan, max_malformed: int | None) -> None:
    """UnreadableFile when more than `max_malformed` records of the file are malformed: more or fewer fields than
    its header, a character after a closing quote, or bytes that are not UTF-8 (DuckDB's strict reading refuses all
    three, keeping each such record's error in memory), counted by Python's csv
    module in strict mode (streamed; it reads a quote inside an unquoted field as a character, as DuckDB does, and
    after a malformed record goes on at the next line). Not counted when the file has too few lines to pass the bound,
    or when the module meets what it cannot read (a field past its size limit): DuckDB's own reading says why."""
    if max_malformed is None or scan.physical_lines - 1 <= max_malformed:
        return
    records = malformed = 0
    with bounds.open_bytes(path) as raw:  # an undecodable byte is read as a lone surrogate U+DC80-U+DCFF
        text = io.TextIOWrapper(raw, encoding="utf-8-sig", errors="surrogateescape", newline="")
        reader = csv.reader(text, delimiter=",", quotechar='"', doublequote=True, strict=True)
        next(reader, None)  # the header (read and checked before)
        while True:
            try:
                row = next(reader)
            except StopIteration:
                break
            except csv.Error as err:
                if "field larger than field limit" in str(err):
                    return
                records += 1
                malformed += 1
                continue
            if row:
                records += 1
                malformed += len(row) != n_columns or _UNDECODED.search(",".join(row)) is not None
    if malformed > max_malformed:
        raise UnreadableFile(
            f"{malformed:,} of its {records:,} records are malformed (more or fewer fields than the header's "
            f"{n_columns}, a character after a closing quote, or bytes that are not UTF-8): more than "
            f"ingest.max_malformed_records_per_file "
            f"({max_malformed:,}); the file is quarantined whole, none of its records read")


def _precedence(error_type: str) -> int:
    return STRUCTURAL_PRECEDENCE.index(error_type) if error_type in STRUCTURAL_PRECEDENCE else len(
        STRUCTURAL_PRECEDENCE)


def _number_records(path: Path, scan: TextScan, rejected: np.ndarray, n_rows: int
                    ) -> tuple[np.ndarray, dict[int, int]]:
    """Physical lines of the accepted records (in file order) and DuckDB line -> physical line of the rejected ones.

    DuckDB numbers a record by the record ends before it (blank lines count, newlines inside quotes do not). When the
    file has exactly one physical line per record (the usual case, checked by counting newlines) the two agree.
    Otherwise the records are found by quote parity, and if that disagrees with DuckDB (stray quotes inside
    unquoted fields) by Python's csv module; if nothing agrees the file is unusable.
    """
    physical_lines = scan.physical_lines
    if physical_lines == 1 + n_rows + len(rejected):
        is_rejected = np.zeros(physical_lines + 1, dtype=bool)
        is_rejected[rejected] = True
        all_lines = np.arange(2, physical_lines + 1, dtype=np.int64)
        return all_lines[~is_rejected[2:]], {int(r): int(r) for r in rejected}
    counts = []
    for numbering in (_record_starts_fast, _record_starts_csv):
        numbered = numbering(path)
        if numbered is None:
            continue
        logical, physical = numbered
        is_rejected = np.isin(logical, rejected)
        if int(is_rejected.sum()) == len(rejected) and int((~is_rejected).sum()) == n_rows:
            return physical[~is_rejected], dict(zip(logical[is_rejected].tolist(), physical[is_rejected].tolist()))
        counts.append(len(logical))
    seen = n_rows + len(rejected)
    if counts and min(counts) > seen and len(rejected):
        raise UnreadableFile(
            f"the CSV reader stopped early: it read {seen:,} of the file's {min(counts):,} records, {len(rejected):,} "
            f"of them malformed (DuckDB 2.0 stops so when many records are malformed); the file is quarantined "
            f"whole, none of its records read")
    raise UnreadableFile("records cannot be delimited consistently (stray or unbalanced quotes): "
                         "their line numbers would be wrong")


def _load_parquet(con: duckdb.DuckDBPyConnection, path: Path, raw: str, limits: IngestLimits
                  ) -> tuple[list[str], list[str]]:
    """A view `raw` over a Parquet file: `line` (the 1-based row number) and every column as text (c0, c1, ...);
    returns the file's column names and their DuckDB types. The footer is checked against the bounds first. An empty string is read as
    null, as the same empty field of a CSV is."""
    try:
        bounds.check_parquet(con, path, limits)
        described = con.execute(f"describe select * from read_parquet({quote_literal(str(path))})").fetchall()
    except duckdb.Error as err:
        raise UnreadableFile(f"cannot read the Parquet file: {err}") from err
    names = [row[0] for row in described]
    types = [str(row[1]) for row in described]
    declared = parquet_column_names(path)
    if declared is not None and len(declared) == len(names):
        names_as_declared = declared  # DuckDB renames a repeated name (amount, amount_1): the header check must see it
    else:
        names_as_declared = names
    casts = "".join(f", nullif(cast({quote_ident(n)} as varchar), '') as c{i}" for i, n in enumerate(names))
    con.execute(f"create temp view {raw} as select file_row_number + 1 as line{casts} "
                f"from read_parquet({quote_literal(str(path))}, file_row_number = true)")
    return names_as_declared, types


def parquet_column_names(path: Path) -> list[str] | None:
    """The top-level column names a Parquet footer declares, repeats included (None when pyarrow cannot say)."""
    import pyarrow.parquet as pq

    try:
        return list(pq.read_schema(path).names)
    except (OSError, ValueError):  # pyarrow's ArrowInvalid is a ValueError, its IO errors OSErrors
        return None


# ---------------------------------------------------------------------------------------------------------------
# The file
# ---------------------------------------------------------------------------------------------------------------

def read_landing_file(con: duckdb.DuckDBPyConnection, path: Path, contract: FileContract,
                      business_date: date | None, source_file: str, max_late_days: int | None = None,
                      limits: IngestLimits | None = None) -> CoreFileResult:
    """Validate one landing file of `contract`'s kind; never raises on bad input.

    business_date: D, for the not-after-D rules (None: not checked, as in the history load). max_late_days: for
    transactions of a nightly load, postings booked more than this many days before D are quarantined. limits: the
    file's bounds (default: config/segone.yaml); a file past one is quarantined whole before DuckDB reads it.
    The accepted rows stay in temporary objects on `con` until `drop_file_objects(result)`.
    """
    limits = limits if limits is not None else ingest_limits()
    tag = f"{next(_names)}"
    raw = f"raw_{tag}"
    quarantine_rows: list[tuple] = []
    warnings: list[str] = []
    structural: list[tuple[int, str, str, str]] = []
    is_parquet = path.name.endswith(".parquet")
    controls_possible = True
    scan = None
    try:
        before = bounds.identity(path)
        if before is None:
            raise UnreadableFile("not a regular file (a symbolic link, device or FIFO): refused, not read")
        if is_parquet:
            names, types = _load_parquet(con, path, raw, limits)
            mapping = _match_header(names, contract, source_file, quarantine_rows, warnings)
            type_faults = parquet_type_faults(contract, names, types, mapping)
            if type_faults:
                raise UnreadableFile("columns of a type the contract cannot read: " + "; ".join(type_faults))
        else:
            bounds.check_file_size(path, limits)
            names = read_csv_header(path)
            mapping = _match_header(names, contract, source_file, quarantine_rows, warnings)
            scan, scan_error = None, None
            try:
                scan = bounds.scan_text(path, limits)
            except bounds.READ_FAILURES as err:
                scan_error = f"{type(err).__name__}: {err}"
            structural = _load_csv(con, path, names, raw, tag, scan, scan_error, limits.max_malformed_records)
            controls_possible = scan is None or scan.has_control
        result = _validate(con, contract, raw, tag, mapping, business_date, source_file, max_late_days,
                           quarantine_rows, structural, warnings, controls_possible, limits.max_quarantine_rows)
        if bounds.identity(path) != before:
            drop_file_objects(result)
            raise UnreadableFile("the file changed while it was read (replaced by a link or another file): refused")
        return result
    except READ_ERRORS as err:
        # Parquet is read lazily, so a broken Parquet file may only fail here, in the validation pass.
        _drop_quietly(con, [raw, f"dup_{tag}", f"bad_{tag}", f"{raw}_lines", f"{raw}_text"])
        known = isinstance(err, (UnreadableFile, OverLimit))
        if isinstance(err, duckdb.InvalidInputException) and scan is not None and scan.mixed_line_ends:
            reason = MIXED_LINE_ENDS
        else:
            reason = str(err) if known else f"unreadable file: {type(err).__name__}: {_first_line(str(err))}"
        return CoreFileResult(
            file=source_file, kind=contract.name, con=con, accepted_sql=empty_accepted_sql(contract),
            quarantine=quarantine_frame([(source_file, None, None, reason[:RAW_VALUE_MAX_CHARS], None)]),
            whole_file_quarantined=True, warnings=warnings,
        )


def _first_line(message: str) -> str:
    """A reader's message as one line (DuckDB adds lines of advice about its own options after the first)."""
    lines = [line.strip() for line in message.splitlines() if line.strip()]
    return lines[0] if lines else message.strip()


def _validate(con: duckdb.DuckDBPyConnection, contract: FileContract, raw: str, tag: str,
              mapping: dict[str, int], business_date: date | None, source_file: str, max_late_days: int | None,
              quarantine_rows: list, structural: list[tuple[int, str, str, str]], warnings: list[str],
              controls_possible: bool = True, max_quarantine_rows: int | None = None) -> CoreFileResult:
    """The SQL compiled from the contract: a filter that is true for a row that breaks no rule (the accepted rows,
    selected when they are written), and for the other rows the list of broken rules, one quarantine row each."""
    dups = f"dup_{tag}"
    late_before = None
    if contract.name == "transactions" and max_late_days is not None and business_date is not None:
        late_before = business_date - timedelta(days=int(max_late_days))

    def value(column: Column) -> str:
        return f"{raw}.c{mapping[column.name]}" if column.name in mapping else "cast(null as varchar)"

    rules = [column_rules(c, value(c), business_date, late_before if c.name == "booked_at" else None,
                          controls_possible)
             for c in contract.columns]
    key_columns = [contract.column(k) for k in contract.key]
    key_parts = [key_value_sql(c, value(c)) for c in key_columns]
    key_label = ", ".join(contract.key)
    con.execute(
        f"create temp table {dups} as select {', '.join(f'{p} as k{i}' for i, p in enumerate(key_parts))}, "
        f"min(line) as first_line from {raw} where {' and '.join(f'{value(c)} is not null' for c in key_columns)} "
        f"group by all having count(*) > 1"
    )
    source = raw
    key_ok, key_reason = "true", "cast(null as varchar)"
    if con.execute(f"select count(*) from {dups}").fetchall()[0][0]:
        source = (f"{raw} left join {dups} d on "
                  + " and ".join(f"d.k{i} = {p}" for i, p in enumerate(key_parts)))
        key_ok = f"(d.first_line is null or {raw}.line <= d.first_line)"
        key_reason = (f"case when not {key_ok} then "
                      f"{quote_literal(f'duplicate key ({key_label}): first seen on line ')} || d.first_line end")
    all_ok = " and ".join([*(column_ok_sql(c, value(c), r) for c, r in zip(contract.columns, rules)), key_ok])

    # Quarantine: the reasons are worked out only for the rows that fail the filter.
    reasons = [f"{column_reason_sql(c, value(c), r)} as r{i}" for i, (c, r) in enumerate(zip(contract.columns, rules))]
    raw_values = [f"{withheld_sql(value(c)) if c.personal else f'left({value(c)}, {RAW_VALUE_MAX_CHARS})'} as v{i}"
                  for i, c in enumerate(contract.columns)]
    key_raw = " || '|' || ".join(f"coalesce({value(c)}, '')" for c in key_columns)
    problems = [f"case when r{i} is not null then {{'column_name': {quote_literal(c.name)}, 'reason': r{i}, "
                f"'raw_value': v{i}}} end" for i, c in enumerate(contract.columns)]
    problems.append(f"case when r_key is not null then {{'column_name': {quote_literal(key_label)}, "
                    f"'reason': r_key, 'raw_value': left(v_key, {RAW_VALUE_MAX_CHARS})}} end")
    # The bad lines stay in DuckDB (a file of millions of bad rows must not come into memory); the reasons are
    # worked out for the first `max_quarantine_rows` of them only (every fault of each), the others are counted in
    # one quarantine row.
    bad_lines = f"bad_{tag}"
    con.execute(f"create temp table {bad_lines} as select {raw}.line from {source} where not ({all_ok})")
    rows_bad = int(con.execute(f"select count(*) from {bad_lines}").fetchall()[0][0])
    listed = "" if max_quarantine_rows is None else f" order by line limit {int(max_quarantine_rows)}"
    bad = con.execute(
        f"select {quote_literal(source_file)} as file, line, b.column_name, b.reason, b.raw_value from ("
        f"select line, unnest(list_filter([{', '.join(problems)}], lambda x: x is not null)) as b from ("
        f"select {raw}.line, {', '.join(reasons + raw_values)}, {key_reason} as r_key, {key_raw} as v_key "
        f"from {source} where {raw}.line in (select line from {bad_lines}{listed}))) order by line"
    ).df() if rows_bad else pd.DataFrame(columns=QUARANTINE_COLUMNS)
    rows_checked = int(con.execute(f"select count(*) from {raw}").fetchall()[0][0])
    unlisted = rows_bad - (int(bad["line"].nunique()) if len(bad) else 0)

    for line, error_type, message, raw_record in structural:
        shown = withheld_text(raw_record) if contract.has_personal_data else raw_record
        quarantine_rows.append((source_file, line, None, _structural_reason(error_type, message), shown))
    if unlisted:
        quarantine_rows.append((source_file, None, None, f"{unlisted} more records of this file broke a rule and "
                                f"are quarantined, not listed (ingest.max_quarantine_rows_per_file is "
                                f"{max_quarantine_rows}); {rows_bad} in all", None))
    quarantine = quarantine_frame(quarantine_rows)
    if len(bad):
        quarantine = pd.concat([quarantine, _normalise(bad)], ignore_index=True)
    quarantine = quarantine.sort_values("line", kind="stable", na_position="first").reset_index(drop=True)

    # The accepted rows are all rows but the bad lines: the rules are not evaluated a second time.
    filter_sql = f" where {raw}.line not in (select line from {bad_lines})" if rows_bad else ""
    typed = [f"{typed_value_sql(c, value(c))} as {quote_ident(c.name)}" for c in contract.columns]
    if contract.name == "transactions":
        typed.append(f"cast(left({value(contract.column('booked_at'))}, 10) as date) as booking_date")
    typed += [f"{quote_literal(source_file)} as source_file", f"{raw}.line as source_line"]
    if rows_checked == 0 and not structural:
        warnings.append(f"{source_file}: header only, no rows")
    return CoreFileResult(
        file=source_file, kind=contract.name, con=con,
        accepted_sql=f"select {', '.join(typed)} from {raw}{filter_sql}",
        quarantine=quarantine, rows_read=rows_checked + len(structural), rows_accepted=rows_checked - rows_bad,
        rows_quarantined=rows_bad + len(structural), warnings=warnings,
        temp_objects=[("table", dups), ("table", bad_lines), ("view", raw), ("table", f"{raw}_lines"),
                      ("table", f"{raw}_text")],
    )


def _normalise(frame: pd.DataFrame) -> pd.DataFrame:
    out = frame.astype("object")
    out["line"] = frame["line"].astype("Int64")
    return out[QUARANTINE_COLUMNS]


def drop_file_objects(result: CoreFileResult) -> None:
    """Free the temporary views and tables behind a result once its rows are written."""
    for kind, name in result.temp_objects:
        result.con.execute(f"drop {kind} if exists {name}")
    result.temp_objects = []


def _drop_quietly(con: duckdb.DuckDBPyConnection, names: list[str]) -> None:
    """Drop whatever temporary tables or views of a failed file exist."""
    existing = con.execute(
        "select table_name, table_type from information_schema.tables where table_name in "
        f"({', '.join(quote_literal(n) for n in names)})").fetchall()
    for name in names:  # in the given order: views before what they read
        for found, table_type in existing:
            if found == name:
                con.execute(f"drop {'view' if table_type == 'VIEW' else 'table'} if exists {name}")
