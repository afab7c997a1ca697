# Two commands do all the set-up:
#   make run    creates .venv, installs everything, runs `snakemake --cores all` on config/config.yaml
#   make test   creates .venv, installs everything, runs the test suite and the linters
PYTHON ?= python3.11
VENV   ?= .venv
BIN    := $(VENV)/bin
CORES  ?= all

.PHONY: setup run test lint format bench clean

$(BIN)/snakemake: pyproject.toml
	@command -v $(PYTHON) >/dev/null || { echo "$(PYTHON) not found: set PYTHON=python3"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e ".[dev,slurm]"
	@touch $@

setup: $(BIN)/snakemake

run: setup
	$(BIN)/snakemake --cores $(CORES)
	@echo "Report: results/report.html"

lint: setup
	$(BIN)/ruff check src tests workflow/scripts benchmarks
	$(BIN)/ruff format --check src tests workflow/scripts benchmarks
	$(BIN)/snakefmt --check Snakefile workflow/rules
	$(BIN)/snakemake --lint --cores 1

test: setup lint
	PATH="$(abspath $(BIN)):$$PATH" $(BIN)/pytest -q

format: setup
	$(BIN)/ruff format src tests workflow/scripts benchmarks
	$(BIN)/ruff check --fix src tests workflow/scripts benchmarks
	$(BIN)/snakefmt Snakefile workflow/rules

# Side-by-side timings on this machine (about 26 min on an idle 2-core machine): benchmarks/RESULTS.md
bench: setup
	$(BIN)/pip install --quiet -e ".[jax]"
	$(BIN)/python benchmarks/run.py

clean:
	rm -rf results .snakemake
