# Every target creates .venv when it is missing, so `make test` alone works on a fresh machine.
PYTHON ?= python3
VENV := .venv
bin := $(VENV)/bin/

.PHONY: install fmt lint test demo bench clean

$(VENV)/.installed: pyproject.toml
	test -d $(VENV) || $(PYTHON) -m venv $(VENV)
	$(bin)pip install --quiet --upgrade pip
	$(bin)pip install --quiet -e '.[dev]'
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

bench: install
	$(bin)python benchmarks/run.py

clean:
	rm -rf $(VENV) demo-out .pytest_cache .mypy_cache .ruff_cache
