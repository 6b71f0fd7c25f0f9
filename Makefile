# genzoo: two commands on a fresh machine.
#   make demo   install what is missing, then train the demo VAE on MNIST (about 2.5 min on 2 cores)
#   make test   install what is missing, then run the test suite
#   make docs   build the documentation site into site/ (offline, --strict); open site/index.html
PYTHON ?= python3
VENV ?= .venv
TORCH_VERSION ?= 2.13.0
PY := $(VENV)/bin/python
STAMP := $(VENV)/.genzoo-installed

.PHONY: demo test install clean browser docs

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@# torch first, pinned: an unpinned torch may pull a multi-GB CUDA build.
	$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install "torch==$(TORCH_VERSION)" || $(PY) -m pip install torch
	$(PY) -m pip install -e ".[dev,peers,docs]"
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/genzoo demo

# GENZOO_REQUIRE_PEERS=1: a cross-check skipped for a missing peer library is a failure here.
# The leaderboard report's browser test needs Debian's chromium + chromium-driver: installed here when
# apt-get can (root, a package mirror); otherwise that one test skips with a line saying so.
test: $(STAMP) browser
	GENZOO_REQUIRE_PEERS=1 $(PY) -m pytest -n logical --dist loadfile --durations=15 tests

docs: $(STAMP)
	NO_MKDOCS_2_WARNING=1 $(PY) -m mkdocs build --strict

browser:
	@command -v chromedriver >/dev/null 2>&1 || { command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ] && \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver) >/dev/null 2>&1; } \
	  || echo "make: chromium could not be installed; the browser test will skip"

clean:
	rm -rf $(VENV) runs build site src/*.egg-info
