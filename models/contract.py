"""The long-format data contract every cash-shortfall engine shares (statsforecast style).

Inputs
- series: one row per customer and day: `customer_id` (str), `ds` (datetime64 day), `value` (float, the end-of-day
  balance of the customer's current accounts, in the base currency). Days are contiguous per customer up to and
  including the cut-off.
- features: one row per customer and cut-off: `customer_id`, `cutoff` (datetime64 day) and numeric feature columns.
- labels: one row per customer, cut-off and horizon: `customer_id`, `cutoff`, `horizon_days`, `is_shortfall`
  (the balance went below zero on some day of (cutoff, cutoff + horizon]), `min_balance` (the lowest end-of-day
  balance over that window) and `days_to_shortfall` (days from the cut-off to the first day below zero; NaN when none).

Output of every engine: one row per customer, cut-off and horizon with the columns of FORECAST_COLUMNS.
"""
from __future__ import annotations

HORIZONS: tuple[int, ...] = (30, 60, 90)
QUANTILES: tuple[float, ...] = (0.1, 0.5, 0.9)

SERIES_COLUMNS = ["customer_id", "ds", "value"]
LABEL_COLUMNS = ["customer_id", "cutoff", "horizon_days", "is_shortfall", "min_balance", "days_to_shortfall"]
FORECAST_COLUMNS = [
    "customer_id", "cutoff", "horizon_days", "p_shortfall",
    "min_balance_p10", "min_balance_p50", "min_balance_p90", "days_to_shortfall",
]


def make_coherent(forecast: "pd.DataFrame") -> "pd.DataFrame":  # noqa: F821 (pandas imported lazily)
    """Force the shape every published forecast must have, whatever the engine: probabilities strictly inside (0, 1)
    (never closer to 0 or 1 than models.calibration.PUBLISHED_EPSILON, the precision they are published to: no
    forecast is certain; a calibrated engine's own bounds are tighter, models/calibration.py) and not falling as
    the horizon grows (a longer window contains the shorter one), minimum-balance quantiles ordered
    P10 <= P50 <= P90 and not rising with the horizon (the minimum over a longer window is never higher)."""
    import numpy as np

    from models.calibration import PUBLISHED_EPSILON

    out = forecast.sort_values(["customer_id", "cutoff", "horizon_days"], kind="stable").reset_index(drop=True)
    out["p_shortfall"] = out["p_shortfall"].clip(PUBLISHED_EPSILON, 1.0 - PUBLISHED_EPSILON)
    group = out.groupby(["customer_id", "cutoff"], sort=False)
    out["p_shortfall"] = group["p_shortfall"].cummax()
    quantiles = np.sort(out[["min_balance_p10", "min_balance_p50", "min_balance_p90"]].to_numpy(float), axis=1)
    out[["min_balance_p10", "min_balance_p50", "min_balance_p90"]] = quantiles
    for column in ("min_balance_p10", "min_balance_p50", "min_balance_p90"):
        out[column] = group[column].cummin()
    return out[FORECAST_COLUMNS]



def bound_by_known_payments(forecast: "pd.DataFrame", known: "pd.DataFrame",  # noqa: F821
                            min_probability: float, within_days: int) -> "pd.DataFrame":  # noqa: F821
    """A forecast that agrees with the payments the product already knows are due.

    `known` (models.baseline_engine.known_payment_shortfall): per customer and cut-off, the first day a known
    payment cannot be met (`unmet_day`) and the lowest balance the known flows alone reach within each horizon
    (`known_min_<h>`). For every horizon that reaches `unmet_day`, the expected days to the shortfall are never more
    than `unmet_day`: the shortfall cannot come after the payment that causes it. When that payment is due within
    `within_days`, the shortfall is all but certain (money nobody expects would have to arrive first), so at every
    horizon the probability is at least `min_probability` and the P10 and P50 of the minimum balance are no higher
    than `known_min_<h>` (any other spending only lowers it; P90 is left alone). Other rows are unchanged. Returns
    FORECAST_COLUMNS plus `unmet_day` (NaN where no known payment bounds the row), made coherent again."""
    import numpy as np

    out = forecast.merge(known, on=["customer_id", "cutoff"], how="left", validate="many_to_one")
    horizon = out["horizon_days"].to_numpy(float)
    unmet = out["unmet_day"].to_numpy(float)
    hit = np.isfinite(unmet) & (unmet <= horizon)
    near = hit & (unmet <= float(within_days))
    floor = np.full(len(out), np.nan)
    for h in np.unique(horizon.astype(int)):
        column = f"known_min_{h}"
        if column in out:
            rows = horizon == h
            floor[rows] = out.loc[rows, column].to_numpy(float)
    days = out["days_to_shortfall"].to_numpy(float)
    out["days_to_shortfall"] = np.where(hit, np.fmin(days, unmet), days)
    p = out["p_shortfall"].to_numpy(float)
    out["p_shortfall"] = np.where(near, np.fmax(p, float(min_probability)), p)
    for column in ("min_balance_p10", "min_balance_p50"):
        values = out[column].to_numpy(float)
        out[column] = np.where(near & np.isfinite(floor), np.fmin(values, floor), values)
    marks = out[["customer_id", "cutoff", "horizon_days"]].assign(unmet_day=np.where(hit, unmet, np.nan))
    coherent = make_coherent(out[FORECAST_COLUMNS])
    return coherent.merge(marks, on=["customer_id", "cutoff", "horizon_days"], how="left", validate="one_to_one")
