"""The global engine's calibration on one bank, before and after the change of 2026-12-06 (branch calib90), on the
backtest's own plan: the test cut-offs of `segone backtest`, each horizon trained on the cut-offs whose outcome had
ended by the test cut-off (pipelines.forecast.training_cutoffs / known_labels), forecasts bounded by the known
payments (pipelines.forecast.predict), scored on every customer. The global rows of `segone backtest --engines
global,baseline` are these figures for "after"; "before" refits the classifiers the way main did until then
(forward-chaining folds that saw every earlier outcome, the last fold's classifier published), from one panel.

    SEGONE_HOME=<bank> PYTHONPATH=. python benchmarks/backtest/calibration_sweep.py <dataset name> <out.json>

Appends one row per variant and horizon to <out.json> (a list). docs/forecasting.md, "Calibration off the tuning
bank".
"""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

from models import global_engine as ge
from models import metrics
from pipelines import forecast
from pipelines.evaluation.backtest import test_cutoffs
from pipelines.config import Paths


def before_fit_classifier(self, h, X, y, cutoffs, groups):
    """main's _fit_classifier until 2026-12-06: each fold's classifier saw every earlier cut-off of every customer
    (outcome windows overlapping the fold's included); the last of them is published."""
    p = self.params
    folds = ge._calibration_cutoffs(cutoffs, p.calibration_share, p.calibration_min_folds)
    raw, outcome, classifier = [], [], None
    for fold in folds:
        before, at = cutoffs < fold, cutoffs == fold
        if len(np.unique(y[before])) < 2:
            continue
        classifier = self._train(X[before], y[before], "binary", p.n_estimators)
        raw.append(classifier.predict(X[at])), outcome.append(y[at])
    calibrator = None
    if raw and len(np.unique(np.concatenate(outcome))) == 2:
        calibrator = ge._calibrator_class()().fit(np.concatenate(raw), np.concatenate(outcome))
    else:
        classifier = self._train(X, y, "binary", p.n_estimators)
    self.classifiers[h], self.calibrators[h] = [classifier], calibrator


def main(dataset: str, out: Path) -> None:
    paths = Paths.from_env()
    cfg = forecast.settings()
    spec, training = cfg["backtest"], cfg["training"]
    start, end = forecast.data_start(paths), forecast.data_end(paths)
    plans = {}
    for c in test_cutoffs(start, end, int(spec["n_cutoffs"]), int(spec["cutoff_step_days"])):
        train = forecast.training_cutoffs(start, c, int(training["cutoff_step_days"]),
                                          int(training["min_history_days"]), int(training["window_days"]))
        if all(len(v) >= 2 for v in forecast.labelled_cutoffs(train, c).values()):
            plans[c] = train
    cutoffs = sorted(set(plans) | {c for t in plans.values() for c in t})
    panel = forecast.build_panel(paths, end, cutoffs, with_labels=True, series_until=end)
    inputs, labels = forecast.model_inputs(panel), panel.labels
    after_fit_classifier = ge.GlobalEngine._fit_classifier
    rows = []
    for variant, method in (("before", before_fit_classifier), ("after", after_fit_classifier)):
        ge.GlobalEngine._fit_classifier = method
        started, scored = time.perf_counter(), []
        for cutoff, train in plans.items():
            known = forecast.known_labels(labels[labels["cutoff"].isin(pd.to_datetime(train))], cutoff)
            engine = forecast.fit_global(inputs[inputs["cutoff"].isin(pd.to_datetime(train))].reset_index(drop=True),
                                         known.reset_index(drop=True))
            test = inputs[inputs["cutoff"] == pd.Timestamp(cutoff)].reset_index(drop=True)
            f = forecast.predict(engine, test, forecast.known_payments(panel, test)).drop(columns=["unmet_day"])
            f["cutoff"] = pd.to_datetime(f["cutoff"])
            scored.append(f.merge(labels, on=["customer_id", "cutoff", "horizon_days"], suffixes=("", "_true")))
        seconds = time.perf_counter() - started
        s = pd.concat(scored)
        for h, g in s.groupby("horizon_days"):
            y, p = g["is_shortfall"].astype(int).to_numpy(), g["p_shortfall"].to_numpy(float)
            rows.append({"dataset": dataset, "variant": variant, "horizon_days": int(h), "n_rows": int(len(y)),
                         "test_cutoffs": [c.isoformat() for c in plans], "shortfall_rate": float(y.mean()),
                         "mean_p": float(p.mean()), "calibration_error": metrics.calibration_error(y, p),
                         "brier": metrics.brier(y, p), "roc_auc": metrics.roc_auc(y, p),
                         "pr_auc": metrics.pr_auc(y, p), "seconds": seconds})
            print(dataset, variant, f"h{h}", f"ce {rows[-1]['calibration_error']:.4f} brier {rows[-1]['brier']:.4f} "
                  f"auc {rows[-1]['roc_auc']:.4f} rate {y.mean():.3f} p {p.mean():.3f} ({seconds:.0f} s)", flush=True)
    old = json.loads(out.read_text()) if out.exists() else []
    out.write_text(json.dumps(old + rows, indent=1) + "\n")


if __name__ == "__main__":
    main(sys.argv[1], Path(sys.argv[2]))
