"""The forecast stage on a small simulated bank: training and the registry, the nightly shard, its gold suite,
refusals of a missing or incompatible model, the safe-to-save and confidence rules, and the backtest."""
from __future__ import annotations

import json
import os
import shutil
from datetime import date, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from pipelines import features, forecast, lake, registry
from pipelines.evaluation import backtest
from pipelines.config import Paths
from pipelines.errors import GateFailed, SegoneError
from pipelines.quality import validate_gold
from pipelines.sources.simulate import simulate_command
from pipelines.stages import load_history
from tests.bank_settings import write_overlay

END = date(2026, 11, 20)


# Four customer buckets instead of 16 (a SEGONE_SETTINGS overlay that changes nothing else: the bank trains with
# the shipped model settings): the history load, the training's per-bucket feature builds and the shards' forecasts
# are 4 of a fixed cost each, not 16, on about 100 customers each.
BUCKETS = {"segone": {"lake": {"n_buckets": 4}}}


@pytest.fixture(scope="module")
def bank(tmp_path_factory) -> Paths:
    """400 customers with 250 days of history, loaded and trained."""
    paths = Paths(tmp_path_factory.mktemp("forecast") / "segone")
    overlay = paths.home.parent / "settings.yaml"
    overlay.parent.mkdir(parents=True, exist_ok=True)
    overlay.write_text(yaml.safe_dump(BUCKETS), encoding="utf-8")
    previous = {name: os.environ.get(name) for name in ("SEGONE_HOME", "SEGONE_SETTINGS")}
    os.environ["SEGONE_HOME"] = str(paths.home)
    os.environ["SEGONE_SETTINGS"] = str(overlay)
    try:
        simulate_command(paths, customers=400, days=250, end_date=END, seed=5, fmt="csv")
        load_history(paths)
        forecast.train(paths)
        yield paths
    finally:
        for name, value in previous.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def test_training_cutoffs_leave_room_for_the_outcomes():
    end = date(2026, 11, 19)
    cutoffs = forecast.training_cutoffs(date(2026, 1, 1), end, 14, 28, 365)
    assert cutoffs == sorted(cutoffs) and len(cutoffs) >= 10
    assert max(cutoffs) + timedelta(days=30) <= end < max(cutoffs) + timedelta(days=44)   # its 30-day outcome known
    assert min(cutoffs) >= date(2026, 1, 29)
    assert all((b - a).days == 14 for a, b in zip(cutoffs, cutoffs[1:]))
    per_horizon = forecast.labelled_cutoffs(cutoffs, end)
    for h, known in per_horizon.items():                      # each horizon learns where its outcome is known
        assert known and max(known) + timedelta(days=h) <= end < max(known) + timedelta(days=h + 14)
    assert max(per_horizon[90]) + timedelta(days=90) == end   # the grid runs through the longest horizon's newest
    assert max(per_horizon[30]) - max(per_horizon[90]) == timedelta(days=56)
    labels = pd.DataFrame({"customer_id": "C1", "cutoff": pd.to_datetime([cutoffs[-1]] * 3),
                           "horizon_days": [30, 60, 90]})
    assert forecast.known_labels(labels, end)["horizon_days"].tolist() == [30]


def test_train_registers_and_promotes_a_model_with_its_metadata(bank):
    directory, metadata = registry.promoted(bank, forecast.FAMILY)
    assert (directory / "engine.json").exists()
    assert (directory / "classifier_h30.txt").exists() or (directory / "classifier_h30_g0.txt").exists()
    for key in ("training_window", "features", "metrics_held_out", "data_hash", "trained_for"):
        assert metadata[key], key
    assert metadata["engine"] == "global" and "<= the baseline's" in metadata["decision"]["reason"]
    for h, window in metadata["training_window"]["by_horizon"].items():
        assert date.fromisoformat(window["last_cutoff"]) < date.fromisoformat(window["held_out_cutoff"])
        assert date.fromisoformat(window["held_out_cutoff"]) + timedelta(days=int(h)) <= END
    assert metadata["metrics_held_out"]["30"]["roc_auc"] > 0.8


def test_training_again_on_the_same_data_gives_the_same_version_and_files(bank):
    first, _ = registry.promoted(bank, forecast.FAMILY)
    before = {p.name: p.read_bytes() for p in first.iterdir()}
    result = forecast.train(bank)
    assert result["version"] == first.name and result["promoted"]
    assert {p.name: p.read_bytes() for p in first.iterdir()} == before


def test_a_shard_is_forecast_and_passes_its_suite(bank):
    day = END - timedelta(days=1)
    per_shard = [forecast.forecast_cash_shortfall(bank, day, b) for b in forecast.shards()]
    assert sum(m["n_forecast"] for m in per_shard) >= 390
    frame = pd.read_parquet(lake.partition_path(bank, "gold", "cash_forecast", as_of=day.isoformat()))
    assert len(frame) == 3 * frame["customer_id"].nunique()
    assert set(frame["horizon_days"]) == {30, 60, 90}
    wide = frame.pivot(index="customer_id", columns="horizon_days", values="p_shortfall")
    assert (wide[30] <= wide[60]).all() and (wide[60] <= wide[90]).all()
    # without personalization consent a row holds only what a shortfall warning needs (docs/forecasting.md)
    consent = features.consent_snapshot(bank, day).set_index("customer_id")
    personal = consent.loc[frame["customer_id"], "is_personalization_allowed"].to_numpy(bool)
    assert frame.loc[~personal, ["min_balance_p10", "min_balance_p50", "safe_to_save"]].isna().all().all()
    assert consent.loc[frame["customer_id"], "is_service_alerts_allowed"].to_numpy(bool)[~personal].all()
    assert (~personal).any() and personal.any()
    full = frame[personal]
    assert full[["min_balance_p10", "min_balance_p50", "safe_to_save"]].notna().all().all()
    assert (full["min_balance_p10"] <= full["min_balance_p50"]).all()
    assert (full["safe_to_save"] >= 0).all() and (full["safe_to_save"] % 5 == 0).all()
    risky = frame[frame["p_shortfall"] >= 0.2]
    assert len(risky) and not risky["drivers"].str.contains("no elevated risk").any()
    assert (frame.loc[frame["p_shortfall"] < 0.2, "drivers"] == "no elevated risk of a shortfall").all()
    assert frame["expected_shortfall_date"].notna().sum() == (frame["p_shortfall"] >= 0.5).sum() - \
        frame.loc[frame["p_shortfall"] >= 0.5, "expected_shortfall_date"].isna().sum()
    result = validate_gold(bank, day, ["cash_forecast", "recurring_streams"])
    assert result["passed"]


def test_the_same_inputs_give_the_same_forecast(bank):
    day = END - timedelta(days=1)
    folder = lake.partition_path(bank, "gold", "cash_forecast", as_of=day.isoformat(), bucket="3")
    forecast.forecast_cash_shortfall(bank, day, 3)
    first = pd.read_parquet(folder)
    forecast.forecast_cash_shortfall(bank, day, 3)
    pd.testing.assert_frame_equal(first, pd.read_parquet(folder))


def test_a_broken_forecast_fails_the_gold_suite(bank, tmp_path):
    day = END - timedelta(days=1)
    broken = Paths(tmp_path / "broken")
    source = lake.partition_path(bank, "gold", "cash_forecast", as_of=day.isoformat())
    target = lake.partition_path(broken, "gold", "cash_forecast", as_of=day.isoformat())
    shutil.copytree(source, target)
    part = target / "bucket=3"
    frame = pd.read_parquet(part)
    first = frame["customer_id"].iloc[0]
    frame.loc[(frame["customer_id"] == first) & (frame["horizon_days"] == 90), "p_shortfall"] = -0.5
    for child in part.iterdir():
        child.unlink()
    frame.to_parquet(part / "part-0.parquet", index=False)
    with pytest.raises(GateFailed, match="p_shortfall"):
        validate_gold(broken, day, ["cash_forecast"])


def test_a_global_engine_worse_than_the_baseline_is_not_registered(bank, tmp_path, monkeypatch):
    """Trained on labels that say nothing (shuffled), the global engine loses to the baseline on the held-out
    cut-offs: training registers the baseline, says why, and the night forecasts with it."""
    other = Paths(tmp_path / "other")
    shutil.copytree(bank.lake, other.lake)
    real_fit = forecast.fit_global

    def fit_on_noise(inputs, labels, seed=0):
        rng = np.random.default_rng(0)
        noise = labels.assign(is_shortfall=rng.permutation(labels["is_shortfall"].to_numpy()))
        return real_fit(inputs, noise, seed)

    monkeypatch.setattr(forecast, "fit_global", fit_on_noise)
    # the engine choice is the subject, not the calibration: the light models of the test banks (bank_settings.py)
    monkeypatch.setenv("SEGONE_SETTINGS", str(write_overlay(tmp_path / "settings.yaml", BUCKETS)))
    result = forecast.train(other)
    assert result["engine"] == "baseline" and result["promoted"]
    assert "worse than the baseline's" in result["engine_reason"]
    compared = result["comparison"]
    assert compared["global"]["mean_brier"] > compared["baseline"]["mean_brier"]
    _, metadata = registry.promoted(other, forecast.FAMILY)
    assert metadata["engine"] == "baseline" and metadata["decision"]["reason"] == result["engine_reason"]
    day = END - timedelta(days=1)
    forecast.forecast_cash_shortfall(other, day, 3)
    rows = pd.read_parquet(lake.partition_path(other, "gold", "cash_forecast", as_of=day.isoformat(), bucket="3"))
    assert len(rows) and (rows["model_version"] == result["version"]).all()
    assert result["version"].startswith("baseline-")


def test_the_night_refuses_a_missing_model(bank, tmp_path):
    empty = Paths(tmp_path / "empty")
    shutil.copytree(bank.lake, empty.lake)
    with pytest.raises(SegoneError, match="segone train"):
        forecast.forecast_cash_shortfall(empty, END - timedelta(days=1), 0)


def test_the_night_refuses_an_incompatible_model(bank, tmp_path):
    other = Paths(tmp_path / "other")
    shutil.copytree(bank.lake, other.lake)
    shutil.copytree(bank.models, other.models)
    directory, _ = registry.promoted(other, forecast.FAMILY)
    engine = json.loads((directory / "engine.json").read_text())
    engine["feature_names"] = [*engine["feature_names"], "a_feature_that_no_longer_exists"]
    (directory / "engine.json").write_text(json.dumps(engine))
    with pytest.raises(SegoneError, match="a_feature_that_no_longer_exists"):
        forecast.forecast_cash_shortfall(other, END - timedelta(days=1), 0)
    engine["format_version"] = 999
    (directory / "engine.json").write_text(json.dumps(engine))
    with pytest.raises(SegoneError, match="format_version"):
        forecast.forecast_cash_shortfall(other, END - timedelta(days=1), 0)


def test_safe_to_save_keeps_the_30_day_risk_at_the_configured_level():
    rows = pd.DataFrame({"p_shortfall": [0.01, 0.01, 0.5, 0.02], "min_balance_p10": [1234.56, -50.0, 900.0, 4.99]})
    assert forecast.safe_to_save(rows).tolist() == [1230.0, 0.0, 0.0, 0.0]


def test_confidence_says_low_for_short_history_or_no_regular_income():
    features = pd.DataFrame({"history_days": [30, 200, 200, 100, 200], "has_regular_income": [1, 0, 1, 1, 1],
                             "income_regularity": [1, 0, 1, 1, 0.8], "has_reported_balance": [1, 1, 1, 1, 1]})
    assert forecast.confidence(features).tolist() == ["low", "low", "high", "medium", "medium"]


def test_the_backtest_compares_the_three_engines_without_leakage(bank, tmp_path):
    scored, meta = backtest.run_backtest(bank, "tiny", prophet_customers=15, n_cutoffs=1)
    assert set(scored["engine"]) == {"global", "baseline", "prophet"}
    cutoff = pd.Timestamp(meta["test_cutoffs"][0])
    assert (scored["cutoff"] == cutoff).all()
    assert cutoff + pd.Timedelta(days=90) <= pd.Timestamp(forecast.data_end(bank))
    table = backtest.summarise(scored, "tiny", meta["seconds_per_1k_customers"])
    report = backtest.write_outputs(table, scored, "tiny", meta, tmp_path / "out")
    rows = json.loads((tmp_path / "out" / "backtest.json").read_text())
    required = {"dataset", "engine", "horizon_days", "roc_auc", "pr_auc", "brier", "calibration_error",
                "precision_top1pct", "precision_top5pct", "pinball_p10", "pinball_p50", "pinball_p90",
                "coverage_p10_p90", "date_mae_days", "seconds_per_1k_customers"}
    assert rows and required <= set(rows[0])
    assert {(r["engine"], r["horizon_days"]) for r in rows if r["population"] == "prophet_sample"} == {
        (e, h) for e in ("global", "baseline", "prophet") for h in (30, 60, 90)}
    assert report.exists() and report.read_text().count("data:image/png;base64,") >= 6


# ----------------------------------------------------------------------------------------------- known payments

RENT_NIGHT = date(2026, 6, 30)          # the rent of 1,050.00 falls due tomorrow, 1 July


def _rent_bank():
    """Hand-made customers as of RENT_NIGHT, no overdraft:
    C_RENT: rent of 1,050.00 by standing order on the 1st, groceries, no income at all, 212.00 left tonight;
    C_LATER: the same rent, but the account holds enough until the rent of 1 August (31 days away);
    C_PAID: the same rent, a salary on the 25th and a comfortable balance (no known payment is unmet)."""
    from tests.landing_builder import LandingBank, days_between

    bank = LandingBank(end=RENT_NIGHT)
    first = date(2026, 1, 1)
    rent_days = [date(2026, m, 1) for m in range(1, 7)]
    groceries = len(days_between(first, RENT_NIGHT)[::3]) * 12.5
    for customer, left in (("C_RENT", 212.0), ("C_LATER", 1212.0 + 400.0), ("C_PAID", 2500.0)):
        bank.customer(customer)
        account = f"A_{customer[2:]}"
        salary = 2400.0 * 6 if customer == "C_PAID" else 0.0
        bank.account(account, customer, date(2025, 6, 1), opening_balance=left + 1050.0 * 6 + groceries - salary,
                     overdraft_limit="0.00")
        bank.monthly(account, rent_days, "-1050.00", "standing_order", "LANDLORD-1", "RENT LANDLORD-1")
        if customer == "C_PAID":
            bank.monthly(account, [date(2026, m, 25) for m in range(1, 7)], "2400.00", "salary", "EMP-1",
                         "SALARY EMP-1")
        bank.card_spending(account, first, RENT_NIGHT)
    assert bank.accounts["A_RENT"].eod(RENT_NIGHT) == 212
    return bank


@pytest.fixture(scope="module")
def rent_night(bank, tmp_path_factory):
    """The hand-made customers loaded through the history load, forecast for RENT_NIGHT by the engine trained on
    the simulated bank."""
    home = Paths(tmp_path_factory.mktemp("rent") / "segone")
    previous = os.environ.get("SEGONE_HOME")
    os.environ["SEGONE_HOME"] = str(home.home)
    try:
        _rent_bank().write(home.landing_history)
        load_history(home)
        panel = forecast.build_panel(home, RENT_NIGHT, [RENT_NIGHT])
        rows = forecast.cash_forecast_rows(forecast.load_engine(bank), panel, RENT_NIGHT)
    finally:
        if previous is None:
            os.environ.pop("SEGONE_HOME", None)
        else:
            os.environ["SEGONE_HOME"] = previous
    return panel, rows.set_index(["customer_id", "horizon_days"]).sort_index()


def test_the_shortfall_never_comes_after_the_rent_that_causes_it(rent_night):
    panel, rows = rent_night
    rent = panel.streams[(panel.streams["customer_id"] == "C_RENT") & (panel.streams["direction"] == "out")]
    assert pd.to_datetime(rent["next_expected_date"]).dt.date.tolist() == [date(2026, 7, 1)]
    floor = forecast.settings()["known_payments"]["min_p_shortfall"]
    for horizon in (30, 60, 90):
        row = rows.loc[("C_RENT", horizon)]
        assert row["p_shortfall"] >= floor, (horizon, row["p_shortfall"])
        assert pd.notna(row["expected_shortfall_date"]) and row["expected_shortfall_date"] <= date(2026, 7, 1)
        assert row["min_balance_p50"] <= 212.0 - 1050.0 and row["min_balance_p10"] <= row["min_balance_p50"]
        assert row["drivers"].startswith("a regular payment of £1,050.00 due around 01 July 2026 is more than "
                                         "your balance is projected to be by then"), row["drivers"]
    # the rent of 1 August cannot be met either: the date is never after it, whatever the model thought
    for horizon in (60, 90):
        row = rows.loc[("C_LATER", horizon)]
        if pd.notna(row["expected_shortfall_date"]):
            assert row["expected_shortfall_date"] <= date(2026, 8, 1)
    # a customer whose bills are covered is not touched by any of this
    paid = rows.loc["C_PAID"]
    assert not paid["drivers"].str.contains("more than your balance").any()
    assert (paid["p_shortfall"] < 0.5).all() and paid["expected_shortfall_date"].isna().all()


def test_the_warning_says_the_date_of_the_rent(rent_night):
    """The customer-facing words agree with the forecast: the shortfall warning names 1 July at the latest."""
    from pipelines import decide

    _, rows = rent_night
    wide = decide._forecast_wide(rows.reset_index())
    context = wide[wide["customer_id"] == "C_RENT"].assign(
        age=70.0, has_current=True, balance_now=212.0, balance_min_30=212.0, overdraft_limit=0.0,
        has_regular_income=False, is_service_alerts_allowed=True)
    published = decide.decide_frame(context, RENT_NIGHT).next_best_actions
    warning = published[published["action_id"] == "shortfall_warning"]
    assert len(warning) == 1
    text = warning["reasons"].iloc[0]
    assert "it could happen around" in text
    said = pd.to_datetime(text.split("it could happen around ")[1].split(";")[0]).date()
    assert said <= date(2026, 7, 1), text


def _stream(customer_id, amount, next_date, cadence="monthly", lifecycle="mature"):
    return {"customer_id": customer_id, "cutoff": pd.Timestamp(RENT_NIGHT), "direction": "in" if amount > 0 else "out",
            "cadence": cadence, "cadence_days": 30, "amount": amount, "next_expected_date": pd.Timestamp(next_date),
            "lifecycle": lifecycle}


def test_no_known_payment_bounds_a_customer_paid_on_no_stream_on_a_short_history():
    """The rent is a stream after two months; the salary (paid on the 28th) is not yet: on 60 days of history the
    rent due tomorrow is not known to exceed the balance (the salary may land first), so it raises no probability
    and no driver; on a long history, or with no income seen at all, it does."""
    frame = pd.DataFrame({"customer_id": ["YOUNG_PAID", "YOUNG_UNPAID", "OLD"], "cutoff": pd.Timestamp(RENT_NIGHT),
                          "balance_now": 212.0, "history_days": [60.0, 60.0, 200.0],
                          "unscheduled_income_90": [4000.0, 0.0, 4000.0]})
    streams = pd.DataFrame([_stream(c, -1050.0, date(2026, 7, 1)) for c in frame.customer_id])
    panel = features.Panel(features=frame, streams=streams, series=pd.DataFrame(), labels=None,
                           reconciliation=pd.DataFrame())
    known = forecast.known_payments(panel).set_index("customer_id")
    assert np.isnan(known.loc["YOUNG_PAID", "unmet_day"]) and known.loc["YOUNG_PAID", "unmet_payments"] == 0
    assert known.loc["YOUNG_UNPAID", "unmet_day"] == 1.0 and known.loc["OLD", "unmet_day"] == 1.0
    raw = pd.DataFrame({"customer_id": frame.customer_id, "cutoff": pd.Timestamp(RENT_NIGHT), "horizon_days": 30,
                        "p_shortfall": 0.1, "min_balance_p10": 50.0, "min_balance_p50": 100.0,
                        "min_balance_p90": 150.0, "days_to_shortfall": np.nan})
    from models.contract import bound_by_known_payments

    bounded = bound_by_known_payments(raw, known.reset_index(), 0.95, 14).set_index("customer_id")
    assert bounded.loc["YOUNG_PAID", "p_shortfall"] == pytest.approx(0.1)
    assert bounded.loc["OLD", "p_shortfall"] == pytest.approx(0.95)


def test_the_baseline_says_bills_exceed_income_only_where_the_history_could_show_the_income():
    """A rent stream and no income stream: on 200 days of history the regular payments out are larger than the
    regular income; on 60 days the salary may simply not be a stream yet, so the driver does not say so."""
    inputs = pd.DataFrame({"customer_id": ["YOUNG", "OLD"], "cutoff": pd.Timestamp(RENT_NIGHT),
                           "balance_now": 2000.0, "flexible_spend_90": 0.0, "unscheduled_income_90": 0.0,
                           "flexible_spend_std_30": 1.0, "history_days": [60.0, 200.0], "n_days_negative_30": 0.0,
                           "net_flow_30": 10.0})
    streams = pd.DataFrame([_stream(c, -1050.0, date(2026, 7, 10)) for c in inputs.customer_id])
    risky = pd.DataFrame({"customer_id": ["YOUNG", "OLD"], "cutoff": pd.Timestamp(RENT_NIGHT), "horizon_days": 60,
                          "p_shortfall": 0.5})
    said = forecast.baseline_drivers(inputs, streams, risky, 0.2).tolist()
    words = "larger than your regular income"   # (the 60-day row's words name their window)
    assert words in said[1] and words not in said[0], said


def test_known_payment_shortfall_finds_the_first_bill_the_balance_cannot_meet():
    from models.baseline_engine import known_payment_shortfall

    features = pd.DataFrame({"customer_id": ["RENT", "PAYDAY_FIRST", "TWO_BILLS", "STOPPED", "NO_BALANCE"],
                             "cutoff": pd.Timestamp(RENT_NIGHT), "balance_now": [212.0, 212.0, 900.0, 212.0, np.nan]})
    streams = pd.DataFrame([
        _stream("RENT", -1050.0, date(2026, 7, 1)),
        _stream("PAYDAY_FIRST", 2000.0, date(2026, 7, 1)), _stream("PAYDAY_FIRST", -1050.0, date(2026, 7, 1)),
        _stream("TWO_BILLS", -500.0, date(2026, 7, 5)), _stream("TWO_BILLS", -450.0, date(2026, 7, 5)),
        _stream("TWO_BILLS", -100.0, date(2026, 7, 2)),
        _stream("STOPPED", -1050.0, date(2026, 7, 1), lifecycle="stopped"),
        _stream("NO_BALANCE", -1050.0, date(2026, 7, 1))])
    known = known_payment_shortfall(features, streams).set_index("customer_id")
    assert known.loc["RENT", ["unmet_day", "unmet_amount", "unmet_payments", "unmet_balance"]].tolist() == \
        [1.0, 1050.0, 1, -838.0]
    assert known.loc["RENT", "known_min_30"] == -838.0 and known.loc["RENT", "known_min_90"] < -838.0
    assert np.isnan(known.loc["PAYDAY_FIRST", "unmet_day"])            # the salary lands the same day
    assert known.loc["TWO_BILLS", ["unmet_day", "unmet_amount", "unmet_payments"]].tolist() == [5.0, 950.0, 2]
    assert np.isnan(known.loc["STOPPED", "unmet_day"]) and np.isnan(known.loc["NO_BALANCE", "unmet_day"])


def test_the_bound_moves_the_date_and_the_probability_only_where_a_known_bill_is_unmet():
    from models.contract import bound_by_known_payments

    cut = pd.Timestamp(RENT_NIGHT)
    rows = []
    for customer, p, days in (("TOMORROW", 0.6, 9.0), ("LATER", 0.3, 50.0), ("NONE", 0.7, 12.0)):
        for horizon in (30, 60, 90):
            rows.append({"customer_id": customer, "cutoff": cut, "horizon_days": horizon, "p_shortfall": p,
                         "min_balance_p10": -100.0, "min_balance_p50": 150.0, "min_balance_p90": 400.0,
                         "days_to_shortfall": days})
    known = pd.DataFrame({"customer_id": ["TOMORROW", "LATER", "NONE"], "cutoff": cut,
                          "unmet_day": [1.0, 40.0, np.nan], "known_min_30": [-838.0, 50.0, 100.0],
                          "known_min_60": [-838.0, -400.0, 100.0], "known_min_90": [-900.0, -400.0, 100.0]})
    out = bound_by_known_payments(pd.DataFrame(rows), known, 0.95, 14).set_index(["customer_id", "horizon_days"])
    for horizon in (30, 60, 90):
        row = out.loc[("TOMORROW", horizon)]
        assert row["p_shortfall"] == 0.95 and row["days_to_shortfall"] == 1.0 and row["unmet_day"] == 1.0
        assert row["min_balance_p50"] <= -838.0 and row["min_balance_p90"] == 400.0
    # a bill 40 days away bounds the date of the horizons that reach it, and leaves the probability to the model
    assert out.loc[("LATER", 30), "days_to_shortfall"] == 50.0 and np.isnan(out.loc[("LATER", 30), "unmet_day"])
    assert out.loc[("LATER", 60), "days_to_shortfall"] == 40.0 and out.loc[("LATER", 60), "p_shortfall"] == 0.3
    assert out.loc[("LATER", 60), "min_balance_p50"] == 150.0
    assert (out.loc["NONE", "days_to_shortfall"] == 12.0).all() and (out.loc["NONE", "p_shortfall"] == 0.7).all()
