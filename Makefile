# Every target creates .venv when it is missing, so `make test` alone works on a fresh machine.
PYTHON ?= python3
VENV := .venv
bin := $(VENV)/bin/

.PHONY: install fmt lint test demo bench bench-quick clean

$(VENV)/.installed: pyproject.toml
	test -d $(VENV) || $(PYTHON) -m venv $(VENV)
	$(bin)pip install --quiet --upgrade pip
	$(bin)pip install --quiet -e '.[dev,fast]'  # fast: uvloop, measured faster (BENCHMARKS.md)
	touch $@

install: $(VENV)/.installed

fmt: install
	$(bin)ruff format .
	$(bin)ruff check --fix .

lint: install
	$(bin)ruff format --check .
	$(bin)ruff check .
	$(bin)mypy

test: lint
	$(bin)pytest

demo: install
	$(bin)collector demo

# Every SPEC 8 row, the 200,000-machine ones included (6 to 14 minutes on 2 cores); writes
# benchmarks/results/latest.json. bench-quick: smaller sizes, no 200,000 rows (~2 minutes).
bench: install
	$(bin)python -m benchmarks.run

bench-quick: install
	$(bin)python -m benchmarks.run --quick

clean:
	rm -rf $(VENV) demo-out .pytest_cache .mypy_cache .ruff_cache
