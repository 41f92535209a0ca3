# Two commands on a fresh clone: `make run` (the camera) and `make test` (the test suite).
# Each creates .venv when missing and installs what it needs (installers/install.sh).
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml installers/install.sh | cksum | cut -d' ' -f1)
ARGS ?=

# The pure-Python wheels benchmarks/gpu.sh needs on a GPU machine that has torch, transformers, onnx and
# onnxruntime but no network (Python 3.12): only what the benchmark imports and that machine lacks.
WHEEL_DIR ?= .whl
GPU_WHEELS ?= diffusers==0.42.1 platformdirs==4.14.9
GPU_PLATFORMS := $(foreach n,manylinux_2_28 manylinux_2_27 manylinux_2_17 manylinux2014 manylinux1,--platform $(n)_x86_64)

.PHONY: run test lint install clean gpu-wheels

$(STAMP): pyproject.toml installers/install.sh
	installers/install.sh --dev --venv $(VENV)
	rm -f $(VENV)/.installed-* && touch $@

install: $(STAMP)

run: $(STAMP)
	$(VENV)/bin/vcam run $(ARGS)

test: $(STAMP)
	HF_HUB_OFFLINE=1 $(PY) -m pytest -q $(ARGS)

lint: $(STAMP)
	$(VENV)/bin/ruff check vcam model tray tests benchmarks
	$(VENV)/bin/ruff format --check vcam model tray tests benchmarks
	$(VENV)/bin/mypy

gpu-wheels: $(STAMP)
	$(PY) -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
		$(GPU_PLATFORMS) -d $(WHEEL_DIR) $(GPU_WHEELS)

clean:
	rm -rf $(VENV) build dist *.egg-info
