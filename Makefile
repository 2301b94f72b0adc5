# Two entry points: `make reproduce` (re-run every notebook) and `make test` (what CI runs).
# Overrides: make reproduce PROFILE=smoke ONLY=01,03 DATA_ROOT=/path DEVICE=cuda JOBS=2
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PROFILE ?= fast
ONLY ?=
SEED ?= 2023
DEVICE ?= auto
JOBS ?= 1
DATA_ROOT ?=

.PHONY: help venv reproduce test data clean-runs

help:
	@echo "make reproduce  [PROFILE=smoke|fast|full] [ONLY=01,03] [DATA_ROOT=dir] [DEVICE=auto|cpu|cuda] [JOBS=n]"
	@echo "make test       run the test suite (what .ci/run calls)"
	@echo "make data       unpack ../shared/data into ./data (offline copies of the data sets)"
	@echo "make clean-runs delete executed notebooks and checkpoints under runs/ and checkpoints/"

# The venv is (re)built when the requirements change; `pip install -e .` makes `import helpers`
# work from any directory, which papermill's kernels (cwd = notebooks/) rely on.
$(VENV)/.installed: requirements.txt pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q -r requirements.txt
	$(PY) -m pip install -q --no-deps -e .
	touch $@

venv: $(VENV)/.installed

reproduce: venv
	$(PY) -m helpers.reproduce --profile $(PROFILE) --seed $(SEED) --device $(DEVICE) --jobs $(JOBS) \
		$(if $(ONLY),--only $(ONLY)) $(if $(DATA_ROOT),--data-root $(DATA_ROOT))

test: venv
	$(PY) -m pytest -q

data:
	bash ../shared/data/prepare.sh data

clean-runs:
	rm -rf runs checkpoints
