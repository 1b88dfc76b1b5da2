# `make demo` and `make test`: each sets up .venv first (the CPU torch is installed only
# when no torch is importable, so an existing torch is never replaced).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PYTEST_ARGS ?= -n 2

.PHONY: demo test test-slow install clean

$(VENV)/.installed: setup.py
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e ".[dev]"
	touch $@

install: $(VENV)/.installed

demo: $(VENV)/.installed
	$(PY) -m langclip.cli demo

test: $(VENV)/.installed
	$(PY) -m pytest $(PYTEST_ARGS) tests

test-slow: $(VENV)/.installed
	$(PY) -m pytest $(PYTEST_ARGS) -m slow tests

clean:
	rm -rf $(VENV) outputs *.egg-info
