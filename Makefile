# Two commands on a fresh machine:  `make demo` (set up, pretrain on digits, probe)  and  `make test`.
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
	rm -rf runs/digits-demo
	$(BIN)/python -m ssl_emp.pretrain --config configs/default.yaml run.name=digits-demo
	$(BIN)/python -m eval.linear_probe --checkpoint runs/digits-demo --compare-random

test: setup
	$(BIN)/python -m pytest -q

test-fast: setup
	$(BIN)/python -m pytest -q -m "not slow"

clean:
	rm -rf runs $(VENV)
