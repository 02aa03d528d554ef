PY ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: demo test test-fast lint fuzz soak-fuzz twins bench soak chaos clean browser image compose-up compose-demo compose-down netns-deps netns wan

$(BIN)/pbft: pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test]'
	touch $(BIN)/pbft

demo: $(BIN)/pbft
	$(BIN)/pbft demo

test: $(BIN)/pbft browser
	$(BIN)/ruff check .
	$(BIN)/pytest -rs

# Headless Chromium for the viewer's browser test (tests/trace/test_browser.py): Debian's
# package, installed when we are root; without it that test is skipped with the reason.
browser:
	@command -v chromium >/dev/null 2>&1 || { [ "$$(id -u)" = 0 ] && apt-get install -y chromium; } \
		|| echo "make browser: chromium is not installed; the browser test will be skipped"

# Network namespaces (root only): tools/netns_cluster.py needs iproute2, and ethtool for its
# user-space switch (this machine's kernel has no sch_netem).
netns-deps:
	@{ command -v ip >/dev/null 2>&1 && command -v ethtool >/dev/null 2>&1; } \
		|| { [ "$$(id -u)" = 0 ] && apt-get install -y iproute2 ethtool; } \
		|| echo "make netns-deps: needs root to install iproute2 and ethtool"

# The opt-in namespace tests, and the wide-area latency figures (20 ms one-way links; the
# target is a write's p50 within 1.25x of five one-way delays at 1, 4 and 32 clients).
netns: $(BIN)/pbft netns-deps
	PBFT_NETNS=1 $(BIN)/pytest -q tests/cluster/test_netns.py

wan: $(BIN)/pbft netns-deps
	mkdir -p build
	for c in 1 4 32; do $(BIN)/python tools/netns_cluster.py run --delay-ms 20 --clients $$c \
		--requests 40 --json build/wan-$$c.json || exit 1; done

# The developer subset: every test of the layers that run no real process or socket (the
# protocol core, the service, the Byzantine behaviours, the simulator), plus the evidence
# tests. `make test` stays the gate.
FAST_TESTS := tests/protocol tests/service tests/adversary tests/sim tests/cluster/test_evidence.py \
	tests/test_layers.py tests/test_purity.py

test-fast: $(BIN)/pbft
	$(BIN)/ruff check .
	$(BIN)/pytest $(FAST_TESTS)

lint: $(BIN)/pbft
	$(BIN)/ruff check .

# Fuzz campaigns (docs/fuzzing.md) on every core: scenario files of violations as they are found
# and the JSON result under build/. `fuzz` is sized for a few minutes on a two-core machine;
# `soak-fuzz` is the nightly 100,000 seeds (hours; never part of `make test`).
# Extra flags: make fuzz FUZZ_ARGS="--mode mutation --jobs 4".
fuzz: $(BIN)/pbft
	$(BIN)/pbft fuzz --seeds 2000 --out-dir build/fuzz -o build/fuzz/result.json $(FUZZ_ARGS)

soak-fuzz: $(BIN)/pbft
	$(BIN)/pbft fuzz --seeds 100000 --out-dir build/soak-fuzz -o build/soak-fuzz/result.json $(FUZZ_ARGS)

# Every Twins schedule of 3 views (docs/fuzzing.md, "Twins"): 4,644 runs on every core.
twins: $(BIN)/pbft
	$(BIN)/pbft twins --rounds 3 --out-dir build/twins -o build/twins/result.json $(TWINS_ARGS)

# The standard configuration (docs/formats.md, bench report): f=1, enough clients to saturate the
# cluster, 10 s. Extra flags: make bench BENCH_ARGS="--json bench.json".
bench: $(BIN)/pbft
	$(BIN)/pbft bench --f 1 --clients 32 --duration 10 $(BENCH_ARGS)

# Long simulator runs: structure maxima vs bounds, memory curve, catch-up times (tools/soak_sim.py),
# then the full-size tests. Extra flags: make soak SOAK_ARGS="--production --json soak.json".
soak: $(BIN)/pbft
	$(BIN)/python tools/soak_sim.py $(SOAK_ARGS)
	PBFT_SOAK=1 $(BIN)/pytest -q tests/sim/test_soak.py

# A real-process chaos run (about two minutes): kill -9 one replica at random, 20 cycles,
# and once the moment its state transfer starts; all must end caught up, in one view.
chaos: $(BIN)/pbft
	$(BIN)/pbft scenario run --real tools/scenarios/chaos-kill9.toml

# Containers (deploy/README.md). `make image` builds pbft:<version> and pbft:latest from
# deploy/Containerfile (IMAGE_BASE: another python 3.11 base, e.g. a mirror's); the compose
# targets run the 4-replica group of deploy/compose.yaml on this machine, with keys made
# once into keys/compose by deploy/compose-keys.sh.
VERSION := $(shell sed -n 's/^version = "\(.*\)"/\1/p' pyproject.toml)
IMAGE_BASE ?= python:3.11-slim
COMPOSE ?= $(shell docker compose version >/dev/null 2>&1 && echo "docker compose" || echo docker-compose)
DC = $(COMPOSE) -p pbft -f deploy/compose.yaml

image:
	docker build -f deploy/Containerfile --build-arg BASE=$(IMAGE_BASE) -t pbft:$(VERSION) -t pbft:latest .

keys/compose/hosts: | $(BIN)/pbft
	PBFT=$(BIN)/pbft deploy/compose-keys.sh keys/compose

compose-up: image keys/compose/hosts
	$(DC) up -d
	$(DC) ps

compose-demo:
	$(DC) --profile demo run --rm client

compose-down:
	$(DC) --profile demo down

clean:
	rm -rf $(VENV) build *.egg-info
