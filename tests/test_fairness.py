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


def regions(sizes: dict[str, int], at_risk_every: int = 2) -> pd.DataFrame:
    """Cells of customers in regions of the given sizes: every `at_risk_every`th at risk and protected, every
    customer offered."""
    rows = []
    for region, n in sizes.items():
        for i in range(n):
            risk = int(i % at_risk_every == 0)
            rows.append({"region": region, "offered": 1, "credit_suppressed": 0, "at_risk": risk, "protected": risk})
    return pd.DataFrame(rows).groupby(["region", *fairness.OUTCOMES]).size().rename("customers").reset_index()


def test_a_group_under_the_minimum_size_is_pooled_or_counted_never_shown_by_name() -> None:
    """A typo or hostile region of one customer was a group of its own in the fairness table: one person, and a
    rate of 0 or 100%. Groups under k customers are pooled into 'other'; if the pool too is under k it is one row
    with its count and no rates; a rate over fewer than k customers at risk is not shown."""
    cfg = {**fairness.DEFAULTS, "n_boot": 50, "min_published_group_customers": 10}
    frame = fairness.fairness_frame(regions({"North": 50, "South": 40, "Nrth": 1, "North West\u202eevil": 1}),
                                    {"region": "region"}, cfg)
    groups = frame.loc[frame["dimension"] == "region"].set_index(["metric", "group"])
    hidden = fairness.hidden_label(10)
    assert set(groups.index.get_level_values("group")) == {"North", "South", hidden}
    assert groups.loc[("offer_rate", hidden), "customers"] == 2
    assert groups.loc[("offer_rate", hidden), ["rate", "low", "high", "ratio"]].isna().all()
    assert groups.loc[("offer_rate", hidden), "flag"] == "not shown (<10)"
    assert groups.loc[("offer_rate", "North"), "rate"] == 1.0
    overall = frame.set_index(["metric", "group"]).loc[("offer_rate", "all customers")]
    assert overall["customers"] == 92  # the small groups still count in the overall rate

    singles = {f"typo {i}": 1 for i in range(12)}
    frame = fairness.fairness_frame(regions({"North": 50, **singles}, at_risk_every=10), {"region": "region"}, cfg)
    groups = frame.set_index(["metric", "group"])
    assert set(frame["group"]) == {"all customers", "North", fairness.pooled_label(10)}
    assert groups.loc[("offer_rate", fairness.pooled_label(10)), "customers"] == 12
    assert groups.loc[("offer_rate", fairness.pooled_label(10)), "rate"] == 1.0
    # 5 of North's 50 are at risk, 12 of the pool: North's protective reach is not shown, the pool's is
    assert pd.isna(groups.loc[("protective_reach", "North"), "rate"])
    assert groups.loc[("protective_reach", "North"), "flag"] == "not shown (<10)"
    assert groups.loc[("protective_reach", fairness.pooled_label(10)), "rate"] == 1.0


def test_a_count_of_customers_at_risk_under_the_minimum_is_not_shown() -> None:
    """Before: a group whose protective reach was hidden (fewer than k customers at risk) still showed its count of
    customers at risk (5 of South's 50; 2 of the 2 customers of the unnamed small groups), a figure that singles
    those few people out. The count is hidden where the rate is, in every metric's row and in the report's view."""
    from pipelines.nightly_report import fairness_view

    cfg = {**fairness.DEFAULTS, "n_boot": 50, "min_published_group_customers": 10}
    cells = regions({"North": 100, "South": 50, "East": 30, "Nrth": 1, "Typo": 1}, at_risk_every=10)
    nobody = pd.DataFrame([{"region": "West", "offered": 1, "credit_suppressed": 0, "at_risk": 0, "protected": 0,
                            "customers": 20}])
    frame = fairness.fairness_frame(pd.concat([cells, nobody], ignore_index=True), {"region": "region"}, cfg)
    groups = frame.set_index(["metric", "group"])
    hidden = fairness.hidden_label(10)
    for metric in fairness.METRICS:
        # 5 of South's 50, 3 of East's 30, the 2 customers of the small groups: fewer than 10 at risk each
        assert groups.loc[[(metric, g) for g in ("South", "East", hidden)], "customers_at_risk"].isna().all()
        assert groups.loc[(metric, "North"), "customers_at_risk"] == 10        # 10 of 100: shown, with its rate
        assert groups.loc[(metric, "West"), "customers_at_risk"] == 0          # nobody at risk: no one singled out
        assert groups.loc[(metric, "all customers"), "customers_at_risk"] == 20   # the overall counts everyone
    assert groups.loc[("protective_reach", "North"), "rate"] == 1.0
    assert pd.isna(groups.loc[("protective_reach", "South"), "rate"])
    view = fairness_view(frame, "region", 10).set_index("region")
    assert view.loc["South", "at risk"] == "<10" and view.loc[hidden, "at risk"] == "<10"
    assert view.loc["South", "customers"] == 50 and view.loc["North", "at risk"] == "10"
    assert view.loc["West", "at risk"] == "0" and view.loc["all customers", "at risk"] == "20"


def test_published_groups_leave_groups_of_at_least_k_alone() -> None:
    sizes = pd.Series({"North": 10, "South": 9, "East": 3})
    assert fairness.published_groups(sizes, 10) == {"North": "North", "South": fairness.pooled_label(10),
                                                    "East": fairness.pooled_label(10)}
    assert fairness.published_groups(sizes, 1) == {"North": "North", "South": "South", "East": "East"}
