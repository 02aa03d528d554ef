"""Behaviours of a faulty primary (docs/attacks.md, "A faulty primary").

Theory of operation. The honest core underneath proposes as usual; the behaviour
intercepts each outgoing PRE-PREPARE it signed (the first send and every retransmission)
and decides, once per (view, seq), what each backup receives instead: a `plan` mapping
each peer to the envelopes it gets. Plans are memoised, so retransmissions repeat the same
lie byte for byte (Ed25519 signatures are deterministic) and a behaviour never equivocates
by accident; plans at or below the stable checkpoint are forgotten, so memory is bounded.

Most lies leave the core believing its honest proposal, so the primary's own state may
diverge from what it sent: it is Byzantine. `reorder-batch` and `duplicate-request`
instead make the core adopt the lie, because those attacks are only interesting when the
cluster keeps going (the correct outcome is "every replica executes the same thing").
"""

from __future__ import annotations

import math
from typing import ClassVar

from ..protocol import codec
from ..protocol.crypto import batch_digest, seal, signing_payload
from ..protocol.events import Action, Broadcast, Event, Received, Send, SendClient
from ..protocol.messages import (
    MAX_BATCH,
    MAX_OPERATION,
    Commit,
    Envelope,
    Prepare,
    PrePrepare,
    Request,
    open_envelope,
    to_body,
)
from .wire import OutgoingLie, Plan, ReplicaBehaviour, random_digest


def decode_batch(batch: tuple[bytes, ...]) -> tuple[tuple[Request, bytes], ...] | None:
    """The requests of a batch the core built itself (so they are well formed)."""
    out: list[tuple[Request, bytes]] = []
    for data in batch:
        opened = open_envelope(data)
        if opened is None or not isinstance(opened[1], Request):
            return None
        out.append((opened[1], data))
    return tuple(out)


class PrePrepareLie(OutgoingLie):
    """Base: rewrites this replica's PRE-PREPAREs with seq >= `from_seq` via `lie`."""

    kinds = (PrePrepare,)
    allowed: ClassVar[tuple[str, ...]] = ("from_seq",)

    def halves(self) -> tuple[list[int], list[int]]:
        peers = self.peers()
        cut = max(1, len(peers) // 2)
        return peers[:cut], peers[cut:]


class Equivocate(PrePrepareLie):
    """Sends one PRE-PREPARE for (view, seq) to the first half of the backups and a
    different one (the batch without its last request) to the others. With `reflect` it
    also echoes every PREPARE and COMMIT it receives back to everyone and signs a COMMIT
    for each half's digest to that half: harmless to a correct replica (duplicates do not
    count), fatal to one that counts votes by arrival (broken `count-duplicate-votes`)."""

    name = "equivocate"
    summary = "different PRE-PREPAREs for one (view, seq) to the two halves of the backups"
    allowed = ("from_seq", "reflect")

    def __init__(self, replica, key, params, rng) -> None:
        super().__init__(replica, key, params, rng)
        self.reflect = self.p.boolean("reflect", False)

    def intercept(self, event: Event) -> list[Event]:
        if self.reflect and isinstance(event, Received):
            opened = open_envelope(event.data)
            if opened is not None and isinstance(opened[1], Prepare | Commit):
                if opened[0].signer != self.me:
                    self._extra.append(Broadcast(event.data))
        return [event]

    def lie(self, pp: PrePrepare, data: bytes) -> Plan:
        other = pp.batch[:-1]
        second = self.forge(PrePrepare(pp.view, pp.seq, batch_digest(other), other))
        first_half, second_half = self.halves()
        plan: Plan = {r: [data] for r in first_half}
        plan.update({r: [second] for r in second_half})
        if self.reflect:
            for half, d in ((first_half, pp.digest), (second_half, batch_digest(other))):
                vote = self.forge(Commit(pp.view, pp.seq, d))
                for r in half:
                    plan[r].append(vote)
        return plan


class Silent(PrePrepareLie):
    """Sends nothing at all (replicas nor clients) from the first protocol message it
    would send for a seq >= `from_seq`; without `from_seq`, from the start."""

    name = "silent"
    summary = "sends nothing (from from_seq on, or always)"
    allowed = ("from_seq",)

    def __init__(self, replica, key, params, rng) -> None:
        super().__init__(replica, key, params, rng)
        self.from_seq = self.p.integer("from_seq", None, 0)
        self.silenced = self.from_seq is None

    def rewrite(self, actions: list[Action]) -> list[Action]:
        if not self.silenced:
            for a in actions:
                if isinstance(a, Send | Broadcast):
                    opened = open_envelope(a.data)
                    msg = opened[1] if opened else None
                    if isinstance(msg, PrePrepare | Prepare | Commit) and msg.seq >= self.from_seq:
                        self.silenced = True
        if not self.silenced:
            return actions
        return [a for a in actions if not isinstance(a, Send | Broadcast | SendClient)]


class Censor(ReplicaBehaviour):
    """Never lets one client's requests reach its core, so as primary it never orders
    them (and as a backup never relays them)."""

    name = "censor"
    summary = "never orders one client's requests"
    allowed = ("client",)

    def __init__(self, replica, key, params, rng) -> None:
        super().__init__(replica, key, params, rng)
        cfg = replica.config
        default = cfg.clients[0].id if cfg.clients else None
        self.client = self.p.params.get("client", default)
        if self.client not in cfg.client_index:
            raise ValueError(
                f"behaviour 'censor': 'client' must name a client of the cluster, not {self.client!r}."
            )

    def intercept(self, event: Event) -> list[Event]:
        if isinstance(event, Received):
            opened = open_envelope(event.data)
            if opened is not None and isinstance(opened[1], Request):
                if opened[1].client == self.client:
                    return []
        return [event]


class SlowPrimary(ReplicaBehaviour):
    """Holds each PRE-PREPARE for `delay_ms` (default 90% of the view-change timeout)
    before sending it; retransmissions of a held one are dropped."""

    name = "slow-primary"
    summary = "delays each pre-prepare by delay_ms (just under the view-change timeout)"
    allowed = ("delay_ms",)

    def __init__(self, replica, key, params, rng) -> None:
        super().__init__(replica, key, params, rng)
        cfg = replica.config
        delay_ms = self.p.integer("delay_ms", cfg.view_change_timeout_ms * 9 // 10, 0)
        self.delay_ticks = max(1, math.ceil(delay_ms / cfg.tick_ms))
        self.held: list[tuple[int, tuple[int, int], Action]] = []
        self.released: set[tuple[int, int]] = set()

    def rewrite(self, actions: list[Action]) -> list[Action]:
        out: list[Action] = []
        holding = {k for _, k, _ in self.held}
        for a in actions:
            key = self._key(a)
            if key is None or key in self.released:
                out.append(a)
            elif key not in holding:
                self.held.append((self.ticks + self.delay_ticks, key, a))
        due = [h for h in self.held if h[0] <= self.ticks]
        self.held = [h for h in self.held if h[0] > self.ticks]
        for _, key, a in due:
            out.append(a)
            self.released.add(key)
        low = self.replica.stable_seq
        self.released = {k for k in self.released if k[1] > low}
        return out

    def _key(self, a: Action) -> tuple[int, int] | None:
        if not isinstance(a, Send | Broadcast):
            return None
        opened = open_envelope(a.data)
        if opened is None or not isinstance(opened[1], PrePrepare) or opened[0].signer != self.me:
            return None
        return (opened[1].view, opened[1].seq)


class SkipSeq(PrePrepareLie):
    """Renumbers every pre-prepare from seq `seq` on to seq + 1, leaving a gap at `seq`
    that no correct replica can execute past (the new view fills it with a null request)."""

    name = "skip-seq"
    summary = "leaves a gap in sequence numbers (at seq, default 2)"
    allowed = ("seq",)

    def __init__(self, replica, key, params, rng) -> None:
        super().__init__(replica, key, params, rng)
        self.from_seq = self.p.integer("seq", 2, 1)

    def lie(self, pp: PrePrepare, data: bytes) -> Plan:
        return self.everyone(self.forge(PrePrepare(pp.view, pp.seq + 1, pp.digest, pp.batch)))


class OutOfWindow(PrePrepareLie):
    """Re-numbers pre-prepares to a seq at the low water mark h (`low`) or far above H
    (`high`, a different seq each time), or alternates (`both`). With `keep_honest` the
    honest pre-prepare follows the lie, so the cluster keeps going."""

    name = "out-of-window"
    summary = "pre-prepares at or below h, or far above H"
    allowed = ("from_seq", "mode", "keep_honest")

    def __init__(self, replica, key, params, rng) -> None:
        super().__init__(replica, key, params, rng)
        self.mode = self.p.choice("mode", "both", ("low", "high", "both"))
        self.keep_honest = self.p.boolean("keep_honest", False)

    def lie(self, pp: PrePrepare, data: bytes) -> Plan:
        mode = self.mode if self.mode != "both" else ("low", "high")[pp.seq % 2]
        log = self.replica.log
        seq = log.low if mode == "low" else log.high + 1 + self.rng.randrange(1 << 16)
        lie = self.forge(PrePrepare(pp.view, seq, pp.digest, pp.batch))
        return self.everyone(lie, data) if self.keep_honest else self.everyone(lie)


class DuplicateRequest(PrePrepareLie):
    """After each `every`-th honest proposal, proposes a batch again at the next seq:
    the same batch (`twice`) or the previous, already ordered one (`replay`). The core
    adopts the extra proposal, so the cluster keeps going; a correct cluster executes the
    second slot as a no-op and resends the cached replies."""

    name = "duplicate-request"
    summary = "orders one request at two sequence numbers, or re-proposes an executed one"
    allowed = ("from_seq", "mode", "every")

    def __init__(self, replica, key, params, rng) -> None:
        super().__init__(replica, key, params, rng)
        self.mode = self.p.choice("mode", "twice", ("twice", "replay"))
        self.every = self.p.integer("every", 1, 1)
        self.proposals = 0
        self.previous: tuple[bytes, ...] = ()

    def lie(self, pp: PrePrepare, data: bytes) -> None:
        self.proposals += 1
        batch = pp.batch if self.mode == "twice" else self.previous
        self.previous = pp.batch
        if batch and self.proposals % self.every == 0:
            self._propose_again(batch)
        return None

    def _propose_again(self, batch: tuple[bytes, ...]) -> None:
        core = self.replica
        seq = max(core.next_seq, core.last_executed + 1)
        requests = decode_batch(batch)
        if requests is None or not core.log.in_window(seq):
            return
        pp = PrePrepare(core.view, seq, batch_digest(batch), batch)
        core._out = []
        data = core._sign_vote(pp)  # through its safety rules, persisted like its own
        core._accept_pre_prepare(core.log.slot(seq, core.view), pp, data, requests)
        core.next_seq = seq + 1
        self._plans[(PrePrepare, pp.view, seq)] = None  # its retransmissions pass through unchanged
        self._extra.extend([Broadcast(data), *core._out])
        core._out = []


class WrongView(PrePrepareLie):
    """Pre-prepares stamped with view + `view_offset` (default n: a view it would also
    lead, so receivers see a wrong view rather than a wrong primary; a near-future view is
    buffered within a bound, one beyond view + n refused as out of window)."""

    name = "wrong-view"
    summary = "pre-prepares for another view"
    allowed = ("from_seq", "view_offset", "keep_honest")

    def __init__(self, replica, key, params, rng) -> None:
        super().__init__(replica, key, params, rng)
        self.offset = self.p.integer("view_offset", replica.config.n, 1)
        self.keep_honest = self.p.boolean("keep_honest", False)

    def lie(self, pp: PrePrepare, data: bytes) -> Plan:
        lie = self.forge(PrePrepare(pp.view + self.offset, pp.seq, pp.digest, pp.batch))
        return self.everyone(lie, data) if self.keep_honest else self.everyone(lie)


class BadDigest(PrePrepareLie):
    """Pre-prepares whose digest does not match the batch: a random digest (`random`),
    or the honest digest over a different batch, the one without its last request
    (`swap`). Only the replicas in `to` (default all) get the lie, the others the truth;
    `swap` to half the backups splits a cluster that skips the digest check."""

    name = "bad-digest"
    summary = "digest that does not match the batch it carries"
    allowed = ("from_seq", "mode", "to")

    def __init__(self, replica, key, params, rng) -> None:
        super().__init__(replica, key, params, rng)
        self.mode = self.p.choice("mode", "random", ("random", "swap"))
        self.to = self.p.replica_ids("to", None, self.n)

    def lie(self, pp: PrePrepare, data: bytes) -> Plan:
        if self.mode == "random":
            lie = PrePrepare(pp.view, pp.seq, random_digest(self.rng), pp.batch)
        else:
            lie = PrePrepare(pp.view, pp.seq, pp.digest, pp.batch[:-1])
        forged = self.forge(lie)
        targets = self.peers() if self.to is None else self.to
        return {r: [forged if r in targets else data] for r in self.peers()}


class ForgeRequest(PrePrepareLie):
    """Changes the operation of the first request in the batch and keeps the client's
    signature (`alter`), or adds a request it made up and signed with its own key
    (`invent`); the digest is recomputed, so only the client signature check catches it."""

    name = "forge-request"
    summary = "alters a client's operation inside the batch, or invents a request"
    allowed = ("from_seq", "mode")

    def __init__(self, replica, key, params, rng) -> None:
        super().__init__(replica, key, params, rng)
        self.mode = self.p.choice("mode", "alter", ("alter", "invent"))

    def lie(self, pp: PrePrepare, data: bytes) -> Plan | None:
        requests = decode_batch(pp.batch)
        if not requests:
            return None
        req, req_data = requests[0]
        if self.mode == "alter":
            env = open_envelope(req_data)[0]  # type: ignore[index]
            forged = Request(b"forged:" + req.operation, req.timestamp, req.client, req.read_only)
            fake = Envelope(to_body(forged), env.signer, env.signature).to_bytes()
            batch = (fake, *pp.batch[1:])
        else:
            cfg = self.replica.config
            made_up = Request(
                codec.encode(["put", b"forged", b"by-primary"]), req.timestamp + 1, req.client
            )
            fake = seal(self.key, cfg.signing_domain, req.client, made_up).to_bytes()
            batch = (*pp.batch, fake)
        return self.everyone(self.forge(PrePrepare(pp.view, pp.seq, batch_digest(batch), batch)))


class ReorderBatch(PrePrepareLie):
    """Reverses the batch and repeats its first request at the end, re-signs, and makes
    its own core adopt that batch: correct replicas must all execute the same order and
    the repeated request only once."""

    name = "reorder-batch"
    summary = "reorders and duplicates requests inside a batch, then re-signs"
    allowed = ("from_seq",)

    def lie(self, pp: PrePrepare, data: bytes) -> Plan | None:
        batch = tuple(reversed(pp.batch))
        if len(batch) < self.replica.config.batch_max:
            batch = (*batch, pp.batch[0])
        requests = decode_batch(batch)
        slot = self.replica.log.get(pp.seq)
        if not requests or slot is None or slot.digest != pp.digest:
            return None
        new = PrePrepare(pp.view, pp.seq, batch_digest(batch), batch)
        forged = self.forge(new)
        slot.pre_prepare, slot.pre_prepare_env, slot.requests = new, forged, requests
        return self.everyone(forged)


class Oversize(PrePrepareLie):
    """Before each honest pre-prepare, one oversize message, cycling through `modes`:
    `batch` (more requests than batch_max, or than the schema's MAX_BATCH), `request`
    (an operation over MAX_OPERATION), `deep` (nesting beyond the codec's depth limit)
    and `frame` (an envelope larger than MAX_FRAME, built once and reused; opt-in)."""

    name = "oversize"
    summary = "huge batch, huge request, deep nesting, frames beyond MAX_FRAME"
    allowed = ("from_seq", "modes")
    MODES = ("batch", "request", "deep", "frame")

    def __init__(self, replica, key, params, rng) -> None:
        super().__init__(replica, key, params, rng)
        self.modes = self.p.choices("modes", ("batch", "request", "deep"), self.MODES)
        self.count = 0
        self._frame: bytes | None = None

    def lie(self, pp: PrePrepare, data: bytes) -> Plan:
        mode = self.modes[self.count % len(self.modes)]
        self.count += 1
        return self.everyone(self.make(mode, pp), data)

    def make(self, mode: str, pp: PrePrepare) -> bytes:
        cfg = self.replica.config
        if mode == "batch":
            copies = (cfg.batch_max + 1, MAX_BATCH + 1)[self.count // len(self.modes) % 2]
            batch = (pp.batch[0],) * copies
            return self.forge(PrePrepare(pp.view, pp.seq, batch_digest(batch), batch))
        if mode == "request":
            client = cfg.clients[0].id if cfg.clients else "nobody"
            body = codec.encode([1, bytes(MAX_OPERATION + 1), 1, client, False])
            batch = (Envelope(body, client, bytes(64)).to_bytes(),)
            return self.forge(PrePrepare(pp.view, pp.seq, batch_digest(batch), batch))
        if mode == "deep":
            body = b"\x82\x02" + b"\x81" * (codec.MAX_DEPTH + 8) + b"\x00"
            return self.signed_body(body)
        if self._frame is None:
            body = codec.encode([2, pp.view, pp.seq, bytes(32), [bytes(codec.MAX_FRAME)]])
            self._frame = self.signed_body(body)
        return self._frame

    def signed_body(self, body: bytes) -> bytes:
        cfg = self.replica.config
        sig = self.key.sign(signing_payload(cfg.signing_domain, body))
        return Envelope(body, self.me, sig).to_bytes()


PRIMARY = (
    Equivocate,
    Silent,
    Censor,
    SlowPrimary,
    SkipSeq,
    OutOfWindow,
    DuplicateRequest,
    WrongView,
    BadDigest,
    ForgeRequest,
    ReorderBatch,
    Oversize,
)
