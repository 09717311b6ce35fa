"""The self-contained HTML report: escaping, embedded figures, no external URL, atomic write."""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from matplotlib.figure import Figure

from models.metrics import calibration_table, lift_table
from pipelines.html_report import (
    CLASS_COLOURS,
    MISSING,
    PALETTE,
    bar_figure,
    calibration_figure,
    colours_for,
    figure_to_data_uri,
    format_number,
    lift_figure,
    render_report,
    table_view,
)


@pytest.fixture
def scored() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(1)
    p = rng.uniform(size=2_000)
    return p, (rng.uniform(size=2_000) < p).astype(int)


def test_figure_to_data_uri():
    fig = Figure()
    fig.add_subplot().plot([0, 1], [1, 0])
    uri = figure_to_data_uri(fig)
    assert uri.startswith("data:image/png;base64,iVBORw0KGgo")  # the PNG signature, base64-encoded


def test_figures_build(scored):
    p, y = scored
    assert isinstance(calibration_figure({"raw": calibration_table(y, p)}, "calibration"), Figure)
    assert isinstance(lift_figure({"raw": lift_table(y, p)}, "lift"), Figure)
    frame = pd.DataFrame({"engine": ["a", "a", "b", "b"], "horizon": [30, 60, 30, 60], "auc": [0.7, 0.72, 0.8, 0.75]})
    assert isinstance(bar_figure(frame, "horizon", "auc", "engine", "AUC"), Figure)
    assert isinstance(bar_figure(frame[frame.engine == "a"], "horizon", "auc", None, "AUC"), Figure)
    with pytest.raises(ValueError):
        bar_figure(frame, "horizon", "auc", None, "AUC")  # two rows per horizon without a hue


def test_render_report(tmp_path: Path, scored):
    p, y = scored
    table = pd.DataFrame({"engine": ["<script>alert('x')</script>", "baseline"], "auc": [0.8123456, 0.5]})
    sections = [
        {"heading": "Summary & <scores>", "text": "Line <b>one</b>.\n\nSecond paragraph.", "table": table},
        {
            "heading": "Figures",
            "figures": [
                calibration_figure({"raw": calibration_table(y, p), "shifted": calibration_table(y, p * 0.8)}, "cal"),
                lift_figure({"raw": lift_table(y, p)}, "gains"),
            ],
        },
        {"heading": "Empty"},
    ]
    target = tmp_path / "reports" / "backtest.html"
    out = render_report("Backtest – ünïcode", sections, target)
    assert out == target and target.exists()
    assert not target.with_suffix(".tmp").exists()
    text = target.read_text(encoding="utf-8")
    assert "<script>" not in text
    assert "&lt;script&gt;" in text
    assert "&lt;b&gt;one&lt;/b&gt;" in text
    assert "Summary &amp; &lt;scores&gt;" in text
    assert "ünïcode" in text
    assert ">0.812<" in text and "0.8123456" not in text  # three decimals for a column of values below 10
    assert text.count("data:image/png;base64,") == 2
    assert "http://" not in text and "https://" not in text
    sources = re.findall(r"""\b(?:src|href)\s*=\s*["']([^"']*)""", text)
    assert len(sources) == 2 and all(s.startswith("data:image/png;base64,") for s in sources)


def test_render_report_overwrites_atomically(tmp_path: Path):
    target = tmp_path / "nightly.html"
    render_report("first", [{"heading": "a"}], target)
    render_report("second", [{"heading": "b"}], target)
    assert "second" in target.read_text(encoding="utf-8")
    assert sorted(f.name for f in tmp_path.iterdir()) == ["nightly.html"]


def test_a_section_links_only_to_files_beside_the_report(tmp_path: Path):
    target = tmp_path / "index.html"
    render_report("r", [{"heading": "a", "links": [{"text": "the <data> docs", "href": "data_docs/index.html"}]}],
                  target)
    page = target.read_text(encoding="utf-8")
    assert '<a href="data_docs/index.html">the &lt;data&gt; docs</a>' in page
    for href in ("https://example.com/x", "//example.com/x", "/etc/passwd", "file:///etc/passwd", "javascript:x"):
        with pytest.raises(ValueError, match="relative path"):
            render_report("r", [{"heading": "a", "links": [{"text": "t", "href": href}]}], target)


def test_table_cells_for_people():
    """Thousands separators, one number of decimals per column, no <NA>/nan/None, yes/no, percentages."""
    frame = pd.DataFrame({
        "customers": pd.array([1234567, None], dtype="Int64"),
        "amount": [12345.678, float("nan")],
        "rate": [0.1234, None],
        "flag": pd.array([True, None], dtype="boolean"),
        "when": [pd.Timestamp("2026-11-20"), pd.NaT],
        "name": ["a", None],
        "small": [0.5, 0.25],
    })
    view = table_view(frame, formats={"rate": "pct"})
    cells = [[c["text"] for c in row] for row in view["rows"]]
    assert cells[0] == ["1,234,567", "12,346", "12.3%", "yes", "2026-11-20", "a", "0.500"]
    assert cells[1] == [MISSING] * 6 + ["0.250"]
    assert [c["numeric"] for c in view["rows"][0]] == [True, True, True, False, False, False, True]
    assert format_number(1234) == "1,234" and format_number(None) == MISSING and format_number(2.5) == "2.500"


def test_class_colours_are_fixed_and_other_categories_never_take_them():
    colours = colours_for(["commercial", "capacity", "protective", "demand", "service", 30])
    assert colours["protective"] == CLASS_COLOURS["protective"] and colours["commercial"] == CLASS_COLOURS["commercial"]
    others = [colours["capacity"], colours["demand"]]
    assert not set(others) & set(CLASS_COLOURS.values()) and len(set(others)) == 2
    assert not set(PALETTE) & set(CLASS_COLOURS.values())


def test_bar_legend_is_outside_the_axes():
    frame = pd.DataFrame({"channel": ["email", "email", "push"], "action_class": ["protective", "commercial",
                                                                                   "protective"], "n": [1500, 20, 7]})
    fig = bar_figure(frame, "channel", "n", "action_class", "t")
    fig.canvas.draw()
    ax = fig.axes[0]
    legend = fig.legends[0].get_window_extent()
    assert legend.x0 >= ax.get_window_extent().x1  # to the right of the plotting area: it covers no bar
    assert any("," in t.get_text() for t in ax.get_yticklabels())  # 1,000 rather than 1000
    import matplotlib.colors as mcolors

    first = [mcolors.to_hex(p.get_facecolor()) for p in ax.patches][:2]  # the protective bars come first
    assert first == [CLASS_COLOURS["protective"].lower()] * 2
