# Two commands on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
STAMP  := $(VENV)/.installed

.PHONY: venv demo test test-floor lint bench docs-check clean

$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q -c constraints.txt torch==2.13.0
	$(PIP) install -q -c constraints.txt -e ".[dev]"
	touch $(STAMP)

venv: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/scidl train burgers --nproc 2

test: $(STAMP)
	$(VENV)/bin/mypy src
	$(PY) -m pytest -q -p no:cacheprovider --durations=30 tests

# The unit tests (no *_integration.py, no slow ones) against the oldest versions SciDL
# declares: every `>=` floor of pyproject.toml (dependencies + dev extra) pinned with `==`
# by scripts/floor_pins.py, torch from constraints.txt, in a venv of its own.
FLOOR := .venv-floor
$(FLOOR)/.installed: pyproject.toml constraints.txt scripts/floor_pins.py
	test -x $(FLOOR)/bin/python || $(PYTHON) -m venv $(FLOOR)
	$(FLOOR)/bin/python -m pip install -q --upgrade pip
	$(FLOOR)/bin/python -m pip install -q -c constraints.txt torch==2.13.0
	$(FLOOR)/bin/python scripts/floor_pins.py > $(FLOOR)/floor.txt
	$(FLOOR)/bin/python -m pip install -q -r $(FLOOR)/floor.txt
	$(FLOOR)/bin/python -m pip install -q --no-deps -e .
	touch $@

test-floor: $(FLOOR)/.installed
	$(FLOOR)/bin/python -m pytest -q -p no:cacheprovider -m "not slow and not gpu" \
	  --ignore-glob='*_integration.py' tests

lint: $(STAMP)
	$(VENV)/bin/ruff check src tests scripts benchmarks examples

bench: $(STAMP)
	$(PY) benchmarks/engine_overhead.py

# every report page screenshotted in headless Chromium (needs `chromium` on PATH)
docs-check: $(STAMP)
	$(PY) scripts/docs_check.py --out runs/docs-check

clean:
	rm -rf $(VENV) $(FLOOR) runs .pytest_cache
