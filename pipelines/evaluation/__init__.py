"""Evaluation beside the pipeline, not in it: backtests, benchmarks (`segone bench`), the closed loop's proof run and
the cluster demo. Nothing in the nightly stages imports this package."""
