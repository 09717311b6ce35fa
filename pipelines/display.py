"""Free text from the data shown to a person as a label (an analyst reading the life-event evidence, a report).

A posting's description is free text: the ingest keeps the invisible characters in it (a zero-width joiner builds an
emoji, a non-joiner spells Persian; docs/architecture.md, "Hostile files"), and silver loaded before the ingest
refused bidirectional controls may hold those too. Shown as a label, such a text reads as something other than what
it holds: SURVEY, U+200B, OR looks like SURVEYOR and is not equal to it; FEE, U+202E, LIAVE shows FEE EVAIL. So a
label built from free text goes through `display_label` (or `display_labels` for a column) wherever it is built:
- format and invisible characters are removed: the ingest's INVISIBLE_REGEX and BIDI_REGEX
  (pipelines/ingest/core.py, one source) and every other character of Unicode category Cf (FORMAT_REGEX below:
  Arabic number signs, syriac abbreviation mark, Egyptian hieroglyph format controls, shorthand format controls,
  musical symbol formatting);
- control characters (C0 and C1, DEL, tab and line breaks) and the line and paragraph separators become a space,
  and runs of white space one space, trimmed: a label is one line;
- a label left empty is null;
- at most `text.label_max_combining_marks` combining marks are kept on one character (Zalgo text draws over the
  lines around it) and the label is cut to `text.display_max_chars` characters, ending in an ellipsis
  (config/landing.yaml `text`, one place for the ingest's and the display's limits): a 500-character description
  is no label, and a label is never unbounded.
What the label shows is then what it holds, in the stored characters' order. The text in silver is unchanged.
"""
from __future__ import annotations

import re
import unicodedata

import pandas as pd

from pipelines.contract import text_limits
from pipelines.ingest.core import BIDI_REGEX, INVISIBLE_REGEX

# Unicode category Cf outside INVISIBLE_REGEX and BIDI_REGEX (Unicode 15: tests/test_display.py checks that the
# three together hold every Cf character Python's unicodedata knows).
FORMAT_REGEX = ("[\u0600-\u0605\u06dd\u070f\u0890\u0891\u08e2\U000110bd\U000110cd\U00013430-\U0001343f"
                "\U0001bca0-\U0001bca3\U0001d173-\U0001d17a]")
# Control characters (C0, DEL, C1) and the line and paragraph separators: shown as a space.
BREAK_REGEX = "[\x00-\x1f\x7f-\x9f\u2028\u2029]"
_HIDDEN = re.compile("|".join((INVISIBLE_REGEX, BIDI_REGEX, FORMAT_REGEX)))
_BREAK = re.compile(BREAK_REGEX)
_SPACES = re.compile(r"\s+")
ELLIPSIS = "\u2026"  # ends a label cut to text.display_max_chars


def display_label(text: str | None) -> str | None:
    """`text` as a label shown to a person: no format or invisible character, one line, trimmed; None when
    nothing visible is left (or `text` is None)."""
    if text is None or (not isinstance(text, str) and pd.isna(text)):
        return None
    shown = _SPACES.sub(" ", _BREAK.sub(" ", _HIDDEN.sub("", str(text)))).strip()
    if not shown:
        return None
    limits = text_limits()
    if not shown.isascii():
        shown = _cap_marks(shown, limits.label_max_combining_marks)
    if len(shown) > limits.display_max_chars:
        cut = shown[:limits.display_max_chars - 1]
        while cut and unicodedata.category(shown[len(cut)])[0] == "M":  # not between a character and its marks
            cut = cut[:-1]
        shown = cut.rstrip() + ELLIPSIS
    return shown



def _cap_marks(text: str, max_marks: int) -> str:
    """`text` with at most `max_marks` combining marks (Unicode category M) in a row."""
    kept, run = [], 0
    for character in text:
        run = run + 1 if unicodedata.category(character)[0] == "M" else 0
        if run <= max_marks:
            kept.append(character)
    return "".join(kept)


def display_labels(texts: pd.Series) -> pd.Series:
    """display_label of every value of a column (object dtype, None for a missing or empty label)."""
    return pd.Series([display_label(t) for t in texts], index=texts.index, dtype=object)
