"""View changes: certificates, the NEW-VIEW computation, and who is where (OSDI'99 4.4).

Pure functions, shared by the new primary (which builds NEW-VIEW) and the backups (which
recompute it from the VIEW-CHANGEs it carries and reject it if anything differs). Keeping
one implementation for both sides is what makes "backups recompute" meaningful: there is
one definition of the right answer.

A VIEW-CHANGE is checked in full before it counts: its signer, the 2f+1 CHECKPOINT proof
for its stable sequence number, and every prepared certificate (a PRE-PREPARE signed by
the primary of its view plus 2f matching PREPAREs from distinct backups, all validly
signed, views below the new view, sequence numbers in (h, h+L]). A NEW-VIEW is accepted
only if `check_new_view` recomputes exactly its pre-prepares; anything wrong raises
InvalidCertificate, whose message is the reason (the replica counts it as a rejection).

The state a replica keeps about view changes lives here too: its `ViewStatus` (NORMAL, or
VIEW_CHANGE while it waits for the NEW-VIEW of its view) and `ViewChanges`, the
VIEW-CHANGEs it holds and has sent and where the other replicas are, with the budgets on
resending them (a VIEW-CHANGE, a NEW-VIEW: once per retransmission period per replica).
`certificates_to_send` picks our own prepared certificates for a VIEW-CHANGE, checked by
the code the others will run.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum

from . import codec
from .bounds import Bound, check
from .config import ClusterConfig
from .crypto import NULL_DIGEST, Verifier
from .events import Ignored, Reason
from .log import MessageLog
from .messages import (
    Checkpoint,
    Envelope,
    NewView,
    Prepare,
    PrePrepare,
    ViewChange,
    decode_envelope,
    detached,
)
from .quorum import Added, VoteSet


class ViewStatus(Enum):
    """Where a replica is in its view (OSDI'99 4.4): NORMAL once the view is installed
    (by NEW-VIEW, or view 0 from the start); VIEW_CHANGE from sending VIEW-CHANGE for
    `view` until its NEW-VIEW is installed. A state transfer is not a status: it runs in
    either (`Replica.transfer`)."""

    NORMAL = "normal"
    VIEW_CHANGE = "view-change"


class InvalidCertificate(ValueError):
    """A view-change or new-view that does not check out; the reason is the message."""


@dataclass(frozen=True, slots=True)
class PreparedCert:
    """What a prepared certificate proves: digest d was prepared at (view, seq). It names
    the batch by its digest only (4.4); the batch itself is not part of it."""

    view: int
    seq: int
    digest: bytes


@dataclass(frozen=True, slots=True)
class CheckedViewChange:
    signer: int
    msg: ViewChange
    data: bytes
    stable_digest: bytes
    certs: dict[int, PreparedCert]


def _decode(data: bytes) -> tuple[Envelope, object]:
    """A certificate's message, decoded but not verified: every check that costs no
    signature comes first, so a padded or malformed certificate is refused for the price
    of decoding it (a VIEW-CHANGE is checked in full every time it arrives)."""
    try:
        env, msg = decode_envelope(data)
    except codec.CodecError as exc:
        raise InvalidCertificate(f"malformed message in certificate: {exc}") from None
    if type(env.signer) is not int:
        raise InvalidCertificate("certificate message not signed by a replica")
    return env, msg


def _verified(env: Envelope, verifier: Verifier) -> None:
    if not verifier.verify(env):
        raise InvalidCertificate(f"bad signature by {env.signer} in certificate")


def check_checkpoint_proof(
    config: ClusterConfig, verifier: Verifier, seq: int, proof: tuple[bytes, ...]
) -> bytes:
    """The state digest that 2f+1 distinct replicas signed for `seq` (section 4.3)."""
    if seq == 0:
        if proof:
            raise InvalidCertificate("a proof for checkpoint 0")
        return b""
    if seq % config.checkpoint_interval:
        raise InvalidCertificate(f"checkpoint {seq} is not a multiple of K")
    if len(proof) > config.n:
        raise InvalidCertificate(f"checkpoint proof with {len(proof)} messages, more than n")
    # Shape first, signatures last: a proof padded with copies or with messages of the
    # wrong kind costs decoding only, and at most one signature check per distinct signer.
    opened = VoteSet()  # signer -> (digest, envelope)
    digest = None
    for data in proof:
        try:
            env, msg = decode_envelope(data)
        except codec.CodecError as exc:
            raise InvalidCertificate(f"malformed message in certificate: {exc}") from None
        if type(env.signer) is not int or not 0 <= env.signer < config.n:
            raise InvalidCertificate("certificate message not signed by a replica")
        if not isinstance(msg, Checkpoint) or msg.seq != seq:
            raise InvalidCertificate(f"checkpoint proof holds something other than checkpoint {seq}")
        if digest is None:
            digest = msg.digest
        elif msg.digest != digest:
            raise InvalidCertificate("checkpoint proof with two digests")
        if opened.add(env.signer, msg.digest, env) is not Added.ADDED:
            raise InvalidCertificate(f"checkpoint proof with two messages of replica {env.signer}")
    if digest is None or not opened.reached(digest, config.quorum):
        raise InvalidCertificate(f"checkpoint proof with {len(opened)} signers, needs {config.quorum}")
    for signer, (_, env) in opened.items():
        if not verifier.verify(env):
            raise InvalidCertificate(f"bad signature by {signer} in certificate")
    return digest


def check_cert_pre_prepare(
    config: ClusterConfig, verifier: Verifier, new_view: int, cert: tuple[bytes, ...]
) -> tuple[Envelope, PrePrepare]:
    """The pre-prepare that opens a prepared certificate: signed by the primary of its
    view, a view below `new_view`, its digest that of its batch (section 4.2, 4.4)."""
    if not cert:
        raise InvalidCertificate("empty prepared certificate")
    env, pp = _decode(cert[0])
    if not isinstance(pp, PrePrepare):
        raise InvalidCertificate("prepared certificate does not start with a pre-prepare")
    if pp.view >= new_view:
        raise InvalidCertificate(f"prepared certificate from view {pp.view} >= {new_view}")
    if env.signer != config.primary(pp.view):
        raise InvalidCertificate(f"pre-prepare of view {pp.view} not signed by its primary")
    if pp.batch is not None:
        # A certificate is about a digest; carried batches would let one VIEW-CHANGE (and
        # the NEW-VIEW that holds it) outgrow any frame (4.4).
        raise InvalidCertificate(f"the pre-prepare of certificate n={pp.seq} carries its batch")
    _verified(env, verifier)
    return env, pp


def check_prepared_cert(
    config: ClusterConfig, verifier: Verifier, new_view: int, cert: tuple[bytes, ...]
) -> PreparedCert:
    """A pre-prepare plus 2f matching prepares from distinct backups (section 4.2). At
    most one message per replica: the shape is checked before any signature, and each
    distinct prepare's signature once."""
    if len(cert) > config.n:
        raise InvalidCertificate(f"prepared certificate of {len(cert)} messages, at most {config.n}")
    env, pp = check_cert_pre_prepare(config, verifier, new_view, cert)
    primary = env.signer
    prepares: dict[int, Envelope] = {}
    for data in cert[1:]:
        penv, p = _decode(data)
        if not isinstance(p, Prepare) or (p.view, p.seq, p.digest) != (pp.view, pp.seq, pp.digest):
            raise InvalidCertificate(f"prepare in certificate n={pp.seq} does not match")
        if penv.signer == primary:
            raise InvalidCertificate("prepare from the primary in a certificate")
        prepares.setdefault(penv.signer, penv)  # a backup's copies count once
    if len(prepares) < 2 * config.f:
        raise InvalidCertificate(
            f"prepared certificate n={pp.seq} has {len(prepares)} prepares, needs {2 * config.f}"
        )
    for penv in prepares.values():
        _verified(penv, verifier)
    return PreparedCert(pp.view, pp.seq, pp.digest)


CertCheck = Callable[[ClusterConfig, Verifier, int, tuple[bytes, ...]], PreparedCert]
"""How a prepared certificate is checked: `check_prepared_cert`, or a broken core's
weaker rule (adversary/broken.py) passed down as a seam."""

ProofCheck = Callable[[int, tuple[bytes, ...]], bytes]
"""How a stable-checkpoint proof is checked: against the configuration of its epoch
(epochs.Epochs.check_proof); by default against the one configuration given."""


def check_view_change(
    config: ClusterConfig,
    verifier: Verifier,
    signer: int,
    vc: ViewChange,
    data: bytes,
    check_cert: CertCheck = check_prepared_cert,
    check_proof: ProofCheck | None = None,
) -> CheckedViewChange:
    """Check every part of a VIEW-CHANGE (whose envelope signature is already verified)."""
    # The shape first, at no signature's cost: at most one certificate per seq of the
    # window (so at most L of them are decoded), each at most one message per replica
    # (check_prepared_cert).
    seqs: set[int] = set()
    for raw in vc.prepared:
        if not raw or len(raw) > config.n:
            raise InvalidCertificate(f"prepared certificate of {len(raw)} messages")
        pp = _decode(raw[0])[1]
        if not isinstance(pp, PrePrepare):
            raise InvalidCertificate("prepared certificate does not start with a pre-prepare")
        if not vc.stable_seq < pp.seq <= vc.stable_seq + config.log_window:
            raise InvalidCertificate(f"prepared certificate n={pp.seq} outside the water marks")
        if pp.seq in seqs:
            raise InvalidCertificate(f"two prepared certificates for n={pp.seq}")
        seqs.add(pp.seq)
    if check_proof is None:
        stable_digest = check_checkpoint_proof(config, verifier, vc.stable_seq, vc.checkpoint_proof)
    else:
        stable_digest = check_proof(vc.stable_seq, vc.checkpoint_proof)
    certs: dict[int, PreparedCert] = {}
    for raw in vc.prepared:
        pc = check_cert(config, verifier, vc.new_view, raw)
        certs[pc.seq] = pc
    return CheckedViewChange(signer, vc, data, stable_digest, certs)


@dataclass(frozen=True, slots=True)
class NewViewPlan:
    """What the NEW-VIEW for a set of view-changes must contain (section 4.4)."""

    min_s: int
    stable_digest: bytes
    checkpoint_proof: tuple[bytes, ...]
    slots: tuple[tuple[int, bytes], ...]  # (seq, digest): batches go by digest (4.4)

    def contradicts(self, signed: dict[tuple[str, int, int], tuple[bytes, Envelope]], view: int) -> bool:
        """Whether re-issuing these slots in `view` would contradict a PRE-PREPARE we
        signed there (`signed`: the safety rules' votes), as when a NEW-VIEW for that view
        went out before a restart, built from other view-changes."""
        for seq, d in self.slots:
            prior = signed.get(("pre-prepare", view, seq))
            if prior is not None and prior[0] != d:
                return True
        return False


def plan_new_view(view_changes: list[CheckedViewChange]) -> NewViewPlan:
    """min-s is the latest stable checkpoint in V; for every n in (min-s, max-s] re-issue
    the digest of the prepared certificate with the highest view, or a null request."""
    best = max(view_changes, key=lambda c: (c.msg.stable_seq, c.signer))
    min_s = best.msg.stable_seq
    chosen: dict[int, PreparedCert] = {}
    for c in view_changes:
        for seq, pc in c.certs.items():
            if seq > min_s and (seq not in chosen or pc.view > chosen[seq].view):
                chosen[seq] = pc
    max_s = max(chosen, default=min_s)
    slots = []
    for seq in range(min_s + 1, max_s + 1):
        pc = chosen.get(seq)
        slots.append((seq, pc.digest) if pc else (seq, NULL_DIGEST))
    return NewViewPlan(min_s, best.stable_digest, best.msg.checkpoint_proof, tuple(slots))


def next_seq_after(
    pre_prepares: list[tuple[PrePrepare, bytes]], min_s: int, low: int, executed: int
) -> int:
    """The next sequence number to assign in a view just installed: past the last slot
    the NEW-VIEW re-issued (min-s when it re-issued none), the low water mark and what
    this replica executed."""
    last = pre_prepares[-1][0].seq if pre_prepares else min_s
    return max(last, low, executed) + 1


@dataclass(frozen=True, slots=True)
class CheckedNewView:
    """A NEW-VIEW that recomputes: its plan and its re-issued pre-prepares (with bytes)."""

    plan: NewViewPlan
    pre_prepares: list[tuple[PrePrepare, bytes]]


def check_view_changes(
    config: ClusterConfig, verifier: Verifier, nv: NewView, check_cert: CertCheck = check_prepared_cert,
    check_proof: ProofCheck | None = None,
) -> list[CheckedViewChange]:
    """The 2f+1 VIEW-CHANGEs a NEW-VIEW carries, each for its view, from distinct
    replicas, validly signed and checked in full (section 4.4)."""
    checked: list[CheckedViewChange] = []
    if len(nv.view_changes) > config.n:
        raise InvalidCertificate(f"{len(nv.view_changes)} view-changes, at most {config.n}")
    for raw in nv.view_changes:
        try:
            env, vc = decode_envelope(raw)
        except codec.CodecError as exc:
            raise InvalidCertificate(f"malformed view-change: {exc}") from None
        if not isinstance(vc, ViewChange) or vc.new_view != nv.view:
            raise InvalidCertificate("carries something other than view-changes for its view")
        if type(env.signer) is not int or not 0 <= env.signer < config.n:
            raise InvalidCertificate("view-change not signed by a replica")
        if any(c.signer == env.signer for c in checked):
            raise InvalidCertificate(f"two view-changes from replica {env.signer}")
        if not verifier.verify(env):
            raise InvalidCertificate(f"bad signature on the view-change of {env.signer}")
        try:
            checked.append(check_view_change(config, verifier, env.signer, vc, raw, check_cert, check_proof))
        except InvalidCertificate as exc:
            raise InvalidCertificate(f"invalid view-change from {env.signer}: {exc}") from None
    if len(checked) < config.quorum:
        raise InvalidCertificate(f"only {len(checked)} view-changes, needs {config.quorum}")
    return checked


def check_new_view(
    config: ClusterConfig, verifier: Verifier, nv: NewView, check_cert: CertCheck = check_prepared_cert,
    check_proof: ProofCheck | None = None,
) -> CheckedNewView:
    """Recompute the NEW-VIEW from the view-changes it carries and accept it only if its
    pre-prepares are exactly the recomputed ones, signed by the new primary for the new
    view (section 4.4: backups "verify that O is correct by performing a computation
    similar to the one used by the primary to create O"). The envelope of `nv` itself is
    already verified; anything wrong raises InvalidCertificate."""
    plan = plan_new_view(check_view_changes(config, verifier, nv, check_cert, check_proof))
    if len(nv.pre_prepares) != len(plan.slots):
        raise InvalidCertificate(f"{len(nv.pre_prepares)} pre-prepares where {len(plan.slots)} were due")
    primary = config.primary(nv.view)
    pre_prepares = []
    for raw, (seq, d) in zip(nv.pre_prepares, plan.slots, strict=True):
        try:
            env, pp = decode_envelope(raw)
        except codec.CodecError as exc:
            raise InvalidCertificate(f"malformed pre-prepare: {exc}") from None
        if not isinstance(pp, PrePrepare) or env.signer != primary or pp.view != nv.view:
            raise InvalidCertificate("a re-issued pre-prepare is not the new primary's for the new view")
        if (pp.seq, pp.digest) != (seq, d):
            raise InvalidCertificate(f"pre-prepare n={pp.seq} differs from the recomputed one")
        if pp.batch is not None:
            raise InvalidCertificate(f"re-issued pre-prepare n={pp.seq} carries its batch")
        if not verifier.verify(env):
            raise InvalidCertificate(f"bad signature on pre-prepare n={pp.seq}")
        pre_prepares.append((pp, raw))
    return CheckedNewView(plan, pre_prepares)


LONE_FACTOR = 3
"""View-change timeouts a replica may wait alone in our view + 1 before we join it."""


def certificates_to_send(
    config: ClusterConfig,
    verifier: Verifier,
    new_view: int,
    prepared: dict[int, tuple[int, bytes, tuple[bytes, ...]]],
    log: MessageLog,
) -> tuple[list[tuple[bytes, ...]], list[str]]:
    """Our prepared certificates for a VIEW-CHANGE to `new_view` (4.4), each checked by
    the same code the others will run (what we send must count); and why any is left out.
    A certificate outside the window cannot happen since window jumps are durable (a
    prepared slot is in the window it was prepared in); one from a damaged store is left
    out rather than sent in a VIEW-CHANGE that no one would accept."""
    certs: list[tuple[bytes, ...]] = []
    left_out: list[str] = []
    for seq, (_, pp_env, prepares) in sorted(prepared.items()):
        if not log.in_window(seq):
            if seq > log.low:
                left_out.append(f"leaving out our certificate for n={seq}: outside the window")
            continue
        # The pre-prepare goes without its batch: a certificate is about the digest, and a
        # VIEW-CHANGE that carried every batch above h could outgrow any frame (4.4).
        cert = (detached(pp_env), *prepares)
        try:
            check_prepared_cert(config, verifier, new_view, cert)
        except InvalidCertificate as exc:  # e.g. restored from a damaged record
            left_out.append(f"leaving out our certificate for n={seq}: {exc}")
            continue
        certs.append(cert)
    return certs, left_out


class ViewChanges:
    """The VIEW-CHANGEs a replica holds and has sent, and where the others are (4.4, 4.5.2).

    * `received`: the latest valid VIEW-CHANGE of each replica (ours included), which
      count toward the new-view timer and the NEW-VIEW.
    * `own`: our signed VIEW-CHANGE of each of the last n views we passed through, resent
      to a replica still waiting in one (`resent`: once per period per asker and view),
      so that replicas split between two views converge (issue 13, item 2).
    * `peer_view`: the latest view each replica told us it is in (a replayed old
      VIEW-CHANGE is then recognised as old).
    * `lone_since`, `lone_joins`: replicas seen waiting alone in our view + 1 (view, first
      tick, last copy's tick), and how often we joined each (`lone_deadlines`).
    * `new_view_resent`: when we last resent our NEW-VIEW to each replica.
    * `started`, `attempts`: view changes started, and in a row without progress (the
      timeout doubles with each, 4.5.2).
    """

    def __init__(self, config: ClusterConfig, retransmit_ticks: int, timeout_ticks: int) -> None:
        self.config = config
        self.retransmit_ticks = retransmit_ticks
        self.timeout_ticks = timeout_ticks
        self.received: dict[int, CheckedViewChange] = {}
        self.refused: dict[int, bytes] = {}  # replica -> digest of its last VIEW-CHANGE that did not check
        self.refused_new_view: dict[int, bytes] = {}  # replica -> the same for its last NEW-VIEW
        self.own: dict[int, bytes] = {}
        self.resent: dict[int, tuple[int, int]] = {}  # asker -> (view, tick) answered
        self.new_view_resent: dict[int, int] = {}  # replica -> tick
        self.peer_view: dict[int, int] = {}
        self.lone_since: dict[int, tuple[int, int, int]] = {}
        self.lone_joins: dict[int, int] = {}
        self.started = 0
        self.attempts = 0

    def saw(self, replica: int, view: int) -> None:
        """`replica` told us it is in `view` (or later)."""
        self.peer_view[replica] = max(self.peer_view.get(replica, -1), view)

    def sent_own(self, new_view: int, data: bytes) -> None:
        """We sent VIEW-CHANGE `data` for `new_view`: keep the last n of ours."""
        self.own[new_view] = data
        for old in [v for v in self.own if v <= new_view - self.config.n]:
            del self.own[old]
        self.lone_since = {s: vs for s, vs in self.lone_since.items() if vs[0] > new_view}

    def retransmission(self, me: int, view: int) -> bytes | None:
        """Our VIEW-CHANGE for `view`, the one we wait in, to send again (or None)."""
        own = self.received.get(me)
        return own.data if own is not None and own.msg.new_view == view else None

    def new_view_too_soon(self, replica: int, now: int) -> bool:
        """Our NEW-VIEW (large) went to `replica` less than a retransmission period ago."""
        last = self.new_view_resent.get(replica)
        return last is not None and now - last < self.retransmit_ticks

    def ignore_resend(self, to: int, view: int, now: int) -> Ignored | None:
        """Why our VIEW-CHANGE for `view` is not resent to `to` now, or None: it has told
        us of a later view since (so this is a replay, or an old copy, and answering it
        could start two replicas resending old VIEW-CHANGEs to each other), or it had it
        less than a retransmission period ago."""
        if self.peer_view.get(to, -1) > view:
            return Reason.STALE, None
        last = self.resent.get(to)
        if last is not None and last[0] == view and now - last[1] < self.retransmit_ticks:
            return Reason.DUPLICATE, None
        return None

    def resend(self, to: int, view: int, now: int) -> bytes:
        """Our VIEW-CHANGE for `view`, resent to `to` (per asker and view: a replay of
        another view uses none of this one's budget)."""
        self.resent[to] = (view, now)
        self.saw(to, view)
        return self.own[view]

    def chosen(self, votes: list[CheckedViewChange], me: int) -> list[CheckedViewChange]:
        """The 2f+1 VIEW-CHANGEs a new primary puts in its NEW-VIEW: its own first, then
        the others' by replica id."""
        others = sorted((c for c in votes if c.signer != me), key=lambda c: c.signer)
        return [self.received[me], *others[: self.config.quorum - 1]]

    def add(self, checked: CheckedViewChange, view: int, now: int) -> None:
        """A valid VIEW-CHANGE, newer than what we held from its signer; we are in `view`."""
        signer, new_view = checked.signer, checked.msg.new_view
        self.received[signer] = checked
        self.saw(signer, new_view)
        if new_view == view + 1 and self.lone_since.get(signer, (-1, 0, 0))[0] != new_view:
            self.lone_since[signer] = (new_view, now, now)

    def repeated(self, signer: int, new_view: int, data: bytes, now: int) -> None:
        """A copy of the VIEW-CHANGE we hold from `signer`: it is still sending it."""
        lone = self.lone_since.get(signer)
        prior = self.received.get(signer)
        if lone is not None and lone[0] == new_view and prior is not None and prior.data == data:
            self.lone_since[signer] = (lone[0], lone[1], now)

    def join_target(self, view: int, me: int) -> int | None:
        """Section 4.5.2: f+1 VIEW-CHANGEs for views above ours from others prove that
        at least one correct replica wants to move: the lowest view f+1 of them reached."""
        higher = sorted((c.msg.new_view for s, c in self.received.items() if s != me), reverse=True)
        higher = [v for v in higher if v > view]
        return higher[self.config.f] if len(higher) >= self.config.weak_quorum else None

    def for_view(self, view: int) -> list[CheckedViewChange]:
        """The VIEW-CHANGEs for exactly `view` (a NEW-VIEW is made of 2f+1 of them)."""
        return [c for c in self.received.values() if c.msg.new_view == view]

    def in_view(self, view: int) -> int:
        """Replicas whose latest VIEW-CHANGE is for `view` or a later view: 2f+1 of them
        start the new-view timer (4.5.2). One past it was in it or joined a later one on
        f+1; counting it gives f faulty replicas nothing they could not get by sending a
        VIEW-CHANGE for this view, and it lets replicas left behind in v time v out after
        the one that moved on to v+1 restarted and can no longer resend its VIEW-CHANGE
        for v (review of issue 13)."""
        return sum(1 for c in self.received.values() if c.msg.new_view >= view)

    def installed(self, view: int) -> None:
        """`view` is installed: VIEW-CHANGEs for it and earlier are spent."""
        self.received = {s: c for s, c in self.received.items() if c.msg.new_view > view}
        self.lone_since = {s: v for s, v in self.lone_since.items() if v[0] > view}

    def lone_deadlines(self, view: int, now: int) -> list[tuple[int, int, int]]:
        """(signer, view + 1, tick we join it) for each replica still waiting alone in
        `view` + 1 (Replica.maybe_join_lone_view_change)."""
        out = []
        for signer, (lone_view, since, last) in sorted(self.lone_since.items()):
            held = self.received.get(signer)
            if lone_view != view + 1 or held is None or held.msg.new_view != lone_view:
                continue
            if now - last > 2 * self.retransmit_ticks:
                continue  # not retransmitted lately: not waiting there any more (or a one-off)
            # The wait doubles per join of this signer without the view-change cap, so a
            # faulty replica forcing view changes this way gets logarithmically few.
            wait = (LONE_FACTOR * self.timeout_ticks) << min(self.lone_joins.get(signer, 0), 40)
            out.append((signer, lone_view, since + wait))
        return out

    def joined_lone(self, signer: int) -> None:
        self.lone_joins[signer] = self.lone_joins.get(signer, 0) + 1

    def bounds(self) -> list[Bound]:
        n = self.config.n
        return [
            ("view_changes", len(self.received), n),
            ("_new_view_resent", len(self.new_view_resent), n),
            ("_own_vcs", len(self.own), n),
            ("_vc_resent", len(self.resent), n),
            ("_peer_view", len(self.peer_view), n),
            ("_lone_since", len(self.lone_since), n),
            ("_lone_joins", len(self.lone_joins), n),
            ("_vc_refused", len(self.refused), n),
            ("_nv_refused", len(self.refused_new_view), n),
        ]

    def invariants(self) -> None:
        check(self.bounds())
