"""SEGONE_SETTINGS: a deployment's or a test home's changes to existing settings, without editing config/."""
from __future__ import annotations

import pytest

from pipelines import lake
from pipelines.config import SettingsOverlayError, settings
from pipelines.errors import SegoneError


def test_an_overlay_changes_only_what_it_names(tmp_path, monkeypatch):
    before = settings()
    overlay = tmp_path / "settings.yaml"
    overlay.write_text("segone:\n  lake:\n    n_buckets: 4\n", encoding="utf-8")
    monkeypatch.setenv("SEGONE_SETTINGS", str(overlay))
    assert lake.n_buckets() == 4
    after = settings()
    assert {k: v for k, v in after["lake"].items() if k != "n_buckets"} == \
        {k: v for k, v in before["lake"].items() if k != "n_buckets"}
    assert {k: v for k, v in after.items() if k != "lake"} == {k: v for k, v in before.items() if k != "lake"}
    monkeypatch.delenv("SEGONE_SETTINGS")
    assert lake.n_buckets() == before["lake"]["n_buckets"] == 16
    assert before["lake"]["n_buckets"] == settings()["lake"]["n_buckets"]


@pytest.mark.parametrize("text, message", [
    ("segone:\n  lake:\n    n_bucket: 4\n", "segone.lake.n_bucket is not a setting"),
    ("segone:\n  lake: 4\n", "segone.lake is a group of settings, not one value"),
    ("segonne:\n  lake:\n    n_buckets: 4\n", "no config/segonne.yaml"),
    ("- a list\n", "expected a mapping"),
])
def test_an_overlay_cannot_invent_settings(tmp_path, monkeypatch, text, message):
    overlay = tmp_path / "settings.yaml"
    overlay.write_text(text, encoding="utf-8")
    monkeypatch.setenv("SEGONE_SETTINGS", str(overlay))
    with pytest.raises(SettingsOverlayError, match=message) as raised:
        settings()
    assert isinstance(raised.value, SegoneError)  # one line from the CLI, never a traceback


def test_a_missing_overlay_file_is_one_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("SEGONE_SETTINGS", str(tmp_path / "absent.yaml"))
    with pytest.raises(SettingsOverlayError, match="absent.yaml: cannot be read"):
        settings()
