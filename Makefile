# Two commands from a fresh clone: `make demo` and `make test`.
# Both create .venv if missing and install the package with what it needs.

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.gradkern-installed

.PHONY: demo test install lint bench clean

$(STAMP): pyproject.toml setup.py $(wildcard csrc/*.c csrc/*.h src/gradkern/_build_c.py)
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@# with MPI (mpich and mpi4py wheels) for the data-parallel tests when they can be had;
	@# without them the MPI tests skip
	$(PY) -m pip install -q -e ".[dev,dist]" || $(PY) -m pip install -q -e ".[dev]"
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

# The C backend under AddressSanitizer + UndefinedBehaviorSanitizer: a separate build in
# build/sanitize (the installed extension is left alone), loaded through GRADKERN_C_EXT,
# running the C tests and the shared suite's c cases (AVX-512 and generic kernels);
# test_sanitizer_canary checks that a planted out-of-bounds write is caught.
SAN_DIR := build/sanitize
SAN_ENV = GRADKERN_C_EXT=$$(ls $(SAN_DIR)/gradkern/_gradkern_c*.so) \
	LD_PRELOAD=$$(gcc -print-file-name=libasan.so) PYTHONMALLOC=malloc \
	ASAN_OPTIONS=detect_leaks=0:halt_on_error=1 UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1

.PHONY: sanitize
sanitize: $(STAMP)
	rm -rf $(SAN_DIR)
	GRADKERN_SANITIZE=1 $(PY) src/gradkern/_build_c.py $(SAN_DIR)
	$(SAN_ENV) $(PY) -m pytest -q -p no:cacheprovider tests/test_c_backend.py
	$(SAN_ENV) $(PY) -m pytest -q -p no:cacheprovider tests/test_kernels.py tests/test_drivers.py -k "[c-"
	@# once more on the generic C kernels, whose every load and store ASan instruments
	@# (it cannot see inside the AVX masked loads and stores)
	$(SAN_ENV) GRADKERN_ISA=generic $(PY) -m pytest -q -p no:cacheprovider tests/test_kernels.py tests/test_drivers.py -k "[c-"
