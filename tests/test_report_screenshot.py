"""The nightly report as a person sees it: rendered by headless Chromium, the page is not blank, the banner shows in
the colour of the night's state at the top, the charts are drawn, and the page fits the window's width.

Skipped when Chromium is not installed: `make test` does not install system packages (CI runs on a fresh machine
without root); `make report-screenshot` installs it and renders the real report (docs/outputs.md)."""
from __future__ import annotations

import numpy as np
import pytest

from pipelines import nightly_report
from pipelines.config import Paths
from pipelines.screenshot import find_chromium, screenshot
from tests import report_lake

pytestmark = pytest.mark.skipif(find_chromium() is None, reason="Chromium is not installed (apt-get install -y "
                                "chromium, or make report-screenshot)")

BANNER = {"ok": (0xE6, 0xF4, 0xEA), "fail": (0xFD, 0xE8, 0xE8)}


def _render(tmp_path, monkeypatch, fail_at=None, height=2600):
    from PIL import Image

    monkeypatch.setenv("SEGONE_HOME", str(tmp_path))
    paths = Paths(tmp_path)
    report_lake.build(paths, fail_at=fail_at)
    page = nightly_report.build_nightly_report(paths, report_lake.DAY)
    png = screenshot(page, tmp_path / "report.png", width=1400, height=height)
    return Image.open(png).convert("RGB")


def _share(image, colour, box) -> float:
    """Share of the pixels of `box` within 3 of `colour` on every channel."""
    region = np.asarray(image.crop(box), dtype=np.int16)
    return float((np.abs(region - np.array(colour, dtype=np.int16)) <= 3).all(axis=2).mean())


def test_a_passed_night_renders_with_a_green_banner_and_charts(tmp_path, monkeypatch) -> None:
    height = 16000  # the whole page of the tiny lake's report
    image = _render(tmp_path, monkeypatch, height=height)
    assert image.size == (1400, height)
    top = (0, 0, 1400, 300)
    assert _share(image, BANNER["ok"], top) > 0.02 and _share(image, BANNER["fail"], top) == 0
    colours = image.resize((140, 1600)).getcolors(140 * 1600)
    assert colours is not None and len(colours) > 50  # text, cards, tables and charts: not a blank page
    # the charts are drawn: each action class's colour is on the page
    for colour in ("#009E73", "#E69F00"):
        rgb = tuple(int(colour[i:i + 2], 16) for i in (1, 3, 5))
        assert _share(image, rgb, (0, 0, 1400, height)) > 0.0005, colour
    # nothing runs off the right edge (a wide table, a long label): the right margin stays white
    assert _share(image, (255, 255, 255), (1340, 0, 1400, height)) > 0.999


def test_a_failed_night_renders_with_a_red_banner(tmp_path, monkeypatch) -> None:
    image = _render(tmp_path, monkeypatch, fail_at="validate_forecast", height=1200)
    top = (0, 0, 1400, 400)
    assert _share(image, BANNER["fail"], top) > 0.02 and _share(image, BANNER["ok"], top) == 0
