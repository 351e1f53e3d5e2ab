# Quick start targets: each makes the virtualenv on first use.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: demo test bench

# The tested set: constraints.txt pins every package; pyproject.toml holds the ranges.
$(VENV)/.installed: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -c constraints.txt -e '.[test]'
	touch $@

demo: $(VENV)/.installed
	$(BIN)/python train_ascend.py

test: $(VENV)/.installed
	$(BIN)/python -m pytest -v parity_tests

bench: $(VENV)/.installed
	$(BIN)/python -m bench
