"""The `baseline` engine: what a bank's rules engine would do.

Project today's balance forward with the customer's recurring streams on their expected dates (incomes in, bills
out), the average daily flexible spend (spend on no stream) and the average daily unscheduled income (income on no
stream: a salary the history is too short to see as a stream yet, or one paid irregularly; without it a bank with a
month or two of history would see every salary as missing and project everyone's balance down), then treat the
flexible spend as noise with its own daily standard deviation (a random walk: the spread after t days is
sigma * sqrt(t)). For each horizon:
- P50/P10/P90 of the minimum balance: the lowest point of the projected path shifted by the quantile's z-score times
  sigma * sqrt(t);
- p_shortfall: the largest single-day probability of being below zero along the path (a lower bound on the chance
  that the path goes below zero at some point: simple and honest, not a model of the path's minimum);
- days_to_shortfall: the first day the projected path itself is below zero (NaN when it stays above).
No training, no fitting: every number follows from the features and the streams.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
from scipy.special import ndtr

from models.contract import FORECAST_COLUMNS, HORIZONS, make_coherent

Z = {0.1: -1.2815515655446004, 0.5: 0.0, 0.9: 1.2815515655446004}
REQUIRED_FEATURES = ("balance_now", "flexible_spend_90", "unscheduled_income_90", "flexible_spend_std_30",
                     "history_days")
STREAM_COLUMNS = ("customer_id", "cutoff", "direction", "cadence", "cadence_days", "amount", "next_expected_date",
                  "lifecycle")
MONTHS = {"monthly": 1, "quarterly": 3, "yearly": 12}


def add_months(days: np.ndarray, months: np.ndarray) -> np.ndarray:
    """Calendar month arithmetic on datetime64[D] arrays: the same day of the month, or the month's last day."""
    month = days.astype("datetime64[M]")
    day_of_month = (days - month.astype("datetime64[D]")).astype(np.int64)
    target = month + months.astype(np.int64)
    month_length = ((target + 1).astype("datetime64[D]") - target.astype("datetime64[D]")).astype(np.int64)
    return target.astype("datetime64[D]") + np.minimum(day_of_month, month_length - 1)


def stream_occurrences(streams: pd.DataFrame, max_horizon: int = max(HORIZONS)) -> pd.DataFrame:
    """Expected postings of the active (not stopped) streams over the next `max_horizon` days: customer_id,
    cutoff, day (1..max_horizon, days after the cut-off), amount. An overdue payment is expected tomorrow."""
    active = streams.loc[streams["lifecycle"] != "stopped", list(STREAM_COLUMNS)].reset_index(drop=True)
    cutoff = pd.to_datetime(active["cutoff"]).to_numpy().astype("datetime64[D]")
    first = pd.to_datetime(active["next_expected_date"]).to_numpy().astype("datetime64[D]")
    months = active["cadence"].map(MONTHS).fillna(0).to_numpy(np.int64)
    cadence_days = active["cadence_days"].to_numpy(np.int64)
    parts = []
    for k in range(max_horizon // 7 + 2):
        when = np.where(months > 0, add_months(first, months * k), first + cadence_days * k)
        day = (when - cutoff).astype(np.int64)
        if k == 0:
            day = np.maximum(day, 1)
        keep = (day >= 1) & (day <= max_horizon)
        if k > 0 and not keep.any():
            break
        parts.append(pd.DataFrame({"customer_id": active["customer_id"].to_numpy()[keep],
                                   "cutoff": cutoff[keep].astype("datetime64[ns]"), "day": day[keep],
                                   "amount": active["amount"].to_numpy(float)[keep]}))
    if not parts:
        return pd.DataFrame({"customer_id": pd.Series(dtype=str), "cutoff": pd.Series(dtype="datetime64[ns]"),
                             "day": pd.Series(dtype="int64"), "amount": pd.Series(dtype=float)})
    return pd.concat(parts, ignore_index=True)


def recurring_flows(features: pd.DataFrame, streams: pd.DataFrame, max_horizon: int = max(HORIZONS)
                    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per row of `features` (customer_id, cutoff) and day 1..max_horizon: the net flow of the expected postings of
    its active recurring streams, the outgoing part of it alone (the bills due that day, <= 0) and how many bills
    fall due that day."""
    n = len(features)
    keys = pd.MultiIndex.from_arrays([features["customer_id"].to_numpy(), pd.to_datetime(features["cutoff"])])
    recurring = np.zeros((n, max_horizon))
    outgoing = np.zeros((n, max_horizon))
    n_bills = np.zeros((n, max_horizon), dtype=np.int32)
    occurrences = stream_occurrences(streams, max_horizon)
    if not occurrences.empty:
        rows = keys.get_indexer(pd.MultiIndex.from_arrays([occurrences["customer_id"].to_numpy(),
                                                           pd.to_datetime(occurrences["cutoff"])]))
        found = rows >= 0
        amount = occurrences["amount"].to_numpy(float)
        at = (rows[found], occurrences["day"].to_numpy()[found] - 1)
        np.add.at(recurring, at, amount[found])
        np.add.at(outgoing, at, np.minimum(amount[found], 0.0))
        np.add.at(n_bills, at, (amount[found] < 0).astype(np.int32))
    return recurring, outgoing, n_bills


def projected_paths(features: pd.DataFrame, streams: pd.DataFrame, max_horizon: int = max(HORIZONS)
                    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The projected balance path (rows x days), the recurring net flow per day, and sigma per row."""
    missing = [c for c in REQUIRED_FEATURES if c not in features]
    if missing:
        raise ValueError(f"baseline engine: features lack {missing}")
    recurring, _, _ = recurring_flows(features, streams, max_horizon)
    observed_days = np.clip(features["history_days"].to_numpy(float), 1, 90)
    flexible_daily = (np.nan_to_num(features["flexible_spend_90"].to_numpy(float))
                      - np.nan_to_num(features["unscheduled_income_90"].to_numpy(float))) / observed_days
    sigma = np.maximum(np.nan_to_num(features["flexible_spend_std_30"].to_numpy(float)), 1.0)
    days = np.arange(1, max_horizon + 1)
    path = (np.nan_to_num(features["balance_now"].to_numpy(float))[:, None]
            + np.cumsum(recurring, axis=1) - flexible_daily[:, None] * days[None, :])
    return path, recurring, sigma


def known_payment_shortfall(features: pd.DataFrame, streams: pd.DataFrame, horizons=HORIZONS) -> pd.DataFrame:
    """The first known payment the balance cannot meet, per row of `features` (customer_id, cutoff, balance_now).

    The balance is projected with what is known for sure: today's balance plus the expected postings of the active
    recurring streams (incomes in, bills out on their expected dates), and no other spending at all. `unmet_day` is
    the first day (1..max horizon) on which a payment falls due and leaves that projection below zero (NaN when
    none does), `unmet_amount` the payments due that day (positive), `unmet_payments` how many they are,
    `unmet_balance` the projected balance after them; `known_min_<h>` is the lowest point of the projection over h
    days. Any other spending only lowers the balance further, so a shortfall comes on `unmet_day` at the latest
    unless money nobody expects arrives first. A row without a balance today gets NaN (no unmet day)."""
    max_horizon = max(horizons)
    recurring, outgoing, n_bills = recurring_flows(features, streams, max_horizon)
    balance = features["balance_now"].to_numpy(float)
    path = balance[:, None] + np.cumsum(recurring, axis=1)
    unmet = (path < 0) & (outgoing < 0) & np.isfinite(balance)[:, None]
    has = unmet.any(axis=1)
    first = unmet.argmax(axis=1)
    rows = np.arange(len(features))
    out = pd.DataFrame({"customer_id": features["customer_id"].to_numpy(),
                        "cutoff": pd.to_datetime(features["cutoff"]).to_numpy(),
                        "unmet_day": np.where(has, first + 1.0, np.nan),
                        "unmet_amount": np.where(has, -outgoing[rows, first], np.nan),
                        "unmet_payments": np.where(has, n_bills[rows, first], 0),
                        "unmet_balance": np.where(has, path[rows, first], np.nan)})
    for horizon in horizons:
        out[f"known_min_{horizon}"] = np.where(np.isfinite(balance), path[:, :horizon].min(axis=1), np.nan)
    return out


def forecast_baseline(features: pd.DataFrame, streams: pd.DataFrame, horizons=HORIZONS,
                      chunk_rows: int = 100_000) -> pd.DataFrame:
    """Forecast every (customer, cut-off) row of `features` from its streams: FORECAST_COLUMNS."""
    outputs = []
    for start in range(0, len(features), chunk_rows):
        chunk = features.iloc[start:start + chunk_rows].reset_index(drop=True)
        keys = chunk[["customer_id", "cutoff"]]
        chunk_streams = streams.merge(keys, on=["customer_id", "cutoff"], how="inner") if len(streams) else streams
        outputs.append(_forecast_chunk(chunk, chunk_streams, horizons))
    if not outputs:
        return pd.DataFrame(columns=FORECAST_COLUMNS)
    return make_coherent(pd.concat(outputs, ignore_index=True))


def _forecast_chunk(features: pd.DataFrame, streams: pd.DataFrame, horizons) -> pd.DataFrame:
    max_horizon = max(horizons)
    path, _, sigma = projected_paths(features, streams, max_horizon)
    spread = sigma[:, None] * np.sqrt(np.arange(1, max_horizon + 1))[None, :]
    below = path < 0
    first_below = np.where(below.any(axis=1), below.argmax(axis=1) + 1.0, np.nan)
    day_probability = ndtr(-path / spread)
    frames = []
    for horizon in horizons:
        window = slice(0, horizon)
        frames.append(pd.DataFrame({
            "customer_id": features["customer_id"].to_numpy(),
            "cutoff": pd.to_datetime(features["cutoff"]).to_numpy(),
            "horizon_days": horizon,
            "p_shortfall": day_probability[:, window].max(axis=1),
            "min_balance_p10": (path[:, window] + Z[0.1] * spread[:, window]).min(axis=1),
            "min_balance_p50": path[:, window].min(axis=1),
            "min_balance_p90": (path[:, window] + Z[0.9] * spread[:, window]).min(axis=1),
            "days_to_shortfall": np.where(first_below <= horizon, first_below, np.nan),
        }))
    return pd.concat(frames, ignore_index=True)[FORECAST_COLUMNS]


def baseline_features(features: pd.DataFrame, streams: pd.DataFrame, horizons=HORIZONS) -> pd.DataFrame:
    """The baseline's projection as inputs for the global engine: per horizon, the recurring net flow expected,
    the baseline's probability and its projected minimum balance."""
    path, recurring, _ = projected_paths(features, streams, max(horizons))
    forecast = forecast_baseline(features, streams, horizons)
    out = features[["customer_id", "cutoff"]].copy()
    out["cutoff"] = pd.to_datetime(out["cutoff"])
    for horizon in horizons:
        out[f"projected_recurring_net_{horizon}"] = recurring[:, :horizon].sum(axis=1)
        out[f"baseline_min_{horizon}"] = path[:, :horizon].min(axis=1)
        part = forecast.loc[forecast["horizon_days"] == horizon, ["customer_id", "cutoff", "p_shortfall"]]
        out = out.merge(part.rename(columns={"p_shortfall": f"baseline_p_{horizon}"}), on=["customer_id", "cutoff"],
                        how="left")
    return out


BASELINE_FORMAT_VERSION = 1
ENGINE_FILE = "engine.json"


class BaselineEngine:
    """The baseline as a registry model, for a bank whose global engine cannot be trained yet or does worse than the
    baseline on held-out data (DESIGN principle 6): nothing is fitted, so `save` records only what it forecasts and
    `predict` needs the recurring streams beside the features."""

    engine = "baseline"

    def __init__(self, horizons=HORIZONS) -> None:
        self.horizons = tuple(int(h) for h in horizons)
        self.notes: list[str] = []

    def predict(self, features: pd.DataFrame, streams: pd.DataFrame) -> pd.DataFrame:
        return forecast_baseline(features, streams, self.horizons)

    def save(self, directory) -> None:
        import json
        from pathlib import Path

        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        meta = {"engine": self.engine, "format_version": BASELINE_FORMAT_VERSION, "horizons": list(self.horizons),
                "notes": self.notes}
        (directory / ENGINE_FILE).write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n", encoding="utf-8")

    @classmethod
    def load(cls, directory) -> "BaselineEngine":
        import json
        from pathlib import Path

        meta = json.loads((Path(directory) / ENGINE_FILE).read_text(encoding="utf-8"))
        if meta.get("engine") != cls.engine or meta.get("format_version") != BASELINE_FORMAT_VERSION:
            raise ValueError(f"{Path(directory) / ENGINE_FILE}: not a baseline engine of format_version "
                             f"{BASELINE_FORMAT_VERSION} (engine {meta.get('engine')!r}, format_version "
                             f"{meta.get('format_version')!r})")
        engine = cls(meta["horizons"])
        engine.notes = list(meta.get("notes", []))
        return engine
