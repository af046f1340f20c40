# `make run`: set up a virtual environment and open the app on the bundled samples.
# `make test`: set up the same environment and run the test suite (what .ci/run calls).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test lint setup bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --upgrade pip
	$(BIN)/pip install -e ".[dev,deploy]"
	touch $(STAMP)

setup: $(STAMP)

run: $(STAMP)
	$(BIN)/sevgg-gui sevgg_gui/resources/samples

test: $(STAMP)
	QT_QPA_PLATFORM=offscreen $(BIN)/python -m pytest -q

# Full benchmarks (~1 h on 2 cores, each waits for a quiet machine); results in benchmarks/results/.
bench: $(STAMP)
	$(BIN)/pip install -e ".[bench]"
	$(BIN)/python benchmarks/run_all.py

lint: $(STAMP)
	$(BIN)/ruff check sevgg_gui tests benchmarks
	$(BIN)/ruff format --check sevgg_gui tests benchmarks

clean:
	rm -rf $(VENV) .pytest_cache
