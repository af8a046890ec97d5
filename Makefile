# Two commands set everything up on a fresh machine (Python 3.11 + pip + make):
#   make compare   -- create .venv, install perfsim, run the main job
#   make test      -- same environment, whole test suite
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp

.PHONY: compare test bench venv clean

$(STAMP): pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(STAMP)

venv: $(STAMP)

compare: $(STAMP)
	$(BIN)/perfsim compare

test: $(STAMP)
	$(BIN)/python -m pytest

bench: $(STAMP)
	$(BIN)/python benchmarks/engine.py
	$(BIN)/python benchmarks/modes.py
	$(BIN)/python benchmarks/maxmin.py

clean:
	rm -rf $(VENV) results .pytest_cache .hypothesis
