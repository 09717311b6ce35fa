"""Income-drop and large-expense forecasts: the labels on hand-made daily rows (an income that stops, a large annual
bill, a threshold relative to the customer), the thresholds and derived inputs, the drivers' conditions, the engine,
and the stage end to end on a small simulated bank (train, one shard, its gold suites)."""
from __future__ import annotations

import os
from datetime import date, timedelta

import duckdb
import numpy as np
import pandas as pd
import pytest
import yaml

from pipelines import event_forecast as ef
from pipelines.evaluation import event_backtest
from pipelines import registry, sql
from pipelines.config import Paths

CUT = date(2026, 6, 30)


def _rows(customer, day, amount, channel="card", stream_key=None, own=False):
    return {"customer_id": customer, "account_id": customer + "01", "ds": day, "amount": amount,
            "max_neg_amount": -amount if amount < 0 else None, "sign": 1 if amount > 0 else -1,
            "is_own_transfer": own, "stream_key": stream_key, "channel": channel}


def _labels(rows: list[dict], baselines: pd.DataFrame, streams: pd.DataFrame | None = None,
            horizons=(30, 60, 90), data_days: int = 90, usual: str = "smallest") -> pd.DataFrame:
    """sql/features_event_labels.sql on hand-made views (what build_training registers from silver)."""
    con = duckdb.connect()
    day_rows = pd.DataFrame(rows)
    day_rows["ds"] = pd.to_datetime(day_rows["ds"])
    con.register("day_rows_frame", day_rows)
    con.execute("create table day_rows as select * replace (cast(ds as date) as ds, "
                "cast(amount as decimal(18, 2)) as amount, cast(max_neg_amount as decimal(18, 2)) as max_neg_amount) "
                "from day_rows_frame")
    customers = sorted(day_rows["customer_id"].unique())
    days = pd.date_range(CUT - timedelta(days=200), CUT + timedelta(days=data_days))   # the data ends here
    grid = pd.DataFrame([(c, c + "01", d) for c in customers for d in days], columns=["customer_id", "account_id", "ds"])
    con.register("grid", grid)
    con.execute("create table primary_days as select account_id, cast(ds as date) as ds from grid")
    con.execute("create table daily_balance as select customer_id, cast(ds as date) as ds, 100.0 as value from grid")
    con.execute(f"create table cutoffs as select date '{CUT}' as cutoff")
    con.register("h", pd.DataFrame({"horizon_days": list(horizons)}))
    con.execute("create table horizons as select cast(horizon_days as integer) as horizon_days from h")
    s = streams if streams is not None else pd.DataFrame(
        {"customer_id": ["-"], "cutoff": [pd.Timestamp(CUT)], "stream_key": ["-"], "direction": ["in"],
         "cadence_days": [30]})
    con.register("streams_frame", s)
    con.execute("create table recurring_streams as select * replace (cast(cutoff as date) as cutoff) "
                "from streams_frame")
    con.register("b", baselines.assign(cutoff=pd.Timestamp(CUT)))
    con.execute("create table event_baselines as select * replace (cast(cutoff as date) as cutoff) from b")
    cfg = ef.settings()
    sql.set_variables(con, **ef.label_variables({"income": {**cfg["income"], "window_days": 35, "drop_share": 0.3,
                                                            "usual": usual},
                                                 "expense": {**cfg["expense"], "short_cadence_days": 31}}))
    return sql.frame(con, ef.LABEL_SQL, order_by="customer_id, horizon_days").set_index(
        ["customer_id", "horizon_days"])


def _monthly(customer, amount, first, last, channel="salary", key=None, day=28):
    out, d = [], first
    while d <= last:
        out.append(_rows(customer, d, amount, channel, key))
        d = (pd.Timestamp(d) + pd.DateOffset(months=1)).date()
    return out


def _base(customers, threshold=500.0):
    return pd.DataFrame({"customer_id": customers, "income_baseline": 2000.0, "expense_threshold": threshold,
                         "history_days": 200.0})


def test_an_income_that_stops_is_a_drop_from_the_day_the_window_misses_it():
    rows = (_monthly("STOPS", 2000, date(2026, 2, 27), date(2026, 6, 27))        # last pay 27 June, none after
            + _monthly("STEADY", 2000, date(2026, 2, 27), date(2026, 9, 28))
            + _monthly("CUT20", 2000, date(2026, 2, 27), date(2026, 6, 27))
            + _monthly("CUT20", 1600, date(2026, 7, 27), date(2026, 9, 28)))
    labels = _labels(rows, _base(["STOPS", "STEADY", "CUT20"]))
    # STOPS: from 1 August the window of 35 days ending that day no longer holds the 27 June pay (day 32)
    assert labels.loc[("STOPS", 30), "is_income_drop"] == False  # noqa: E712 (pandas bool)
    assert labels.loc[("STOPS", 60), "is_income_drop"] == True  # noqa: E712
    expected = (date(2026, 6, 27) + timedelta(days=35) - CUT).days
    assert labels.loc[("STOPS", 60), "days_to_income_drop"] == expected
    assert not labels.loc["STEADY", "is_income_drop"].any()
    assert not labels.loc["CUT20", "is_income_drop"].any()        # a 20% cut is not a drop of more than 30%


def test_a_bonus_month_beside_a_window_of_two_pays_is_no_usual_income_and_the_next_pay_no_drop():
    """income.usual 'smallest': pays on the 23rd; the 35-day windows before the cut-off hold one pay (March), two
    (April and May) and June's pay with a bonus of half. Their median is the bonus month, and July's ordinary pay
    was a "drop" (Berka: a third of the customers at once, once a quarter); the smaller of the two windows before
    the latest is one pay, and nothing drops. A pay that stops is still a drop."""
    pays = [_rows("BONUS", date(2026, m, 23), 2000.0 if m != 6 else 3000.0, "salary") for m in range(3, 10)]
    stops = [_rows("STOPS", date(2026, m, 23), 2000.0, "salary") for m in range(3, 7)]
    median = _labels(pays + stops, _base(["BONUS", "STOPS"]), usual="median")
    assert median.loc[("BONUS", 30), "is_income_drop"] == True  # noqa: E712 (the old definition's false drop)
    smallest = _labels(pays + stops, _base(["BONUS", "STOPS"]))
    assert not smallest.loc["BONUS", "is_income_drop"].any()
    assert smallest.loc[("STOPS", 60), "is_income_drop"] == True  # noqa: E712
    assert smallest.loc[("STOPS", 60), "days_to_income_drop"] == (date(2026, 6, 23) + timedelta(days=35) - CUT).days


def test_income_that_has_already_fallen_or_no_usual_income_has_no_income_label():
    rows = (_monthly("GONE", 2000, date(2026, 2, 27), date(2026, 5, 10))         # nothing in the 35 days to 30 June
            + [_rows("NOINCOME", CUT - timedelta(days=5), -20.0)])
    labels = _labels(rows, _base(["GONE", "NOINCOME"]))
    assert labels["is_income_drop"].isna().all()


def test_a_large_annual_bill_is_an_expense_relative_to_the_customer_and_rent_is_not():
    bill_day = CUT + timedelta(days=40)
    rows = [
        _rows("SMALL", bill_day, -900.0, "direct_debit", "ADMIRAL"),            # outflow 1,000 a month: threshold 500
        _rows("LARGE", bill_day, -900.0, "direct_debit", "ADMIRAL"),            # outflow 4,000 a month: threshold 2,000
        *[_rows("RENT", CUT + timedelta(days=d), -1200.0, "standing_order", "LET1") for d in (5, 35, 65)],
        _rows("OWN", CUT + timedelta(days=3), -5000.0, "transfer_out", None, own=True),
    ]
    base = pd.DataFrame({"customer_id": ["SMALL", "LARGE", "RENT", "OWN"], "income_baseline": 0.0,
                         "expense_threshold": [500.0, 2000.0, 500.0, 500.0], "history_days": 200.0})
    streams = pd.DataFrame({"customer_id": ["RENT"], "cutoff": [pd.Timestamp(CUT)], "stream_key": ["LET1"],
                            "direction": ["out"], "cadence_days": [30]})
    labels = _labels(rows, base, streams)
    assert labels.loc[("SMALL", 30), "is_large_expense"] == False  # noqa: E712
    assert labels.loc[("SMALL", 60), "is_large_expense"] == True  # noqa: E712
    assert labels.loc[("SMALL", 60), "days_to_large_expense"] == 40
    assert labels.loc[("SMALL", 90), "large_expense_amount"] == 900.0
    assert not labels.loc["LARGE", "is_large_expense"].any()      # the same bill, small for this customer
    assert not labels.loc["RENT", "is_large_expense"].any()       # a monthly stream is no one-off
    assert not labels.loc["OWN", "is_large_expense"].any()        # money moved to their own account


def test_a_window_the_data_does_not_cover_has_no_label():
    rows = [_rows("A", CUT + timedelta(days=10), -900.0)]
    labels = _labels(rows, _base(["A"]), horizons=(30, 60, 90, 120), data_days=100)
    assert labels.index.get_level_values("horizon_days").tolist() == [30, 60, 90]


def _features(**columns) -> pd.DataFrame:
    base = {"customer_id": ["A"], "cutoff": [pd.Timestamp(CUT)], "income_90": [6000.0], "days_since_income": [3.0],
            "history_days": [200.0], "fixed_spend_90": [1500.0], "flexible_spend_90": [1500.0],
            "typical_monthly_outflow": [1000.0], "monthly_recurring_income": [2000.0], "is_income_stopped": [0.0]}
    base.update(columns)
    return pd.DataFrame(base)


def test_thresholds_are_relative_to_the_customer_and_follow_the_settings():
    cfg = ef.settings()
    frame = pd.concat([_features(), _features(customer_id=["B"], typical_monthly_outflow=[6000.0]),
                       _features(customer_id=["C"], typical_monthly_outflow=[10.0])])
    out = ef.baselines(frame, cfg).set_index("customer_id")
    assert out.loc["A", "monthly_outflow"] == 1000.0
    assert out.loc["A", "expense_threshold"] == cfg["expense"]["multiple"] * 1000.0
    assert out.loc["B", "expense_threshold"] == cfg["expense"]["multiple"] * 6000.0
    assert out.loc["C", "expense_threshold"] == cfg["expense"]["min_amount"]   # never below the floor
    assert out.loc["A", "income_baseline"] == 2000.0


def test_a_heavy_december_does_not_raise_the_threshold_of_the_months_after():
    """The threshold is half the customer's typical month (the store's median month, typical_monthly_outflow), not
    the last 90 days' outflow: a customer who spends 1,000 a month and 4,000 in December has the same threshold in
    November, in January after it and in March, while the 90-day outflow a month went from 1,000 to 2,000."""
    cfg = ef.settings()
    cuts = [pd.Timestamp("2025-11-30"), pd.Timestamp("2026-01-15"), pd.Timestamp("2026-03-31")]
    spend_90 = [3000.0, 6000.0, 3000.0]          # the heavy December inside the January cut-off's 90 days
    frame = pd.concat([_features(cutoff=[c], fixed_spend_90=[s / 2], flexible_spend_90=[s / 2],
                                 typical_monthly_outflow=[1000.0]) for c, s in zip(cuts, spend_90)])
    out = ef.baselines(frame, cfg)
    assert out["monthly_outflow"].tolist() == [1000.0] * 3
    assert out["expense_threshold"].tolist() == [cfg["expense"]["multiple"] * 1000.0] * 3
    inputs = ef.event_inputs(frame, pd.DataFrame(), cfg, horizon_days=(30,))
    assert "typical_monthly_outflow" not in inputs and inputs["monthly_outflow"].tolist() == [1000.0] * 3


def test_calendar_inputs_are_last_years_weeks_against_todays_typical_month_and_missing_without_a_year():
    """The calendar (config/event_forecast.yaml calendar): per horizon, the same weeks a year before against today's
    typical month (outflow per 30 days) and threshold (largest payment); the month of year of the target window;
    null where the history does not reach back a year (has_last_year 0), so a 180-365-day bank still works."""
    cfg = ef.settings()
    year = dict(has_last_year=[1.0], ly_outflow_1=[1500.0], ly_outflow_2=[500.0], ly_outflow_3=[1000.0],
                ly_largest_1=[200.0], ly_largest_2=[0.0], ly_largest_3=[900.0])
    short = {k: [np.nan] for k in year} | {"has_last_year": [0.0]}
    frame = pd.concat([_features(cutoff=[pd.Timestamp("2026-06-20")], **year),
                       _features(customer_id=["B"], cutoff=[pd.Timestamp("2026-06-20")], **short)])
    out = ef.event_inputs(frame, pd.DataFrame(), cfg, horizon_days=(30, 60, 90)).set_index("customer_id")
    threshold = cfg["expense"]["multiple"] * 1000.0                   # typical month 1,000
    assert out.loc["A", "ly_outflow_ratio_30"] == pytest.approx(1.5)
    assert out.loc["A", "ly_outflow_ratio_60"] == pytest.approx(1.0)      # 2,000 over two months
    assert out.loc["A", "ly_outflow_ratio_90"] == pytest.approx(1.0)      # 3,000 over three
    assert out.loc["A", "ly_largest_ratio_30"] == pytest.approx(200.0 / threshold)
    assert out.loc["A", "ly_large_30"] == 0.0 and out.loc["A", "ly_large_60"] == 0.0
    assert out.loc["A", "ly_large_90"] == 1.0                             # the 900 bill in the third block
    assert "target_month" not in out.columns                               # month_of_year is off (config)
    monthly = ef.event_inputs(frame, pd.DataFrame(), {**cfg, "calendar": {**cfg["calendar"], "month_of_year": True}},
                              horizon_days=(30, 60, 90)).set_index("customer_id")
    assert monthly.loc["A", "target_month"] == 7.0 and monthly.loc["B", "target_month"] == 7.0
    assert out.loc["B", "has_last_year"] == 0.0
    assert out.loc["B", [f"ly_{w}_{h}" for w in ("outflow_ratio", "largest_ratio", "large") for h in (30, 60, 90)]
                   ].isna().all()
    assert not any(c.startswith(("ly_outflow_1", "ly_largest_1")) for c in out.columns)   # the raw blocks replaced


def test_no_income_forecast_without_a_regular_income_or_once_it_has_stopped():
    cfg = ef.settings()
    frame = pd.concat([_features(), _features(customer_id=["LOW"], income_90=[300.0], monthly_recurring_income=[0.0]),
                       _features(customer_id=["STOPPED"], days_since_income=[50.0]),
                       _features(customer_id=["NEW"], history_days=[40.0]),
                       _features(customer_id=["NONE"], days_since_income=[np.nan])])
    out = ef.baselines(frame, cfg).set_index("customer_id")["income_baseline"]
    assert out["A"] > 0 and (out.drop("A") == 0).all()


def test_a_yearly_bill_due_within_the_horizon_is_an_input_of_that_horizon_only():
    streams = pd.DataFrame({
        "customer_id": ["A", "A", "A"], "cutoff": [pd.Timestamp(CUT)] * 3, "direction": ["out", "out", "in"],
        "cadence_days": [365, 30, 30], "lifecycle": ["mature", "mature", "early"], "amount": [-900.0, -1200.0, 2000.0],
        "next_expected_date": [pd.Timestamp(CUT + timedelta(days=45)), pd.Timestamp(CUT + timedelta(days=3)),
                               pd.Timestamp(CUT + timedelta(days=20))],
        "is_own_transfer": [False, False, False]})
    out = ef.event_inputs(_features(), streams, ef.settings(), horizon_days=(30, 60, 90)).iloc[0]
    assert out["known_large_due_30"] == 0 and out["known_large_due_60"] == 900 and out["known_large_due_90"] == 900
    assert out["income_stream_early"] == 1 and out["income_largest_share"] == 1.0
    small = ef.event_inputs(_features(typical_monthly_outflow=[3000.0]), streams, ef.settings()).iloc[0]
    assert small["known_due_60"] == 900 and small["known_large_due_60"] == 0   # under this customer's threshold


def test_drivers_only_say_what_is_true_of_the_customer():
    phrases = ef.settings()["drivers"]["expense"]
    values = pd.DataFrame({"known_large_due_30": [900.0, 0.0], "share_travel_90": [0.05, 0.3]})
    names = [["known_large_due_30", "share_travel_90"], ["known_large_due_30", "share_travel_90"]]
    texts = ef.driver_texts(names, values, phrases)
    assert texts[0] == "a large bill you pay every few months or yearly is expected within 30 days"
    assert texts[1] == "20% or more of your card spending in the last 90 days went on travel"
    assert ef.driver_texts([["unknown"]], values.iloc[:1], phrases) == [phrases["default"]]


def _synthetic(n=600, cutoffs=8, seed=1):
    rng = np.random.default_rng(seed)
    days = pd.date_range("2026-01-05", periods=cutoffs, freq="14D")
    rows, labels = [], []
    for c in days:
        x = rng.normal(size=n)
        rows.append(pd.DataFrame({"customer_id": [f"C{i:04d}" for i in range(n)], "cutoff": c, "x": x,
                                  "noise": rng.normal(size=n)}))
        for h in (30, 60, 90):
            p = 1 / (1 + np.exp(-(2 * x - 2 + h / 60)))
            y = rng.random(n) < p
            labels.append(pd.DataFrame({"customer_id": [f"C{i:04d}" for i in range(n)], "cutoff": c,
                                        "horizon_days": h, "is_event": y,
                                        "days_to_event": np.where(y, rng.integers(1, h, n), np.nan),
                                        "event_amount": np.where(y, 500 + 100 * x.clip(0), np.nan)}))
    return pd.concat(rows, ignore_index=True), pd.concat(labels, ignore_index=True)


def test_the_engine_ranks_calibrates_and_reloads_the_same(tmp_path):
    from models.event_engine import EventEngine, EventEngineParams
    from models.metrics import roc_auc

    features, labels = _synthetic()
    # few events for isotonic (the logistic map) and the level of the latest calibration cut-off followed
    params = EventEngineParams(n_estimators=40, regressor_estimators=20, with_amount=True, num_threads=1,
                               isotonic_min_events=10**6, follow_level=True)
    engine = EventEngine().fit(features, labels, params)
    assert all("logistic map" in n and "level of the latest calibration cut-off" in n
               for n in engine.notes if "calibrated on" in n)
    pred = engine.predict(features[features["cutoff"] == features["cutoff"].max()])
    wide = pred.pivot(index="customer_id", columns="horizon_days", values="p_event")
    assert (wide[60] >= wide[30]).all() and (wide[90] >= wide[60]).all()
    assert pred["p_event"].between(0, 1).all()
    assert pred["days_to_event"].dropna().between(1, 90).all() and pred["event_amount"].notna().all()
    truth = pred.merge(labels, on=["customer_id", "cutoff", "horizon_days"])
    assert roc_auc(truth["is_event"].astype(int), truth["p_event"]) > 0.75
    engine.save(tmp_path / "m")
    again = EventEngine.load(tmp_path / "m").predict(features[features["cutoff"] == features["cutoff"].max()])
    pd.testing.assert_frame_equal(pred, again)


def _rates_rows(rates, n=2000, step_days=14, seed=3):
    """Cut-offs `step_days` apart whose rows have exactly the given event rates (n rows each)."""
    days = pd.date_range("2025-01-06", periods=len(rates), freq=f"{step_days}D").to_numpy()
    cutoffs = np.repeat(days, n)
    y = np.concatenate([np.arange(n) < round(r * n) for r in rates]).astype(float)
    return cutoffs, np.random.default_rng(seed).permutation(y.reshape(len(rates), n).T).T.reshape(-1)


def test_the_level_is_followed_where_it_persists_in_the_labels_and_not_where_it_swings_back():
    from models.event_engine import level_persists

    wandering = [0.10, 0.11, 0.13, 0.16, 0.18, 0.17, 0.21, 0.24, 0.26, 0.25, 0.29, 0.31]   # a level that moves on
    follow, note = level_persists(*_rates_rows(wandering), 30)
    assert follow and "level followed" in note
    swinging = [0.10, 0.30, 0.10, 0.30, 0.10, 0.30, 0.10, 0.30, 0.10, 0.30, 0.10, 0.30]    # back and forth
    assert not level_persists(*_rates_rows(swinging), 30)[0]
    # a 90-day outcome is known 7 cut-offs later: of 9 cut-offs only the last has two before it, too few to judge
    follow, note = level_persists(*_rates_rows(wandering[:9]), 90)
    assert not follow and "1 cut-off(s) to judge it on" in note


def test_the_engine_follows_the_level_by_its_own_labels_when_asked_to_choose():
    from models.event_engine import EventEngine, EventEngineParams

    features, labels = _synthetic()
    params = EventEngineParams(n_estimators=20, regressor_estimators=10, num_threads=1, follow_level="auto")
    engine = EventEngine().fit(features, labels, params)
    calibrated = [n for n in engine.notes if "calibrated on" in n]
    assert len(calibrated) == 3 and all("level followed" in n or "level not followed" in n for n in calibrated)


def test_calibration_settings_are_one_for_both_events_or_one_per_event():
    from pipelines.errors import SegoneError

    cfg = {"calibration": {"isotonic_min_events": 0, "follow_level": "auto",
                           "shrink_to_base_rate": {"income": True, "expense": False}}}
    assert ef.calibration_settings("income", cfg) == {"isotonic_min_events": 0, "follow_level": "auto",
                                                      "shrink_to_base_rate": True}
    assert ef.calibration_settings("expense", cfg)["shrink_to_base_rate"] is False
    for bad in ({"shrink_to_base_rate": {"income": True}}, {"follow_level": "sometimes"},
                {"shrink_to_base_rate": "yes"}, {"isotonic_min_events": -1}):
        with pytest.raises(SegoneError, match="calibration"):
            ef.calibration_settings("income", {"calibration": {**cfg["calibration"], **bad}})


# ------------------------------------------------------------------------------------------------ end to end
END = date(2026, 11, 20)


@pytest.fixture(scope="module")
def bank(tmp_path_factory):
    """250 customers, 250 days of history, loaded; the event engines trained."""
    from pipelines.sources.simulate import simulate_command
    from pipelines.stages import load_history

    paths = Paths(tmp_path_factory.mktemp("events") / "segone")
    # Four customer buckets instead of 16 (a SEGONE_SETTINGS overlay that changes nothing else: the engines train
    # with the shipped settings): the history load's store and the training's per-bucket builds are 4 of a fixed
    # cost each, not 16.
    overlay = paths.home.parent / "settings.yaml"
    overlay.write_text(yaml.safe_dump({"segone": {"lake": {"n_buckets": 4}}}), encoding="utf-8")
    previous = {name: os.environ.get(name) for name in ("SEGONE_HOME", "SEGONE_SETTINGS")}
    os.environ["SEGONE_HOME"] = str(paths.home)
    os.environ["SEGONE_SETTINGS"] = str(overlay)
    try:
        simulate_command(paths, customers=250, days=250, end_date=END, seed=8, fmt="csv")
        load_history(paths)                                  # the store as of the history's last day, D - 1
        result = ef.train(paths)
        yield paths, result
    finally:
        for name, value in previous.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def test_the_stage_forecasts_a_shard_that_passes_its_suites(bank):
    from pipelines import features as feature_stage
    from pipelines.quality import validate_gold

    from pipelines.forecast import data_end

    paths, result = bank
    day = data_end(paths)
    trained = [f for f, r in result.items() if r.get("version")]
    assert trained, result                                          # at least one event could be trained here
    for family in trained:
        assert registry.promoted_version(paths, family) == result[family]["version"]
        meta = registry.read_metadata(paths, family, result[family]["version"])
        assert set(meta["metrics_held_out"]) == {"30", "60", "90"}
    for bucket in ef.shards()[:1]:                    # a quarter of the bank (one shard of four) keeps it short
        metrics = ef.forecast_events(paths, day, bucket)
    assert set(metrics["rows"]) == {"income_forecast", "expense_forecast"}
    validate_gold(paths, day, ["income_forecast", "expense_forecast"])
    consent = feature_stage.consent_snapshot(paths, day)
    allowed = set(consent.loc[consent["is_personalization_allowed"].astype(bool), "customer_id"])
    for table in ("income_forecast", "expense_forecast"):
        gold = pd.read_parquet(paths.lake / "gold" / table / f"as_of={day}")
        if table.split("_")[0] + "_forecast" in trained:
            assert len(gold) and set(gold["customer_id"]) <= allowed
            assert (gold.groupby("customer_id")["horizon_days"].nunique() == 3).all()
        if table == "expense_forecast" and len(gold):
            given = gold["expected_amount"].notna()
            assert (gold.loc[given, "expected_amount"] >= gold.loc[given, "reference_amount"]).all()
            assert (gold["expected_date"].notna() == given).all()


def test_without_a_promoted_model_the_stage_writes_empty_tables(bank, tmp_path):
    import shutil

    from pipelines.forecast import data_end

    paths, _ = bank
    empty = Paths(tmp_path / "home")
    shutil.copytree(paths.lake, empty.lake)
    metrics = ef.forecast_events(empty, data_end(paths), 0)
    assert metrics["rows"] == {"income_forecast": 0, "expense_forecast": 0}
    assert metrics["no_model"] == ["income_forecast", "expense_forecast"]


def test_the_rules_claim_what_a_bank_rule_would_and_abstain_without_last_year():
    inputs = pd.DataFrame({"customer_id": ["DUE", "LASTYEAR", "SHORT"], "cutoff": pd.Timestamp(CUT),
                           "is_income_stopped": [1.0, 0.0, 0.0],
                           "known_large_due_30": [900.0, 0.0, 0.0], "known_large_due_60": [900.0, 0.0, 0.0],
                           "known_large_due_90": [900.0, 0.0, 0.0]})
    income = event_backtest.rule_scores(inputs, None, "income").set_index(["customer_id", "horizon_days"])
    assert income.loc[("DUE", 30), "p_rule"] == 1 and income.loc[("LASTYEAR", 90), "p_rule"] == 0
    last_year = pd.DataFrame({"customer_id": ["DUE", "LASTYEAR", "SHORT"] * 3, "cutoff": pd.Timestamp(CUT),
                              "horizon_days": np.repeat([30, 60, 90], 3),
                              "has_last_year": [True, True, False] * 3,
                              "large_last_year": [False, False, False, False, True, False, False, True, False]})
    expense = event_backtest.rule_scores(inputs, last_year, "expense").set_index(["customer_id", "horizon_days"])
    assert (expense.loc["DUE", "p_rule"] == 1).all()                          # the known bill, at every horizon
    assert expense.loc["LASTYEAR", "p_rule"].tolist() == [0, 1, 1]            # last year's window held one at 60
    assert (expense.loc["SHORT", "p_rule"] == 0).all() and expense.loc["SHORT", "rule_abstains"].all()
    assert not expense.loc["DUE", "rule_abstains"].any()


def test_only_personalization_consent_gets_these_forecasts():
    rows = pd.DataFrame({"customer_id": ["YES", "NO", "NONE"], "p_event": 0.1})
    consent = pd.DataFrame({"customer_id": ["YES", "NO"], "is_personalization_allowed": [True, False],
                            "is_service_alerts_allowed": [True, True]})
    assert ef.consented(rows, consent)["customer_id"].tolist() == ["YES"]


def test_the_expected_date_never_moves_later_with_a_longer_horizon():
    pred = pd.DataFrame({"customer_id": ["A"] * 3 + ["B"] * 3, "cutoff": pd.Timestamp(CUT),
                         "horizon_days": [30, 60, 90] * 2, "p_event": [0.7, 0.7, 0.7, 0.2, 0.6, 0.8],
                         "days_to_event": [4.0, 18.0, 45.0, 10.0, 50.0, 40.0]})
    days = ef.first_likely_days(pred, pred["p_event"].to_numpy() >= 0.5)
    assert days[:3].tolist() == [4.0, 4.0, 4.0]        # likely within 30 days: that date at every horizon
    assert np.isnan(days[3]) and days[4:].tolist() == [50.0, 40.0]
