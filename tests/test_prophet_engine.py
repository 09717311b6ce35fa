"""Prophet shortfall engine on hand-made balances whose answer is known; each Prophet fit costs ~0.1 s."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from models.calibration import PUBLISHED_EPSILON
from models.contract import FORECAST_COLUMNS, HORIZONS
from models.prophet_engine import fit_predict_one, forecast_prophet

START = pd.Timestamp("2025-01-01")
DECLINE_SLOPE = 3000 / 230  # from 3000 at day 0, crosses zero at day 230
SPEND_PER_DAY = 2100 * 12 / 365  # sawtooth: 2100 a month spent evenly against a 2000 salary on the 1st


def _frame(customer_id: str, values: np.ndarray, start: pd.Timestamp = START) -> pd.DataFrame:
    return pd.DataFrame({
        "customer_id": customer_id, "ds": pd.date_range(start, periods=len(values), freq="D"), "value": values,
    })


def _series() -> pd.DataFrame:
    rng = np.random.default_rng(42)
    steady = 5000 + rng.normal(0, 100, 200)
    steady[[50, 51, 120]] = np.nan  # gaps are filled, not fatal
    decline = 3000 - DECLINE_SLOPE * np.arange(200) + rng.normal(0, 30, 200)
    days = pd.date_range(START, "2025-10-02", freq="D")  # cut-off the day after a payday: balance ~ +580
    salary = np.where(days.day == 1, 2000.0, 0.0)
    sawtooth = 1500 + np.cumsum(salary) - salary[0] - SPEND_PER_DAY * np.arange(len(days)) + rng.normal(0, 20, len(days))
    return pd.concat([
        _frame("steady", steady), _frame("decline", decline), _frame("sawtooth", sawtooth),
        _frame("short", np.array([100.0, 90.0, 80.0, 70.0])), _frame("constant", np.full(60, 250.0)),
        _frame("constant_negative", np.full(60, -40.0)),
    ], ignore_index=True)


@pytest.fixture(scope="module")
def series() -> pd.DataFrame:
    return _series()


@pytest.fixture(scope="module")
def forecast(series: pd.DataFrame) -> pd.DataFrame:
    return forecast_prophet(series, n_samples=200, processes=1, seed=7)


def _rows(forecast: pd.DataFrame, customer_id: str) -> pd.DataFrame:
    rows = forecast[forecast["customer_id"] == customer_id].set_index("horizon_days")
    assert list(rows.index) == list(HORIZONS)
    return rows


def test_shape_and_coherence(forecast: pd.DataFrame, series: pd.DataFrame) -> None:
    assert list(forecast.columns) == FORECAST_COLUMNS
    assert len(forecast) == series["customer_id"].nunique() * len(HORIZONS)
    last_day = series.groupby("customer_id")["ds"].max()
    assert (forecast["cutoff"].to_numpy() == last_day.loc[forecast["customer_id"]].to_numpy()).all()
    assert forecast["p_shortfall"].between(0, 1).all()
    for _, rows in forecast.groupby("customer_id"):
        assert rows["p_shortfall"].is_monotonic_increasing
        for column in ("min_balance_p10", "min_balance_p50", "min_balance_p90"):
            assert rows[column].is_monotonic_decreasing
    assert (forecast["min_balance_p10"] <= forecast["min_balance_p50"]).all()
    assert (forecast["min_balance_p50"] <= forecast["min_balance_p90"]).all()


def test_steady_positive_balance_is_safe(forecast: pd.DataFrame) -> None:
    rows = _rows(forecast, "steady")
    assert (rows["p_shortfall"] < 0.1).all()
    assert (rows["min_balance_p50"] > 4000).all()
    assert rows["days_to_shortfall"].isna().all()
    assert "steady" not in forecast.attrs["fallback_customers"]


def test_linear_decline_predicts_the_crossing(forecast: pd.DataFrame) -> None:
    rows = _rows(forecast, "decline")
    assert rows.loc[90, "p_shortfall"] > 0.7
    true_days = 231 - 199  # first day below zero (t > 230), counted from the cut-off (day 199)
    assert abs(rows.loc[90, "days_to_shortfall"] - true_days) <= 20
    assert rows.loc[90, "min_balance_p50"] < -500  # 90 more days at -13/day from ~400


def test_monthly_sawtooth(forecast: pd.DataFrame) -> None:
    rows = _rows(forecast, "sawtooth")
    assert rows[["p_shortfall", "min_balance_p10", "min_balance_p50", "min_balance_p90"]].notna().all().all()
    # ~580 left the day after payday at -69/day: below zero from day 9 of the month, which only the monthly
    # seasonality can tell (the trend alone drifts down by ~3/day)
    assert rows.loc[30, "p_shortfall"] > 0.7
    assert 3 <= rows.loc[30, "days_to_shortfall"] <= 20
    # the path minimum sits in the month-end trough (~ -1400 on 31 Oct), not at day 30 itself (1 Nov, payday)
    assert -2000 < rows.loc[30, "min_balance_p50"] < -1000
    assert rows.loc[90, "min_balance_p50"] < -1000
    assert "sawtooth" not in forecast.attrs["fallback_customers"]


def test_short_and_constant_series_fall_back(forecast: pd.DataFrame) -> None:
    fallback = forecast.attrs["fallback_customers"]
    assert set(fallback) == {"short", "constant", "constant_negative"}
    # the fallback's chances are 0 and 1 before the published bound: no forecast is said as certain
    low, high = PUBLISHED_EPSILON, 1.0 - PUBLISHED_EPSILON
    for customer_id, last, p in (("short", 70.0, low), ("constant", 250.0, low), ("constant_negative", -40.0, high)):
        rows = _rows(forecast, customer_id)
        assert (rows["p_shortfall"] == p).all()
        for column in ("min_balance_p10", "min_balance_p50", "min_balance_p90"):
            assert (rows[column] == last).all()
    assert _rows(forecast, "constant")["days_to_shortfall"].isna().all()
    assert (_rows(forecast, "constant_negative")["days_to_shortfall"] == 1).all()


def test_fit_predict_one_reports_method() -> None:
    ds = pd.date_range(START, periods=5).to_numpy()
    assert fit_predict_one(ds, np.arange(5.0), HORIZONS, 50, 0)["method"] == "naive"
    ds = pd.date_range(START, periods=60).to_numpy()
    result = fit_predict_one(ds, 1000 - 10.0 * np.arange(60) + np.sin(np.arange(60)), HORIZONS, 50, 0)
    assert result["method"] == "prophet"
    assert result["horizon_days"] == list(HORIZONS)
    assert result["p_shortfall"][-1] > 0.9  # 400 left at -10/day: gone in ~40 days


def test_cutoffs_truncate_the_series(series: pd.DataFrame) -> None:
    cutoffs = pd.DataFrame({
        "customer_id": ["constant", "short", "unknown"],
        "cutoff": [START + pd.Timedelta(days=9), START, START],
    })
    out = forecast_prophet(series, cutoffs=cutoffs, processes=1)
    assert sorted(out["customer_id"].unique()) == ["constant", "short", "unknown"]  # only the listed customers
    assert (out.loc[out["customer_id"] == "short", "min_balance_p50"] == 100.0).all()
    assert (out.groupby("customer_id")["cutoff"].first() == cutoffs.set_index("customer_id")["cutoff"]).all()
    assert out.loc[out["customer_id"] == "unknown", "min_balance_p50"].isna().all()  # no data: NaN rows, not dropped
    assert set(out.attrs["fallback_customers"]) == {"constant", "short", "unknown"}


def test_a_failing_fit_falls_back_and_is_logged(
    series: pd.DataFrame, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture,
) -> None:
    from models import prophet_engine

    real = prophet_engine.fit_predict_one

    def flaky(ds, values, horizons, n_samples, rng_seed):  # type: ignore[no-untyped-def]
        if len(values) == 200 and values[0] < 4000:  # the "decline" customer
            raise RuntimeError("stan exploded")
        return real(ds, values, horizons, n_samples, rng_seed)

    monkeypatch.setattr(prophet_engine, "fit_predict_one", flaky)
    with caplog.at_level("WARNING", logger="models.prophet_engine"):
        out = forecast_prophet(series[series["customer_id"].isin(["decline", "short"])], processes=1)
    assert "decline" in caplog.text and "stan exploded" in caplog.text
    assert "stan exploded" in out.attrs["fallback_customers"]["decline"]
    rows = _rows(out, "decline")
    assert (rows["min_balance_p50"] == series.loc[series["customer_id"] == "decline", "value"].iloc[-1]).all()


def test_deterministic_for_a_seed(series: pd.DataFrame, forecast: pd.DataFrame) -> None:
    again = forecast_prophet(series, n_samples=200, processes=1, seed=7)
    pd.testing.assert_frame_equal(again, forecast)
    other = forecast_prophet(series, n_samples=200, processes=1, seed=8)
    fitted = other["customer_id"].isin(["steady", "decline", "sawtooth"])
    assert not np.allclose(other.loc[fitted, "min_balance_p10"], forecast.loc[fitted, "min_balance_p10"])


def test_pool_matches_inline(series: pd.DataFrame, forecast: pd.DataFrame) -> None:
    pooled = forecast_prophet(series, n_samples=200, processes=2, seed=7)
    pd.testing.assert_frame_equal(pooled, forecast)
    assert pooled.attrs == forecast.attrs
