# Everything a newcomer (and CI) needs: `make demo` and `make test` set up .venv on first use.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: setup demo serve test clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml clients/python/pyproject.toml
	$(PYTHON) -c 'import sys; assert sys.version_info[:2] == (3, 11), "rtsep needs Python 3.11"'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[dev]" -e clients/python
	touch $@

demo: setup
	$(BIN)/rtsep demo --out rtsep-demo

serve: setup
	$(BIN)/rtsep serve

test: setup
	$(BIN)/pytest -q

clean:
	rm -rf $(VENV) rtsep-demo rtsep-data .pytest_cache
