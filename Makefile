# The two commands a newcomer needs (see README):
#   make demo   set up .venv, start the bundled PostHog emulator, run spec/check/discover/read
#   make test   run the whole test suite (what .ci/run calls)
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: setup demo test bench clean

$(BIN)/source-posthog: setup.py
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	touch $@

setup: $(BIN)/source-posthog

demo: setup
	$(BIN)/python -m tools.demo

test: setup
	$(BIN)/python -m pytest -n 2 --dist loadfile

bench: setup
	$(BIN)/python -m tools.bench.benchmark

clean:
	rm -rf $(VENV) .emulator-cache .demo-output .bench
