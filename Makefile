# Quick start: `make reproduce` (sets up, runs the main job) and `make test` (sets up, runs the tests).
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
FAST ?= 0
PRESET ?= exact-tabular-beta0.01
OUT ?= runs

.PHONY: setup test test-fast reproduce bench clean

setup: $(STAMP)

# Reinstall only when the dependency list changes; a second `make` reuses the venv in seconds.
$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	# torch first and pinned: the CPU build on disk; an unpinned torch would pull a CUDA build.
	$(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet -e ".[notebooks,lm,dev]"
	$(PY) -m ipykernel install --sys-prefix --name python3 >/dev/null
	touch $(STAMP)

# pytest exits 5 when it collects no test: treat that as a broken setup, not a pass.
test: $(STAMP)
	$(PY) -m pytest -q; rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "pytest collected no tests: the setup is broken" >&2; exit 1; fi; exit $$rc

test-fast: $(STAMP)
	$(PY) -m pytest -q -m "not slow"

# Every notebook under papermill into notebooks/_executed/ (figures into figures/<notebook>/; with FAST=1
# the fast variants, whose figures go to notebooks/_executed/figures/ instead).
reproduce: $(STAMP)
	$(PY) notebooks/run_all.py $(if $(filter 1,$(FAST)),--fast,)

bench: $(STAMP)
	$(PY) benchmarks/bench_simulate.py

clean:
	rm -rf $(VENV) .pytest_cache
