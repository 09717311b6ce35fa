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
    bar_figure,
    calibration_figure,
    figure_to_data_uri,
    lift_figure,
    render_report,
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
    assert "0.8123" in text and "0.8123456" not in text  # float_format
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
