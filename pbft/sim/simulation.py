"""The deterministic simulator: n unmodified cores, closed-loop clients, virtual time.

Theory of operation (TigerBeetle's VOPR, FoundationDB simulation). One `random.Random`
seeded from the scenario feeds everything: identity keys, the workload, network fates,
behaviour randomness. Time is virtual milliseconds; an event queue (a heap ordered by
(time, insertion counter)) holds deliveries, the global tick, client submissions, crashes
and restarts. Every `tick_ms` each live replica and client gets a `Tick`. Nothing reads
the wall clock, iterates a hash-ordered set, or depends on object identity, so a seed
replays the same run in any process; `trace_digest` (sha256 over every delivered event
in order) proves it.

Durability (docs/architecture.md): each instance has an in-memory store fed by its
`Persist` and `Truncate` actions with exactly the semantics of events.py (a record replaces
the one with the same key; a truncation drops VOTE, PREPARED and EXECUTED records at or
below its seq). A crash empties the replica; a restart builds a fresh core and hands it the
store through `Replica.recover` (a durable restart, benign: the replica stays correct and
the oracle judges its incarnations as one signer), or, with `amnesia = true` on the crash
entry, from nothing (a faulty replica). A node persists before it sends, and the simulator
performs a step's actions atomically, so there is no half-persisted step to lose, with one
exception the runtime makes on purpose (`protocol.ready.Durability.MAY_FOLLOW_REPLIES`,
node.groupcommit.GroupCommit.writes_to_commit): a step that wrote only EXECUTED or CHECKPOINT records (or
truncated) and sent nothing but replies sends them at once and its writes wait for a
later commit. They stay in the instance's `unsynced` undo log
until a later step that commits (any step with writes not of that kind, or that also
sends votes), and a crash rolls them back: the worst a power cut can do (the runtime
also commits them on its next tick; the simulator does not count on that).

Nodes: replica ids 0..n-1, each hosting one instance (two for a `twin`, none while
crashed); clients "c0", "c1", ... Under a `[twins]` schedule (scenario.Twins, the Twins
enumeration of pbft.sim.twins) a message between replicas is addressed to instances: it
reaches only the copies of its destination that are in the sending instance's group for
the message's round (`_reach`, network.RoundPartitions), and the schedule's end is a heal. Replies travel through the same network and arrive with
`peer` = the replica id, as an authenticated channel would say. After every step of a
correct replica the oracle (oracle.py) checks its actions and resource bounds; the first
violation stops the run, which keeps the last `TRACE_TAIL` events for the report.

Liveness (docs/attacks.md, "The checks"): once the last windowed network fault has healed, each request of a
correct client must complete within `expect.liveness_ms`; checked only when the scenario
expects all requests to complete. The run ends when every correct client finished its
workload, or when nothing completed for `liveness_ms` after the heal. A fault that lasts
the whole run and can keep nodes apart (`never_healed`) is named as such in the status
line. `view-agreement`: once the workload is done and every fault has healed, the live
correct replicas must end in one active view; the run waits up to VIEW_SETTLE_MS for it,
longer while a replica's own timer will still move it (judged only when liveness is
expected and no fault lasts the whole run).

Triggered crashes (`on = "transfer"` etc. on a crash entry) fire right after the step of
that replica whose actions include the event (TRIGGER_ACTIONS), from `at_ms` on; the
restart `down_ms` later moves the heal time.
"""

from __future__ import annotations

import hashlib
import heapq
import random
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

from ..adversary import catalogue
from ..adversary.base import failure_of
from ..adversary.loader import check_sample, make_service, user_output
from ..errors import UsageError, exception_text, is_interrupt, safe_str
from ..protocol import codec, crypto
from ..protocol.client import ClientCore
from ..protocol.config import OPERATOR, ClientInfo, ClusterConfig, ReplicaInfo
from ..protocol.crypto import KeyPair, Verifier
from ..protocol.epochs import Epochs, Membership, epoch_of_view, first_view, reconfigure_operation
from ..protocol.epochs import apply as apply_membership
from ..protocol.events import (
    Broadcast,
    CheckpointStable,
    Completed,
    Departed,
    EpochStarted,
    Evidence,
    Load,
    Persist,
    Received,
    Rejected,
    Send,
    SendClient,
    StateInstalled,
    StateTransferStarted,
    Tick,
    Truncate,
    ViewChangeStarted,
    ViewInstalled,
)
from ..protocol.messages import (
    MsgType,
    envelope_from_bytes,
    envelope_type,
    memoised_decoding,
    message_of,
    render,
)
from ..protocol.ready import EMPTY, Durability, Ready
from ..protocol.replica import Replica
from ..protocol.viewchange import ViewStatus
from ..service.api import Hosted, ServiceError, operator_interrupt, recognisable_interrupts
from ..service.kv import KeyValueStore, op_delete, op_get, op_put
from ..service.kvservice import KeyValue
from .coverage import EVENTS, event_name
from .network import Fate, Network, RoundPartitions
from .oracle import Oracle, Violation
from .result import FaultyNode, Latency, ReplicaReport, RunResult
from .scenario import KINDS, Node, ReplicaLoad, Scenario, client_name
from .trace import Lies, TraceWriter, describe, watch_honest
from .watchdog import hook_watchdog

COUNTED = frozenset({*EVENTS, Evidence})
"""The action types counted as transitions for the coverage report."""
_KIND_NAME = {int(t): KINDS[i] for i, t in enumerate(MsgType)}
_VIEW_MOVES = (ViewChangeStarted, ViewInstalled)

TRACE_TAIL = 30
MAX_VIRTUAL_MS = 3_600_000
"""Hard stop for any run (one virtual hour)."""
VERIFY_MEMO = 1 << 16
SETTLE_MS = 3000
"""With `expect.catch_up`, the run continues this long after the workload so lagging
replicas can catch up by state transfer."""
CATCH_UP_GRACE_MS = 500
"""`catch_up` judges each live correct replica against the newest checkpoint that a
correct replica made stable at least this long (two retransmission periods) before the
run ends: one made stable in the last moments is still on its way to the others, and
was judged a lag (fuzz seed 28009167: a view change completed 14 ms before the end)."""
VIEW_SETTLE_CAP_MS = 300_000
"""The longest the run waits for backed-off view-change timers to bring the replicas to
one view (a timeout doubles per failed view change, up to 64 times the base)."""
VIEW_SETTLE_MS = 5000
"""How long after the workload and the last fault the live correct replicas may take to
end in one active view (`view-agreement`); the run stops as soon as they do."""

SIM_DEFAULTS = {
    "checkpoint_interval": 8,
    "log_window": 32,
    "batch_max": 16,
    "pipeline": 4,
    "view_change_timeout_ms": 1000,
    "tick_ms": 10,
    "retransmit_ms": 250,
}
"""Cluster parameters of simulated runs: small windows so checkpoints and water marks are
exercised by short workloads. A scenario's [cluster] table overrides them."""

DELIVER, TICK, SUBMIT, CRASH, RESTART, RECONFIGURE = range(6)
RECONFIGURE_RETRY_MS = 100
"""How long the operator waits before trying a reconfiguration step again (the epoch
before it has not begun yet, or its last command is still outstanding)."""

TRIGGER_ACTIONS: dict[str, type] = {
    "checkpoint": CheckpointStable,
    "transfer": StateTransferStarted,
    "installed": StateInstalled,
    "view-change": ViewChangeStarted,
    "new-view": ViewInstalled,
}
"""The action each crash trigger (`on = ...`, scenario.TRIGGERS) waits for."""


Store = dict[tuple[str, int, int, str], Persist]
"""One replica's durable records by key, in first-write order (replacement keeps the slot,
as an SQLite upsert keeps the row)."""


Undo = list[tuple[tuple[str, int, int, str], Persist | None]]
"""(key, the record it held before, or None): enough to roll a store back."""


def apply_durability(store: Store, action: Persist | Truncate, undo: Undo | None = None) -> None:
    """Perform one durability action on a store, as a runtime's storage would; with
    `undo`, note what it changed so `roll_back` can take it back."""
    if isinstance(action, Persist):
        if undo is not None:
            undo.append((action.key, store.get(action.key)))
        store[action.key] = action
        return
    for key in [k for k, r in store.items() if action.drops(r.record, r.seq, r.view)]:
        if undo is not None:
            undo.append((key, store[key]))
        del store[key]


def roll_back(store: Store, undo: Undo) -> None:
    """Undo the changes noted in `undo`, newest first (a lost, never-synced commit)."""
    for key, old in reversed(undo):
        if old is None:
            store.pop(key, None)
        else:
            store[key] = old
    undo.clear()


@dataclass(slots=True)
class Instance:
    node: Any  # Replica or ByzantineReplica
    correct: bool
    incarnation: int  # counts every start: executions are numbered per incarnation
    epoch: int = 0  # counts restarts from nothing: what an epoch signed it remembers
    store: Store = field(default_factory=dict)
    unsynced: Undo = field(default_factory=list)
    """Changes to `store` a crash may still lose (see the module docstring)."""
    failures_seen: int = 0  # of a Byzantine node's behaviour failures, already reported
    lies: Lies | None = None  # a behaviour's: what its honest core sent (lies are counted)
    state: Any = None
    """The service on its store: durable like `store` (the store keeps its checkpoints,
    and a restart rolls it back to the stable one, as a replica's SQLite store does)."""
    spec: tuple[KeyPair, int] | None = None
    """(key, configuration epoch) it was started with: a replacement node or one added
    by a reconfiguration starts in a later epoch with a key of its own."""
    load_due: bool = False
    """The scenario's `load` is still to be told to the core (before its first input)."""
    copy: int = 0
    """Which copy of its replica: 1 for the second instance of a twin (`3'`, scenario.Twins)."""


@dataclass(slots=True)
class ClientState:
    name: str
    core: ClientCore
    driver: Any  # the core, or a ByzantineClient wrapping it
    ops: list[tuple[bytes, bool]]
    correct: bool
    done: int = 0
    since: int | None = None  # submit time of the outstanding workload request
    timestamps: set[int] = field(default_factory=set)
    failures_seen: int = 0
    lies: Lies | None = None  # a Byzantine client's: what its honest core sent


def build_config(scenario: Scenario, seed: int) -> tuple[ClusterConfig, list[KeyPair], dict[str, KeyPair]]:
    n = scenario.n
    keys = [KeyPair.from_seed(f"sim/{seed}/replica/{i}".encode()) for i in range(n)]
    ckeys = {
        client_name(i): KeyPair.from_seed(f"sim/{seed}/client/{i}".encode())
        for i in range(scenario.clients)
    }
    params = dict(SIM_DEFAULTS)
    params.update(dict(scenario.cluster))
    if params["log_window"] < params["checkpoint_interval"]:
        params["log_window"] = params["checkpoint_interval"]
    params["pipeline"] = min(params["pipeline"], params["log_window"])
    params["retransmit_ms"] = max(params["retransmit_ms"], params["tick_ms"])
    cfg = ClusterConfig(
        "sim",
        scenario.f,
        tuple(ReplicaInfo(i, "sim", 7000 + i, keys[i].public) for i in range(n)),
        tuple(ClientInfo(c, k.public) for c, k in ckeys.items()),
        **params,
    )
    return cfg, keys, ckeys


@dataclass(frozen=True, slots=True)
class PlannedEpoch:
    """One configuration epoch of a scenario's reconfiguration plan ([[reconfigure]])."""

    config: ClusterConfig
    keys: dict[int, KeyPair]
    clients: dict[str, KeyPair]
    started: tuple[int, ...] = ()  # replicas that are new nodes in this epoch
    added_clients: tuple[str, ...] = ()
    removed_clients: tuple[str, ...] = ()


def build_plan(
    scenario: Scenario, seed: int, config: ClusterConfig, keys: list[KeyPair], ckeys: dict[str, KeyPair]
) -> list[PlannedEpoch]:
    """Every epoch's configuration and keys, from the scenario's [[reconfigure]] steps. A
    new node (replaced, or added by a larger f) gets a key of its own and a new port."""
    plan = [PlannedEpoch(config, dict(enumerate(keys)), dict(ckeys))]
    next_client = scenario.clients
    for e, step in enumerate(scenario.reconfigure, start=1):
        prev = plan[-1]
        f = step.f if step.f is not None else prev.config.f
        epoch_keys: dict[int, KeyPair] = {}
        replicas = []
        started = []
        for i in range(3 * f + 1):
            if i in prev.keys and i < prev.config.n and i not in step.replace:
                epoch_keys[i] = prev.keys[i]
                old = prev.config.replicas[i]
                replicas.append(ReplicaInfo(i, old.host, old.port, old.public_key))
            else:
                epoch_keys[i] = KeyPair.from_seed(f"sim/{seed}/replica/{i}/epoch/{e}".encode())
                replicas.append(ReplicaInfo(i, "sim", 7000 + 100 * e + i, epoch_keys[i].public))
                started.append(i)
        clients = {c: k for c, k in prev.clients.items() if c not in step.remove_clients}
        added = []
        for _ in range(step.add_clients):
            name = client_name(next_client)
            clients[name] = KeyPair.from_seed(f"sim/{seed}/client/{next_client}".encode())
            next_client += 1
            added.append(name)
        m = Membership(f, tuple(replicas), tuple(ClientInfo(c, k.public) for c, k in clients.items()))
        plan.append(PlannedEpoch(
            apply_membership(prev.config, e, m), epoch_keys, clients, tuple(started), tuple(added),
            step.remove_clients,
        ))
    return plan


class Simulation:
    def __init__(
        self,
        scenario: Scenario,
        seed: int | None = None,
        replica_class: type | dict[int, type] | None = None,
        trace: TraceWriter | None = None,
    ) -> None:
        self.scenario = scenario
        self.tracer = trace
        self._judge: Any = None  # during a Byzantine node's sends: Lies.judge
        self._judging = Lies()  # ... and the Lies it judges with
        """With a TraceWriter, every send, fate, delivery and note is written to it
        (pbft.sim.trace); it only reads, so the run and its digest are the same."""
        self.seed = scenario.seed if seed is None else seed
        self.rng = random.Random(self.seed)
        self.config, self.keys, self.client_keys = build_config(scenario, self.seed)
        self.operator_key = KeyPair.from_seed(f"sim/{self.seed}/operator".encode())
        if scenario.reconfigure:
            self.config = replace(self.config, operator_key=self.operator_key.public)
        cfg = self.config
        self.verifier = Verifier(cfg.signing_domain, cfg.member_keys(), memo=VERIFY_MEMO)
        self.plan = build_plan(scenario, self.seed, cfg, self.keys, self.client_keys)
        self.max_n = max(e.config.n for e in self.plan)
        self._verifiers: dict[int, tuple[ClusterConfig, Verifier]] = {0: (cfg, self.verifier)}
        """Each epoch's verifier, shared by every replica of the run (epochs.Epochs)."""
        self._epoch_started = 0  # the latest epoch a correct replica has begun
        self._boundaries: dict[int, int] = {}  # epoch -> the checkpoint after which it began
        self._lingering: dict[int, list[tuple[Instance, int]]] = {}
        """Correct replicas removed by a change (rid -> (instance, epoch it left for)): they
        answer replicas left behind until every correct member has begun that epoch
        (`_stop_lingering`); kept out of `replicas`, which the checks judge."""
        self.network = Network(scenario.network, random.Random(self.rng.getrandbits(64)))
        self.heal = self.network.heal_time()
        self._rounds = RoundPartitions(scenario.twins) if scenario.twins is not None else None
        """A `[twins]` schedule: messages go to instances, not node ids (`_transmit_twins`)."""
        self._from: Instance | None = None  # the instance whose actions are being performed
        if scenario.twins is not None:
            self.heal = max(self.heal, scenario.twins.heal_ms)
        for nf in scenario.network:
            if nf.crash is not None and nf.on is None:
                self.heal = max(self.heal, nf.until_ms or nf.at_ms)
        self.expect_liveness = scenario.expect.all_requests_complete
        self.unhealed = never_healed(scenario)
        self.check_views = (
            self.expect_liveness and not self.unhealed and not scenario.exceeds_fault_assumption()
        )
        self.unhealed += [
            f"the crash of replica {nf.crash} at {nf.at_ms} ms"
            for nf in scenario.network
            if nf.crash is not None and nf.on is None and nf.until_ms is None
        ] + [
            f"the crash of replica {nf.crash} on its first {nf.on}"
            for nf in scenario.network
            if nf.crash is not None and nf.on is not None and nf.down_ms is None
        ]
        """`view-agreement` is judged only when liveness is expected and every fault that
        could keep a correct replica apart ends."""
        self._all_done = False
        self.liveness_ms = scenario.expect.liveness_ms
        if isinstance(replica_class, dict):
            self._classes = replica_class
        elif replica_class is None and scenario.broken:
            # `broken = NAME` / `--broken NAME`: the correct replicas run a broken core on
            # purpose, the faulty ones keep the real one under their behaviour.
            from ..adversary.broken import BROKEN

            cls = BROKEN[scenario.broken]
            bad = set(scenario.faulty_replicas())
            self._classes = {i: cls if i not in bad else Replica for i in range(self.max_n)}
        else:
            self._classes = {i: replica_class or Replica for i in range(self.max_n)}
        self.byz_replica = {b.index: b for b in scenario.byzantine if b.target == "replica"}
        self.byz_client = {b.node: b for b in scenario.byzantine if b.target == "client"}
        self.twins = sorted({nf.twin for nf in scenario.network if nf.twin is not None}
                            | ({scenario.twins.replica} if scenario.twins is not None else set()))
        faulty = set(scenario.faulty_replicas())
        correct = [i for i in range(self.max_n) if i not in faulty]
        self.correct = frozenset(correct)
        correct_clients = [c for c in self.client_keys if c not in self.byz_client]
        spec = scenario.service
        self._make_service: Callable[[], Any] = (lambda: make_service(spec)) if spec is not None else KeyValue
        """A fresh instance of the replicated service (the replicas' and the oracle's)."""
        self._sampler = self._make_service() if spec is not None else None
        """The service that draws the clients' operations (None: the key-value workload)."""
        self.oracle = Oracle(
            cfg, correct, correct_clients, service=self._make_service, configs=[e.config for e in self.plan]
        )
        self._faulty_nodes: frozenset[Node] = frozenset(faulty) | frozenset(self.byz_client)
        self._sent: dict[Node, int] = {}  # per faulty node, messages it sent
        self._lies: dict[Node, dict[str, int]] = {}  # per Byzantine node, "forged"/"mutated" counts
        self._latencies: list[tuple[int, int]] = []  # (submitted, completed) of correct clients
        self._describe = trace.describe if trace is not None else _Described()
        self.now = 0
        self._queue: list[tuple] = []
        self._counter = 0
        self._trace = hashlib.sha256()
        self._tail: deque[tuple] = deque(maxlen=TRACE_TAIL)
        self.delivered = 0
        self._kinds: Counter[int] = Counter()  # messages delivered, by type number (coverage)
        self._events: Counter[str] = Counter()  # transitions at correct replicas (coverage)
        self.completed = 0
        self._last_progress = 0
        self._done_at: int | None = None
        self._stable_first: dict[int, int] = {}  # seq -> when a correct replica first made it stable
        self._last_view_move = 0  # when a correct replica last started or installed a view
        self._incarnations: dict[int, int] = {}
        self._epochs: dict[int, int] = {}
        self._stores: dict[int, list[Store]] = {}
        self._specs: dict[int, list[Any]] = {}
        self._states: dict[int, list[Any]] = {}
        self.restarts = 0
        self.replicas: dict[int, list[Instance]] = {i: [] for i in range(self.max_n)}
        self._behaviour_rng = random.Random(self.rng.getrandbits(64))
        self.attacker_failures: list[str] = []
        self.attacker_failure_count = 0
        for i in range(cfg.n):
            self.replicas[i].append(self._new_instance(i))
            if i in self.twins:
                self.replicas[i].append(self._new_instance(i))
                self.replicas[i][-1].copy = 1
        self.clients: dict[str, ClientState] = {}
        for name, key in self.client_keys.items():
            self.clients[name] = self._new_client(name, key)
        self.operator: ClientState | None = None
        if scenario.reconfigure:
            core = ClientCore(cfg, OPERATOR, self.operator_key)
            self.operator = ClientState(OPERATOR, core, core, [], True)
            self.clients[OPERATOR] = self.operator
            for i, step in enumerate(scenario.reconfigure):
                self._push(step.at_ms, RECONFIGURE, i)
        self._reconfigured: set[int] = set()  # steps whose new nodes were started
        self._step_due: int | None = None  # when the step being carried out fell due
        self._pending_step = 0  # the step whose command the operator sent last
        self._views_before = 0  # view changes in the epochs before the current one
        self._armed: dict[int, list[list]] = {}  # rid -> [[fault, firings left], ...]
        for nf in scenario.network:
            if nf.crash is not None and nf.on is not None:
                self._armed.setdefault(nf.crash, []).append([nf, nf.times])
            elif nf.crash is not None:
                self._push(nf.at_ms, CRASH, nf.crash)
                if nf.until_ms is not None:
                    self._push(nf.until_ms, RESTART, nf.crash, nf.amnesia)
        for name in self.clients:
            self._push(self.rng.randint(0, 5), SUBMIT, name)
        self._push(cfg.tick_ms, TICK)

    # -- construction -------------------------------------------------------------------

    def _new_instance(
        self, rid: int, store: Store | None = None, state: Any = None, spec: tuple[KeyPair, int] | None = None
    ) -> Instance:
        """A fresh core for replica `rid`; with `store`, recovered from those records and
        `state` (its service and store, as the crash left them). `spec`: the key and
        configuration epoch it starts with (default: the scenario's, epoch 0)."""
        inc = self._incarnations.get(rid, 0)
        self._incarnations[rid] = inc + 1
        epoch = self._epochs.get(rid, 0)
        if not store or state is None:
            state = self._new_state()
        key, start = spec if spec is not None else (self.keys[rid], 0)
        config = self.plan[start].config
        earlier = {e: self.plan[e].config for e in range(start)}
        epochs = Epochs(config, memo=VERIFY_MEMO, earlier=earlier, shared=self._verifiers)
        cls = self._classes.get(rid, Replica)
        if self.scenario.reconfigure:
            core = cls(config, rid, key, state, epochs=epochs)
        else:  # a core class of a test's making may predate epochs
            core = cls(config, rid, key, state, self.verifier)
        if store:
            try:
                core.recover(list(store.values()))
            except Exception as exc:  # noqa: BLE001 - a raise from recover() is the finding
                self.oracle.fail("exception", f"replica {rid} raised {type(exc).__name__} in recover(): {exc}")
        store = {} if store is None else store
        byz_spec = self.byz_replica.get(rid)
        idle = self.scenario.load is ReplicaLoad.IDLE
        if byz_spec is None:
            return Instance(core, rid in self.correct, inc, epoch, store, state=state, spec=(key, start), load_due=idle)
        rng = random.Random(self._behaviour_rng.getrandbits(64))
        byz = self._build(byz_spec, f"replica {rid}", core, key, rng)
        inst = Instance(byz, False, inc, epoch, store, state=state, spec=(key, start), load_due=idle)
        inst.lies = watch_honest(byz)
        return inst

    def _new_state(self) -> Hosted:
        """A replica's service on a fresh store."""
        if self.scenario.service is None:
            return KeyValueStore()
        try:
            return Hosted(self._make_service())
        except ServiceError as exc:  # its setup raised (make_service tried it once already)
            raise UsageError(f"{self.scenario.source or self.scenario.name}: {safe_str(exc)}.") from None

    def _build(self, spec: Any, who: str, core: Any, key: KeyPair, rng: random.Random, **extra: Any) -> Any:
        """A Byzantine node's behaviour around `core`: what the user's __init__ or setup
        raises, or a setup that never returns (watchdog.py), is one sentence naming `who`."""
        where = f"{self.scenario.source or self.scenario.name}: {who}"
        with hook_watchdog():
            try:
                return catalogue.build(spec.behaviour, spec.params, core, key, rng, base_dir=spec.base_dir, **extra)
            except (ValueError, TypeError) as exc:
                raise UsageError(f"{where}: {safe_str(exc)}") from None
            except BaseException as exc:  # noqa: BLE001 - a user's __init__ or setup() that raises
                if is_interrupt(exc):
                    raise
                failure = failure_of(spec.behaviour, "setup", exc)
                raise UsageError(f"{where}: {failure.sentence()} while being built.") from None

    def _sample(self, sample: Callable[..., Any], client: str) -> tuple[bytes, bool] | None:
        """One operation the user's service draws for `client` (`sample_operation`),
        checked: what it raises or a wrong return is one sentence naming the service."""
        ref = self.scenario.service.ref if self.scenario.service is not None else "?"
        try:
            drawn = sample(self.rng, client, sorted(self.client_keys))
        except BaseException as exc:  # noqa: BLE001 - the user's service
            # A KeyboardInterrupt the service raised itself is its failure; a real Ctrl-C
            # (through `_ctrl_c`, in force while the run goes on) stops the run.
            if operator_interrupt(exc):
                raise
            where = failure_of(ref, "sample_operation", exc).where
            raise UsageError(
                f"{self.scenario.source or self.scenario.name}: service {ref}: sample_operation raised "
                f"{exception_text(exc)} ({where})."
            ) from None
        try:
            return check_sample(ref, drawn)
        except UsageError as exc:
            raise UsageError(f"{self.scenario.source or self.scenario.name}: {exc}") from None

    def _new_client(self, name: str, key: KeyPair, config: ClusterConfig | None = None) -> ClientState:
        s = self.scenario
        core = ClientCore(config or self.config, name, key)
        ops: list[tuple[bytes, bool]] = []
        sample = getattr(self._sampler, "sample_operation", None)
        for i in range(s.requests):
            drawn = self._sample(sample, name) if sample is not None else None
            if drawn is not None:
                ops.append(drawn)
                continue
            k = b"k%d" % self.rng.randrange(s.keys)
            r = self.rng.random()
            if r < 0.45:
                ops.append((op_put(k, b"%s-%d" % (name.encode(), i)), False))
            elif r < 0.6:
                ops.append((op_delete(k), False))
            else:
                ops.append((op_get(k), self.rng.random() < s.read_only))
        spec = self.byz_client.get(name)
        driver: Any = core
        if spec is not None:
            rng = random.Random(self._behaviour_rng.getrandbits(64))
            driver = self._build(spec, f"client {name}", core, key, rng, config=self.config, target="client")
        cs = ClientState(name, core, driver, ops, spec is None)
        if spec is not None:
            cs.lies = _watch_client(core)
        return cs

    # -- the event queue ------------------------------------------------------------------

    def _push(self, time: int, kind: int, *args: Any) -> None:
        self._counter += 1
        heapq.heappush(self._queue, (time, self._counter, kind, args))

    def _transmit(self, src: Node, dst: Node, data: bytes) -> None:
        if self._rounds is not None:
            self._transmit_twins(src, dst, data)
            return
        times = self.network.transit(self.now, src, dst, data)
        for t in times:
            self._push(t, DELIVER, src, dst, data)
        lie = honest = None
        if src in self._faulty_nodes:
            self._sent[src] = self._sent.get(src, 0) + 1
            judge = self._judge
            # A copy of what the honest core sent (this step or recently) is no lie
            # (Lies.judge's first test), and needs no decoding to say so.
            if judge is not None and data in self._judging.recent:
                self._judging.note_sent(dst, data)
            elif judge is not None:
                lie, honest = judge(dst, data, self._describe(data))
                if lie is not None:
                    counts = self._lies.setdefault(src, {})
                    counts[lie] = counts.get(lie, 0) + 1
        if self.tracer is not None:
            self._trace_send(src, dst, data, times, lie, honest)

    def _transmit_twins(self, src: Node, dst: Node, data: bytes) -> None:
        """`_transmit` under a `[twins]` schedule: a message between replicas goes to the
        instances of `dst` in the sending instance's group for the message's round (both
        copies of a twin if both are there, none across groups); clients reach, and are
        reached by, every instance. Twins have no behaviour, so there are no lies to judge."""
        copies = self._reach(src, dst, data)
        if copies == ():
            times: list[int] = []
            self.network.dropped += 1
            self.network.last_fate = Fate(dropped_by=-1)
        else:
            times = self.network.transit(self.now, src, dst, data)
        for t in times:
            self._push(t, DELIVER, src, dst, data, copies)
        if src in self._faulty_nodes:
            self._sent[src] = self._sent.get(src, 0) + 1
        if self.tracer is not None:
            d = self.tracer.send(self.now, src, dst, data, None, None)
            fate = self.network.last_fate
            if copies == ():
                self.tracer.fate(self.now, src, dst, d, fate, "partition", [])
            elif fate is not None and (not times or fate.delay or len(times) > 1):
                reason = self.network.drop_reason(fate.dropped_by, src, dst) if not times else ""
                self.tracer.fate(self.now, src, dst, d, fate, reason, times)

    def _reach(self, src: Node, dst: Node, data: bytes) -> tuple[int, ...] | None:
        """The copies of replica `dst` a message from `src` (sent now, by the instance
        `_from` if `src` is a replica) reaches under the `[twins]` schedule; None for
        every instance (a client at either end, or `dst` down)."""
        rounds = self._rounds
        assert rounds is not None
        if not (isinstance(src, int) and isinstance(dst, int) and self.replicas[dst]):
            return None
        sender = self._from
        assert sender is not None
        round_ = rounds.round_of(data, getattr(sender.node, "view", 0), self.now)
        return tuple(
            inst.copy for inst in self.replicas[dst]
            if rounds.reaches(self.now, round_, (src, sender.copy), (dst, inst.copy))
        )

    def _trace_withheld(self, src: Node) -> None:
        for dst, data in self._judging.withheld():
            self.tracer.withhold(self.now, src, dst, data)  # type: ignore[union-attr]

    def _trace_send(self, src: Node, dst: Node, data: bytes, times: list[int], lie: str | None,
                    honest: dict[str, Any] | None) -> None:
        tr = self.tracer
        d = tr.send(self.now, src, dst, data, lie, honest)
        fate = self.network.last_fate
        if fate is not None and (not times or fate.delay or len(times) > 1):
            reason = self.network.drop_reason(fate.dropped_by, src, dst) if not times else ""
            tr.fate(self.now, src, dst, d, fate, reason, times)

    def _record(self, line: tuple) -> None:
        self._tail.append((self.now, *line))

    # -- performing actions -------------------------------------------------------------

    def _perform_replica(self, rid: int, inst: Instance, ready: Ready) -> None:
        if not ready.actions and inst.lies is None and self.tracer is None:
            # Most steps say nothing (an idle tick, a duplicate): nothing to send, write,
            # trace, judge or trigger on; only the resource check has work.
            if inst.correct:
                self.oracle.check_resources(rid, inst.node)
            return
        n = self.max_n
        self._from = inst
        if ready.durability is Durability.MAY_FOLLOW_REPLIES:
            undo: Undo | None = inst.unsynced
        else:
            undo = None
            if ready.writes:
                inst.unsynced.clear()  # this step's commit, before its sends, covers them
        for w in ready.writes:
            apply_durability(inst.store, w, undo)
        actions = ready.actions
        if inst.lies is not None:
            if self.tracer is not None:
                self.tracer.notes(self.now, rid, False, inst.lies.step)
            self._judge = inst.lies.judge(n, rid, self._describe)
            self._judging = inst.lies
        elif self.tracer is not None:
            self.tracer.notes(self.now, rid, inst.correct, actions)
        for a in actions:
            match a:
                case Send(to, data):
                    if 0 <= to < n:
                        self._transmit(rid, to, data)
                case Broadcast(data):
                    for r in range(n):
                        if r != rid:
                            self._transmit(rid, r, data)
                case SendClient(c, data):
                    if c in self.clients:
                        self._transmit(rid, c, data)
        if self._judge is not None and self.tracer is not None:
            self._trace_withheld(rid)
        self._judge = None
        if rid in self._armed:
            self._maybe_trigger(rid, actions)
        if inst.correct:
            for a in actions:
                if type(a) in COUNTED:
                    self._events[event_name(a)] += 1
            self.oracle.observe_replica(rid, (rid, inst.incarnation), self.now, actions, (rid, inst.epoch))
            self.oracle.check_resources(rid, inst.node)
            for a in actions:
                if isinstance(a, CheckpointStable):
                    self._stable_first.setdefault(a.seq, self.now)
                    # The proof travels with the action: one step can make several
                    # checkpoints stable, and the replica keeps only the latest proof.
                    if len(self.plan) == 1:
                        self.oracle.check_stable_proof(rid, a.seq, a.digest, a.proof, self.verifier.verify)
                    else:  # members of the epoch that ordered it, under that epoch
                        e = self._epoch_of_seq(a.seq)
                        self.oracle.check_stable_proof(
                            rid, a.seq, a.digest, a.proof, self._verifier(e).verify, quorum=self.plan[e].config.quorum
                        )
                elif isinstance(a, StateInstalled) and inst.node.last_executed == a.seq:
                    self.oracle.check_installed_state(rid, a.seq, a.digest, inst.node.state_digest())
        for a in actions:
            if isinstance(a, EpochStarted):
                self._epoch_seen(rid, inst, a)
            elif isinstance(a, Departed):
                self._departed(rid, inst)
        else:
            for a in actions:
                if isinstance(a, Broadcast | Send):
                    self.oracle.observe_sent(rid, None, a.data)

    def _maybe_trigger(self, rid: int, actions: list) -> None:
        """A triggered crash: right after the step whose actions include its event."""
        for entry in self._armed[rid]:
            nf, left = entry
            if left <= 0 or self.now < nf.at_ms:
                continue
            if any(isinstance(a, TRIGGER_ACTIONS[nf.on]) for a in actions):
                entry[1] -= 1
                self._push(self.now, CRASH, rid)
                if nf.down_ms is not None:
                    self._push(self.now + nf.down_ms, RESTART, rid, nf.amnesia)
                    self.heal = max(self.heal, self.now + nf.down_ms)
                return

    def _perform_client(self, cs: ClientState, actions: list) -> None:
        if cs.lies is not None:
            self._judge = cs.lies.judge(self.config.n, cs.name, self._describe)
            self._judging = cs.lies
        core = cs.core
        out = core.outstanding
        if out is not None and out.timestamp not in cs.timestamps:
            # A new request (workload submit or a read-only fall-back on the ordered path).
            cs.timestamps.add(out.timestamp)
            self.oracle.observe_submit(cs.name, out.timestamp, out.operation, out.read_only)
            if self.tracer is not None:
                self.tracer.submit(self.now, cs.name, out.timestamp, out.operation, out.read_only)
        for a in actions:
            match a:
                case Send(to, data):
                    if 0 <= to < self.max_n:
                        self._transmit(cs.name, to, data)
                case Rejected() if cs.correct:
                    self.oracle.reported(f"client {cs.name}", a)
                case Completed(ts, result) if cs is self.operator:
                    self._operator_done(result)
                case Completed(ts, result):
                    self.oracle.observe_completed(cs.name, ts, result)
                    if self.tracer is not None:
                        self.tracer.complete(self.now, cs.name, ts, result, cs.since)
                    self._record(("done", cs.name, ts))
                    cs.done += 1
                    since, cs.since = cs.since, None
                    if cs.correct:
                        self.completed += 1
                        self._last_progress = self.now
                        if since is not None:
                            self._latencies.append((since, self.now))
                    if cs.done < len(cs.ops):
                        self._push(self.now + self.scenario.think_ms + self.rng.randint(0, 3), SUBMIT, cs.name)
        if self._judge is not None and self.tracer is not None:
            self._trace_withheld(cs.name)
        self._judge = None

    def _client_step(self, cs: ClientState, event: Any) -> list:
        out = cs.driver.step(event)
        if not cs.correct:
            cs.failures_seen = self._note_failures(cs.driver, cs.failures_seen)
        return out

    def _note_failures(self, node: Any, seen: int) -> int:
        """Report what a behaviour's hooks raised since `seen`: the attacker's failures,
        kept apart from the oracle's violations (an attack script's bug is no finding)."""
        count = getattr(node, "failure_count", 0)
        if count > seen:
            for failure in node.failures[seen:]:
                if len(self.attacker_failures) < 20:
                    self.attacker_failures.append(f"at {self.now} ms: {failure.sentence()}")
            self.attacker_failure_count += count - seen
        return count

    # -- handlers -----------------------------------------------------------------------

    def _deliver(self, src: Node, dst: Node, data: bytes, copies: tuple[int, ...] | None = None) -> None:
        """`copies`: under a `[twins]` schedule, the instances of `dst` it goes to (None: all)."""
        to = str(dst) if copies is None else str(dst) + "".join(f"/{c}" for c in copies)
        self._trace.update(b"%d %s>%s %d:" % (self.now, str(src).encode(), to.encode(), len(data)))
        self._trace.update(data)
        self.delivered += 1
        self._kinds[envelope_type(data)] += 1
        if isinstance(dst, int):
            instances = self.replicas[dst]
            lingering = self._lingering.get(dst)
            if lingering:
                instances = instances + [inst for inst, _ in lingering]
            if not instances:
                if self.tracer is not None:
                    self.tracer.crashed_drop(self.now, src, dst, data)
                return
            if self.tracer is not None:
                self.tracer.deliver(self.now, src, dst, data)
            self._record(("msg", src, dst, data))
            for inst in list(instances):
                if copies is None or inst.copy in copies:
                    self._perform_replica(dst, inst, self._step(dst, inst, Received(src, data)))
        else:
            cs = self.clients[dst]
            if self.tracer is not None:
                self.tracer.deliver(self.now, src, dst, data)
            self._record(("msg", src, dst, data))
            self._perform_client(cs, self._client_step(cs, Received(src, data)))

    def _step(self, rid: int, inst: Instance, event: Any) -> Ready:
        if inst.load_due:  # as a runtime tells a core its load once it measured it
            inst.load_due = False
            return Ready.join([self._step(rid, inst, Load(busy=False)), self._step(rid, inst, event)])
        try:
            actions = inst.node.step(event)
        except Exception as exc:  # noqa: BLE001 - a raise from step() is the finding
            who = "replica" if inst.correct else "Byzantine replica (behaviour bug?)"
            self.oracle.fail("exception", f"{who} {rid} raised {type(exc).__name__}: {exc}")
            return EMPTY
        if not inst.correct:
            inst.failures_seen = self._note_failures(inst.node, inst.failures_seen)
        if inst.correct and actions.actions and any(type(a) in _VIEW_MOVES for a in actions.actions):
            self._last_view_move = self.now  # its messages about it are still on the way
        return actions

    def _tick(self) -> None:
        self._trace.update(b"%d tick;" % self.now)
        tick = Tick()
        for rid in range(self.max_n):
            for inst in list(self.replicas[rid]):
                self._perform_replica(rid, inst, self._step(rid, inst, tick))
        if self._lingering:
            self._stop_lingering()
            for rid, lingering in list(self._lingering.items()):
                for inst, _ in list(lingering):
                    self._perform_replica(rid, inst, self._step(rid, inst, tick))
        for cs in self.clients.values():
            self._perform_client(cs, self._client_step(cs, tick))
        self._check_liveness()

    def _submit(self, name: str) -> None:
        cs = self.clients[name]
        if cs.core.outstanding is not None or cs.done >= len(cs.ops):
            return
        op, read_only = cs.ops[cs.done]
        self._trace.update(b"%d submit %s;" % (self.now, name.encode()))
        cs.since = self.now
        self._perform_client(cs, cs.driver.submit(op, read_only))

    def _crash(self, rid: int) -> None:
        if self._lingering.pop(rid, None):  # a removed replica's host went down: it is gone
            self._trace.update(b"%d stopped %d;" % (self.now, rid))
        if not self.replicas[rid]:
            return  # already down (overlapping crash windows)
        self._trace.update(b"%d crash %d;" % (self.now, rid))
        self._record(("crash", rid))
        if self.tracer is not None:
            self.tracer.crash(self.now, rid)
        for inst in self.replicas[rid]:
            roll_back(inst.store, inst.unsynced)
        # Added to what is already down at this id: a node the operator started here while
        # the old one was down (a replaced key) crashing must not lose the old one's store,
        # or the old one never restarts (fuzz seed 28078573).
        self._stores[rid] = self._stores.get(rid, []) + [inst.store for inst in self.replicas[rid]]
        self._states[rid] = self._states.get(rid, []) + [inst.state for inst in self.replicas[rid]]
        self._specs[rid] = self._specs.get(rid, []) + [inst.spec for inst in self.replicas[rid]]
        self.replicas[rid] = []

    def _restart(self, rid: int, amnesia: bool) -> None:
        if rid not in self._stores and self.replicas[rid]:
            return  # already up (a replacement node at this id does not count: review)
        self._trace.update(b"%d restart %d%s;" % (self.now, rid, b" amnesia" if amnesia else b""))
        self._record(("restart", rid))
        if self.tracer is not None:
            self.tracer.restart(self.now, rid, amnesia)
        self.restarts += 1
        stores = self._stores.pop(rid, [])
        states = self._states.pop(rid, [])
        specs = self._specs.pop(rid, [])
        if amnesia:
            self._epochs[rid] = self._epochs.get(rid, 0) + 1
            self.oracle.note_restart(rid)
            stores, states = [], []
        count = max(2 if rid in self.twins else 1, len(specs))
        stores = stores + [{}] * (count - len(stores))
        states = states + [None] * (count - len(states))
        specs = specs + [None] * (count - len(specs))
        # The operator does not restart a node the group no longer has (removed, or its
        # key replaced) while it was down.
        keep = [k for k in range(count) if self._member(rid, specs[k])]
        restarted = [self._new_instance(rid, stores[k] if stores[k] else None, states[k], specs[k]) for k in keep]
        self.replicas[rid] = self.replicas[rid] + restarted
        for inst in restarted:
            if inst.correct:
                self.oracle.note_recovered(rid, (rid, inst.incarnation), inst.node)

    # -- reconfiguration ([[reconfigure]], pbft.protocol.epochs) -------------------------

    def _member(self, rid: int, spec: tuple[KeyPair, int] | None) -> bool:
        """Whether a node started with `spec` is in the latest epoch begun, or in one
        planned after it (a new node started before its change takes effect)."""
        key = (spec or (self.keys[rid], 0))[0]
        return any(
            rid < planned.config.n and planned.keys.get(rid) is key for planned in self.plan[self._epoch_started:]
        )

    def _stop_lingering(self) -> None:
        """The operator stops a removed replica once it sees every correct member of the
        epoch it left for in that epoch (as `pbft_epoch` of each member shows), none down:
        before that, a member that restarts behind the boundary may need its proof. (It
        also stops by itself: `_departed`.)"""
        for rid, lingering in list(self._lingering.items()):
            for inst, epoch in lingering:
                if self._epoch_begun_by_all(epoch):
                    self._departed(rid, inst)

    def _departed(self, rid: int, inst: Instance) -> None:
        """A lingering removed replica stops (its `Departed`, as its runtime stops it, or the
        operator's decision)."""
        keep = [(x, e) for x, e in self._lingering.get(rid, []) if x is not inst]
        self._trace.update(b"%d stopped %d;" % (self.now, rid))
        if keep:
            self._lingering[rid] = keep
        else:
            self._lingering.pop(rid, None)

    def _epoch_begun_by_all(self, epoch: int) -> bool:
        members = range(self.plan[epoch].config.n)
        return all(
            r not in self._stores
            and bool(self.replicas[r])
            and all(x.node.epochs.current >= epoch for x in self.replicas[r])
            for r in members if r in self.correct
        )

    def _plan_done(self) -> bool:
        return self._epoch_started >= len(self.plan) - 1

    def _verifier(self, epoch: int) -> Verifier:
        """The oracle's verifier of epoch `epoch`, from the plan (the replicas share it)."""
        c = self.plan[epoch].config
        cached = self._verifiers.get(epoch)
        if cached is not None and cached[0] == c:
            return cached[1]
        v = Verifier(c.signing_domain, c.member_keys(), memo=VERIFY_MEMO, replica_domain=c.replica_domain)
        self._verifiers.setdefault(epoch, (c, v))
        return v

    def _epoch_of_seq(self, seq: int) -> int:
        """The epoch that orders `seq`: the latest one begun after a checkpoint below it."""
        return max((e for e, after in self._boundaries.items() if seq > after), default=0)

    def _reconfigure(self, i: int) -> None:
        """Step i makes epoch i+1: start its new nodes (as an operator starts the new hosts
        first), then the operator orders the change. Only once epoch i has begun."""
        op = self.operator
        assert op is not None
        if self._step_due is None:
            self._step_due = self.now
        if self._epoch_started < i or op.core.outstanding is not None:
            self._push(self.now + RECONFIGURE_RETRY_MS, RECONFIGURE, i)
            return
        if self._epoch_started > i:
            return  # done already
        epoch = i + 1
        planned = self.plan[epoch]
        self._trace.update(b"%d reconfigure %d;" % (self.now, epoch))
        if i not in self._reconfigured:
            self._reconfigured.add(i)
            for rid in planned.started:
                self.replicas[rid].append(self._new_instance(rid, spec=(planned.keys[rid], epoch)))
        self._pending_step = i
        self._perform_client(op, op.driver.submit(reconfigure_operation(epoch, Membership.of(planned.config))))

    def _operator_done(self, result: bytes) -> None:
        """The operator's command was answered: an error means the step must be tried again."""
        try:
            answer = codec.decode(result)
        except codec.CodecError:
            answer = {"error": "unreadable"}
        if isinstance(answer, dict) and "error" in answer:
            self._push(self.now + RECONFIGURE_RETRY_MS, RECONFIGURE, self._pending_step)

    def _epoch_seen(self, rid: int, inst: Instance, a: EpochStarted) -> None:
        self._boundaries.setdefault(a.epoch, a.after)
        self.oracle.note_epoch(a.epoch, a.after)
        if a.retired:
            # Removed or replaced: a correct one lingers, with the proof of the boundary,
            # until the operator sees every member in the new epoch (`_stop_lingering`).
            self._trace.update(b"%d retired %d;" % (self.now, rid))
            self.replicas[rid] = [x for x in self.replicas[rid] if x is not inst]
            if inst.correct:
                self._lingering.setdefault(rid, []).append((inst, a.epoch))
            return
        if not inst.correct or a.epoch <= self._epoch_started:
            return
        self._views_before += max(
            (x.node.view - first_view(epoch_of_view(x.node.view))
             for r in sorted(self.correct) for x in self.replicas[r] if x is not inst),
            default=0,
        )
        self._epoch_started = a.epoch
        self._step_due = None
        # The operator stops what is not in the new group: removed replicas and replaced
        # keys, also those that were down or behind when it changed (they would never
        # learn it: nobody in the group talks to a non-member).
        for r, insts in self.replicas.items():
            self.replicas[r] = [x for x in insts if self._member(r, x.spec)]
        self._trace.update(b"%d epoch %d;" % (self.now, a.epoch))
        planned = self.plan[a.epoch]
        # The operator hands the new cluster file to the clients (ClientCore.reconfigure).
        for name in planned.removed_clients:
            cs = self.clients.get(name)
            if cs is not None:
                cs.core.cancel()
                cs.ops = cs.ops[: cs.done]
                cs.since = None
        for cs in list(self.clients.values()):
            if cs.name in planned.clients or cs is self.operator:
                self._perform_client(cs, cs.core.reconfigure(planned.config))
        for name in planned.added_clients:
            cs = self._new_client(name, planned.clients[name], planned.config)
            self.clients[name] = cs
            self.oracle.add_client(name)
            self._push(self.now + self.rng.randint(0, 5), SUBMIT, name)

    # -- liveness -----------------------------------------------------------------------

    def _check_liveness(self) -> None:
        if not self.expect_liveness or self.oracle.violations:
            return
        if self._step_due is not None and self.now - max(self._step_due, self.heal) > self.liveness_ms:
            step = self._epoch_started + 1
            self.oracle.fail(
                "liveness",
                f"epoch {step} ([[reconfigure]] #{step}) has not begun {self.liveness_ms} ms after it was due",
            )
            return
        for cs in self.clients.values():
            if not cs.correct or cs.since is None:
                continue
            start = max(cs.since, self.heal)
            if self.now - start > self.liveness_ms:
                ts = cs.core.outstanding.timestamp if cs.core.outstanding else cs.core.timestamp
                head = f"client {cs.name} request t={ts} (submitted at {cs.since} ms) has not completed"
                if self.unhealed:
                    why = f"in {self.now - cs.since} ms; " + _and(self.unhealed) + " never healed"
                    if self.heal > cs.since:
                        why += f" (the others did, at {self.heal} ms)"
                elif self.heal > cs.since:
                    why = f"{self.liveness_ms} ms after the last fault healed at {self.heal} ms"
                else:
                    why = f"in {self.liveness_ms} ms, with no fault active since it was submitted"
                self.oracle.fail("liveness", f"{head} {why}")
                return

    def _view_settle_end(self, end: int) -> int:
        """Until when the replicas may still come to one view: VIEW_SETTLE_MS after the
        workload and the last fault, or, while a correct replica has a timer running that
        will move it to another view (a new-view timer backed off by earlier failed view
        changes, or a pending join of a replica alone in the next view), that timer's
        expiry plus VIEW_SETTLE_MS, up to VIEW_SETTLE_CAP_MS; and at least VIEW_SETTLE_MS
        after a correct replica last changed view (its VIEW-CHANGE is still on the way). A
        disagreement with nothing left to resolve it is judged then."""
        limit = max(end, self._last_view_move) + VIEW_SETTLE_MS
        tick_ms = self.config.tick_ms
        for rid in sorted(self.correct):
            for inst in self.replicas[rid]:
                move = getattr(inst.node, "next_view_move", None)
                due = move() if callable(move) else None
                if due is not None:
                    wait = max(0, due - inst.node.ticks) * tick_ms
                    limit = max(limit, min(self.now + wait + VIEW_SETTLE_MS, end + VIEW_SETTLE_CAP_MS))
        return limit

    def _views_agree(self) -> bool:
        nodes = [inst.node for rid in sorted(self.correct) for inst in self.replicas[rid]]
        return all(node.status is ViewStatus.NORMAL for node in nodes) and len({node.view for node in nodes}) <= 1

    def _finished(self) -> bool:
        correct = [cs for cs in self.clients.values() if cs.correct]
        if all(cs.done >= len(cs.ops) for cs in correct) and self._plan_done():
            if self._done_at is None:
                self._done_at = self.now
            end = max(self._done_at, self.heal)
            settle = SETTLE_MS if self.scenario.expect.catch_up else 0
            if self.now < end + settle:
                return False
            if self.check_views and not self._views_agree() and self.now < self._view_settle_end(end):
                return False
            self._all_done = True
            return True
        quiet_since = max(self._last_progress, self.heal)
        return self.now > quiet_since + self.liveness_ms + self.config.tick_ms

    # -- the run ------------------------------------------------------------------------

    def run(self) -> RunResult:
        # Every core of the run decodes a frame it shares with the others once between
        # them (messages.DecodeMemo: a pure function of the bytes, immutable results);
        # the same for signatures and batch digests (crypto.Memo).
        # A user's hook that never returns is stopped (watchdog.py): ATTACKER-FAILED.
        # What a user's hook prints goes to stderr: stdout stays the tool's (--json).
        with memoised_decoding(), crypto.memoised(), hook_watchdog(), user_output(), recognisable_interrupts():
            return self._run()

    def _run(self) -> RunResult:
        queue = self._queue
        oracle = self.oracle
        if self.tracer is not None:
            s = self.scenario
            self.tracer.header(s.name, self.seed, self.config.n, self.config.f, sorted(self.byz_replica),
                               list(self.clients), s.broken)
        while queue and not oracle.violations and self.now <= MAX_VIRTUAL_MS:
            time, _, kind, args = heapq.heappop(queue)
            self.now = time
            if kind == DELIVER:
                self._deliver(*args)
            elif kind == TICK:
                self._tick()
                if self._finished():
                    break
                self._push(time + self.config.tick_ms, TICK)
            elif kind == SUBMIT:
                self._submit(*args)
            elif kind == CRASH:
                self._crash(*args)
            elif kind == RECONFIGURE:
                self._reconfigure(*args)
            else:
                self._restart(*args)
        return self._result()

    def _check_catch_up(self) -> list[Violation]:
        live = [(rid, i.node) for rid in sorted(self.correct) for i in self.replicas[rid]]
        reached = max((node.stable_seq for _, node in live), default=0)
        cutoff = self.now - CATCH_UP_GRACE_MS
        top = max((s for s, t in self._stable_first.items() if t <= cutoff and s <= reached), default=0)
        return [
            Violation(
                "liveness",
                f"replica {rid} is at stable checkpoint {node.stable_seq} (executed {node.last_executed}) "
                f"{SETTLE_MS} ms after the workload; others reached {top}",
            )
            for rid, node in live
            # The state must be installed, not only the window moved (a replica jumps its
            # water marks as soon as it learns of the checkpoint, before the transfer).
            if min(node.stable_seq, node.last_executed) < top
        ][:1]

    def _check_final_states(self) -> list[Violation]:
        """Correct replicas that executed up to the same sequence number hold the same
        state. The oracle compares states at checkpoints; this catches a divergence after
        the last one (a replica that installed a bad state transfer, then executed the
        last few requests of a run that takes no further checkpoint)."""
        seen: dict[int, tuple[int, bytes]] = {}
        for rid in sorted(self.correct):
            for inst in self.replicas[rid]:
                node = inst.node
                if getattr(node, "transfer", None) is not None:
                    continue  # its store is part old, part fetched: the digest means nothing yet
                state = node.state_digest()
                first = seen.setdefault(node.last_executed, (rid, state))
                if first[1] != state:
                    return [
                        Violation(
                            "exactly-once",
                            f"replicas {first[0]} and {rid} both executed up to n={node.last_executed} "
                            f"but hold different states ({first[1].hex()[:8]} vs {state.hex()[:8]})",
                        )
                    ]
        return []

    def _check_rejects(self) -> list[Violation]:
        """Each correct replica's tally of refusals (Oracle.check_rejects)."""
        for rid in sorted(self.correct):
            for inst in self.replicas[rid]:
                rejects = getattr(inst.node, "rejects", None)  # a core of someone else's making may keep none
                found = None if rejects is None else self.oracle.check_rejects(rid, rejects)
                if found is not None:
                    return [found]
        return []

    def _view_disagreement(self) -> Violation:
        where: dict[tuple[int, bool], list[int]] = {}
        for rid in sorted(self.correct):
            for inst in self.replicas[rid]:
                where.setdefault((inst.node.view, inst.node.status is ViewStatus.NORMAL), []).append(rid)
        groups = sorted(where.items(), key=lambda kv: (-len(kv[1]), kv[0]))
        text = "; ".join(
            f"{_ids(ids)} in view {view}{'' if active else ' (view change in progress)'}"
            for (view, active), ids in groups
        )
        end = max(self._done_at or 0, self.heal)
        return Violation(
            "view-agreement",
            f"live correct replicas do not share one active view {self.now - end} ms after the "
            f"workload ended and every fault healed: {text}",
        )

    def _view_changes(self) -> int:
        """View changes: the highest view a correct replica reached in each epoch, over
        the epochs (each epoch's views start at its own first view, epochs.first_view)."""
        views = [
            inst.node.view - first_view(epoch_of_view(inst.node.view))
            for rid in sorted(self.correct) for inst in self.replicas[rid]
        ]
        return self._views_before + max(views, default=0)

    def _result(self) -> RunResult:
        violations = list(self.oracle.violations)
        vc = self._view_changes()
        limit = self.scenario.expect.max_view_changes
        if not violations and limit is not None and vc > limit:
            violations.append(Violation("liveness", f"{vc} view changes, more than the {limit} expected"))
        if not violations and self.scenario.expect.catch_up:
            violations.extend(self._check_catch_up())
        if not violations:
            violations.extend(self._check_final_states())
        if not violations:
            violations.extend(self._check_rejects())
        if not violations and self.check_views and self._all_done and not self._views_agree():
            violations.append(self._view_disagreement())
        reports = []
        for rid in range(self.max_n):
            insts = self.replicas[rid]
            if not insts:
                reports.append(ReplicaReport(rid, rid not in self.correct, -1, -1, -1, "", 0))
                continue
            node = insts[0].node
            reports.append(
                ReplicaReport(
                    rid,
                    rid not in self.correct,
                    node.view,
                    node.last_executed,
                    node.stable_seq,
                    node.state_digest().hex(),
                    len(node.log),
                )
            )
        total = sum(len(cs.ops) for cs in self.clients.values() if cs.correct)
        result = RunResult(
            name=self.scenario.name,
            seed=self.seed,
            violations=violations,
            requests_completed=self.completed,
            requests_total=total,
            view_changes=vc,
            trace_digest=self._trace.hexdigest(),
            replicas=reports,
            virtual_ms=self.now,
            delivered=self.delivered,
            dropped=self.network.dropped,
            exceeds_fault_assumption=self.scenario.exceeds_fault_assumption(),
            trace_tail=[render_event(e) for e in self._tail],
            attacker_failures=list(self.attacker_failures),
            attacker_failure_count=self.attacker_failure_count,
            checks=dict(sorted(self.oracle.counts.items())),
            coverage=self._coverage(),
            refused=(refused := self._refused()),
            latency=self._latency(),
            resources=self.oracle.peaks(),
            faulty=self._faulty(refused),
        )
        if self.tracer is not None:
            for v in violations:
                self.tracer.violation(self.now, v.check, v.detail)
            self.tracer.end(self.now, result)
        return result

    def _coverage(self) -> dict[str, int]:
        """What this run reached (pbft.sim.coverage): messages, rejections, transitions, checks."""
        out: Counter[str] = Counter(self._events)
        for number, count in self._kinds.items():
            kind = _KIND_NAME.get(number)
            if kind is not None:
                out[f"message:{kind}"] += count
        for rid in sorted(self.correct):
            for inst in self.replicas[rid]:
                for (_, reason), count in inst.node.rejects.items():
                    out[f"rejection:{reason.value}"] += count
        for check, count in self.oracle.counts.items():
            out[f"check:{check}"] += count
        return dict(sorted(out.items()))

    def _latency(self) -> Latency:
        """Correct clients' latencies, overall and after the last heal (`heal` only moves
        later during a run, so it is applied at the end)."""
        return Latency.of(self._latencies, self.heal, self.liveness_ms if self.expect_liveness else None)

    def _faulty(self, refused: dict[str, dict[str, int]]) -> dict[str, FaultyNode]:
        """Per faulty node: what it sent, its lies, the refusals and the evidence."""
        judged = {str(rid) for rid in self.byz_replica} | set(self.byz_client)
        out = {}
        for name in refused:
            node: Node = int(name) if name.isdigit() else name
            lies = self._lies.get(node, {})
            out[name] = FaultyNode(
                sent=self._sent.get(node, 0),
                lies={k: lies.get(k, 0) for k in ("forged", "mutated")} if name in judged else None,
                refused=refused[name],
                evidence=dict(sorted(self.oracle.evidence.get(name, {}).items())),
            )
        return out

    def _refused(self) -> dict[str, dict[str, int]]:
        """Per faulty node, what the correct replicas refused of what it sent, by reason."""
        faulty = {str(r) for r in range(self.max_n) if r not in self.correct}
        faulty |= {cs.name for cs in self.clients.values() if not cs.correct}
        out: dict[str, dict[str, int]] = {name: {} for name in sorted(faulty)}
        for rid in sorted(self.correct):
            for inst in self.replicas[rid]:
                for (signer, reason), count in inst.node.rejects.items():
                    name = str(signer)
                    if name in out:
                        key = reason.value if hasattr(reason, "value") else str(reason)
                        out[name][key] = out[name].get(key, 0) + count
        return {name: dict(sorted(reasons.items())) for name, reasons in out.items()}


def _and(items: list[str]) -> str:
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def _ids(ids: list[int]) -> str:
    return f"replica {ids[0]}" if len(ids) == 1 else "replicas " + ", ".join(map(str, ids))


def never_healed(scenario: Scenario) -> list[str]:
    """The faults of `scenario` that last the whole run and can keep correct nodes apart
    for good (a partition, a one-way cut, a filtered or heavy drop), described for a
    status line. Whole-run weather (light loss, delay, duplication, reordering) heals by
    retransmission and is not listed."""
    out = []
    for nf in scenario.network:
        if not nf.is_link_fault or nf.until_ms is not None:
            continue
        since = f" from {nf.at_ms} ms"
        if nf.partition:
            groups = ", ".join("[" + ", ".join(map(str, g)) + "]" for g in nf.partition)
            out.append(f"the partition [{groups}]{since}")
        elif nf.one_way is not None:
            out.append(f"the one-way cut {nf.one_way[0]} -> {nf.one_way[1]}{since}")
        elif nf.drop and (nf.filtered or nf.drop >= HEAVY_DROP):
            out.append(f"the drop of {nf.drop:g} of {_filter_text(nf)}{since}")
    return out


HEAVY_DROP = 0.5
"""A whole-run loss rate from which a fault counts as never healing (`never_healed`)."""


def _filter_text(nf) -> str:
    parts = []
    if nf.kinds:
        parts.append("/".join(nf.kinds))
    else:
        parts.append("messages")
    if nf.from_:
        parts.append("from " + ",".join(map(str, nf.from_)))
    if nf.to:
        parts.append("to " + ",".join(map(str, nf.to)))
    if nf.views:
        parts.append("in views " + ",".join(map(str, nf.views)))
    if nf.seqs:
        parts.append("at seqs " + ",".join(map(str, nf.seqs)))
    return " ".join(parts)


def render_event(e: tuple) -> str:
    t, kind, *rest = e
    if kind == "msg":
        src, dst, data = rest
        try:
            env = envelope_from_bytes(data)
            text = f"{render(message_of(env))} signed by {env.signer!r}"
        except Exception as exc:  # noqa: BLE001 - any garbage renders as garbage
            text = f"<{len(data)} bytes: {type(exc).__name__}>"
        return f"{t:>8} ms  {src!s:>4} -> {dst!s:<4} {text}"
    if kind == "done":
        return f"{t:>8} ms  {rest[0]} completed t={rest[1]}"
    return f"{t:>8} ms  replica {rest[0]} {kind}es" if kind == "crash" else f"{t:>8} ms  replica {rest[0]} {kind}s"


def _watch_client(core: ClientCore) -> Lies:
    """As `trace.watch_honest`, for the honest core under a Byzantine client (its `submit` and
    `step` both produce sends)."""
    lies = Lies()
    honest_submit, honest_step = core.submit, core.step

    def submit(operation: bytes, read_only: bool = False) -> list:
        out = honest_submit(operation, read_only)
        lies.step.extend(out)
        return out

    def step(event: Any) -> list:
        out = honest_step(event)
        lies.step.extend(out)
        return out

    core.submit, core.step = submit, step  # type: ignore[method-assign]
    return lies


class _Described:
    """`trace.describe` with a bounded memo, for judging lies without a trace (a broadcast
    is decoded once, not once per receiver)."""

    MAX = 4096

    def __init__(self) -> None:
        self._memo: dict[bytes, dict[str, Any]] = {}

    def __call__(self, data: bytes) -> dict[str, Any]:
        d = self._memo.get(data)
        if d is None:
            if len(self._memo) >= self.MAX:
                self._memo.clear()
            d = self._memo[data] = describe(data, ident=False)  # no trace: the id is never read
        return d


def run_scenario(scenario: Scenario, seed: int | None = None, **kw: Any) -> RunResult:
    return Simulation(scenario, seed, **kw).run()
