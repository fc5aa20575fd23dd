PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip

.PHONY: setup test test-slow lint clean

# One command installs everything (editable package + pinned deployment stack + test tools).
setup:
	@command -v $(PYTHON) >/dev/null 2>&1 || { echo "error: $(PYTHON) not found (mi2v needs Python 3.11)"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip==26.3
	$(PIP) install --quiet -e '.[dev]'
	$(PIP) check

test:
	$(VENV)/bin/pytest -q

test-slow:
	$(VENV)/bin/pytest -q -m slow

lint:
	$(VENV)/bin/ruff check mi2v_export exporters kernels tests benchmarks

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache artifacts
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
