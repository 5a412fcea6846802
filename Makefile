# xenha — the two set-up commands of the README are `make demo` and `make test` (as root on Debian 12).
VENV := .venv
PY := $(VENV)/bin/python

.PHONY: deps demo test lint bench nemesis lab-up lab-down lab-status clean

deps:
	sh scripts/install-deps

## the main job on the built-in lab: build it, migrate, crash, fail over, report, tear down
demo: deps
	$(PY) -m lab demo

## lint + the whole test suite (unit, functional with real salt daemons, hosts harness, lab)
test: deps lint
	$(VENV)/bin/pytest -ra --durations=30 tests

lint:
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	find salt reactor pillar -name '*.sls' -print0 | xargs -0 $(VENV)/bin/salt-lint -c .salt-lint

bench: deps
	$(PY) -m bench

## random faults against a lab of its own: never two copies of a domU, every fault settles
## (make nemesis NEMESIS_TRIALS=20 NEMESIS_SEED=1234 replays a seed)
NEMESIS_TRIALS ?= 50
NEMESIS_SEED ?=
nemesis: deps
	$(PY) -m lab nemesis --trials $(NEMESIS_TRIALS) $(if $(NEMESIS_SEED),--seed $(NEMESIS_SEED))

lab-up: deps
	$(PY) -m lab up
lab-down:
	$(PY) -m lab down
lab-status:
	$(PY) -m lab status

clean:
	rm -rf $(VENV) .pytest_cache
