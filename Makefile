# One-command set-up: `make test` and `make demo` create the virtual environment,
# install the pinned requirements and fetch Fashion-MNIST before they run.
PY ?= python3
VENV := .venv
PYTHON := $(VENV)/bin/python
DATA ?= data
FMNIST_RAW := $(DATA)/FashionMNIST/raw
PYTEST_ARGS ?=

.PHONY: setup data test test-fast lint demo clean

$(VENV)/.installed: requirements.txt
	$(PY) -m venv $(VENV)
	$(PYTHON) -m pip install --quiet --upgrade pip
	$(PYTHON) -m pip install --quiet -r requirements.txt
	touch $@

setup: $(VENV)/.installed data

# Fashion-MNIST: Debian's dataset-fashion-mnist when apt is available, else torchvision's download.
$(FMNIST_RAW)/.ready: | $(VENV)/.installed
	$(PYTHON) -m trainers.data fetch-fashion-mnist --root $(DATA)
	touch $@

data: $(FMNIST_RAW)/.ready

test: setup
	$(PYTHON) -m ruff check .
	$(PYTHON) -m pytest $(PYTEST_ARGS)

test-fast: setup
	$(PYTHON) -m pytest -m "not slow" $(PYTEST_ARGS)

# Quick end-to-end run on Fashion-MNIST: supernet, nnictl search, front, nnictl retrain, table.
demo: setup
	$(PYTHON) -m strategies.pipeline --out runs/demo --keep-ui

lint: setup
	$(PYTHON) -m ruff check .

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
