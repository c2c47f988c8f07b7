# Two commands on a fresh machine: `make test` and `make demo`.
# Each creates or reuses .venv. torch is installed first and pinned: on CPU-only machines
# the 2.13.0 wheel on disk is taken; an unpinned torch would pull a multi-GB CUDA build.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
TORCH_VERSION ?= 2.13.0
STAMP := $(VENV)/.installed
# llama-cpp-python (the GGUF export tests run exported files under llama.cpp) has no wheel on
# PyPI for every platform: it is built from source once (about 5 minutes) into this cache and
# installed from there. If it cannot be built, the install goes on without it and those tests
# are reported as skipped with the reason.
LLAMA_CPP_VERSION ?= 0.3.36
WHEELS ?= $(HOME)/.cache/tuneforge/wheels

.PHONY: install llama-cpp-wheel browser test test-fast demo bench lint format clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==$(TORCH_VERSION)
	$(MAKE) --no-print-directory llama-cpp-wheel
	$(PY) -m pip install -q --find-links $(WHEELS) -e ".[dev,gguf]" || \
	  { echo "WARNING: llama-cpp-python not installed: GGUF runtime tests will be skipped" >&2; \
	    $(PY) -m pip install -q -e ".[dev]"; }
	touch $(STAMP)

llama-cpp-wheel:
	@ls $(WHEELS)/llama_cpp_python-$(LLAMA_CPP_VERSION)-*.whl >/dev/null 2>&1 || { \
	  echo "building llama-cpp-python $(LLAMA_CPP_VERSION) into $(WHEELS) (once, ~5 min)"; \
	  mkdir -p $(WHEELS); test -x $(PY) || $(PYTHON) -m venv $(VENV); \
	  $(PY) -m pip wheel -q --no-deps llama-cpp-python==$(LLAMA_CPP_VERSION) -w $(WHEELS) || \
	  echo "WARNING: building llama-cpp-python failed (cmake and a C++ compiler are needed)" >&2; }

# The web UI's browser tests drive Debian's headless Chromium through its chromedriver (no
# browser download). Installed here when missing (apt, as root); where that cannot be done the
# tests are reported as skipped with the reason.
browser:
	@command -v chromium >/dev/null && command -v chromedriver >/dev/null || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    echo "installing chromium and chromium-driver (apt) for the UI's browser tests"; \
	    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
	      chromium chromium-driver; } >/dev/null || \
	    echo "WARNING: installing chromium failed: the UI's browser tests will be skipped" >&2; \
	  else \
	    echo "WARNING: chromium/chromedriver missing (apt-get install chromium chromium-driver" \
	      "as root): the UI's browser tests will be skipped" >&2; \
	  fi; }

install: $(STAMP)

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: $(STAMP)
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

test: lint browser
	$(VENV)/bin/pytest -q

test-fast: $(STAMP) browser
	$(VENV)/bin/pytest -q -m "not slow"

demo: $(STAMP)
	$(PY) -m tuneforge.demo

bench: $(STAMP)
	$(PY) -m pip install -q -e ".[dev,bench]"
	for f in bench/*.py; do $(PY) $$f || exit 1; done

clean:
	rm -rf $(VENV) build dist src/*.egg-info .pytest_cache .ruff_cache
