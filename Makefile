PY ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: demo test lint fuzz bench clean

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

clean:
	rm -rf $(VENV) build *.egg-info
