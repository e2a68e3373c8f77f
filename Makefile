# Two entry points for a fresh machine: `make demo` (main job) and `make test`.
# Each creates .venv on first use. Where no NVIDIA GPU is present, torch is pinned to the
# CPU wheel first, so that pip does not pull a multi-GB CUDA build.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
HAS_GPU := $(shell command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1 && echo yes)
TORCH_SPEC := $(if $(HAS_GPU),torch>=2.9,torch==2.13.0)

.PHONY: demo test test-slow install clean

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet "$(TORCH_SPEC)"
	$(BIN)/pip install --quiet -e ".[dev]"
	touch $@

install: $(BIN)/.installed

demo: $(BIN)/.installed
	$(BIN)/sail train --output-dir out/demo --overwrite

test: $(BIN)/.installed
	$(BIN)/python -m pytest -q -n 2 -m "not slow"

test-slow: $(BIN)/.installed
	$(BIN)/python -m pytest -q -m slow

clean:
	rm -rf $(VENV) out .pytest_cache .hypothesis
