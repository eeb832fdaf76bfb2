# The two README commands: `make study` and `make test`. Both set up everything they need, idempotently.
PYTHON ?= python3
VENV := .venv
BIN := $(CURDIR)/$(VENV)/bin
STAMP := $(VENV)/.installed
export MLFLOW_DISABLE_TELEMETRY := true
export PATH := $(BIN):$(PATH)

.PHONY: study test ui data lint bench clean-store

$(STAMP): pyproject.toml requirements.lock
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info[:2] == (3, 11) else "genlab needs Python 3.11 (set PYTHON=...)")'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --disable-pip-version-check -r requirements.lock
	$(BIN)/pip install -q --disable-pip-version-check --no-deps --no-build-isolation -e .
	touch $(STAMP)

# Fashion-MNIST: found locally, else the Debian package (as root), else downloaded with sha256 checks.
data: $(STAMP)
	@$(BIN)/genlab data path fashion-mnist >/dev/null 2>&1 || \
	  { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null && \
	    (apt-get install -y -qq dataset-fashion-mnist >/dev/null 2>&1 || \
	     (apt-get update -qq && apt-get install -y -qq dataset-fashion-mnist >/dev/null)); } ; \
	$(BIN)/genlab data path fashion-mnist >/dev/null 2>&1 || $(BIN)/genlab data download fashion-mnist

study: data
	$(BIN)/genlab train-vae --dataset fashion-mnist --epochs 3 --limit 10000
	@echo "Runs are in $(CURDIR)/mlflow.db (artifacts in $(CURDIR)/mlruns). Browse them: make ui"

test: $(STAMP)
	$(BIN)/python -m pytest -q

ui: $(STAMP)
	$(BIN)/mlflow ui --backend-store-uri sqlite:///$(CURDIR)/mlflow.db --host 127.0.0.1 --port 5000

lint: $(STAMP)
	$(BIN)/ruff check genlab reports tests

# Speed, side by side in one process (see README "Benchmark"); `make bench BENCH_ARGS=--quick` for < 2 min.
bench: data
	$(BIN)/genlab bench $(BENCH_ARGS)
