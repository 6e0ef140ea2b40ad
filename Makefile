# Two commands on a fresh machine:  `make demo` (set up; pretrain on digits with and without pruning; probe
# both beside the random-init floor)  and  `make test`.
PYTHON ?= python3
VENV   ?= .venv
BIN     = $(VENV)/bin

.PHONY: setup demo test test-fast clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --upgrade pip
	$(BIN)/pip install -e ".[dev]"
	touch $@

demo: setup
	rm -rf runs/demo-full runs/demo-pruned
	$(BIN)/python examples/pruning_demo.py

test: setup
	$(BIN)/python -m pytest -q

test-fast: setup
	$(BIN)/python -m pytest -q -m "not slow"

clean:
	rm -rf runs $(VENV)
