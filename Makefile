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

# The main job, offline: synthetic scenes served on 127.0.0.1, every stage, then the weights pulled back.
quickstart: $(VENV)/.installed
	$(BIN)/python -m jobs.localcloud run --spec examples/quickstart.yaml -- \
		$(BIN)/secoctl apply --local examples/quickstart.yaml
	$(BIN)/secoctl status quickstart
	$(BIN)/secoctl report quickstart
	$(BIN)/secoctl weights pull seco-resnet18-quickstart -o quickstart-weights
	$(BIN)/python -c "from secoctl.weights import load; model, transform = load('seco-resnet18-quickstart'); \
		print('loaded', type(model).__name__, sum(p.numel() for p in model.parameters()), 'parameters')"

test: $(VENV)/.installed
	$(BIN)/python -m pytest -m "not slow"
	$(BIN)/python -m pytest -m slow || [ $$? -eq 5 ]  # 5: no slow test collected

lock: $(UV)
	$(UV) pip compile pyproject.toml --extra data --extra local --extra test --python-version 3.11 \
		--output-file requirements.lock --quiet
	$(UV) pip compile pyproject.toml --extra data --python-version 3.11 \
		--output-file images/secoctl/requirements.lock --quiet
