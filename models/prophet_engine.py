"""Prophet cash-shortfall engine: one Prophet model per customer, shortfall risk read off simulated sample paths.

Why sample paths: the chance of a shortfall within H days is a property of the path minimum over days 1..H, not
of the daily marginal forecasts, so we draw whole future paths with `Prophet.predictive_samples` and summarise
their minima. Output follows `models.contract` (FORECAST_COLUMNS, one row per customer x horizon).

Naive fallback: a customer whose history is too short (< MIN_HISTORY_DAYS), constant, all-NaN, or whose fit raises
is not dropped; it gets a persistence forecast (the last balance held flat: every quantile = last value,
p_shortfall = 1.0 if the last value < 0 else 0.0, days_to_shortfall = 1 if already negative else NaN). Those
customers are logged and listed in `result.attrs["fallback_customers"]`.
"""
from __future__ import annotations

import logging
import tempfile
import zlib
from concurrent.futures import ProcessPoolExecutor
from functools import partial
from typing import Any, Sequence

import numpy as np
import pandas as pd

from models.contract import FORECAST_COLUMNS, HORIZONS, make_coherent

logger = logging.getLogger(__name__)

MIN_HISTORY_DAYS = 14
YEARLY_MIN_DAYS = 730  # yearly seasonality only with >= 2 years of history, else it just fits noise
_QUANTILE_COLUMNS = ("min_balance_p10", "min_balance_p50", "min_balance_p90")


def _silence() -> None:
    """Keep cmdstanpy/prophet INFO chatter (two lines per fit) out of the logs; it also costs time."""
    from cmdstanpy.utils import get_logger  # installs cmdstanpy's handler now, so its level reset can't undo ours

    get_logger().setLevel(logging.WARNING)
    logging.getLogger("prophet").setLevel(logging.WARNING)
    logging.getLogger("prophet.plot").setLevel(logging.CRITICAL)  # "plotly failed": irrelevant, we never plot


def customer_seed(seed: int, customer_id: str) -> int:
    """A stable per-customer seed (crc32, not Python's salted hash()) so runs repeat across processes."""
    return zlib.crc32(f"{seed}:{customer_id}".encode("utf-8"))


def _naive(values: np.ndarray, horizons: Sequence[int], reason: str) -> dict[str, Any]:
    """Persistence forecast: the last known balance held flat over every horizon."""
    finite = values[np.isfinite(values)]
    last = float(finite[-1]) if finite.size else float("nan")
    if np.isnan(last):
        p, days = float("nan"), float("nan")
    else:
        p, days = (1.0, 1.0) if last < 0 else (0.0, float("nan"))
    n = len(horizons)
    return {
        "method": "naive", "reason": reason, "horizon_days": [int(h) for h in horizons],
        "p_shortfall": [p] * n, "min_balance_p10": [last] * n, "min_balance_p50": [last] * n,
        "min_balance_p90": [last] * n, "days_to_shortfall": [days] * n,
    }


def summarise_paths(paths: np.ndarray, horizons: Sequence[int]) -> dict[str, list[float]]:
    """Shortfall statistics from sample paths shaped (n_days, n_samples), row 0 = the day after the cut-off."""
    below = paths < 0
    any_below = below.any(axis=0)
    first_day = np.where(any_below, below.argmax(axis=0) + 1, np.iinfo(np.int64).max)  # 1-based first day < 0
    out: dict[str, list[float]] = {k: [] for k in ("p_shortfall", *_QUANTILE_COLUMNS, "days_to_shortfall")}
    for h in horizons:
        minima = paths[:h].min(axis=0)
        hit = first_day <= h
        out["p_shortfall"].append(float(hit.mean()))
        for column, q in zip(_QUANTILE_COLUMNS, np.quantile(minima, (0.1, 0.5, 0.9))):
            out[column].append(float(q))
        out["days_to_shortfall"].append(float(first_day[hit].mean()) if hit.any() else float("nan"))
    return out


def fit_predict_one(
    ds: np.ndarray, values: np.ndarray, horizons: Sequence[int] = HORIZONS, n_samples: int = 200, rng_seed: int = 0,
) -> dict[str, Any]:
    """Fit one Prophet model to one customer's daily balances and summarise `n_samples` future paths.

    `ds`/`values` are the (already windowed) history ending at the cut-off. Returns a dict with `method`
    ("prophet" or "naive"), `reason` (why naive, else None) and, per horizon in order, the lists `horizon_days`,
    `p_shortfall`, `min_balance_p10/p50/p90` and `days_to_shortfall`. Numpy's global RNG (which Prophet samples
    from) is seeded with `rng_seed` and restored afterwards.
    """
    _silence()
    horizons = [int(h) for h in horizons]
    y = pd.Series(np.asarray(values, dtype=float)).ffill().bfill().to_numpy()
    if len(y) < MIN_HISTORY_DAYS:
        return _naive(y, horizons, f"history of {len(y)} days < {MIN_HISTORY_DAYS}")
    if not np.isfinite(y).all():
        return _naive(y, horizons, "no finite values")
    if np.ptp(y) == 0:
        return _naive(y, horizons, "constant series")

    from prophet import Prophet  # imported lazily: heavy, and only needed by the workers that fit

    frame = pd.DataFrame({"ds": pd.to_datetime(np.asarray(ds)), "y": y})
    span_days = (frame["ds"].iloc[-1] - frame["ds"].iloc[0]).days + 1
    model = Prophet(
        growth="linear", yearly_seasonality=span_days >= YEARLY_MIN_DAYS, weekly_seasonality=True,
        daily_seasonality=False, mcmc_samples=0, uncertainty_samples=n_samples,
    )
    model.add_seasonality(name="monthly", period=30.5, fourier_order=5)  # paydays and rent are monthly
    state = np.random.get_state()
    try:
        np.random.seed(rng_seed)
        # MAP with LBFGS (Prophet falls back to Newton if it fails). cmdstanpy's CSV output goes to a directory we
        # delete at once: by default it piles up under one temp dir until the process exits (GBs per million fits).
        with tempfile.TemporaryDirectory(prefix="prophet-fit-") as output_dir:
            model.fit(frame, algorithm="LBFGS", seed=rng_seed, output_dir=output_dir)
        future = model.make_future_dataframe(periods=max(horizons), freq="D", include_history=False)
        paths = model.predictive_samples(future)["yhat"]  # (max(horizons), n_samples)
    finally:
        np.random.set_state(state)
    return {"method": "prophet", "reason": None, "horizon_days": horizons, **summarise_paths(paths, horizons)}


def _fit_chunk(
    chunk: list[tuple[str, np.ndarray, np.ndarray]], horizons: Sequence[int], n_samples: int, seed: int,
) -> list[tuple[str, dict[str, Any]]]:
    """Worker body: fit every customer of a chunk; a failing fit falls back to naive and is logged, never raised."""
    _silence()
    results = []
    for customer_id, ds, values in chunk:
        try:
            result = fit_predict_one(ds, values, horizons, n_samples, customer_seed(seed, customer_id))
        except Exception as error:  # one bad customer must not sink the night's run
            logger.warning("prophet fit failed for customer %s, naive fallback: %r", customer_id, error)
            result = _naive(np.asarray(values, dtype=float), horizons, f"fit failed: {error!r}")
        results.append((customer_id, result))
    return results


def _prepare(series: pd.DataFrame, cutoffs: pd.DataFrame | None, history_days: int) -> pd.DataFrame:
    """Apply optional per-customer cut-offs, then keep the last `history_days` days before each cut-off."""
    frame = series[["customer_id", "ds", "value"]]
    if cutoffs is not None:
        frame = frame.merge(cutoffs[["customer_id", "cutoff"]], on="customer_id", how="inner")
        frame = frame[frame["ds"] <= frame["cutoff"]].drop(columns="cutoff")
    frame = frame.sort_values(["customer_id", "ds"], kind="stable")
    last = frame.groupby("customer_id", sort=False)["ds"].transform("max")
    return frame[frame["ds"] > last - pd.Timedelta(days=history_days)].reset_index(drop=True)


def forecast_prophet(
    series: pd.DataFrame,
    cutoffs: pd.DataFrame | None = None,
    horizons: Sequence[int] = HORIZONS,
    n_samples: int = 200,
    history_days: int = 365,
    processes: int = 2,
    seed: int = 0,
) -> pd.DataFrame:
    """Shortfall forecast (FORECAST_COLUMNS, one row per customer x horizon) from per-customer Prophet fits.

    `series` is the contract's long frame (customer_id, ds, value); a customer's cut-off is its last `ds`, after
    truncating to `cutoffs` (customer_id, cutoff) when given: then only the customers listed there are forecast,
    and one with no data on or before its cut-off gets NaN rows. Customers are fitted in chunks on a
    ProcessPoolExecutor of `processes` workers (1 = inline). Deterministic for a given `seed`, whatever
    `processes`. Customers that got the naive fallback are listed in `attrs["fallback_customers"]`.
    """
    _silence()
    horizons = sorted(int(h) for h in horizons)
    frame = _prepare(series, cutoffs, history_days)
    if cutoffs is not None:  # a customer with a cut-off but no data on or before it still gets (NaN) rows
        missing = set(cutoffs["customer_id"]) - set(frame["customer_id"])
    else:
        missing = set()
    items: list[tuple[str, np.ndarray, np.ndarray]] = []
    cutoff_of: dict[str, Any] = {}
    for customer_id, group in frame.groupby("customer_id", sort=True):
        items.append((customer_id, group["ds"].to_numpy(), group["value"].to_numpy(dtype=float)))
        cutoff_of[customer_id] = group["ds"].iloc[-1]
    for customer_id in sorted(missing):
        cutoff_of[customer_id] = cutoffs.loc[cutoffs["customer_id"] == customer_id, "cutoff"].iloc[0]
        items.append((customer_id, np.array([], dtype="datetime64[D]"), np.array([], dtype=float)))

    results: list[tuple[str, dict[str, Any]]] = []
    if processes <= 1 or len(items) <= 1:
        results = _fit_chunk(items, horizons, n_samples, seed)
    else:
        n_chunks = min(len(items), processes * 4)  # several chunks per worker to even out slow fits
        chunks = [items[i::n_chunks] for i in range(n_chunks)]
        with ProcessPoolExecutor(max_workers=processes) as pool:
            work = partial(_fit_chunk, horizons=horizons, n_samples=n_samples, seed=seed)
            for part in pool.map(work, chunks):
                results.extend(part)

    rows = []
    fallback: dict[str, str] = {}
    for customer_id, result in results:
        if result["method"] != "prophet":
            fallback[customer_id] = result["reason"]
        for i, h in enumerate(result["horizon_days"]):
            rows.append({
                "customer_id": customer_id, "cutoff": cutoff_of[customer_id], "horizon_days": h,
                **{c: result[c][i] for c in ("p_shortfall", *_QUANTILE_COLUMNS, "days_to_shortfall")},
            })
    if fallback:
        logger.info("naive fallback for %d customers: %s", len(fallback), fallback)
    out = pd.DataFrame(rows, columns=FORECAST_COLUMNS)
    if len(out):
        out["cutoff"] = out["cutoff"].astype(series["ds"].dtype)
    out["horizon_days"] = out["horizon_days"].astype("int64")
    out = make_coherent(out)
    out.attrs["fallback_customers"] = dict(sorted(fallback.items()))
    return out
