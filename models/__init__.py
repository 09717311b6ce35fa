"""Modelling code only: fit, predict, save, load, evaluate. Never imports `pipelines`."""
