# Two commands: `make demo` runs the whole product locally, `make test` runs the suite.
# Both create .venv and install what they need on first use (and again when pyproject changes).

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PYTEST_ARGS ?=

.PHONY: demo demo-once test lint format faults bench bench-scale install clean

$(VENV)/.installed: pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "Houseline needs Python 3.11 or newer: set PYTHON=python3.11")'
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@echo "installing Houseline and its test/demo dependencies into $(VENV) ..."
	@$(PY) -m pip install -qq -e '.[test]'
	@touch $@

# The PostgreSQL drivers (the postgres extra): the bench runs on PostgreSQL too, and the tests
# run the store on a throwaway PostgreSQL cluster where its server is installed.
$(VENV)/.installed-postgres: $(VENV)/.installed pyproject.toml
	@echo "installing the PostgreSQL drivers (the postgres extra) into $(VENV) for the bench ..."
	@$(PY) -m pip install -qq -e '.[test,postgres]'
	@touch $@

# What the bench adds (the bench extra).
$(VENV)/.installed-bench: $(VENV)/.installed-postgres pyproject.toml
	@echo "installing the bench's tools (the bench extra) into $(VENV) ..."
	@$(PY) -m pip install -qq -e '.[bench]'
	@touch $@

# Debian's Chromium: tests/test_reports.py opens the HTML report in it, headless.
APT_GET := $(if $(filter 0,$(shell id -u)),,sudo) env DEBIAN_FRONTEND=noninteractive apt-get
$(VENV)/.chromium:
	@command -v chromium >/dev/null || { echo "installing Debian's chromium (the HTML report test) ..."; \
		$(APT_GET) install -y -qq --no-install-recommends chromium >/dev/null 2>&1 || \
		{ $(APT_GET) update -qq && $(APT_GET) install -y -qq --no-install-recommends chromium >/dev/null; }; }
	@mkdir -p $(VENV) && touch $@

install: $(VENV)/.installed

demo: $(VENV)/.installed
	$(VENV)/bin/houseline demo

demo-once: $(VENV)/.installed
	$(VENV)/bin/houseline demo --once

test: $(VENV)/.installed-postgres $(VENV)/.chromium
	$(PY) -m pytest $(PYTEST_ARGS)

# ruff, configured in pyproject.toml: lint, and the formatting the tree keeps.
lint: $(VENV)/.installed
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: $(VENV)/.installed
	$(VENV)/bin/ruff format .

# Throughput, latency, limits, policy speed and memory, against the homeserver's own ceiling
# measured in the same run; also written to bench/results.json. Then the throughput/latency set
# again on a throwaway PostgreSQL cluster where PostgreSQL is installed (skipped with a hint if not).
bench: $(VENV)/.installed-bench
	$(PY) -m bench.run

# How cost grows with portals (1k/10k/100k: RSS, time to ready, the catch-up after a one-minute
# outage) and a 20-minute soak, about 40 minutes in all; bench/results.json, docs/bench-scale.png.
bench-scale: $(VENV)/.installed-bench
	$(PY) -m bench.scale

# The fault suite alone, at full size; its last line is the summary.
faults: $(VENV)/.installed
	@FAULT_MESSAGES=$${FAULT_MESSAGES:-1000} FAULT_CHATS=$${FAULT_CHATS:-20} $(PY) -m pytest tests/test_faults.py -q -s -p no:cacheprovider > .faults.log 2>&1; \
	status=$$?; grep -v '^ts=' .faults.log | grep -v '^faults:' | tail -5; grep '^faults:' .faults.log | tail -1; exit $$status

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis *.egg-info
