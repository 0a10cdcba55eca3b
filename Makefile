# Two entry points for a fresh machine: `make demo` and `make test` (each installs first).
VENV ?= .venv
PY := $(VENV)/bin/python
PYTEST_WORKERS ?= 2

.PHONY: install demo test test-multiprocess lint bench-quick clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# The CPU wheel of torch (a bare "torch" would pull a multi-GB CUDA build).
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e '.[dev]'
	touch $@

demo: install
	$(PY) -m pytest experiments/ -n auto --xp-report

# The fast suite; scenarios that start xdist workers, launcher tasks, concurrent sessions or a browser
# carry the multiprocess marker and run in test-multiprocess (CI runs both).
test: install
	$(PY) -m pytest -n $(PYTEST_WORKERS) -m "not multiprocess"

test-multiprocess: install
	$(PY) -m pytest -n $(PYTEST_WORKERS) -m multiprocess

lint: install
	$(VENV)/bin/ruff check src tests $(wildcard benchmarks)
	$(VENV)/bin/ruff format --check src tests
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports

bench-quick: install
	$(PY) benchmarks/run.py --quick

clean:
	rm -rf .xp .pytest_cache build dist src/*.egg-info
