# Two commands do all the set-up:
#   make run    creates .venv, installs everything, runs `snakemake --cores all` on config/config.yaml
#   make test   creates .venv, installs everything, runs the test suite and the linters
PYTHON ?= python3.11
VENV   ?= .venv
BIN    := $(VENV)/bin
CORES  ?= all

.PHONY: setup run test lint format clean

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
	$(BIN)/ruff check src tests workflow/scripts
	$(BIN)/ruff format --check src tests workflow/scripts
	$(BIN)/snakefmt --check Snakefile workflow/rules
	$(BIN)/snakemake --lint --cores 1

test: setup lint
	PATH="$(abspath $(BIN)):$$PATH" $(BIN)/pytest -q

format: setup
	$(BIN)/ruff format src tests workflow/scripts
	$(BIN)/ruff check --fix src tests workflow/scripts
	$(BIN)/snakefmt Snakefile workflow/rules

clean:
	rm -rf results .snakemake
