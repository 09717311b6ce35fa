"""Render an HTML report in headless Chromium and save a PNG: the check that the nightly report looks right to a
person (banner, cards, tables, charts), not only that its HTML holds the right words.

    python -m pipelines.screenshot reports/2026-11-20/index.html report.png [--height 5000] [--install]
    make report-screenshot DATE=2026-11-20           # the same for $SEGONE_HOME/reports/DATE/index.html

Chromium comes from the operating system's packages (Debian: `apt-get install -y chromium`); `--install` installs
it when it is missing and the process may (root, or password-less sudo). `make test` does not install it: the
screenshot test is skipped on a machine without Chromium (tests/test_report_screenshot.py says so).
Chromium runs with a fresh temporary profile and no network features; the report itself loads nothing from the
network (everything is inline).
"""
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from pipelines.errors import SegoneError

BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--hide-scrollbars", "--force-device-scale-factor=1")


def find_chromium() -> str | None:
    """The path of a Chromium (or Chrome) executable, or None. $SEGONE_CHROMIUM wins when set."""
    chosen = os.environ.get("SEGONE_CHROMIUM")
    if chosen:
        return chosen if shutil.which(chosen) or Path(chosen).is_file() else None
    return next((shutil.which(b) for b in BROWSERS if shutil.which(b)), None)


def install_chromium() -> str:
    """apt-get install -y chromium (as root, or with password-less sudo); returns the executable."""
    if shutil.which("apt-get") is None:
        raise SegoneError("Chromium is missing and this system has no apt-get: install Chromium, or set "
                          "SEGONE_CHROMIUM to its path")
    prefix: list[str] = []
    if os.geteuid() != 0:
        if shutil.which("sudo") is None or subprocess.run(["sudo", "-n", "true"], capture_output=True).returncode:
            raise SegoneError("Chromium is missing: run `sudo apt-get install -y chromium` (installing it needs root)")
        prefix = ["sudo", "-n"]
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for command in (["apt-get", "update"], ["apt-get", "install", "-y", "--no-install-recommends", "chromium"]):
        done = subprocess.run(prefix + command, capture_output=True, text=True, env=env)
        if done.returncode:
            raise SegoneError(f"{' '.join(command)} failed: {done.stderr.strip()[-500:]}")
    found = find_chromium()
    if found is None:
        raise SegoneError("apt-get installed chromium but no chromium executable is on the PATH")
    return found


def screenshot(html: Path, png: Path, width: int = 1400, height: int = 5000, chromium: str | None = None,
               timeout: float = 120.0) -> Path:
    """Render `html` at width x height CSS pixels (the top `height` pixels of the page) into `png`."""
    html, png = Path(html).resolve(), Path(png).resolve()
    if not html.is_file():
        raise SegoneError(f"no report to render: {html} does not exist")
    chromium = chromium or find_chromium()
    if chromium is None:
        raise SegoneError("Chromium is not installed: `apt-get install -y chromium`, or run with --install")
    png.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="segone-chromium-") as profile:
        command = [chromium, *FLAGS, f"--user-data-dir={profile}", f"--screenshot={png}",
                   f"--window-size={int(width)},{int(height)}", html.as_uri()]
        try:
            done = subprocess.run(command, capture_output=True, text=True, timeout=timeout,
                                  env={**os.environ, "HOME": profile})
        except subprocess.TimeoutExpired as error:
            raise SegoneError(f"Chromium did not finish within {timeout:.0f} s") from error
    if done.returncode or not png.is_file() or png.stat().st_size == 0:
        raise SegoneError(f"Chromium could not render {html}: {done.stderr.strip()[-800:]}")
    return png


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pipelines.screenshot", description=__doc__.splitlines()[0])
    parser.add_argument("html", type=Path)
    parser.add_argument("png", type=Path)
    parser.add_argument("--width", type=int, default=1400)
    parser.add_argument("--height", type=int, default=5000)
    parser.add_argument("--install", action="store_true", help="install Chromium (apt-get) when it is missing")
    args = parser.parse_args(argv)
    try:
        chromium = find_chromium() or (install_chromium() if args.install else None)
        out = screenshot(args.html, args.png, args.width, args.height, chromium)
    except SegoneError as error:
        print(f"screenshot: {error}", file=sys.stderr)
        return 1
    print(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
