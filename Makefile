# The README's two commands: `make demo` and `make test`. Each installs what it needs
# into .venv first. torch is pinned through constraints.txt because peft/trl/accelerate
# would otherwise pull a multi-GB CUDA build; GPU users see the README.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: install test demo lint

install: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -c constraints.txt -e ".[dev,postgres]"
	touch $(STAMP)

# pytest exits 5 when it collected nothing: a run that tested nothing proves nothing.
test: install
	$(PY) -m ruff check .
	$(PY) -m pytest; rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "pytest collected no tests: failing"; exit 1; fi; exit $$rc

demo: install
	$(VENV)/bin/loraforge demo

lint: install
	$(PY) -m ruff check .
