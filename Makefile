# One virtual environment at .venv, created on first use and reused after.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test lint bench

$(STAMP): setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.14.1 torchvision==0.29.1
	$(PY) -m pip install -q -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)  ## compress + decompress a real photo with the shipped model (IMAGE=path for yours)
	$(VENV)/bin/selic demo $(IMAGE)

test: $(STAMP)  ## the test suite (what CI runs)
	$(PY) -m pytest -q -m "not slow"

lint: $(STAMP)
	$(VENV)/bin/ruff check .

bench: $(STAMP)  ## regenerate benchmarks/results (needs ../shared/data)
	$(PY) -m benchmarks.run_all
