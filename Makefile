# Set-up and everyday commands. Everything a fresh machine needs is installed from here.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
HARNESS := $(VENV)/bin/harness
# The CPU build of torch: on the project's machines pip finds it on disk; elsewhere pick your build.
TORCH_SPEC ?= torch==2.13.0
BENCHMARK ?= tiny

.PHONY: venv demo test bench images clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q "$(TORCH_SPEC)"
	$(PY) -m pip install -q -e '.[dev]'
	touch $@

venv: $(VENV)/.installed

# The main job on the embedded default: prepare tiny, run the baseline, print the score card.
demo: venv
	$(HARNESS) prepare --benchmark $(BENCHMARK)
	$(HARNESS) run submissions/baseline/train.py --benchmark $(BENCHMARK)

# The whole suite. Container tests skip (saying why) only when no Docker daemon is reachable,
# and fail instead when CI=true.
test: venv
	$(PY) -m pytest -q -p no:cacheprovider

# Throughput and overhead figures, measured side by side in one run.
bench: venv
	$(HARNESS) prepare --benchmark tiny
	$(PY) -m harness.bench

clean:
	rm -rf runs results .cache/data
