# Quick start targets: each makes the virtualenv on first use.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: demo test bench

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test]'
	touch $@

demo: $(VENV)/.installed
	$(BIN)/python train_ascend.py

test: $(VENV)/.installed
	$(BIN)/python -m pytest -v parity_tests

bench: $(VENV)/.installed
	$(BIN)/python -m bench
