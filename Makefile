# sparkpipe — two set-up commands on a fresh machine:
#   make run    install everything (venv, Java 17 check) and run the default pipeline
#   make test   install everything and run the test suite
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
CONFIG ?= config/pipeline_config.yaml
export SPARK_LOCAL_IP ?= 127.0.0.1
export PYSPARK_PYTHON ?= $(abspath $(BIN)/python)

.PHONY: install java run test lint format serve bench clean

install: $(STAMP) java
	@# byte-compile once, so a process start (sparkpipe serve: ready in under 2 s) does not compile
	@# the package (Python does not write .pyc files itself when PYTHONDONTWRITEBYTECODE is set)
	@$(BIN)/python -m compileall -q src >/dev/null

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 11), "Python 3.11+ is required"' || \
	  { echo "error: sparkpipe needs Python 3.11+ (found $$($(PYTHON) --version))"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[test]"
	@touch $(STAMP)

java:
	@bash scripts/ensure_java.sh

run: install
	$(BIN)/sparkpipe run --config $(CONFIG)

# two processes, whole files per process (module fixtures stay shared), longest files first
# (tests/durations.json, see tests/conftest.py); each process has its own local[2] Spark
test: install
	$(BIN)/python -m pytest -q -n 2 --dist loadfile --no-loadscope-reorder

lint: install
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks
	$(BIN)/lint-imports

format: install
	$(BIN)/ruff format src tests benchmarks
	$(BIN)/ruff check --fix src tests benchmarks

serve: install
	$(BIN)/sparkpipe serve --config $(CONFIG)

bench: install
	@bash scripts/ensure_wrk.sh
	$(BIN)/python benchmarks/serving.py

clean:
	rm -rf output .sparkpipe mlruns mlflow.db spark-warehouse metastore_db derby.log
