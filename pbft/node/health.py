"""Health of one replica (`/healthz`, `/readyz`, `/status`) and of a whole cluster
(`pbft status`'s verdict).

Theory of operation. Everything here reads what a node already knows; nothing asks the
network and nothing changes state, so the metrics server can call it from any request.

One replica (the HTTP endpoints on its metrics address, `routes`):
* `/healthz`: 200 while the process serves (503 once the node has stopped itself after a
  storage failure and is shutting down).
* `/readyz`: 200 only when every condition below holds, else 503; both with a JSON body
  naming each condition that fails and why (`readiness`):
  - `links`: the outbound links to at least 2f other replicas are up (with itself, a
    quorum of 2f+1 can hear it), and have been for `settle_seconds`: until it has heard
    from the others, a replica that was cut off cannot know how far behind it is;
  - `view`: its view is active (not in a view change);
  - `state`: no state transfer is running and what it executed is not behind its stable
    checkpoint (after a window jump, until the state is installed);
  - `divergence`: its replicated state has not diverged from the group's (the core's
    `diverged`: a stable checkpoint differed from its own state, or the replicas' CHECKPOINTs
    showed they disagree, and none of its own checkpoints has matched a stable one since):
    the service is not deterministic, or its code changed without a new version;
  - `lag`: f+1 other replicas (so at least one correct one) are not known to have
    executed more than `lag_limit` (the checkpoint interval K) past it, and, after a
    restart, it has heard where the others are (the core's own test). What it knows of
    the others comes from the core: their STATUS reports, their CHECKPOINTs inside its
    window and their claims above it. All of these only ever understate where a correct
    replica is, so stale knowledge can make it ready too early, never keep it not ready.
* `/status`: the replica's own epoch and view, primary, whether the view is active, last
  executed, stable checkpoint, log size, state transfer, connected peers, its Byzantine
  behaviour if it runs one, and its readiness (`replica_status`), with the field names of
  a row of `pbft status --json` (and a few more).

Views as a person reads them (`view_text`, `view_fields`): a view number carries its
configuration epoch in its high bits (pbft.protocol.epochs: epoch e's views count from
e << 32), so every output shows the epoch and the view within it ("epoch 2, view 0"; just
"view 3" in epoch 0), and JSON gives `epoch`, `view` (within the epoch) and `view_number`
(the raw number, for comparing views across epochs).

A cluster (`judge`, from the signed STATUS answers `pbft status` collects):
* `healthy`: every replica answered, all in one view, none lagging, none diverged;
* `degraded`: 2f+1 answering replicas agree on one view (so the service can make
  progress), but some replica is unreachable, in another view, lagging, or says its state
  diverged from the group's (its STATUS answer's `behaviour` ends in
  `state-diverged:KIND:SEQ`, pbft.protocol.events.status_label): a service that is not
  deterministic, which the views alone never show;
* `unavailable`: no 2f+1 answering replicas in one view.
A replica lags when it is more than `lag_limit` behind the reference: the (f+1)-th
highest last executed of the answers, which at least one correct replica has reached (the
single highest could be a faulty replica's claim). `EXIT` gives the exit status of each
verdict: 0, 3 and 4, so that none clashes with 1 (a check failed) or 2 (a usage error).
"""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from ..protocol.config import ClusterConfig
from ..protocol.epochs import epoch_of_view, first_view
from ..protocol.events import split_status_label
from ..protocol.viewchange import ViewStatus

HEALTHY, DEGRADED, UNAVAILABLE = "healthy", "degraded", "unavailable"
EXIT = {HEALTHY: 0, DEGRADED: 3, UNAVAILABLE: 4}
"""`pbft status` exit status per verdict (1 and 2 keep their CLI-wide meanings)."""

JSON = "application/json"


def view_text(view: int) -> str:
    """A view as an operator reads it: `view 3`, or `epoch 2, view 3` once the group has
    been changed (pbft.protocol.epochs: epoch e's views count from e << 32)."""
    epoch = epoch_of_view(view)
    v = view - first_view(epoch)
    return f"view {v}" if epoch == 0 else f"epoch {epoch}, view {v}"


def view_fields(view: int) -> dict[str, int]:
    """A view in JSON: `epoch`, `view` (within the epoch) and `view_number` (the raw
    number, epoch << 32 plus the view within it)."""
    epoch = epoch_of_view(view)
    return {"epoch": epoch, "view": view - first_view(epoch), "view_number": view}


def lag_limit(config: ClusterConfig) -> int:
    """Sequence numbers a replica may be behind before it counts as lagging: one
    checkpoint interval (beyond it the others have made a checkpoint stable that it has
    not reached)."""
    return config.checkpoint_interval


def settle_seconds(config: ClusterConfig) -> float:
    """How long the links to a quorum must have been up before a replica calls itself
    ready: two retransmission periods, in which an idle replica sends its STATUS and the
    replicas ahead of it answer with theirs (a busy one hears their CHECKPOINTs)."""
    return 2 * config.retransmit_ms / 1000


def reference(values: Iterable[int], f: int) -> int | None:
    """The (f+1)-th highest of `values` (at least one correct replica reached it when each
    value comes from a different replica), or None with f or fewer values."""
    ranked = sorted(values, reverse=True)
    return ranked[f] if len(ranked) > f else None


# -- one replica --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Readiness:
    ready: bool
    failing: dict[str, str] = field(default_factory=dict)
    """Condition name (links, view, state, lag) -> why it fails."""
    behind: int = 0
    """Sequence numbers f+1 other replicas are known to have executed past this one."""

    def as_json(self) -> dict[str, Any]:
        return {"ready": self.ready, "failing": self.failing, "behind": self.behind}


def known_progress(core: Any) -> dict[int, int]:
    """The highest sequence number each other replica is known to have executed: its last
    STATUS (the core's `catch_up`), its CHECKPOINTs in our window, its checkpoint claims
    above it (the core's `checkpoints`)."""
    me = core.id
    out: dict[int, int] = {}

    def see(replica: object, seq: int) -> None:
        if isinstance(replica, int) and replica != me:
            out[replica] = max(out.get(replica, 0), seq)

    for replica, (_, executed) in dict(core.catch_up.progress).items():
        see(replica, executed)
    checkpoints = core.checkpoints
    for seq, votes in dict(checkpoints.votes).items():
        for replica in votes:
            see(replica, seq)
    for replica, claims in dict(checkpoints.claims).items():
        if claims:
            see(replica, max(claims))
    return out


def readiness(node: Any) -> Readiness:
    """Whether `node` (a ReplicaNode) is ready to serve: see the module docstring."""
    core = node.replica
    config: ClusterConfig = node.config
    f = config.f
    failing: dict[str, str] = {}
    connected = len(node.transport.connected)
    since = getattr(node, "links_since", None)
    up_for = None if since is None else time.monotonic() - since
    if connected < 2 * f:
        failing["links"] = (
            f"connected to {connected} of {config.n - 1} other replicas, {2 * f} needed"
        )
    elif f > 0 and (up_for is None or up_for < settle_seconds(config)):
        failing["links"] = (
            f"links to {connected} other replicas just came up; waiting "
            f"{settle_seconds(config):g} s to hear where the others are"
        )
    if core.status is ViewStatus.VIEW_CHANGE:
        failing["view"] = f"{view_text(core.view)} is not active (a view change is in progress)"
    transfer = core.transfer
    executed, stable = core.last_executed, core.stable_seq
    if transfer is not None:
        failing["state"] = f"fetching the state of checkpoint {transfer.seq}"
    elif executed < stable:
        failing["state"] = f"executed {executed}, behind its stable checkpoint {stable}"
    ahead = reference(known_progress(core).values(), f)
    behind = max(0, ahead - executed) if ahead is not None else 0
    diverged = divergence_text(getattr(core, "diverged", None))
    if diverged is not None:
        failing["divergence"] = diverged
    if not core.catch_up.located:
        failing["lag"] = "recovered from its data directory; has not heard where the others are"
    elif behind > lag_limit(config):
        failing["lag"] = (
            f"{f + 1} other replicas executed up to {ahead} or beyond, {behind} past it "
            f"(more than {lag_limit(config)})"
        )
    return Readiness(not failing, failing, behind)


def divergence_text(diverged: Any) -> str | None:
    """What an operator reads of a core's `diverged` (pbft.protocol.events.Diverged), or
    None if its state is the group's."""
    if diverged is None:
        return None
    return diverged_reason(diverged.kind.value, diverged.seq)


def diverged_reason(kind: str, seq: int) -> str:
    """One clause for a replica whose state diverged (`kind`, at checkpoint `seq`)."""
    if kind == "split":
        return (f"the replicas disagree on the state at checkpoint {seq}, so none can become stable: "
                "the service is not deterministic? (docs/services.md)")
    return (f"its state at checkpoint {seq} differed from the group's: the service is not deterministic, "
            "or its code changed without a new version? (docs/services.md)")


def _divergence_json(core: Any) -> dict[str, Any] | None:
    """The core's current divergence (`Diverged`) for `/status`, or None."""
    d = getattr(core, "diverged", None)
    if d is None:
        return None
    return {"kind": d.kind.value, "seq": d.seq, "own_digest": d.own_digest.hex(),
            "other_digest": d.other_digest.hex(), "reason": diverged_reason(d.kind.value, d.seq)}


def behaviour_name(node: Any) -> str | None:
    """The Byzantine behaviour the node runs, or None: the node's `behaviour` name if it
    has one, else the name of the behaviour wrapped around its core."""
    name = getattr(node, "behaviour", None)
    if isinstance(name, str):
        return name
    wrapped = getattr(node.replica, "behaviour", None)  # ByzantineReplica
    name = getattr(wrapped, "name", None)
    return name if isinstance(name, str) else None


def replica_status(node: Any, ready: Readiness | None = None) -> dict[str, Any]:
    """The replica's own status as JSON: the fields of a row of `pbft status --json`
    (`behind` and `lagging` from what this replica knows of the others) and more."""
    core = node.replica
    ready = ready or readiness(node)
    transfer = core.transfer
    pool = getattr(node, "preverify", None)
    return {
        "id": node.id,
        "reachable": True,
        **view_fields(core.view),
        "primary": core.primary,
        "view_active": core.status is ViewStatus.NORMAL,
        "last_executed": core.last_executed,
        "stable_checkpoint": core.stable_seq,
        "log_size": len(core.log),
        "state_transfer": None if transfer is None else {"seq": transfer.seq},
        "connected": sorted(node.transport.connected),
        "behaviour": behaviour_name(node),
        "verify_threads": 0 if pool is None else pool.threads,
        "verified_on_threads": 0 if pool is None else pool.offloaded,
        "diverged": _divergence_json(core),
        "divergences": dict(getattr(node, "divergences", {})),
        "slow_steps": getattr(node, "slow_steps", 0),
        **ready.as_json(),
        "lagging": ready.behind > lag_limit(node.config),
    }


Response = tuple[int, str, bytes]
"""(HTTP status, content type, body)."""


def _json(status: int, value: object) -> Response:
    return status, JSON, (json.dumps(value) + "\n").encode()


def routes(node: Any) -> dict[bytes, Callable[[], Response]]:
    """The health endpoints of `node` for `metrics.serve_metrics`."""

    def healthz() -> Response:
        if node.failure is not None:
            return _json(503, {"alive": False, "failure": node.failure})
        return _json(200, {"alive": True})

    def readyz() -> Response:
        r = readiness(node)
        return _json(200 if r.ready else 503, r.as_json())

    def status() -> Response:
        return _json(200, replica_status(node))

    return {b"/healthz": healthz, b"/readyz": readyz, b"/status": status}


# -- a whole cluster ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Judgement:
    verdict: str
    view: int | None
    """The view most answering replicas are in (the highest of a tie), None if none answered."""
    reasons: list[str]
    rows: list[dict[str, Any]]

    @property
    def exit_status(self) -> int:
        return EXIT[self.verdict]


def judge(config: ClusterConfig, statuses: Mapping[int, Any]) -> Judgement:
    """The cluster's verdict from the signed STATUS answers (`Client.status()`), with one
    row per replica (its view, the primary it follows, last executed, stable checkpoint,
    log size, how far it is behind the reference and whether that is lagging)."""
    f, limit = config.f, lag_limit(config)
    views = Counter(s.view for s in statuses.values())
    view = max(views, key=lambda v: (views[v], v)) if views else None
    ref = reference((s.last_executed for s in statuses.values()), f)
    rows: list[dict[str, Any]] = []
    reasons: list[str] = []
    diverging: dict[str, list[int]] = {}
    for i in config.replica_ids():
        s = statuses.get(i)
        if s is None:
            rows.append({"id": i, "reachable": False})
            reasons.append(f"replica {i} is unreachable")
            continue
        behind = max(0, ref - s.last_executed) if ref is not None else 0
        behaviour, diverged = split_status_label(getattr(s, "behaviour", "") or "")
        row = {
            "id": i,
            "reachable": True,
            **view_fields(s.view),
            "primary": config.primary(s.view),
            "last_executed": s.last_executed,
            "stable_checkpoint": s.stable_seq,
            "log_size": s.log_size,
            "behind": behind,
            "lagging": behind > limit,
            "behaviour": behaviour or None,
            "diverged": None if diverged is None else {"kind": diverged[0], "seq": diverged[1]},
        }
        rows.append(row)
        if diverged is not None:
            # Its service went its own way: it counts against f (or, split, the cluster
            # is stuck), whatever the views say. Said once for all that say the same.
            why = diverged_reason(*diverged)
            if why not in diverging:
                diverging[why] = []
                reasons.append(why)
            diverging[why].append(i)
        if row["behaviour"]:
            # A flag left in a unit file must not go unnoticed: it counts against f.
            reasons.append(f"replica {i} runs the Byzantine behaviour {row['behaviour']}")
        if s.view != view:
            if epoch_of_view(s.view) == epoch_of_view(view) == 0:
                reasons.append(f"replica {i} is in view {s.view}, not {view}")
            else:
                reasons.append(f"replica {i} is in {view_text(s.view)}, not {view_text(view)}")
        if row["lagging"]:
            reasons.append(f"replica {i} is {behind} behind")
    for why, who in diverging.items():
        reasons[reasons.index(why)] = f"{_replicas(who)}: {why}"
    in_view = views[view] if view is not None else 0
    if in_view < config.quorum:
        verdict = UNAVAILABLE
        agree = f"{in_view} replica agrees" if in_view == 1 else f"{in_view} replicas agree"
        reasons.insert(0, f"{agree} on a view, {config.quorum} needed")
    else:
        verdict = DEGRADED if reasons else HEALTHY
    return Judgement(verdict, view, reasons, rows)


def _replicas(ids: list[int]) -> str:
    return f"replica {ids[0]}" if len(ids) == 1 else f"replicas {', '.join(map(str, ids))}"


def render_text(config: ClusterConfig, j: Judgement) -> str:
    """`pbft status` as text: one line per replica, then the verdict line."""
    lines = [
        f"{'replica':>7}  {'epoch':>5}  {'view':>6}  {'primary':>7}  {'executed':>9}  {'stable':>9}  "
        f"{'log':>6}  {'behind':>6}"
    ]
    for row in j.rows:
        if not row["reachable"]:
            lines.append(f"{row['id']:>7}  unreachable")
            continue
        mark = "  lagging" if row["lagging"] else ""
        if row.get("behaviour"):
            mark += f"  BYZANTINE: {row['behaviour']}"
        if row.get("diverged"):
            mark += f"  STATE DIVERGED at {row['diverged']['seq']}"
        lines.append(
            f"{row['id']:>7}  {row['epoch']:>5}  {row['view']:>6}  {row['primary']:>7}  {row['last_executed']:>9}  "
            f"{row['stable_checkpoint']:>9}  {row['log_size']:>6}  {row['behind']:>6}{mark}"
        )
    where = "" if j.view is None else f" ({view_text(j.view)}, primary {config.primary(j.view)})"
    why = f": {'; '.join(j.reasons)}" if j.reasons else ""
    lines.append(f"{j.verdict}{where}{why}")
    return "\n".join(lines)


def render_json(config: ClusterConfig, j: Judgement) -> dict[str, Any]:
    """`pbft status --json` (its fields: README, "Running a cluster", and docs/formats.md):
    `epoch`, `view` (within the epoch) and `view_number` (raw) are the cluster's view as
    in each row, all null when no replica answered."""
    fields = view_fields(j.view) if j.view is not None else {"epoch": None, "view": None, "view_number": None}
    return {
        "cluster": config.cluster_id,
        "verdict": j.verdict,
        "exit_status": j.exit_status,
        **fields,
        "primary": None if j.view is None else config.primary(j.view),
        "reasons": j.reasons,
        "lag_limit": lag_limit(config),
        "replicas": j.rows,
    }
