# The two README commands: `make study` and `make test`. Both set up everything they need, idempotently.
PYTHON ?= python3
VENV := .venv
BIN := $(CURDIR)/$(VENV)/bin
STAMP := $(VENV)/.installed
export MLFLOW_DISABLE_TELEMETRY := true
export PATH := $(BIN):$(PATH)

.PHONY: study test ui dashboard data lint bench browser

$(STAMP): pyproject.toml requirements.lock
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info[:2] == (3, 11) else "genlab needs Python 3.11 (set PYTHON=...)")'
	$(PYTHON) -m venv $(VENV)
	@# pip byte-compiles on one core (42 of the install's 102 s); compileall on every core does it in 30 s. Compiled
	@# files matter: the environment may set PYTHONDONTWRITEBYTECODE, and then every process (each test's CLI call,
	@# each worker) would compile torch and mlflow again (import 7.6 s instead of 3.1 s). Excluded: torch's test
	@# helpers written in Python 3.12 syntax (pip's own compile step skips them silently), so any other error stops.
	$(BIN)/pip install -q --disable-pip-version-check --no-compile -r requirements.lock
	$(BIN)/pip install -q --disable-pip-version-check --no-compile --no-deps --no-build-isolation -e .
	$(BIN)/python -m compileall -q -j 0 -x 'torch/testing/_internal/py312_' $(VENV)/lib
	touch $(STAMP)

# Fashion-MNIST: found locally, else the Debian package (as root), else downloaded with sha256 checks.
data: $(STAMP)
	@$(BIN)/genlab data path fashion-mnist >/dev/null 2>&1 || \
	  { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null && \
	    (apt-get install -y -qq dataset-fashion-mnist >/dev/null 2>&1 || \
	     (apt-get update -qq && apt-get install -y -qq dataset-fashion-mnist >/dev/null)); } ; \
	$(BIN)/genlab data path fashion-mnist >/dev/null 2>&1 || $(BIN)/genlab data download fashion-mnist

# The quick study (every question end to end, a pipeline check), then the report built from its runs.
# PROFILE=full for the conclusions (wall times: experiments/README.md). Finished runs are reused: an interrupted study continues.
# WORKERS=N runs independent runs side by side on a local Dask cluster (one single-threaded process per worker).
# quick: one worker (its runs are too short to repay a worker's start-up); full and paper: two, one per core of the
# 2-core machine they are planned for (the full study in under 60 min from a fresh clone; experiments/README.md, "Wall time").
# A replication on other seeds: STUDY=lab1-seeds5 SEED_OFFSET=5 (every plan seed + 5; its report in reports/build-lab1-seeds5).
PROFILE ?= quick
WORKERS ?= $(if $(filter quick,$(PROFILE)),1,2)
STUDY ?= lab1
SEED_OFFSET ?= 0
REPORT := $(if $(filter lab1,$(STUDY)),reports/build,reports/build-$(STUDY))
study: data
	$(BIN)/genlab study --profile $(PROFILE) --workers $(WORKERS) --study $(STUDY) --seed-offset $(SEED_OFFSET)
	$(BIN)/genlab report --profile $(PROFILE) --study $(STUDY) --out $(REPORT)
	@echo "Report: $(CURDIR)/$(REPORT)/en/report.html (French: $(REPORT)/fr/report.html)"
	@echo "Runs are in $(CURDIR)/mlflow.db (artifacts in $(CURDIR)/mlruns). Browse them: make ui"

# One pytest worker per core (pytest-xdist); a module's tests stay on one worker, so its shared fixtures are made once.
test: $(STAMP) browser
	$(BIN)/python -m pytest -q -n auto --dist loadscope

# The report's browser tests drive Debian's Chromium: installed as root when missing, else one line says why they skip.
browser:
	@command -v chromium >/dev/null && command -v chromedriver >/dev/null || \
	  { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null && \
	    (DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null 2>&1 || \
	     (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null)); } || \
	  echo "make test: Chromium or ChromeDriver absent and not root: the browser tests will be skipped (apt install chromium chromium-driver)"

# The project's store in the MLflow UI. First the links to open: the UI opens in its GenAI mode unless the address
# carries workflowType=machine_learning (python -m genlab.ui; the report's views of each question among them).
# A failure to print them does not keep the UI from starting.
UI_PORT ?= 5000
ui: $(STAMP)
	-@MLFLOW_TRACKING_URI=sqlite:///$(CURDIR)/mlflow.db $(BIN)/python -m genlab.ui --base http://127.0.0.1:$(UI_PORT)
	$(BIN)/mlflow ui --backend-store-uri sqlite:///$(CURDIR)/mlflow.db --host 127.0.0.1 --port $(UI_PORT)

# The Optuna search's studies (trials, history, importances, per-epoch values, Pareto front) in optuna-dashboard.
OPTUNA_STORAGE ?= sqlite:///$(CURDIR)/optuna.db
dashboard: $(STAMP)
	$(BIN)/optuna-dashboard $(OPTUNA_STORAGE) --host 127.0.0.1 --port 8080

lint: $(STAMP)
	$(BIN)/ruff check genlab reports tests

# Speed, side by side in one process (see README "Benchmark"); `make bench BENCH_ARGS=--quick` for < 2 min.
bench: data
	$(BIN)/genlab bench $(BENCH_ARGS)
