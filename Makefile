# Segment of One: the two front-door commands are `make demo` and `make test`.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
export SEGONE_HOME ?= $(CURDIR)/var
export AIRFLOW_HOME ?= $(SEGONE_HOME)/airflow
export AIRFLOW_CONFIG := $(CURDIR)/airflow.cfg
export SEGONE_REPO := $(CURDIR)
export PYTHONHASHSEED := 0

DEMO_CUSTOMERS ?= 10000
DEMO_DAYS ?= 240
DEMO_END ?= 2026-11-20
DEMO_SEED ?= 42
# make test: pytest-xdist processes, one test file per process at a time, the slowest files first (tests/conftest.py;
# CI and this machine have 2 cores)
TEST_WORKERS ?= 2

.PHONY: install demo test bench backtest clean airflow-db serve stop night cluster-demo report-screenshot

install: $(VENV)/.installed

$(VENV)/.installed: requirements.lock pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check -r requirements.lock
	$(BIN)/pip install --quiet --disable-pip-version-check --no-deps -e .
	touch $@

airflow-db: install
	mkdir -p $(AIRFLOW_HOME)
	$(BIN)/airflow db migrate > $(AIRFLOW_HOME)/db-migrate.log 2>&1 || (tail -50 $(AIRFLOW_HOME)/db-migrate.log; exit 1)

demo: install airflow-db
	$(BIN)/segone simulate --customers $(DEMO_CUSTOMERS) --days $(DEMO_DAYS) --end-date $(DEMO_END) --seed $(DEMO_SEED)
	$(BIN)/segone load-history
	$(BIN)/segone train
	SEGONE_TASK_RETRIES=0 $(BIN)/python -m pipelines.deploy run --date $(DEMO_END) > $(SEGONE_HOME)/demo-airflow.log 2>&1 \
		|| (tail -20 $(SEGONE_HOME)/demo-airflow.log; exit 1)
	$(BIN)/segone summary --date $(DEMO_END)

# The single-machine deployment (docs/operations.md): scheduler (LocalExecutor), dag-processor and api-server on
# 127.0.0.1:$(SERVE_PORT), DAGs unpaused, pids in $(AIRFLOW_HOME)/serve.pids.json; `make stop` stops those.
SERVE_PORT ?= 8080
serve: install
	$(BIN)/python -m pipelines.deploy serve --port $(SERVE_PORT)

stop:
	$(BIN)/python -m pipelines.deploy stop

# Run (or re-run) the night of D on the served Airflow and wait for it: make night D=2026-11-20
night:
	@test -n "$(D)" || (echo "usage: make night D=YYYY-MM-DD"; exit 1)
	$(BIN)/python -m pipelines.deploy trigger --port $(SERVE_PORT) --date $(D) --wait

# The same DAGs on the CeleryExecutor (PostgreSQL, Redis, two workers), compared with a LocalExecutor run.
CLUSTER_CUSTOMERS ?= 2000
CLUSTER_DAGS ?= nightly_personalization,retrain_models
cluster-demo: install
	SEGONE_TASK_RETRIES=0 $(BIN)/python -m pipelines.evaluation.cluster_demo --customers $(CLUSTER_CUSTOMERS) --dags $(CLUSTER_DAGS) --date $(DEMO_END)

test: install
	$(BIN)/python -m pytest -q --timeout=1500 -n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder tests

bench: install
	$(BIN)/segone bench ingest --customers 10000,100000
	$(BIN)/segone bench forecast --customers 10000,100000,1000000 --days 365 --out benchmarks/forecast.json
	$(BIN)/segone bench decide --customers 100000,1000000 --out benchmarks/decide.json
	$(BIN)/segone bench life-events --customers 100000,1000000 --out benchmarks/life_events.json
	$(BIN)/segone bench night --customers 10000,100000 --out benchmarks/night.json > benchmarks/night.txt
	cat benchmarks/night.txt

# The cash-shortfall backtest on a simulated bank (3,000 customers, a year) and on the Berka data, one report;
# the life-event backtest on the simulated bank; the income-drop and large-expense backtest on both (events.json).
BACKTEST_HOME ?= $(SEGONE_HOME)/backtest
backtest: install
	rm -rf $(BACKTEST_HOME) && mkdir -p $(BACKTEST_HOME)
	SEGONE_HOME=$(BACKTEST_HOME)/simulated $(BIN)/segone simulate --customers 3000 --days 365 --end-date $(DEMO_END) --seed 7
	SEGONE_HOME=$(BACKTEST_HOME)/simulated $(BIN)/segone load-history > $(BACKTEST_HOME)/simulated-load.log
	SEGONE_HOME=$(BACKTEST_HOME)/simulated $(BIN)/segone backtest --dataset simulated --output $(SEGONE_HOME)/reports/backtest
	SEGONE_HOME=$(BACKTEST_HOME)/simulated $(BIN)/segone backtest life-events --output $(SEGONE_HOME)/reports/backtest > /dev/null
	SEGONE_HOME=$(BACKTEST_HOME)/simulated $(BIN)/segone backtest events --dataset simulated --output $(SEGONE_HOME)/reports/backtest
	SEGONE_HOME=$(BACKTEST_HOME)/berka $(BIN)/segone import-berka ../shared/reference/berka --no-night > $(BACKTEST_HOME)/berka-import.log
	SEGONE_HOME=$(BACKTEST_HOME)/berka $(BIN)/segone load-history > $(BACKTEST_HOME)/berka-load.log
	SEGONE_HOME=$(BACKTEST_HOME)/berka $(BIN)/segone backtest --dataset berka --output $(SEGONE_HOME)/reports/backtest
	SEGONE_HOME=$(BACKTEST_HOME)/berka $(BIN)/segone backtest events --dataset berka --output $(SEGONE_HOME)/reports/backtest

# The nightly report as a person sees it: rendered by headless Chromium (installed from the system's packages when
# missing and this account may: apt-get as root or with password-less sudo) into $(SCREENSHOT). DATE defaults to
# the demo's night; HEIGHT is the part of the page captured, in CSS pixels at 1400 wide. Not part of `make test`
# (tests/test_report_screenshot.py runs the same check when Chromium is there, and is skipped when it is not).
DATE ?= $(DEMO_END)
HEIGHT ?= 5000
SCREENSHOT ?= $(SEGONE_HOME)/reports/$(DATE)/report.png
report-screenshot: install
	$(BIN)/python -m pipelines.screenshot --install --height $(HEIGHT) $(SEGONE_HOME)/reports/$(DATE)/index.html $(SCREENSHOT)

clean:
	rm -rf $(VENV) var
