# Two commands on a fresh clone: `make run` (the camera) and `make test` (the test suite).
# Each creates .venv when missing and installs what it needs (installers/install.sh).
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml installers/install.sh | cksum | cut -d' ' -f1)
ARGS ?=

.PHONY: run test lint install clean

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

clean:
	rm -rf $(VENV) build dist *.egg-info
