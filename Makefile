# Two commands from a fresh clone: `make demo` and `make test`.
# Both create .venv if missing and install the package with what it needs.

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.gradkern-installed

.PHONY: demo test install lint bench clean

$(STAMP): pyproject.toml setup.py $(wildcard csrc/*.c csrc/*.h src/gradkern/_build_c.py)
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q -e ".[dev]"
	@# PyTorch is only a referee for the cross-checks: install the CPU build when it can be had
	$(PY) -m pip install -q torch==2.13.0 || echo "note: torch==2.13.0 not installed; PyTorch checks will skip"
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/gradkern demo

test: $(STAMP)
	$(PY) -m pytest -q

lint: $(STAMP)
	$(VENV)/bin/ruff check src tests benchmarks examples

clean:
	rm -rf build dist src/*.egg-info src/gradkern/*.so src/gradkern/_gradkern_c*.c .pytest_cache
