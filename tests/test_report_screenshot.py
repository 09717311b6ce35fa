"""The nightly report as a person sees it: rendered by headless Chromium, the page is not blank, the banner shows in
the colour of the night's state at the top, the charts are drawn, and the page fits the window's width.

Skipped when Chromium is not installed: `make test` does not install system packages (CI runs on a fresh machine
without root); `make report-screenshot` installs it and renders the real report (docs/outputs.md)."""
from __future__ import annotations

import pytest

from pipelines import nightly_report
from pipelines.config import Paths
from pipelines.screenshot import find_chromium, screenshot
from tests import report_lake

pytestmark = pytest.mark.skipif(find_chromium() is None, reason="Chromium is not installed (apt-get install -y "
                                "chromium, or make report-screenshot)")

BANNER = {"ok": (0xE6, 0xF4, 0xEA), "fail": (0xFD, 0xE8, 0xE8)}


def _render(tmp_path, monkeypatch, fail_at=None):
    from PIL import Image

    monkeypatch.setenv("SEGONE_HOME", str(tmp_path))
    paths = Paths(tmp_path)
    report_lake.build(paths, fail_at=fail_at)
    page = nightly_report.build_nightly_report(paths, report_lake.DAY)
    png = screenshot(page, tmp_path / "report.png", width=1400, height=2600)
    return Image.open(png).convert("RGB")


def _share(image, colour, box) -> float:
    region = image.crop(box)
    pixels = list(region.getdata())
    return sum(1 for p in pixels if all(abs(a - b) <= 3 for a, b in zip(p, colour))) / len(pixels)


def test_a_passed_night_renders_with_a_green_banner_and_charts(tmp_path, monkeypatch) -> None:
    image = _render(tmp_path, monkeypatch)
    assert image.size == (1400, 2600)
    top = (0, 0, 1400, 300)
    assert _share(image, BANNER["ok"], top) > 0.02 and _share(image, BANNER["fail"], top) == 0
    colours = image.resize((140, 260)).getcolors(140 * 260)
    assert colours is not None and len(colours) > 50  # text, cards and tables: not a blank page
    # nothing is cut off on the right: the right margin stays white
    assert _share(image, (255, 255, 255), (1370, 0, 1400, 2600)) > 0.99


def test_a_failed_night_renders_with_a_red_banner(tmp_path, monkeypatch) -> None:
    image = _render(tmp_path, monkeypatch, fail_at="validate_forecast")
    top = (0, 0, 1400, 400)
    assert _share(image, BANNER["fail"], top) > 0.02 and _share(image, BANNER["ok"], top) == 0
