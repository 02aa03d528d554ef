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

clean:
	rm -rf $(VENV) build *.egg-info
