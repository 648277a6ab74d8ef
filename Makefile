# Two commands for a fresh machine (README.md):
#   make demo   - set up .venv and run every workflow on the bundled demo models
#   make test   - set up .venv (+ system packages for the browser tests) and run the suite
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
STAMP := $(VENV)/.installed

.PHONY: venv demo test test-fast models bench clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	# torch first, pinned: on a CPU-only machine this is the CPU build
	$(PIP) install -q "torch==2.13.0"
	$(PIP) install -q -e ".[slicer,web,test]"
	touch $(STAMP)

venv: $(STAMP)

demo: venv
	$(VENV)/bin/clinicalai demo --out demo-output

test: venv
	bash scripts/install-system-deps.sh
	$(PY) -m pytest -q

test-fast: venv
	$(PY) -m pytest -q -m "not slow and not browser"

bench: venv
	$(PY) -m pytest benchmarks -q --benchmark-only

clean:
	rm -rf $(VENV) demo-output .pytest_cache
