PY ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: demo test lint fuzz bench soak chaos clean

$(BIN)/pbft: pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test]'
	touch $(BIN)/pbft

demo: $(BIN)/pbft
	$(BIN)/pbft demo

test: $(BIN)/pbft
	$(BIN)/ruff check .
	$(BIN)/pytest

lint: $(BIN)/pbft
	$(BIN)/ruff check .

fuzz: $(BIN)/pbft
	$(BIN)/pbft fuzz --seeds 1000

# The standard configuration (DESIGN.md section 7): f=1, enough clients to saturate the
# cluster, 10 s. Extra flags: make bench BENCH_ARGS="--json bench.json".
bench: $(BIN)/pbft
	$(BIN)/pbft bench --f 1 --clients 32 --duration 10 $(BENCH_ARGS)

# Long simulator runs: structure maxima vs bounds, memory curve, catch-up times (tools/soak_sim.py),
# then the full-size tests. Extra flags: make soak SOAK_ARGS="--production --json soak.json".
soak: $(BIN)/pbft
	$(BIN)/python tools/soak_sim.py $(SOAK_ARGS)
	PBFT_SOAK=1 $(BIN)/pytest -q tests/test_soak.py

# A real-process chaos run (about two minutes): kill -9 one replica at random, 20 cycles,
# and once the moment its state transfer starts; all must end caught up, in one view.
chaos: $(BIN)/pbft
	$(BIN)/pbft scenario run --real tools/scenarios/chaos-kill9.toml

clean:
	rm -rf $(VENV) build *.egg-info
