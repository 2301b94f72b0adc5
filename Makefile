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

.PHONY: help venv reproduce test data clean-runs report submission tex

help:
	@echo "make reproduce  [PROFILE=smoke|fast|full] [ONLY=01,03] [DATA_ROOT=dir] [DEVICE=auto|cpu|cuda] [JOBS=n]"
	@echo "make test       run the test suite (what .ci/run calls)"
	@echo "make data       unpack ../shared/data into ./data (offline copies of the data sets)"
	@echo "make tex        install the TeX Live packages the report needs (Debian/Ubuntu, apt-get)"
	@echo "make report     build report/main.pdf from the committed results (needs TeX Live: make tex)"
	@echo "make submission dist/submission.zip: executed notebooks, helpers, weights, report PDF (no data)"
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
	$(PY) -m helpers.report costs --write > /dev/null  # the README's cost table follows the new records

test: venv
	$(PY) -m pytest -q

data:
	bash ../shared/data/prepare.sh data

clean-runs:
	rm -rf runs checkpoints

# The report: TeX Live from Debian's packages,
#   sudo apt-get install --no-install-recommends latexmk texlive-latex-base texlive-latex-recommended \
#        texlive-latex-extra texlive-fonts-recommended
# `check` refuses hand-typed numbers and missing tables/figures/macros before LaTeX runs; -Werror (and the
# grep, for older latexmk) make undefined references and citations fail the build.
TEX_PACKAGES := latexmk texlive-latex-base texlive-latex-recommended texlive-latex-extra texlive-fonts-recommended
tex:  # Debian/Ubuntu: the TeX Live packages `make report` needs (sudo when not root)
	command -v latexmk >/dev/null || { $(if $(filter 0,$(shell id -u)),,sudo) apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive $(if $(filter 0,$(shell id -u)),,sudo) apt-get install -y -qq --no-install-recommends $(TEX_PACKAGES); }

report: venv
	@command -v latexmk >/dev/null || { echo "make report needs TeX Live: sudo apt-get install --no-install-recommends $(TEX_PACKAGES)"; exit 1; }
	$(PY) -m helpers.report check
	cd report && latexmk -pdf -interaction=nonstopmode -halt-on-error -Werror main.tex
	@! grep -E "(Reference|Citation).*undefined|There were undefined" report/main.log || { echo "report: undefined references or citations (see report/main.log)"; exit 1; }
	$(PY) -m helpers.report layout
	$(PY) -m helpers.report stamp

submission: venv
	$(PY) -m helpers.report submission
