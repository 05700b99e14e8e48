# Quick start: `make reproduce` (sets up, runs the main job) and `make test` (sets up, runs the tests).
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# The exact set the tests ran on; pyproject.toml states only compatible ranges.
CONSTRAINTS := constraints.txt
EXTRAS := notebooks,lm,dask,dev
FAST ?= 0
PRESET ?= exact-tabular-beta0.01
OUT ?= runs
LAB_PORT ?= 8888
LAB_ARGS ?=

.PHONY: setup test test-slow reproduce bench lab constraints clean

setup: $(STAMP)

# Reinstall only when the dependency ranges or the tested set change; a second `make` reuses the venv in seconds.
$(STAMP): pyproject.toml $(CONSTRAINTS)
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	# torch first, at the tested version: the CPU build on disk; an unconstrained torch would pull a CUDA build.
	$(PY) -m pip install --quiet -c $(CONSTRAINTS) torch
	$(PY) -m pip install --quiet -c $(CONSTRAINTS) -e ".[$(EXTRAS)]"
	$(PY) -m ipykernel install --sys-prefix --name python3 >/dev/null
	touch $(STAMP)

# Record what .venv holds now as the tested set (after changing a dependency in pyproject.toml and testing).
# egpo itself is left out, and local version labels (torch's "+cpu") are dropped so the pins match any build.
constraints: $(STAMP)
	{ echo "# The tested set: pip install -c constraints.txt -e \".[$(EXTRAS)]\" (make setup does)."; \
	  echo "# Regenerate with make constraints; Python $$($(PY) -c 'import sys; print(*sys.version_info[:2], sep=".")')."; \
	  $(PY) -m pip freeze --exclude-editable | sed -E 's/\+[A-Za-z0-9.]+$$//'; } > $(CONSTRAINTS).new
	mv $(CONSTRAINTS).new $(CONSTRAINTS)
	touch $(STAMP)

# `make test`: every test but the heavier ones marked slow (SIGKILL-and-resume runs, full paper presets),
# which `make test-slow` runs; CI (.ci/run) runs both. pytest exits 5 when it collects no test: treat that
# as a broken setup, not a pass.
test: $(STAMP)
	$(PY) -m pytest -q -m "not slow" --durations=25; rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "pytest collected no tests: the setup is broken" >&2; exit 1; fi; exit $$rc

test-slow: $(STAMP)
	$(PY) -m pytest -q -m slow --durations=10; rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "pytest collected no slow tests: the setup is broken" >&2; exit 1; fi; exit $$rc

# Every notebook under papermill into notebooks/_executed/ (figures into figures/<notebook>/; with FAST=1
# the fast variants, whose figures go to notebooks/_executed/figures/ instead).
reproduce: $(STAMP)
	$(PY) notebooks/run_all.py $(if $(filter 1,$(FAST)),--fast,)

# JupyterLab on notebooks/ with the venv's kernel (JUPYTER_PREFER_ENV_PATH: the venv's kernelspec before any
# user-level one). Each notebook is its percent-format source, notebooks/<name>.py, and opens as a notebook on a
# double click or by its URL; saving writes the .py back. jupyter-config/labconfig/default_setting_overrides.json
# makes Jupytext Notebook the default viewer of .py files (a plain module: right-click → Open With → Editor) and
# turns the Jupyter news prompt off: defaults, read from Jupyter's config path (JUPYTER_CONFIG_PATH), so nothing
# is written to the user's ~/.jupyter and a setting changed in JupyterLab's Settings Editor still wins. Serves on
# 127.0.0.1 only, with a token (printed at start); `make lab LAB_ARGS=--no-browser` on a machine without a display.
lab: $(STAMP)
	JUPYTER_PREFER_ENV_PATH=1 JUPYTER_CONFIG_PATH="$(CURDIR)/jupyter-config$${JUPYTER_CONFIG_PATH:+:$$JUPYTER_CONFIG_PATH}" \
	  $(VENV)/bin/jupyter lab --ServerApp.ip=127.0.0.1 --ServerApp.port=$(LAB_PORT) \
	  --ServerApp.root_dir=. --LabApp.default_url=/lab/tree/notebooks $(LAB_ARGS)

bench: $(STAMP)
	$(PY) benchmarks/bench_simulate.py

clean:
	rm -rf $(VENV) .pytest_cache
