# Two entry points for a fresh machine: `make quickstart` and `make test` (see README).
# Everything installs into .venv from requirements.lock; uv keeps its downloads in ~/.cache/uv.
PYTHON ?= python3
UV_VERSION := 0.13.9
VENV := .venv
BIN := $(VENV)/bin
UV := $(BIN)/uv

.PHONY: quickstart test lock

$(UV):
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check uv==$(UV_VERSION)

$(VENV)/.installed: $(UV) requirements.lock pyproject.toml
	$(UV) pip install --python $(BIN)/python --quiet -r requirements.lock
	$(UV) pip install --python $(BIN)/python --quiet --no-deps -e .
	touch $@

quickstart: $(VENV)/.installed
	$(BIN)/secoctl apply examples/quickstart.yaml

test: $(VENV)/.installed
	$(BIN)/python -m pytest -m "not slow"
	$(BIN)/python -m pytest -m slow || [ $$? -eq 5 ]  # 5: no slow test collected

lock: $(UV)
	$(UV) pip compile pyproject.toml --extra data --extra local --extra test --python-version 3.11 \
		--output-file requirements.lock --quiet
