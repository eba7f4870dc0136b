# One-command setup, tests and demo for mbrl_ros. Everything comes from PyPI and Debian.
#   make setup   create/refresh .venv (idempotent; quick when nothing changed)
#   make test    setup, then lint + type check (ruff, mypy), then the whole test suite
#   make demo    setup, then a short PAL run on the simulated D'Claw through the ROS 2 graph
#   make bench   setup, then the quick benchmarks (figures into BENCHMARKS.md; every script: python -m bench.<name>)

SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip --disable-pip-version-check -q
STAMP := $(VENV)/.stamp-setup
DEMO_ARGS ?=
PYTEST_ARGS ?=

.PHONY: setup lint test demo bench clean system-deps

setup: $(STAMP)

# Debian packages: OSMesa for offscreen MuJoCo rendering (mbrl-ros render). Skipped when present.
system-deps:
	@if ! ldconfig -p | grep -q libOSMesa; then \
	  echo "[setup] installing Debian libosmesa6 (offscreen rendering)"; \
	  if [ "$$(id -u)" = 0 ]; then (apt-get update -qq && apt-get install -y -qq libosmesa6 >/dev/null) || echo "[setup] warning: libosmesa6 not installed; rendering tests will skip"; \
	  else echo "[setup] warning: not root, cannot apt-get install libosmesa6; rendering tests will skip"; fi; \
	fi

$(STAMP): requirements.txt requirements-dev.txt setup.py setup.cfg package.xml $(wildcard sim/scenes/*.xml) | system-deps
	@$(PYTHON) -c 'import sys; assert sys.version_info[:2] == (3, 11), "mbrl_ros needs Python 3.11 (the ROS 2 Kilted wheels are cp311)"'
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@echo "[setup] installing Python dependencies into $(VENV)"
	@$(PIP) install -r requirements.txt -r requirements-dev.txt 2>&1 | grep -v "^WARNING: Location" || true
	@$(PY) -c 'import torch, mujoco, rclpy, onnxruntime, dynamixel_sdk' # fail loudly if an install failed
	@# robel is only used for its MJCF assets; its own deps (mujoco-py, gym<0.14) do not install.
	@$(PIP) install --no-deps robel==0.1.2 2>&1 | grep -v "^WARNING: Location" || true
	@$(PIP) install --no-deps -e . 2>&1 | grep -vE "^WARNING: Location|DEPRECATION: robel" || true
	@# the MuJoCo scenes: ROBEL's assets + the overlays of sim/scenes, prepared into sim/prepared/ (git-ignored)
	@$(PY) -m mbrl_ros.tasks.scenes >/dev/null
	@touch $(STAMP)
	@echo "[setup] done"

# lint (ruff) and type check (mypy) of mbrl_ros/ first: both must be clean
lint: setup
	$(VENV)/bin/ruff check mbrl_ros
	$(VENV)/bin/ruff format --check mbrl_ros
	$(VENV)/bin/mypy

test: setup lint
	$(VENV)/bin/pytest $(PYTEST_ARGS)

demo: setup
	$(VENV)/bin/mbrl-ros launch pal_dclaw config:=demo video:=true $(DEMO_ARGS)

bench: setup
	$(PY) -m bench.bench_env --quick

clean:
	rm -rf $(VENV) build install log .pytest_cache
