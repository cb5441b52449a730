# One-command set-up: `make test` and `make demo` create the virtual environment,
# install the pinned requirements and fetch Fashion-MNIST before they run.
PY ?= python3
VENV := .venv
PYTHON := $(VENV)/bin/python
DATA ?= data
FMNIST_RAW := $(DATA)/FashionMNIST/raw
PYTEST_ARGS ?=

.PHONY: setup data browser sshd test test-fast lint demo clean

$(VENV)/.installed: requirements.txt pyproject.toml
	$(PY) -m venv $(VENV)
	$(PYTHON) -m pip install --quiet --upgrade pip
	$(PYTHON) -m pip install --quiet -r requirements.txt
	$(PYTHON) -m pip install --quiet --no-deps --no-build-isolation -e .
	touch $@

setup: $(VENV)/.installed data

# Fashion-MNIST: Debian's dataset-fashion-mnist when apt is available, else torchvision's download.
$(FMNIST_RAW)/.ready: | $(VENV)/.installed
	$(PYTHON) -m trainers.data fetch --dataset fashion_mnist --root $(DATA)
	touch $@

data: $(FMNIST_RAW)/.ready

# The web UI test drives Debian's chromium; install it when apt is available (as root).
browser:
	@command -v chromium >/dev/null 2>&1 || { \
	  if command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ]; then \
	    apt-get update -qq && apt-get install -y -qq chromium >/dev/null; \
	  else echo "chromium not found: install Debian's chromium package for the web UI test" >&2; fi; }

# The remote-search test runs NNI's SSH training service against Debian's OpenSSH server, which the test
# starts itself on 127.0.0.1. Install it when apt is available (as root), without letting the package
# start a system sshd on port 22 (a policy-rc.d that refuses service starts, for the install only).
sshd:
	@command -v sshd >/dev/null 2>&1 || [ -x /usr/sbin/sshd ] || { \
	  if command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ]; then \
	    policy=; [ -e /usr/sbin/policy-rc.d ] || { policy=1; printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d; \
	      chmod 755 /usr/sbin/policy-rc.d; }; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
	      openssh-server openssh-client >/dev/null; rc=$$?; \
	    [ -z "$$policy" ] || rm -f /usr/sbin/policy-rc.d; exit $$rc; \
	  else echo "sshd not found: install Debian's openssh-server package for the remote-search test" >&2; fi; }

test: setup browser sshd
	$(PYTHON) -m ruff check .
	$(PYTHON) -m pytest $(PYTEST_ARGS)

test-fast: setup
	$(PYTHON) -m pytest -m "not slow" $(PYTEST_ARGS)

# Quick end-to-end run on Fashion-MNIST: supernet, nnictl search, picks + LegoNet, nnictl retrain, table, report.
demo: setup
	$(PYTHON) -m workflow pipeline --out runs/demo --keep-ui

lint: setup
	$(PYTHON) -m ruff check .

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
