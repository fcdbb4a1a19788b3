# Two commands: `make demo` runs the whole product locally, `make test` runs the suite.
# Both create .venv and install what they need on first use (and again when pyproject changes).

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PYTEST_ARGS ?=

.PHONY: demo demo-once test install clean

$(VENV)/.installed: pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "Houseline needs Python 3.11 or newer: set PYTHON=python3.11")'
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@echo "installing Houseline and its test/demo dependencies into $(VENV) ..."
	@$(PY) -m pip install -qq -e '.[test]'
	@touch $@

install: $(VENV)/.installed

demo: $(VENV)/.installed
	$(VENV)/bin/houseline demo

demo-once: $(VENV)/.installed
	$(VENV)/bin/houseline demo --once

test: $(VENV)/.installed
	$(PY) -m pytest $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis *.egg-info
