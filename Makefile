# The README names these targets. `make test` on a fresh machine installs what it needs.
VENV ?= .venv
PY := $(VENV)/bin/python
VENV_CHECKOV ?= .venv-checkov

.PHONY: install age-tool browser sftp-client test lint infra-check bench run demo clean

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

# Debian's chromium: the browser tests drive it through Playwright (no browser download).
browser:
	@command -v chromium >/dev/null 2>&1 || apt-get install -y -qq chromium >/dev/null 2>&1 || \
	  (apt-get update -qq && apt-get install -y -qq chromium) || \
	  { echo "install Debian's chromium package (apt-get install chromium) and run again"; exit 1; }

# OpenSSH's sftp client: recipients' client, which the SFTP tests and the demo log in with.
sftp-client:
	@command -v sftp >/dev/null 2>&1 || apt-get install -y -qq openssh-client >/dev/null 2>&1 || \
	  (apt-get update -qq && apt-get install -y -qq openssh-client) || \
	  { echo "install Debian's openssh-client package (apt-get install openssh-client) and run again"; exit 1; }

install: $(VENV)/.installed node_modules/.installed age-tool browser sftp-client

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports

# checkov in its own environment: its pinned dependencies would fight the app's.
$(VENV_CHECKOV)/.installed: infra/requirements-checkov.txt
	python3 -m venv $(VENV_CHECKOV)
	$(VENV_CHECKOV)/bin/pip install --quiet -r infra/requirements-checkov.txt
	touch $@

# The offline scan of infra/: no failed check; suppressions are inline, each with its reason.
infra-check: $(VENV_CHECKOV)/.installed
	$(VENV_CHECKOV)/bin/checkov -d infra --framework bicep --compact --quiet --skip-download

test: install lint infra-check
	$(PY) -m pytest -q

run: install
	$(PY) -m devhost.stack

demo: install
	$(PY) -m devhost.demo

bench: install
	$(PY) benchmarks/bench_pipeline.py
	$(PY) benchmarks/bench_signoff.py
	$(PY) benchmarks/bench_azurite_floor.py

clean:
	rm -rf $(VENV) $(VENV_CHECKOV) node_modules .pytest_cache .mypy_cache
