# Two commands for a fresh machine (Python 3.11, git, make):
#   make demo   set up .venv, simulate a study, analyse it end to end, print the report path
#   make test   set up .venv with the test extras and run the whole test suite
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
PIP    := $(BIN)/python -m pip
DEMO_DIR ?= theramark-demo
PYTEST_ARGS ?=

.PHONY: demo test test-fast lint bench clean bids-validator browser

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip

# Stamp files make both targets idempotent: a second run reinstalls only when pyproject.toml changed.
$(VENV)/.stamp-install: pyproject.toml | $(BIN)/python
	$(PIP) install --quiet -e .
	touch $@

$(VENV)/.stamp-test: pyproject.toml | $(BIN)/python
	$(PIP) install --quiet -e ".[test]"
	touch $@ $(VENV)/.stamp-install

# The official BIDS validator (npm package, run with node) for the interoperability test.
# Optional: if node/npm are missing the test that needs it skips with the reason.
.tools/node_modules/.bin/bids-validator:
	@mkdir -p .tools
	-@command -v npm >/dev/null 2>&1 && npm install --silent --prefix .tools bids-validator@1.15.0 >/dev/null 2>&1 \
	  || echo "note: npm could not install bids-validator; the BIDS-validator test will skip"

bids-validator: .tools/node_modules/.bin/bids-validator

# pybids' test datasets (its source distribution from the package index, unpacked) for the
# external-datasets regression test. Optional: if the download fails that test skips with the reason.
PYBIDS_VERSION ?= 0.22.0
.tools/pybids: | $(BIN)/python
	@mkdir -p .tools
	-@rm -rf .tools/pybids-sdist .tools/pybids.tmp; \
	  $(PIP) download --quiet --no-deps --no-binary :all: pybids==$(PYBIDS_VERSION) -d .tools/pybids-sdist \
	    >/dev/null 2>&1 \
	  && mkdir .tools/pybids.tmp \
	  && tar -xzf .tools/pybids-sdist/pybids-$(PYBIDS_VERSION).tar.gz -C .tools/pybids.tmp --strip-components=1 \
	  && mv .tools/pybids.tmp $@ \
	  || { rm -rf .tools/pybids.tmp; echo "note: could not download the pybids sdist; the external-datasets test will skip"; }

# Headless Chromium and its WebDriver (Debian's packages) for the browser tests of the report and
# the neurofeedback display. Installed only when missing and make runs as root with apt-get;
# otherwise those tests skip with the reason.
browser:
	@{ command -v chromium >/dev/null 2>&1 && command -v chromedriver >/dev/null 2>&1; } \
	  || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1 \
	  && (apt-get update -qq >/dev/null 2>&1; DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null 2>&1) \
	  || echo "note: chromium/chromium-driver could not be installed; the browser tests of the report and the neurofeedback display will skip"; }

demo: $(VENV)/.stamp-install
	$(BIN)/theramark demo $(DEMO_DIR)

test: $(VENV)/.stamp-test bids-validator browser .tools/pybids
	$(BIN)/python -m pytest -n 2 --dist loadfile $(PYTEST_ARGS)

test-fast: $(VENV)/.stamp-test
	$(BIN)/python -m pytest -n 2 --dist loadfile -m "not slow" $(PYTEST_ARGS)

lint: $(VENV)/.stamp-test
	$(BIN)/ruff check src tests benchmarks

bench: $(VENV)/.stamp-test
	$(BIN)/python -m benchmarks

clean:
	rm -rf $(VENV) .tools $(DEMO_DIR) build dist src/*.egg-info
