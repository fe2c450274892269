# Two commands on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
STAMP  := $(VENV)/.installed

.PHONY: venv demo test lint bench docs-check clean

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
	$(PY) -m pytest -q -p no:cacheprovider tests

lint: $(STAMP)
	$(VENV)/bin/ruff check src tests scripts benchmarks examples

bench: $(STAMP)
	$(PY) benchmarks/engine_overhead.py

# every report page screenshotted in headless Chromium (needs `chromium` on PATH)
docs-check: $(STAMP)
	$(PY) scripts/docs_check.py --out runs/docs-check

clean:
	rm -rf $(VENV) runs .pytest_cache
