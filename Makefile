PY ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: demo test test-fast lint fuzz bench soak chaos clean

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

# The developer subset: the protocol core's and the simulator's unit tests (no real
# processes or sockets, except the simulator CLI), plus the timer, durability and
# evidence tests. `make test` stays the gate.
FAST_TESTS := \
	tests/test_batching.py tests/test_broken_variants_unit.py tests/test_client_core.py \
	tests/test_codec.py tests/test_config.py tests/test_crypto.py tests/test_flood.py \
	tests/test_kv.py tests/test_messages.py tests/test_mutants_b.py \
	tests/test_recovery_holes.py tests/test_replica_rules.py tests/test_resource_attacks.py \
	tests/test_review_fixes.py tests/test_safety.py tests/test_statetransfer_attacks.py \
	tests/test_timers.py tests/test_viewchange_attacks.py tests/test_wrong_reply.py \
	tests/test_behaviours.py tests/test_scenarios.py tests/test_sim.py \
	tests/test_sim_broken.py tests/test_sim_durability.py tests/test_sim_oracle.py \
	tests/test_sim_triggers.py tests/test_viewchange_sim.py tests/test_evidence.py

test-fast: $(BIN)/pbft
	$(BIN)/ruff check .
	$(BIN)/pytest $(FAST_TESTS)

lint: $(BIN)/pbft
	$(BIN)/ruff check .

fuzz: $(BIN)/pbft
	$(BIN)/pbft fuzz --seeds 1000

# The standard configuration (docs/formats.md, bench report): f=1, enough clients to saturate the
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
