# Two entry points for a fresh machine: `make quickstart` and `make test` (see README).
# Everything installs into .venv from requirements.lock; uv keeps its downloads in ~/.cache/uv.
# Bytecode is compiled at install: where PYTHONDONTWRITEBYTECODE is set (CI, some images) every
# `secoctl` start would otherwise compile its imports from source, about twice the start-up time.
# `make test` prints "phase NAME: N s" after each step and each suite's 30 slowest tests, so a CI log shows where
# the time went.
SHELL := /bin/bash
PYTHON ?= python3
UV_VERSION := 0.13.9
VENV := .venv
BIN := $(VENV)/bin
UV := $(BIN)/uv
# `make quickstart TORCH=cpu` (or `make quickstart-cpu`), for a machine without a GPU: torch and torchvision at
# the lock's versions from PyTorch's own CPU wheel index, the rest of the lock without the CUDA libraries
# (about 3 GB less). PyPI's Linux torch wheels require the CUDA packages; only that index has CPU-only ones.
TORCH ?= cuda
TORCH_CPU_INDEX ?= https://download.pytorch.org/whl/cpu
INSTALLED := $(VENV)/.installed$(if $(filter cpu,$(TORCH)),-cpu)
CUDA_PACKAGES := ^(torch|torchvision|triton|nvidia-[a-z0-9-]+)==

.PHONY: quickstart quickstart-cpu test cluster-binaries ci-cold lock

$(UV):
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check uv==$(UV_VERSION)

$(VENV)/.installed: $(UV) requirements.lock pyproject.toml
	@SECONDS=0; set -e; \
	$(UV) pip install --python $(BIN)/python --quiet --compile-bytecode -r requirements.lock; \
	$(UV) pip install --python $(BIN)/python --quiet --no-deps -e .; \
	$(BIN)/python -m compileall -q secoctl jobs; \
	echo "phase install: $$SECONDS s"
	touch $@

# The lock less torch, torchvision and what only their CUDA builds need.
$(VENV)/requirements-cpu.txt: requirements.lock
	mkdir -p $(VENV)
	grep -vE '$(CUDA_PACKAGES)' requirements.lock > $@

$(VENV)/.installed-cpu: $(UV) $(VENV)/requirements-cpu.txt pyproject.toml
	@SECONDS=0; set -e; \
	$(UV) pip install --python $(BIN)/python --quiet --compile-bytecode --index-url $(TORCH_CPU_INDEX) \
		$$(grep -E '^(torch|torchvision)==' requirements.lock); \
	$(UV) pip install --python $(BIN)/python --quiet --compile-bytecode -r $(VENV)/requirements-cpu.txt; \
	$(UV) pip install --python $(BIN)/python --quiet --no-deps -e .; \
	$(BIN)/python -m compileall -q secoctl jobs; \
	echo "phase install: $$SECONDS s"
	touch $@

quickstart-cpu:
	$(MAKE) quickstart TORCH=cpu

# The main job, offline: synthetic scenes served on 127.0.0.1, every stage, then the weights pulled back.
quickstart: $(INSTALLED)
	$(BIN)/python -m jobs.localcloud run --spec examples/quickstart.yaml -- \
		$(BIN)/secoctl apply --local examples/quickstart.yaml
	$(BIN)/secoctl status quickstart
	$(BIN)/secoctl report quickstart
	$(BIN)/secoctl weights pull seco-resnet18-quickstart -o quickstart-weights
	$(BIN)/python -c "from secoctl.weights import load; model, transform = load('seco-resnet18-quickstart'); \
		print('loaded', type(model).__name__, sum(p.numel() for p in model.parameters()), 'parameters')"

# The real Kubernetes, etcd and kwok binaries (and Kueue: jobs/localcloud/cluster/kueue.py; as root, the real
# node's: jobs/localcloud/cluster/realnode) that the cluster tests, benchmarks.scale and
# `python -m jobs.localcloud.cluster up` run: built from source once
# (over ten minutes on two cores), then reused from ~/.cache/secoctl/cluster/<versions and flags>.
cluster-binaries: $(VENV)/.installed
	@SECONDS=0; $(BIN)/python -m jobs.localcloud.cluster build; rc=$$?; \
		echo "phase cluster-binaries: $$SECONDS s"; exit $$rc

test: $(VENV)/.installed cluster-binaries
	@SECONDS=0; $(BIN)/python -m pytest -m "not slow" --durations=30; rc=$$?; \
		echo "phase default suite: $$SECONDS s"; exit $$rc
	@SECONDS=0; $(BIN)/python -m pytest -m slow --durations=30; rc=$$?; echo "phase slow suite: $$SECONDS s"; \
		[ $$rc -eq 0 ] || [ $$rc -eq 5 ]  # 5: no slow test collected

# .ci/run on a fresh clone of HEAD with HOME and every cache empty, as a new machine has them.
ci-cold:
	.ci/cold

lock: $(UV)
	$(UV) pip compile pyproject.toml --extra data --extra local --extra test --python-version 3.11 \
		--output-file requirements.lock --quiet
	$(UV) pip compile pyproject.toml --extra data --python-version 3.11 \
		--output-file images/secoctl/requirements.lock --quiet
	$(UV) pip compile tests/checkov-requirements.in --python-version 3.11 \
		--output-file tests/checkov-requirements.lock --quiet
