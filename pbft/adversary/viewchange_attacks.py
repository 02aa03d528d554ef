"""Attacks on view changes and state transfer (docs/attacks.md).

Theory of operation. The honest core underneath runs the view-change protocol (OSDI'99
4.4, 4.5.2) and serves state (TOCS 2002 5.3) as usual; these behaviours rewrite what it
sends there, and sign each lie with the replica's own key, so the receivers' certificate
checks are what stops them:

* `fake-prepared-cert` replaces a prepared certificate in its VIEW-CHANGEs by a fabricated
  or incomplete one (a pre-prepare it signs for a view it did not lead, one it signs as
  primary of an earlier view with no prepares, too few prepares, prepares for another
  digest, a certificate below its stable checkpoint). Correct replicas reject that
  VIEW-CHANGE (Reason.BAD_CERTIFICATE) and do not count it.
* `drop-cert` sends VIEW-CHANGEs without its prepared certificates (and optionally
  without its checkpoint proof): valid, and harmless, because any 2f+1 view-changes
  include f+1 correct ones and so every certificate that matters.
* `bad-new-view` as the new primary sends a NEW-VIEW that omits, alters or replaces a
  re-issued pre-prepare, or carries bad, duplicate or too few view-changes. Backups
  recompute it, reject it and move to the next view.
* `view-change-storm` sends VIEW-CHANGEs for ever higher views. Alone (f replicas) it
  cannot move anyone: a replica joins a higher view only on f+1 of them, and keeps one
  VIEW-CHANGE per peer.
* `lying-state-transfer` answers state fetches with corrupted answers, well-formed
  answers of an altered state, what an empty state would answer, late, or not at all.
  Every answer is checked against a digest the fetcher trusts, up to the one 2f+1
  replicas signed; the fetcher moves on.

Each lie is decided once per message (memoised by view, or by checkpoint, tree node and
fetcher) and drawn from the injected `rng`, so retransmissions repeat it and a run
replays from its seed. Memory is bounded: a few entries per view or checkpoint, trimmed as they age.
"""

from __future__ import annotations

import dataclasses
from collections import OrderedDict
from typing import ClassVar

from ..protocol.crypto import NULL_DIGEST
from ..protocol.events import Action, Broadcast, Event, Received, Send
from ..protocol.messages import (
    NewView,
    Prepare,
    PrePrepare,
    StateChunk,
    ViewChange,
    detached,
    envelope_from_bytes,
    from_body,
    open_envelope,
)
from ..protocol.partition import EMPTY, FANOUT, bucket_of
from ..protocol.statetransfer import decode_page, encode_page
from .wire import ReplicaBehaviour, random_digest

MEMO = 16
"""Lies remembered (per view or per chunk) so that retransmissions repeat them."""


def _trim(memo: OrderedDict, bound: int = MEMO) -> None:
    while len(memo) > bound:
        memo.popitem(last=False)


class OwnMessageLie(ReplicaBehaviour):
    """Base: rewrites this replica's own outgoing messages of type `kind`; `lie(msg, data)`
    gives the replacement bytes (None drops the message), memoised by `memo_key(msg)`."""

    kind: ClassVar[type] = object

    def __init__(self, replica, key, params, rng) -> None:
        super().__init__(replica, key, params, rng)
        self._memo: OrderedDict[object, bytes | None] = OrderedDict()

    def memo_key(self, msg) -> object:
        return msg

    def lie(self, msg, data: bytes) -> bytes | None:
        return data

    def rewrite(self, actions: list[Action]) -> list[Action]:
        out: list[Action] = []
        for a in actions:
            if not isinstance(a, Send | Broadcast):
                out.append(a)
                continue
            opened = open_envelope(a.data)
            if opened is None or opened[0].signer != self.me or not isinstance(opened[1], self.kind):
                out.append(a)
                continue
            k = self.memo_key(opened[1])
            if k not in self._memo:
                self._memo[k] = self.lie(opened[1], a.data)
                _trim(self._memo)
            data = self._memo[k]
            if data is not None:
                out.append(Send(a.to, data) if isinstance(a, Send) else Broadcast(data))
        return out


# -- view-change ------------------------------------------------------------------------------


class FakePreparedCert(OwnMessageLie):
    """Each VIEW-CHANGE it sends carries one bad prepared certificate (for the highest
    seq it holds a certificate for, or the first seq above its checkpoint), made in one of
    `modes`, chosen per view: `not-primary` (a pre-prepare it signs for a view whose
    primary it is not), `own-view` (a null pre-prepare it signs as primary of an earlier
    view, with no prepares: an equivocation dressed as a certificate), `few-prepares` (a
    genuine pre-prepare with one prepare, its own), `other-digest` (a genuine pre-prepare
    with its prepare for another digest), `below-stable` (a genuine certificate for a seq
    at or below its stable checkpoint). A mode without material falls back to `own-view`,
    or `not-primary` if it never led a view."""

    name = "fake-prepared-cert"
    summary = "VIEW-CHANGE with a fabricated or incomplete prepared certificate"
    allowed = ("modes",)
    kind = ViewChange
    MODES = ("not-primary", "own-view", "few-prepares", "other-digest", "below-stable")

    def __init__(self, replica, key, params, rng) -> None:
        super().__init__(replica, key, params, rng)
        self.modes = self.p.choices("modes", self.MODES, self.MODES)
        # Genuine material to build lies from: pre-prepares received from their primary,
        # and the core's own prepared certificates (kept after its checkpoint drops them).
        self.seen: OrderedDict[tuple[int, int], bytes] = OrderedDict()
        self.old_certs: OrderedDict[int, tuple[bytes, ...]] = OrderedDict()
        self.made: list[str] = []  # the mode of each lie, for tests and traces

    def memo_key(self, msg: ViewChange) -> object:
        return msg.new_view

    def intercept(self, event: Event) -> list[Event]:
        if isinstance(event, Received):
            opened = open_envelope(event.data)
            if opened is not None and isinstance(opened[1], PrePrepare):
                env, pp = opened
                if env.signer == self.replica.config.primary(pp.view) and env.signer != self.me:
                    self.seen[(pp.view, pp.seq)] = event.data
                    _trim(self.seen)
        return [event]

    def rewrite(self, actions: list[Action]) -> list[Action]:
        for seq, (_, pp_env, prepares) in self.replica.prepared_certs.items():
            self.old_certs[seq] = (detached(pp_env), *prepares)
            self.old_certs.move_to_end(seq)
        _trim(self.old_certs)
        return super().rewrite(actions)

    def lie(self, vc: ViewChange, data: bytes) -> bytes:
        mode = self.rng.choice(self.modes)
        certs = list(vc.prepared)
        made = self._make(mode, vc)
        for fallback in ("own-view", "not-primary"):
            if made is None:
                mode, made = fallback, self._make(fallback, vc)
        assert made is not None  # some view below new_view is led by us or by another
        seq = from_body(envelope_from_bytes(made[0]).body).seq  # type: ignore[union-attr]
        certs = [c for c in certs if self._cert_seq(c) != seq] + [made]
        self.made.append(mode)
        return self.forge(ViewChange(vc.new_view, vc.stable_seq, vc.checkpoint_proof, tuple(certs)))

    # -- building the lies --------------------------------------------------------------

    @staticmethod
    def _cert_seq(cert: tuple[bytes, ...]) -> int | None:
        opened = open_envelope(cert[0]) if cert else None
        return opened[1].seq if opened and isinstance(opened[1], PrePrepare) else None

    def _target_seq(self, vc: ViewChange) -> int:
        seqs = [s for s in (self._cert_seq(c) for c in vc.prepared) if s is not None]
        return max(seqs, default=vc.stable_seq + 1)

    def _led_view(self, new_view: int) -> int | None:
        cfg = self.replica.config
        return next((w for w in range(new_view - 1, -1, -1) if cfg.primary(w) == self.me), None)

    def _in_window(self, vc: ViewChange, seq: int) -> bool:
        return vc.stable_seq < seq <= vc.stable_seq + self.replica.config.log_window

    def _make(self, mode: str, vc: ViewChange) -> tuple[bytes, ...] | None:
        cfg = self.replica.config
        seq = self._target_seq(vc)
        if mode == "not-primary":
            w = next((w for w in range(vc.new_view - 1, -1, -1) if cfg.primary(w) != self.me), None)
            return None if w is None else (self.forge(PrePrepare(w, seq, NULL_DIGEST)),)
        if mode == "own-view":
            w = self._led_view(vc.new_view)
            return None if w is None else (self.forge(PrePrepare(w, seq, NULL_DIGEST)),)
        if mode == "below-stable":
            old = [s for s in self.old_certs if s <= vc.stable_seq]
            return self.old_certs[max(old)] if old else None
        # few-prepares / other-digest: a genuine pre-prepare of an earlier view.
        candidates = [
            (v, s) for (v, s) in self.seen if v < vc.new_view and self._in_window(vc, s)
        ]
        if not candidates:
            return None
        v, s = max(candidates)
        pp_env = detached(self.seen[(v, s)])  # a certificate names the digest only
        pp = from_body(envelope_from_bytes(pp_env).body)
        assert isinstance(pp, PrePrepare)
        d = pp.digest if mode == "few-prepares" else random_digest(self.rng)
        return (pp_env, self.forge(Prepare(v, s, d)))


class DropCert(OwnMessageLie):
    """Its VIEW-CHANGEs carry no prepared certificates; with `checkpoint = true` they
    also claim checkpoint 0 (no proof). Both are valid messages: the lie is omission."""

    name = "drop-cert"
    summary = "VIEW-CHANGE that omits its prepared certificates (and its checkpoint proof)"
    allowed = ("checkpoint",)
    kind = ViewChange

    def __init__(self, replica, key, params, rng) -> None:
        super().__init__(replica, key, params, rng)
        self.checkpoint = self.p.boolean("checkpoint", False)

    def memo_key(self, msg: ViewChange) -> object:
        return msg.new_view

    def lie(self, vc: ViewChange, data: bytes) -> bytes:
        if self.checkpoint:
            return self.forge(ViewChange(vc.new_view, 0, (), ()))
        return self.forge(ViewChange(vc.new_view, vc.stable_seq, vc.checkpoint_proof, ()))


class BadNewView(OwnMessageLie):
    """As the new primary, its NEW-VIEW (first send and every resend) is wrong in one of
    `modes`, chosen per view: `omit` (drops the last re-issued pre-prepare), `alter` (a
    re-issued pre-prepare gets a digest that was never prepared), `replace` (a prepared
    slot is re-issued as a null request), `extra` (one pre-prepare more than due),
    `bad-view-change` (a carried VIEW-CHANGE with a broken signature), `duplicate-view-change`
    (one replica's VIEW-CHANGE twice instead of another's), `short` (2f view-changes).
    Modes that need a re-issued batch fall back to `extra` when there is none."""

    name = "bad-new-view"
    summary = "as new primary, a NEW-VIEW that omits, alters or replaces slots, or carries bad view-changes"
    allowed = ("modes",)
    kind = NewView
    MODES = ("omit", "alter", "replace", "extra", "bad-view-change", "duplicate-view-change", "short")

    def __init__(self, replica, key, params, rng) -> None:
        super().__init__(replica, key, params, rng)
        self.modes = self.p.choices("modes", self.MODES, self.MODES)
        self.made: list[str] = []

    def memo_key(self, msg: NewView) -> object:
        return msg.view

    def lie(self, nv: NewView, data: bytes) -> bytes:
        mode = self.rng.choice(self.modes)
        pps = [from_body(envelope_from_bytes(d).body) for d in nv.pre_prepares]
        real = [i for i, pp in enumerate(pps) if pp.digest != NULL_DIGEST]  # type: ignore[union-attr]
        vcs = list(nv.view_changes)
        out = list(nv.pre_prepares)
        if mode in ("omit", "alter", "replace") and not real:
            mode = "extra"
        if mode == "omit":
            del out[real[-1]]
        elif mode in ("alter", "replace"):
            i = self.rng.choice(real)
            pp = pps[i]
            if mode == "alter":
                lie = PrePrepare(pp.view, pp.seq, random_digest(self.rng))  # type: ignore[union-attr]
            else:
                lie = PrePrepare(pp.view, pp.seq, NULL_DIGEST, ())  # type: ignore[union-attr]
            out[i] = self.forge(lie)
        elif mode == "extra":
            last = max((pp.seq for pp in pps), default=self.replica.stable_seq)  # type: ignore[union-attr]
            out.append(self.forge(PrePrepare(nv.view, last + 1, NULL_DIGEST, ())))
        elif mode == "bad-view-change":
            env = envelope_from_bytes(vcs[-1])
            sig = bytearray(env.signature)
            sig[0] ^= 1
            vcs[-1] = type(env)(env.body, env.signer, bytes(sig)).to_bytes()
        elif mode == "duplicate-view-change":
            vcs[-1] = vcs[0]
        else:  # short
            vcs.pop()
        self.made.append(mode)
        return self.forge(NewView(nv.view, tuple(vcs), tuple(out)))


class ViewChangeStorm(ReplicaBehaviour):
    """Every `every` ticks, a VIEW-CHANGE for a view `jump` above the last one it sent
    (and above its core's view). The messages are valid (its checkpoint proof, no
    certificates): only the rule "join on f+1" keeps the cluster where it is."""

    name = "view-change-storm"
    summary = "VIEW-CHANGE for ever higher views"
    allowed = ("every", "jump")

    def __init__(self, replica, key, params, rng) -> None:
        super().__init__(replica, key, params, rng)
        self.every = self.p.integer("every", 5, 1, 1 << 20)
        self.jump = self.p.integer("jump", 1, 1, 1 << 20)
        self.last_view = 0

    def every_tick(self) -> list[Action]:
        if self.ticks % self.every:
            return []
        core = self.replica
        self.last_view = max(self.last_view, core.view) + self.jump
        vc = ViewChange(self.last_view, core.stable_seq, core.checkpoints.stable_proof, ())
        return [Broadcast(self.forge(vc))]


# -- state transfer ---------------------------------------------------------------------------


class LyingStateTransfer(ReplicaBehaviour):
    """Answers each FETCH-STATE it serves in one of `modes`, chosen per (checkpoint, tree
    node, fetcher): `corrupt` (the right answer with one bit flipped), `forge` (a
    well-formed answer of an altered state: one child digest replaced, or one more entry
    in the leaf's bucket), `stale` (the answer an empty state would give), `slow` (the
    right answer `delay_ms` late), `silent` (no answer)."""

    name = "lying-state-transfer"
    summary = "serves wrong, forged or stale state, late or not at all"
    allowed = ("modes", "delay_ms")
    MODES = ("corrupt", "forge", "stale", "slow", "silent")

    def __init__(self, replica, key, params, rng) -> None:
        super().__init__(replica, key, params, rng)
        self.modes = self.p.choices("modes", self.MODES, self.MODES)
        cfg = replica.config
        delay = self.p.integer("delay_ms", 4 * cfg.retransmit_ms, 0, 3_600_000)
        self.delay_ticks = max(1, delay // cfg.tick_ms)
        self._memo: OrderedDict[tuple[int, int, int, int], str] = OrderedDict()
        self._held: list[tuple[int, Send]] = []
        self.made: list[str] = []

    def rewrite(self, actions: list[Action]) -> list[Action]:
        out: list[Action] = []
        for a in actions:
            opened = open_envelope(a.data) if isinstance(a, Send) else None
            if opened is None or opened[0].signer != self.me or not isinstance(opened[1], StateChunk):
                out.append(a)
                continue
            sc: StateChunk = opened[1]
            k = (sc.seq, sc.level, sc.index, a.to)  # type: ignore[union-attr]
            if k not in self._memo:
                self._memo[k] = self.rng.choice(self.modes)
                _trim(self._memo, 256)
                self.made.append(self._memo[k])
            mode = self._memo[k]
            if mode == "slow":
                self._held.append((self.ticks + self.delay_ticks, a))  # type: ignore[arg-type]
            elif mode != "silent":
                out.append(Send(a.to, self.forge(self._lie(mode, sc))))  # type: ignore[union-attr]
        return out

    def every_tick(self) -> list[Action]:
        due = [a for t, a in self._held if t <= self.ticks]
        self._held = [(t, a) for t, a in self._held if t > self.ticks]
        return list(due)

    def _lie(self, mode: str, sc: StateChunk) -> StateChunk:
        if mode == "corrupt":
            data = bytearray(sc.data or b"\0")
            data[self.rng.randrange(len(data))] ^= 1 << self.rng.randrange(8)
            return dataclasses.replace(sc, data=bytes(data))
        if mode == "stale":  # what a replica holding the empty state would answer
            data = EMPTY[sc.level - 1] * FANOUT if sc.level else encode_page([])
            return dataclasses.replace(sc, part=0, parts=1, data=data)
        # forge: well formed, so only the digests betray it
        if sc.level:
            i = self.rng.randrange(FANOUT) * 32
            return dataclasses.replace(sc, data=sc.data[:i] + random_digest(self.rng) + sc.data[i + 32 :])
        entries = decode_page(sc.data) or []
        if entries:  # one value changed
            k, v = entries[-1]
            entries[-1] = (k, b"lie" + v)
        else:  # one more entry, with a key that belongs to the bucket
            extra = b"forged-by-%d-" % self.me
            n = 0
            while bucket_of(extra + b"%d" % n) != sc.index:
                n += 1
            entries = [(extra + b"%d" % n, b"lie")]
        return dataclasses.replace(sc, data=encode_page(entries))


VIEWCHANGE_ATTACKS = (FakePreparedCert, DropCert, BadNewView, ViewChangeStorm, LyingStateTransfer)
