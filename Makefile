# Two set-up commands on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

export HF_HUB_OFFLINE := 1
export WANDB_MODE ?= offline
export PATH := $(CURDIR)/$(BIN):$(PATH)

.PHONY: install demo test test-fast test-variants lint mutation lock clean

install: $(STAMP)

# the locked environment (requirements.lock), then the project itself without re-resolving.
# uv installs the same pins as pip, and compiles their bytecode as pip does (where PYTHONDONTWRITEBYTECODE
# is set, nothing else would: every process then takes twice as long to import torch and LeRobot). It is given
# pip's index settings (PIP_* in the environment, else `pip config`) and, like pip, takes the best
# match across the indexes. Where uv cannot install the lock, pip does; UV=0 uses pip only.
UV_VERSION := 0.13.10
UV ?= 1
pip_setting = "$${PIP_$(2):-$$($(BIN)/pip config get global.$(1) 2>/dev/null)}"
$(STAMP): requirements.lock pyproject.toml
	$(PYTHON) -m venv $(VENV)
	@if [ "$(UV)" = 1 ] && $(BIN)/pip install --quiet uv==$(UV_VERSION); then \
	  index=$(call pip_setting,index-url,INDEX_URL); \
	  UV_DEFAULT_INDEX="$${index:-https://pypi.org/simple}" \
	  UV_EXTRA_INDEX_URL=$(call pip_setting,extra-index-url,EXTRA_INDEX_URL) \
	  UV_FIND_LINKS=$(call pip_setting,find-links,FIND_LINKS) UV_INDEX_STRATEGY=unsafe-best-match \
	  $(BIN)/uv pip install --quiet --compile-bytecode --python $(BIN)/python -r requirements.lock \
	  || { echo "uv could not install requirements.lock (above); installing it with pip"; \
	       $(BIN)/pip install --quiet -r requirements.lock; }; \
	else $(BIN)/pip install --quiet -r requirements.lock; fi
	$(BIN)/pip install --quiet --no-deps --no-build-isolation -e .
	touch $(STAMP)

demo: install
	$(BIN)/dvc repro

# one pytest-xdist worker per logical core (TEST_WORKERS=0: in this process), whole files per worker, longest first (module fixtures
# are built once); each worker and what it starts get their share of the cores (tests/conftest.py).
# Every test is bounded by pytest-timeout (pyproject.toml); the slowest 25 are listed (docs/testing.md).
TEST_WORKERS ?= logical
PYTEST := $(BIN)/python -m pytest -q -n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder --durations=25

test: install
	$(PYTEST)

test-fast: install
	$(PYTEST) -m "not slow"

# 200 generated dataset variants through convert, contract init, validate and the run (make test: the first 15)
test-variants: install
	VLA_VARIANTS=$${VLA_VARIANTS:-200} $(BIN)/python -m pytest -q tests/e2e/test_variants.py

lint: install
	$(BIN)/ruff check src stages tests benchmarks

# mutation testing of the core modules (docs/mutation.md); not part of `make test`. A fresh run each
# time (mutants/ is rebuilt); prints the score per module and in total, and the run's wall time.
mutation: install
	rm -rf mutants
	mkdir -p mutants
	@start=$$(date +%s); \
	PYTHONPATH=$(CURDIR)/tests/mutation OMP_NUM_THREADS=1 $(BIN)/mutmut run > mutants/mutmut-run.log 2>&1 \
	  || { tail -c 4000 mutants/mutmut-run.log; echo; echo "mutmut run failed (log: mutants/mutmut-run.log)"; exit 1; }; \
	$(BIN)/python tests/mutation/score.py $$(( $$(date +%s) - start ))

# re-lock after changing pyproject.toml's dependencies (review the diff before committing)
lock: install
	$(BIN)/pip freeze --exclude-editable | grep -v '^vla-pipeline' > requirements.lock

clean:
	rm -rf $(VENV)
