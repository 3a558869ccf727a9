# The README names these targets. `make test` on a fresh machine installs what it needs.
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: install age-tool test lint bench run demo clean

$(VENV)/.installed: requirements.txt pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $@

node_modules/.installed: package.json package-lock.json
	npm ci --no-audit --no-fund
	touch $@

# Debian's `age`: the open tool recipients decrypt with; the tests check interoperability with it.
age-tool:
	@command -v age >/dev/null 2>&1 || apt-get install -y -qq age >/dev/null 2>&1 || \
	  (apt-get update -qq && apt-get install -y -qq age) || \
	  { echo "install Debian's age package (apt-get install age) and run again"; exit 1; }

install: $(VENV)/.installed node_modules/.installed age-tool

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports

test: install lint
	$(PY) -m pytest -q

run: install
	$(PY) -m devhost.stack

demo: install
	$(PY) -m devhost.demo

bench: install
	$(PY) benchmarks/bench_pipeline.py

clean:
	rm -rf $(VENV) node_modules .pytest_cache .mypy_cache
