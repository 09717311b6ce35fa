"""Fairness rates and intervals on hand-made populations: fairlearn's MetricFrame for the rates, the bootstrap over
cells agrees with fairlearn's own (slow) bootstrap over customers, the gap flags, and the drill-down."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from pipelines import fairness


def population(n: int = 600, seed: int = 3) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame({"band": rng.choice(["young", "middle", "old"], n, p=[0.3, 0.5, 0.2]),
                          "credit_suppressed": (rng.random(n) < 0.2).astype(int),
                          "at_risk": (rng.random(n) < 0.3).astype(int)})
    frame["offered"] = (rng.random(n) < np.where(frame["band"] == "old", 0.1, 0.5)).astype(int)
    frame["protected"] = (frame["at_risk"] & (rng.random(n) < 0.9)).astype(int)
    return frame


def cells_of(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.groupby(["band", *fairness.OUTCOMES]).size().rename("customers").reset_index()


def test_rates_per_group_are_the_plain_shares() -> None:
    people = population()
    rates, overall = fairness.group_rates(cells_of(people), "band")
    for band, part in people.groupby("band"):
        assert rates.loc[band, "offer_rate"] == pytest.approx(part["offered"].mean())
        assert rates.loc[band, "credit_suppression_rate"] == pytest.approx(part["credit_suppressed"].mean())
        assert rates.loc[band, "protective_reach"] == pytest.approx(part.loc[part["at_risk"] == 1, "protected"].mean())
        assert rates.loc[band, "customers"] == len(part)
    assert overall["offer_rate"] == pytest.approx(people["offered"].mean())


def test_the_bootstrap_over_cells_agrees_with_fairlearns_bootstrap_over_customers() -> None:
    """Resampling customers is a multinomial draw over the cells: same intervals, whatever the number of customers."""
    from fairlearn.metrics import MetricFrame

    people = population()
    mine = fairness.bootstrap(cells_of(people), "band", n_boot=2000, interval=0.9, seed=1)["offer_rate"]
    theirs = MetricFrame(metrics={"offer_rate": lambda y, p: float(np.mean(y))}, y_true=people["offered"],
                         y_pred=people["offered"], sensitive_features=people["band"], n_boot=400,
                         ci_quantiles=[0.05, 0.95], random_state=0)
    low, high = theirs.by_group_ci[0]["offer_rate"], theirs.by_group_ci[1]["offer_rate"]
    for band in ("young", "middle", "old"):
        assert mine.loc[band, "low"] == pytest.approx(low[band], abs=0.02)
        assert mine.loc[band, "high"] == pytest.approx(high[band], abs=0.02)
    assert mine.loc["overall", "low"] < people["offered"].mean() < mine.loc["overall", "high"]


def test_a_gap_needs_size_distance_and_an_interval_that_excludes_one() -> None:
    cfg = fairness.DEFAULTS
    assert fairness.gap_flag(100, 0.5, 0.4, 0.6, cfg) == "GAP (below)"
    assert fairness.gap_flag(100, 1.5, 1.3, 1.7, cfg) == "GAP (above)"
    assert fairness.gap_flag(100, 0.7, 0.4, 1.05, cfg) == "unclear"
    assert fairness.gap_flag(100, 0.9, 0.85, 0.95, cfg) == ""  # clearly different, but within the band
    assert fairness.gap_flag(10, 0.1, 0.0, 0.2, cfg) == "too few (<30)"
    assert fairness.gap_flag(100, float("nan"), float("nan"), float("nan"), cfg) == ""


def test_the_fairness_frame_flags_the_group_left_out() -> None:
    frame = fairness.fairness_frame(cells_of(population()), {"age band": "band"}, {**fairness.DEFAULTS,
                                                                                   "n_boot": 300})
    rows = frame.set_index(["metric", "group"])
    assert rows.loc[("offer_rate", "old"), "flag"] == "GAP (below)"
    assert rows.loc[("offer_rate", "old"), "ratio_high"] < 1
    assert rows.loc[("offer_rate", "all customers"), "ratio"] == 1.0
    assert set(frame["metric"]) == set(fairness.METRICS)


def test_the_drill_down_names_the_rule_that_drops_the_group_more() -> None:
    drops = pd.DataFrame([("old", "eligibility", "over 65", 80), ("young", "consent", "no marketing consent", 20),
                          ("old", "consent", "no marketing consent", 8), ("middle", "consent", "no marketing consent",
                                                                          30)],
                         columns=["group", "stage", "reason", "customers"])
    sizes = pd.Series({"old": 100, "young": 100, "middle": 200})
    top = fairness.drill_down(drops, sizes, "old", more=True)
    assert (top.iloc[0]["stage"], top.iloc[0]["reason"]) == ("eligibility", "over 65")
    assert top.iloc[0]["share_of_group"] == pytest.approx(0.8) and top.iloc[0]["share_of_others"] == 0.0
    # the young are dropped less by the eligibility rule and more by consent
    young = fairness.drill_down(drops, sizes, "young", more=False)
    assert young.iloc[0]["reason"] == "over 65" and young.iloc[0]["excess"] == pytest.approx(-80 / 300)
