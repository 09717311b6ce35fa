"""Free text shown to a person as a label (pipelines/display.py): what it shows is what it holds."""
from __future__ import annotations

import re
import unicodedata

import pandas as pd

from pipelines.display import display_label, display_labels
from pipelines.ingest.core import BIDI_REGEX, INVISIBLE_REGEX


def test_invisible_and_bidirectional_characters_are_not_shown() -> None:
    assert display_label("SMITH\u200b AND CO\u202e CONVEYANCING") == "SMITH AND CO CONVEYANCING"
    assert display_label("FEE\u202eLIAVE\u202c") == "FEELIAVE"
    assert display_label("CAF\u00adE\u2066 X\u2069\ufeff") == "CAFE X"


def test_a_label_is_one_line_and_empty_is_null() -> None:
    assert display_label("RENT\r\nJUNE\tLANDLORD\u2028B\x85") == "RENT JUNE LANDLORD B"
    assert display_label("  \u200b\u200d ") is None
    assert display_label(None) is None and display_label(float("nan")) is None
    # visible text is kept as it is: accents, emoji, formula-leading text (the CRM export neutralises formulas)
    assert display_label("Café 😀 =SUM(A1)") == "Café 😀 =SUM(A1)"
    shown = display_labels(pd.Series(["A\u200bB", None, "\u202e"], index=[3, 4, 5]))
    assert shown.tolist() == ["AB", None, None] and shown.index.tolist() == [3, 4, 5]


def test_every_format_character_is_removed() -> None:
    """Every character of Unicode category Cf Python knows, and every control character, is gone from a label."""
    hidden = [chr(c) for c in range(0x110000) if unicodedata.category(chr(c)) == "Cf"]
    controls = [chr(c) for c in range(0x110000) if unicodedata.category(chr(c)) in ("Cc", "Zl", "Zp")]
    assert len(hidden) > 150 and len(controls) == 67
    assert display_label("A" + "".join(hidden) + "B") == "AB"
    assert display_label("A" + "".join(controls) + "B") == "A B"
    # the ingest's lists (one source), whose invisible characters are not all Cf (a Hangul filler, a variation
    # selector, the combining grapheme joiner): each of their characters is removed too
    listed = re.compile(f"{INVISIBLE_REGEX}|{BIDI_REGEX}")
    ingest = [chr(c) for c in range(0x110000) if listed.fullmatch(chr(c))]
    assert {"\u034f", "\u115f", "\u3164", "\ufe0f", "\U000e0100", "\u202e"} <= set(ingest)
    assert display_label("A" + "".join(ingest) + "B") == "AB"


def test_a_label_is_cut_to_the_display_bound_and_zalgo_is_capped():
    """A 100,000-character description shown as an evidence label, or Zalgo text, was shown whole: a label is now at
    most text.display_max_chars characters (config/landing.yaml), ending in an ellipsis, never between a character
    and its marks, with at most text.label_max_combining_marks marks on one character; short ones are unchanged."""
    from pipelines.contract import text_limits

    limits = text_limits()
    shown = display_label("X" * 100_000)
    assert len(shown) == limits.display_max_chars and shown.endswith("\u2026")
    zalgo = "Z" + "\u0301" * 30 + "algo"
    assert display_label(zalgo) == "Z" + "\u0301" * limits.label_max_combining_marks + "algo"
    marked = ("e\u0301" * limits.display_max_chars)
    cut = display_label(marked)
    assert cut.endswith("e\u0301\u2026") and len(cut) <= limits.display_max_chars
    assert display_label("Ti\u00ea\u0301ng Vi\u00ea\u0323t") == "Ti\u00ea\u0301ng Vi\u00ea\u0323t"
    assert display_label("TESCO STORES 2231") == "TESCO STORES 2231"
