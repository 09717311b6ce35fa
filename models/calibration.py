"""Probability calibration without scikit-learn: isotonic regression by pool-adjacent-violators (PAV).

A raw engine score can rank customers well and still be a poor probability; isotonic calibration maps it to
the observed shortfall rate with the only assumption that the mapping does not decrease.

Never 0 or 1 (docs/forecasting.md, "Calibration"): a probability of exactly 0 or 1 is never true of a model's
forecast. n calibration rows support no probability more extreme than the rate of a block of all n rows with no
event (or only events) estimated as any block is here, (k + 1/2) / (n + 1) (the Krichevsky-Trofimov estimate, the
posterior mean of a rate under the Jeffreys prior): `bounds(n)`. Every calibrator keeps its output inside them:
isotonic blocks are each estimated that way (a top block of 5 rows, all events, is 5.5/6 = 0.92, not 1; a bottom
block of 2,000 rows without one is 0.00025, not 0), the other maps are clipped to the bounds of their rows; never
beyond PUBLISHED_EPSILON, the precision of a published probability (six decimals).
"""
from __future__ import annotations

from typing import Any

import numpy as np

from models.metrics import ArrayLike, _aligned, _as_float


# the smallest probability a published table can hold (probabilities are published to six decimals)
PUBLISHED_EPSILON = 1e-6


def bounds(n: float) -> tuple[float, float]:
    """The most extreme probabilities `n` calibration rows support: 0.5 / (n + 1) and 1 - 0.5 / (n + 1), the estimate
    (k + 1/2) / (n + 1) of a rate with no event (k = 0) or only events (k = n) in n rows; no rows: nothing is known
    of the bound and only PUBLISHED_EPSILON applies. Never closer to 0 or 1 than PUBLISHED_EPSILON."""
    low = 0.5 / (float(n) + 1.0) if n and np.isfinite(n) and n > 0 else 0.0
    low = max(low, PUBLISHED_EPSILON)
    return low, 1.0 - low


def inside(p: ArrayLike, n: float = 0.0) -> np.ndarray:
    """Probabilities moved inside `bounds(n)` (NaN stays NaN)."""
    low, high = bounds(n)
    return np.clip(np.asarray(p, dtype=float), low, high)


def _pool_adjacent_violators(
    x: np.ndarray, y: np.ndarray, w: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Weighted PAV on points already sorted by x with distinct x. Returns per block the weighted centre of x,
    the pooled value (weighted mean of y) and the total weight; the values are non-decreasing."""
    centres: list[float] = []
    values: list[float] = []
    weights: list[float] = []
    for xi, yi, wi in zip(x, y, w):
        centres.append(float(xi) * wi)  # weighted sum of x, divided out at the end
        values.append(float(yi))
        weights.append(float(wi))
        # Merge backwards while the new block breaks monotonicity.
        while len(values) > 1 and values[-2] > values[-1]:
            w_new = weights[-2] + weights[-1]
            v_new = (values[-2] * weights[-2] + values[-1] * weights[-1]) / w_new
            c_new = centres[-2] + centres[-1]
            del centres[-1], values[-1], weights[-1]
            centres[-1], values[-1], weights[-1] = c_new, v_new, w_new
    weight_arr = np.asarray(weights, dtype=float)
    return np.asarray(centres) / weight_arr, np.asarray(values, dtype=float), weight_arr


def _shrunk_blocks(centres: np.ndarray, rates: np.ndarray, counts: np.ndarray
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """PAV blocks (count-weighted centre, rate, count) with the rate of each level set (the run of adjacent blocks
    of one rate: PAV leaves a run of scores without an event as many blocks of rate 0) estimated as (k + 1/2) / (n + 1)
    for its k events in n rows, level sets pooled again (weighted by n + 1, the estimate's own denominator) wherever
    that put two out of order. The blocks keep their centres and counts (the map's breakpoints), each with its level
    set's value, in (0, 1)."""
    sets: list[list[float]] = []                       # [events, rows, blocks] per level set
    for i, (r, n) in enumerate(zip(rates, counts)):
        if sets and rates[i - 1] == r:
            sets[-1][0] += float(r) * float(n)
            sets[-1][1] += float(n)
            sets[-1][2] += 1
        else:
            sets.append([float(r) * float(n), float(n), 1])
    pooled: list[list[float]] = []                     # [value, events, rows, blocks]
    for k, n, b in sets:
        pooled.append([(k + 0.5) / (n + 1.0), k, n, b])
        while len(pooled) > 1 and pooled[-2][0] > pooled[-1][0]:
            (v1, k1, n1, b1), (v2, k2, n2, b2) = pooled[-2], pooled[-1]
            pooled[-2] = [(v1 * (n1 + 1.0) + v2 * (n2 + 1.0)) / (n1 + n2 + 2.0), k1 + k2, n1 + n2, b1 + b2]
            del pooled[-1]
    values = np.repeat([v for v, _, _, _ in pooled], [int(b) for _, _, _, b in pooled])
    return np.asarray(centres, dtype=float), values.astype(float), np.asarray(counts, dtype=float)


class IsotonicCalibrator:
    """Non-decreasing map from a raw probability to a calibrated one.

    fit: rows with NaN are dropped, p is sorted ascending and tied p values are pooled first (one point per
    distinct p with weight = its count and value = its observed rate), then weighted PAV merges adjacent blocks
    until the block rates are non-decreasing. Each block is represented by its centre (the count-weighted mean
    of its p values) and its rate.

    Each block's value is then its rate estimated as (k + 1/2) / (n + 1) (k events in n rows: module docstring),
    never 0 or 1; blocks that this puts out of order (a small block of no event above a large one with a few) are
    pooled again by PAV, weighted by n + 1.

    predict: piecewise-linear interpolation between block centres (np.interp), flat beyond the first and last
    centre, inside `bounds(n)` for the n calibration rows; NaN in gives NaN out. Linear interpolation rather than steps keeps the map
    strictly informative between blocks, so two customers in neighbouring blocks are not forced to ties.

    Guard: when the fitted labels hold fewer than 2 distinct classes (or no row at all), there is nothing to
    learn and the calibrator is the identity on [0, 1] (stored as centres [0, 1] -> values [0, 1], so predict
    returns p, no closer to 0 or 1 than PUBLISHED_EPSILON); `identity` is True then. Fitting never raises on such data.

    Everything is deterministic: no randomness, stable sorts.
    """

    def __init__(self) -> None:
        self.centres_: np.ndarray | None = None
        self.values_: np.ndarray | None = None
        self.weights_: np.ndarray | None = None
        self.identity: bool = False
        self.n_rows: float = 0.0

    def fit(self, p: ArrayLike, y: ArrayLike) -> IsotonicCalibrator:
        """Learn the map from raw probabilities p to 0/1 outcomes y. Returns self."""
        x, target = _aligned(p, y)
        if not np.all((target == 0.0) | (target == 1.0)):
            raise ValueError("labels must be 0 or 1")
        if np.unique(target).size < 2:
            # nothing learnt, no bound learnt either: the raw scores inside PUBLISHED_EPSILON only
            return self._set(np.array([0.0, 1.0]), np.array([0.0, 1.0]), np.array([0.0, 0.0]), identity=True,
                             n_rows=0.0)
        distinct, inverse, counts = np.unique(x, return_inverse=True, return_counts=True)
        rates = np.bincount(inverse, weights=target) / counts
        centres, values, weights = _pool_adjacent_violators(distinct, rates, counts.astype(float))
        centres, values, weights = _shrunk_blocks(centres, values, weights)
        return self._set(centres, values, weights, identity=False, n_rows=float(len(target)))

    def _set(self, centres: np.ndarray, values: np.ndarray, weights: np.ndarray, identity: bool,
             n_rows: float | None = None) -> IsotonicCalibrator:
        self.centres_, self.values_, self.weights_ = centres, values, weights
        self.identity = identity
        self.n_rows = float(np.sum(weights)) if n_rows is None else float(n_rows)
        return self

    def predict(self, p: ArrayLike) -> np.ndarray:
        """Calibrated probabilities for raw probabilities p (float array, same length; NaN stays NaN)."""
        if self.centres_ is None or self.values_ is None:
            raise RuntimeError("IsotonicCalibrator is not fitted")
        x = _as_float(p)
        return inside(np.interp(x, self.centres_, self.values_), self.n_rows)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready state: plain lists of floats and a flag."""
        if self.centres_ is None or self.values_ is None or self.weights_ is None:
            raise RuntimeError("IsotonicCalibrator is not fitted")
        return {
            "kind": "isotonic",
            "identity": bool(self.identity),
            "centres": [float(v) for v in self.centres_],
            "values": [float(v) for v in self.values_],
            "weights": [float(v) for v in self.weights_],
            "n_rows": float(self.n_rows),
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> IsotonicCalibrator:
        """Rebuild a calibrator saved with to_dict; predictions are identical."""
        if d.get("kind") != "isotonic":
            raise ValueError(f"not an isotonic calibrator: kind={d.get('kind')!r}")
        return cls()._set(
            np.asarray(d["centres"], dtype=float),
            np.asarray(d["values"], dtype=float),
            np.asarray(d["weights"], dtype=float),
            identity=bool(d["identity"]),
            n_rows=d.get("n_rows"),       # saved before 2026-12-07: the blocks' weights (the identity's: none)
        )



def _logit(p: np.ndarray, eps: float = 1e-6) -> np.ndarray:
    q = np.clip(np.asarray(p, dtype=float), eps, 1.0 - eps)
    return np.log(q / (1.0 - q))


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.clip(np.asarray(z, dtype=float), -35.0, 35.0)))


def _logistic_fit(z: np.ndarray, y: np.ndarray, slope: bool, iterations: int = 50,
                  ridge: float = 1e-6) -> tuple[float, float]:
    """Maximum likelihood of y ~ sigmoid(a + b z) (b fixed at 1 when not `slope`: an offset model) by Newton steps
    with a tiny ridge (both classes present is the caller's guard). Returns (a, b)."""
    a, b = 0.0, 1.0
    for _ in range(iterations):
        p = _sigmoid(a + b * z)
        w = p * (1.0 - p)
        r = y - p
        if slope:
            g = np.array([r.sum() - ridge * a, (r * z).sum() - ridge * (b - 1.0)])
            h = np.array([[w.sum() + ridge, (w * z).sum()], [(w * z).sum(), (w * z * z).sum() + ridge]])
            step = np.clip(np.linalg.solve(h, g), -5.0, 5.0)   # damped: near-separable data cannot run off
            a, b = a + float(step[0]), b + float(step[1])
        else:
            step = float(np.clip(r.sum() / (w.sum() + ridge), -5.0, 5.0))
            a += step
        if np.max(np.abs(step)) < 1e-10:
            break
    return a, b


class LogisticCalibrator:
    """Platt scaling on the logit of the raw probability: p -> sigmoid(a + b logit(p)), two parameters fitted by
    maximum likelihood. For few events: it cannot put a step at every event as isotonic regression does (a handful
    of positives then make a few blocks of high rate and spread probability mass too far), it only stretches or
    shrinks the raw scores and moves their level. b is kept >= 0 (a map that does not decrease). One class only:
    the identity (a=0, b=1), `identity` True. Its output is kept inside `bounds(n)` of its n rows (a steep map
    reaches 0 or 1 in floating point)."""

    def __init__(self) -> None:
        self.a: float | None = None
        self.b: float | None = None
        self.identity = False
        self.n_rows = 0.0

    def fit(self, p: ArrayLike, y: ArrayLike) -> "LogisticCalibrator":
        x, target = _aligned(p, y)
        if not np.all((target == 0.0) | (target == 1.0)):
            raise ValueError("labels must be 0 or 1")
        self.n_rows = float(len(target))
        if np.unique(target).size < 2:
            self.a, self.b, self.identity, self.n_rows = 0.0, 1.0, True, 0.0
            return self
        a, b = _logistic_fit(_logit(x), target, slope=True)
        if b < 0:   # a decreasing map is never a calibration: level only
            a, b = _logistic_fit(_logit(x), target, slope=False)[0], 0.0
        self.a, self.b, self.identity = a, b, False
        return self

    def predict(self, p: ArrayLike) -> np.ndarray:
        if self.a is None or self.b is None:
            raise RuntimeError("LogisticCalibrator is not fitted")
        x = _as_float(p)
        return inside(_sigmoid(self.a + self.b * _logit(x)), self.n_rows)

    def to_dict(self) -> dict[str, Any]:
        if self.a is None:
            raise RuntimeError("LogisticCalibrator is not fitted")
        return {"kind": "logistic", "identity": bool(self.identity), "a": float(self.a), "b": float(self.b),
                "n_rows": float(self.n_rows)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "LogisticCalibrator":
        if d.get("kind") != "logistic":
            raise ValueError(f"not a logistic calibrator: kind={d.get('kind')!r}")
        out = cls()
        out.a, out.b, out.identity = float(d["a"]), float(d["b"]), bool(d["identity"])
        out.n_rows = float(d.get("n_rows", 0.0))     # saved before 2026-12-07: PUBLISHED_EPSILON only
        return out


def level_shift(p: ArrayLike, y: ArrayLike) -> tuple[float, float]:
    """The shift d of the log-odds that makes the probabilities p match the event rate of outcomes y (maximum
    likelihood of y ~ sigmoid(logit(p) + d)), and its standard error (1 / sqrt of the Fisher information). (0, inf)
    when y holds one class only (a shift to 0 or 1 is no estimate)."""
    x, target = _aligned(p, y)
    if np.unique(target).size < 2:
        return 0.0, float("inf")
    z = _logit(x)
    d, _ = _logistic_fit(z, target, slope=False)
    q = _sigmoid(z + d)
    info = float((q * (1.0 - q)).sum())
    return float(d), float(1.0 / np.sqrt(info)) if info > 0 else float("inf")


def shrunk_shift(d: float, se: float) -> float:
    """A level shift shrunk toward none by how well it is measured (positive-part James-Stein: d (1 - se^2/d^2),
    0 when |d| <= se): a shift of one standard error is noise and is not followed; a shift of many is followed
    nearly in full."""
    if not np.isfinite(se) or d == 0.0:
        return 0.0
    return float(d * max(0.0, 1.0 - (se / d) ** 2))


class ShiftedCalibrator:
    """A calibration map followed by a shift of the log-odds: p -> sigmoid(logit(map(p)) + shift). The map is fitted
    on all the calibration rows; the shift moves its level to the event rate of the latest calibration cut-off (the
    most recent whose outcome had ended), shrunk by `shrunk_shift`; inside the bounds of the map's rows."""

    def __init__(self, base: Any, shift: float) -> None:
        self.base = base
        self.shift = float(shift)
        self.identity = False
        self.n_rows = float(getattr(base, "n_rows", 0.0))

    def predict(self, p: ArrayLike) -> np.ndarray:
        q = np.asarray(self.base.predict(p), dtype=float)
        if self.shift == 0.0:
            return q
        out = _sigmoid(_logit(q) + self.shift)
        return np.where(np.isnan(q), np.nan, inside(out, self.n_rows))

    def to_dict(self) -> dict[str, Any]:
        return {"kind": "shifted", "shift": self.shift, "base": self.base.to_dict()}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "ShiftedCalibrator":
        if d.get("kind") != "shifted":
            raise ValueError(f"not a shifted calibrator: kind={d.get('kind')!r}")
        return cls(calibrator_from_dict(d["base"]), float(d["shift"]))


def blend_weight(q: ArrayLike, base: ArrayLike, y: ArrayLike) -> float:
    """The weight w in [0, 1] of the out-of-sample calibrated probabilities `q` against the base rates `base` (each
    row's, from the rows it was not fitted on) that minimises the Brier score of w q + (1 - w) base on the outcomes
    `y` (least squares, closed form): 1 when the model separates the events out of sample, 0 when it does no better
    than the base rate."""
    q, base, y = (np.asarray(a, dtype=float) for a in (q, base, y))
    d = q - base
    denom = float(np.sum(d * d))
    if not np.isfinite(denom) or denom <= 0.0:
        return 0.0
    return float(np.clip(np.sum(d * (y - base)) / denom, 0.0, 1.0))


class BlendedCalibrator:
    """A calibration map shrunk toward a base rate: p -> w map(p) + (1 - w) rate, w from `blend_weight` on
    out-of-sample predictions of the map (models/event_engine.fit_calibration); inside the bounds of the map's rows."""

    def __init__(self, base: Any, weight: float, rate: float) -> None:
        self.base = base
        self.weight = float(weight)
        self.rate = float(rate)
        self.identity = False
        self.n_rows = float(getattr(base, "n_rows", 0.0))

    def predict(self, p: ArrayLike) -> np.ndarray:
        q = np.asarray(self.base.predict(p), dtype=float)
        return inside(self.weight * q + (1.0 - self.weight) * self.rate, self.n_rows)

    def to_dict(self) -> dict[str, Any]:
        return {"kind": "blended", "weight": self.weight, "rate": self.rate, "base": self.base.to_dict()}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "BlendedCalibrator":
        if d.get("kind") != "blended":
            raise ValueError(f"not a blended calibrator: kind={d.get('kind')!r}")
        return cls(calibrator_from_dict(d["base"]), float(d["weight"]), float(d["rate"]))


def calibrator_from_dict(d: dict[str, Any]) -> Any:
    """Any calibrator of this module from its to_dict."""
    kinds = {"isotonic": IsotonicCalibrator, "logistic": LogisticCalibrator, "shifted": ShiftedCalibrator,
             "blended": BlendedCalibrator}
    if d.get("kind") not in kinds:
        raise ValueError(f"unknown calibrator kind {d.get('kind')!r}")
    return kinds[d["kind"]].from_dict(d)
