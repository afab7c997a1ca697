# Two commands do all the set-up:
#   make run    creates .venv, installs everything, runs `snakemake --cores all` on config/config.yaml
#   make test   creates .venv, installs everything, runs the test suite and the linters
# The newest Python that TensorFlow 2.21 ships wheels for (3.10-3.13), or PYTHON=... to choose.
SUPPORTED := 3.13 3.12 3.11 3.10
PYTHON ?= $(firstword $(foreach v,$(SUPPORTED),$(shell python$(v) -c 'import sys' >/dev/null 2>&1 && echo python$(v))) \
  $(shell python3 -c 'import sys; print("python3" if (3, 10) <= sys.version_info[:2] <= (3, 13) else "")' 2>/dev/null))
VENV   ?= .venv
BIN    := $(VENV)/bin
CORES  ?= all
TEST_WORKERS ?= 2

.PHONY: setup run test lint format bench clean

$(BIN)/snakemake: pyproject.toml
	@test -n "$(PYTHON)" || { echo "No supported Python found: TensorFlow 2.21 needs Python 3.10 to 3.13. Install one, or set PYTHON=/path/to/python3.x"; exit 1; }
	@$(PYTHON) -c 'import sys; assert (3, 10) <= sys.version_info[:2] <= (3, 13)' 2>/dev/null || { echo "$(PYTHON) is not a supported Python: TensorFlow 2.21 needs 3.10 to 3.13. Set PYTHON=/path/to/python3.x"; exit 1; }
	@echo "Creating $(VENV) with $(PYTHON) ($$($(PYTHON) --version))"
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e ".[dev,slurm]"
	@touch $@

setup: $(BIN)/snakemake

run: setup
	$(BIN)/snakemake --cores $(CORES)
	@echo "Report: results/report.html"

lint: setup
	$(BIN)/ruff check src tests workflow/scripts benchmarks examples
	$(BIN)/ruff format --check src tests workflow/scripts benchmarks examples
	$(BIN)/snakefmt --check Snakefile workflow/rules
	$(BIN)/snakemake --lint --cores 1

# Two test modules at a time (pytest-xdist; each module on one worker, so its shared workflow runs
# once). The fast loop while editing: `.venv/bin/pytest -m "not e2e"` (no snakemake, no training).
test: setup lint
	PATH="$(abspath $(BIN)):$$PATH" $(BIN)/pytest -q -n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder

format: setup
	$(BIN)/ruff format src tests workflow/scripts benchmarks examples
	$(BIN)/ruff check --fix src tests workflow/scripts benchmarks examples
	$(BIN)/snakefmt Snakefile workflow/rules

# Side-by-side timings on this machine (about an hour on an idle 2-core machine): benchmarks/RESULTS.md
bench: setup
	$(BIN)/pip install --quiet -e ".[jax]"
	$(BIN)/python benchmarks/run.py

clean:
	rm -rf results .snakemake
