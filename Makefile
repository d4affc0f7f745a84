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
# In a container whenever a Docker daemon is reachable (the CPU image is built first if missing);
# the score card names the backend and the image.
demo: venv
	$(HARNESS) prepare --benchmark $(BENCHMARK)
	@if $(PY) -c 'import sys; from harness.backends.docker import docker_available; sys.exit(not docker_available())'; then \
		$(HARNESS) image ensure cpu && echo "backend: docker" && \
		$(HARNESS) run submissions/baseline/train.py --benchmark $(BENCHMARK) --backend docker; \
	else \
		echo "backend: local (no Docker daemon reachable: the run is unisolated; see make images)" && \
		$(HARNESS) run submissions/baseline/train.py --benchmark $(BENCHMARK) --backend local; \
	fi

# The whole suite. Container tests skip (saying why) only when no Docker daemon is reachable,
# and fail instead when CI=true.
# Two workers (pytest-xdist), one test file each at a time: most of a test's time is spent waiting on
# processes, containers and clocks, so two files share two cores well. TEST_WORKERS=0 runs in one process.
TEST_WORKERS ?= 2
test: venv
	$(PY) -m pytest -q -p no:cacheprovider $(if $(filter 0,$(TEST_WORKERS)),,-n $(TEST_WORKERS) --dist loadfile)

# Throughput and overhead figures, measured side by side in one run.
bench: venv
	$(HARNESS) prepare --benchmark tiny
	$(PY) -m harness.bench --nvml-stand-in tests/fakes/pynvml.py
	$(PY) -m harness.bench_integrity
	$(PY) -m harness.bench_scale

# The run images: a Docker engine if none is reachable, then the CPU image built offline.
images: venv
	bash .ci/docker-up

clean:
	rm -rf runs results .cache/data
