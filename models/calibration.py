"""Probability calibration without scikit-learn: isotonic regression by pool-adjacent-violators (PAV).

A raw engine score can rank customers well and still be a poor probability; isotonic calibration maps it to
the observed shortfall rate with the only assumption that the mapping does not decrease.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from models.metrics import ArrayLike, _aligned, _as_float


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


class IsotonicCalibrator:
    """Non-decreasing map from a raw probability to a calibrated one.

    fit: rows with NaN are dropped, p is sorted ascending and tied p values are pooled first (one point per
    distinct p with weight = its count and value = its observed rate), then weighted PAV merges adjacent blocks
    until the block rates are non-decreasing. Each block is represented by its centre (the count-weighted mean
    of its p values) and its rate.

    predict: piecewise-linear interpolation between block centres (np.interp), flat beyond the first and last
    centre, clipped to [0, 1]; NaN in gives NaN out. Linear interpolation rather than steps keeps the map
    strictly informative between blocks, so two customers in neighbouring blocks are not forced to ties.

    Guard: when the fitted labels hold fewer than 2 distinct classes (or no row at all), there is nothing to
    learn and the calibrator is the identity on [0, 1] (stored as centres [0, 1] -> values [0, 1], so predict
    returns clip(p, 0, 1)); `identity` is True then. Fitting never raises on such data.

    Everything is deterministic: no randomness, stable sorts.
    """

    def __init__(self) -> None:
        self.centres_: np.ndarray | None = None
        self.values_: np.ndarray | None = None
        self.weights_: np.ndarray | None = None
        self.identity: bool = False

    def fit(self, p: ArrayLike, y: ArrayLike) -> IsotonicCalibrator:
        """Learn the map from raw probabilities p to 0/1 outcomes y. Returns self."""
        x, target = _aligned(p, y)
        if not np.all((target == 0.0) | (target == 1.0)):
            raise ValueError("labels must be 0 or 1")
        if np.unique(target).size < 2:
            return self._set(np.array([0.0, 1.0]), np.array([0.0, 1.0]), np.array([0.0, 0.0]), identity=True)
        distinct, inverse, counts = np.unique(x, return_inverse=True, return_counts=True)
        rates = np.bincount(inverse, weights=target) / counts
        centres, values, weights = _pool_adjacent_violators(distinct, rates, counts.astype(float))
        return self._set(centres, values, weights, identity=False)

    def _set(self, centres: np.ndarray, values: np.ndarray, weights: np.ndarray, identity: bool) -> IsotonicCalibrator:
        self.centres_, self.values_, self.weights_ = centres, values, weights
        self.identity = identity
        return self

    def predict(self, p: ArrayLike) -> np.ndarray:
        """Calibrated probabilities for raw probabilities p (float array, same length; NaN stays NaN)."""
        if self.centres_ is None or self.values_ is None:
            raise RuntimeError("IsotonicCalibrator is not fitted")
        x = _as_float(p)
        return np.clip(np.interp(x, self.centres_, self.values_), 0.0, 1.0)

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
        )

