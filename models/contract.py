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
    """Force the shape every published forecast must have, whatever the engine: probabilities in [0, 1] and not
    falling as the horizon grows (a longer window contains the shorter one), minimum-balance quantiles ordered
    P10 <= P50 <= P90 and not rising with the horizon (the minimum over a longer window is never higher)."""
    import numpy as np

    out = forecast.sort_values(["customer_id", "cutoff", "horizon_days"], kind="stable").reset_index(drop=True)
    out["p_shortfall"] = out["p_shortfall"].clip(0.0, 1.0)
    group = out.groupby(["customer_id", "cutoff"], sort=False)
    out["p_shortfall"] = group["p_shortfall"].cummax()
    quantiles = np.sort(out[["min_balance_p10", "min_balance_p50", "min_balance_p90"]].to_numpy(float), axis=1)
    out[["min_balance_p10", "min_balance_p50", "min_balance_p90"]] = quantiles
    for column in ("min_balance_p10", "min_balance_p50", "min_balance_p90"):
        out[column] = group[column].cummin()
    return out[FORECAST_COLUMNS]
