"""Deliberately broken replicas: each breaks one rule of the protocol.

Theory of operation. The simulator runs a cluster whose *correct* replicas are one of
these classes, with a Byzantine behaviour (and network faults) that exploits the missing
rule, and its oracle must report the violation. A checker that stays quiet against every
variant checks nothing. Each class overrides the smallest method that holds its rule and
names, in its docstring, the rule (OSDI'99 section) and the oracle check that must catch
it, with a scenario that exposes it.

These are test doubles for checking checks: a user points `--broken NAME` (a scenario's
`broken` key, `pbft scenario run --broken`, `pbft fuzz --broken`, `pbft replica --broken`)
at one to see whether their own scenarios catch a wrong protocol (mutation testing of the
tests). A replica process running one says so in its start-up line and its status.
"""

from __future__ import annotations

from ..protocol import codec
from ..protocol.events import Committed
from ..protocol.log import MessageLog, Slot
from ..protocol.messages import (
    PrePrepare,
    ViewChange,
    decode_envelope,
    from_body,
)
from ..protocol.replica import Replica
from ..protocol.viewchange import (
    CheckedNewView,
    InvalidCertificate,
    PreparedCert,
    check_cert_pre_prepare,
    check_view_change,
    plan_new_view,
)


class WeakPrepareQuorum(Replica):
    """Prepared with the pre-prepare and 2f-1 matching prepares instead of 2f
    (OSDI'99 4.2, prepared(m, v, n, i)). With f = 1 a backup is prepared on its own vote.

    Caught by: prepared uniqueness. Scenario: `equivocate` on the primary (no network
    fault needed): backup 1 prepares digest A alone while backups 2 and 3 prepare B for
    the same (view, seq).
    """

    def _maybe_prepared(self, slot: Slot) -> None:
        f = self.config.f
        if slot.prepared or slot.pre_prepare is None or slot.prepares.count(slot.digest) < 2 * f - 1:
            return
        # Pad the count to the honest threshold and let the honest transition run.
        need = 2 * f - slot.prepares.count(slot.digest)
        d = slot.pre_prepare.digest
        padding = {("weak", i): (d, slot.pre_prepare_env) for i in range(max(0, need))}
        slot.prepares.update(padding)  # type: ignore[arg-type]
        try:
            super()._maybe_prepared(slot)
        finally:
            for k in padding:
                slot.prepares.pop(k, None)  # type: ignore[call-overload]


class NoDigestCheck(Replica):
    """Accepts a pre-prepare without checking that its digest is the digest of the batch
    it carries (OSDI'99 4.2: "d is m's digest"), so replicas agree on a digest while
    executing different batches.

    Caught by: agreement on executed batches / exactly-once and order (executed histories
    differ at one seq with one digest) and state digests at the next checkpoint.
    Scenario: `bad-digest` with mode = "swap", to = [2, 3]: backups 2 and 3 get the
    honest digest over a different batch, backup 1 the honest pre-prepare; all three
    prepare and commit one digest, then execute different requests.
    """

    def _batch_matches(self, pp) -> bool:
        return True


class CountDuplicateVotes(Replica):
    """Counts every copy of a validly signed vote, not one vote per authenticated signer
    (OSDI'99 4.2: 2f prepares "from different backups"; docs/attacks.md `vote-stuffing`).

    Caught by: prepared uniqueness, then agreement. Scenario: `equivocate` with
    reflect = true on the primary: it echoes each backup's own PREPARE back to it, so
    backup 1 counts its own vote twice and prepares A while 2 and 3 prepare B; the
    primary's COMMITs and the echoes then commit A at 1 and B at 2 and 3.
    """

    def _admit_vote(self, peer, env, data, prior, vote_digest, kind) -> bool:
        if prior is None or prior[0] != vote_digest:
            return super()._admit_vote(peer, env, data, prior, vote_digest, kind)
        if not self._verify(peer, env):
            return False
        # A repeat of a vote already held: file it under a fresh key, so it counts again
        # (an integer beyond every replica id: vote sets are sorted by signer).
        msg = from_body(env.body)
        if kind == "checkpoint":
            votes = self.checkpoints.votes.get(msg.seq)
        else:
            slot = self.log.get(msg.seq)
            votes = None if slot is None else getattr(slot, kind + "s")
        if votes is None:
            return False
        votes[self.config.n * (1 + len(votes)) + env.signer] = (vote_digest, data)
        return True


class NoExactlyOnce(Replica):
    """Executes a request again when it is ordered again, ignoring the last timestamp it
    executed for the client (OSDI'99 4.1: exactly-once via the reply cache).

    Caught by: exactly-once ("each (client, timestamp) at most once": the second
    execution is reported `fresh`), and linearizability of client results. Scenario:
    `duplicate-request` on the primary (or a view change that re-proposes an executed
    request).
    """

    def _execute(self, slot: Slot) -> None:
        for req, _ in slot.requests:
            self.replies.records.pop(req.client, None)
        super()._execute(slot)


class _NoWatermarks(MessageLog):
    def in_window(self, seq: int) -> bool:
        return True


class NoWatermarkCheck(Replica):
    """Accepts messages for any sequence number: no h < n <= H check (OSDI'99 4.2-4.3).

    Caught by: resources (the log grows beyond log_window), and agreement. Scenarios:
    `out-of-window` with mode = "high", keep_honest = true: every far-ahead pre-prepare
    becomes a new slot, prepared and committed but never executed or collected;
    `out-of-window` with mode = "low" (from_seq past the first stable checkpoint):
    a new batch is prepared and committed again at the already committed seq h.
    """

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.log = _NoWatermarks(self.config.log_window)


class CommitUnprepared(Replica):
    """Commits locally on 2f+1 matching COMMITs without being prepared itself (OSDI'99
    4.2: committed-local requires prepared; docs/attacks.md `premature-commit`).

    Caught by: "a replica commits only when it is itself prepared" (each Committed of a
    correct replica must follow its own Prepared for the same view, seq and digest), and
    after a view change by agreement (a slot committed where fewer than f+1 correct
    replicas hold a prepared certificate may be re-filled differently by the new view).
    Scenario: `premature-commit` on a backup with network delay or reordering, so that a
    replica holds the pre-prepare and 2f+1 COMMITs before 2f PREPAREs.
    """

    def _maybe_committed(self, slot: Slot) -> None:
        if slot.committed or slot.prepared or slot.pre_prepare is None:
            super()._maybe_committed(slot)
            return
        if slot.commits.count(slot.digest) < self.config.quorum:
            return
        slot.commits.done = True
        self._out.append(Committed(slot.view, slot.seq, slot.pre_prepare.digest))
        self._maybe_execute()


class WeakCheckpointQuorum(Replica):
    """A checkpoint becomes stable with f+1 matching CHECKPOINTs instead of 2f+1
    (OSDI'99 4.3), so it garbage-collects its log and serves a stable-checkpoint proof
    that does not prove anything to others.

    Caught by: the checkpoint certificate check (each CheckpointStable of a correct
    replica must be backed by its `stable_proof` of 2f+1 validly signed matching
    CHECKPOINTs from distinct replicas), and by liveness when its VIEW-CHANGE, whose
    checkpoint proof others reject, is needed. Scenario: any run past the first
    checkpoint; with `bad-checkpoint` or `silent` on one replica the proof is short by
    construction.
    """

    def _check_checkpoint_quorum(self, seq: int) -> None:
        if seq <= self.log.low:
            return
        by_digest: dict[bytes, list[bytes]] = {}
        for dg, d in self.checkpoints.votes.get(seq, {}).values():
            by_digest.setdefault(dg, []).append(d)
        for dg, envs in by_digest.items():
            if len(envs) >= self.config.weak_quorum:
                self._learn_stable(seq, dg, tuple(sorted(envs)))
                return


class NewViewNotRecomputed(Replica):
    """A backup accepts a NEW-VIEW whose view-changes check out without recomputing its
    pre-prepares from them (OSDI'99 4.4: "backups ... verify that O is correct by
    performing a computation similar to the one used by the primary to create O").
    It installs whatever pre-prepares the new primary signed for the new view.

    Caught by: agreement (a slot one correct replica committed in the old view is re-filled
    with another batch, which the others execute at the same seq). Scenario: `bad-new-view`
    with modes = ["replace"] on the primary of the next view, while a slot is committed at
    one correct replica only (its COMMITs to the others are lost): the new primary
    re-issues that slot as a null request.
    """

    def _check_new_view(self, nv) -> CheckedNewView:
        try:
            return super()._check_new_view(nv)
        except InvalidCertificate as exc:
            honest = exc
        # Check the view-changes as the core does; skip only the recomputation of O.
        checked = []
        try:
            for raw in nv.view_changes:
                env, vc = decode_envelope(raw)
                if not isinstance(vc, ViewChange) or not self.verifier.verify(env):
                    raise honest
                checked.append(check_view_change(self.config, self.verifier, env.signer, vc, raw))  # type: ignore[arg-type]
        except (codec.CodecError, InvalidCertificate):
            raise honest from None
        if len({c.signer for c in checked}) < self.config.quorum:
            raise honest
        plan = plan_new_view(checked)
        pre_prepares = []
        for raw in nv.pre_prepares:
            try:
                env, pp = decode_envelope(raw)
            except codec.CodecError:
                continue
            if (
                isinstance(pp, PrePrepare)
                and env.signer == self.config.primary(nv.view)
                and pp.view == nv.view
                and self.verifier.verify(env)
            ):
                pre_prepares.append((pp, raw))
        return CheckedNewView(plan, pre_prepares)


class UncheckedPreparedCert(Replica):
    """Accepts a prepared certificate in a VIEW-CHANGE after checking its pre-prepare but
    not its prepares (OSDI'99 4.4: P holds "a valid pre-prepare ... and 2f matching,
    valid prepare messages"), so a pre-prepare that never prepared anywhere competes with
    the ones that did.

    Caught by: agreement. Scenario: `fake-prepared-cert` with modes = ["own-view"] on the
    primary of view 0, while a slot is committed at one correct replica only and the new
    primary never prepared it: the faulty VIEW-CHANGE's null pre-prepare for that slot
    (signed by the old primary, no prepares) is chosen for the new view, and the other
    correct replicas execute a null request where the first executed the batch.
    """

    def _check_cert(self, config, verifier, new_view, cert) -> PreparedCert:
        # check_prepared_cert minus its prepares: only the pre-prepare is checked.
        _, pp = check_cert_pre_prepare(config, verifier, new_view, cert)
        return PreparedCert(pp.view, pp.seq, pp.digest)


class UnverifiedChunk(Replica):
    """Installs fetched state without checking it against the checkpoint digest 2f+1
    replicas signed (TOCS 2002 5.3.2: every fetched partition is checked).

    Caught by: state digests at the next checkpoint (oracle "exactly-once": state digests
    differ) and agreement on results; directly, by the lagging replica's state_digest()
    differing from the others' after the transfer. Scenario: `lying-state-transfer` with
    modes = ["forge"] (or "stale") on a backup while another correct replica lags behind a
    stable checkpoint and fetches the state from it.
    """

    def _transfer_verifies(self) -> bool:
        return False


BROKEN: dict[str, type[Replica]] = {
    "weak-prepare-quorum": WeakPrepareQuorum,
    "no-digest-check": NoDigestCheck,
    "count-duplicate-votes": CountDuplicateVotes,
    "no-exactly-once": NoExactlyOnce,
    "no-watermark-check": NoWatermarkCheck,
    "commit-unprepared": CommitUnprepared,
    "weak-checkpoint-quorum": WeakCheckpointQuorum,
    "new-view-not-recomputed": NewViewNotRecomputed,
    "unchecked-prepared-cert": UncheckedPreparedCert,
    "unverified-chunk": UnverifiedChunk,
}


def lookup(name: str) -> type[Replica]:
    """The broken core called `name`; UsageError (one sentence, the known names) if none."""
    from ..errors import UsageError
    from .api import did_you_mean

    cls = BROKEN.get(name)
    if cls is None:
        raise UsageError(
            f"unknown broken core {name}{did_you_mean(name, list(BROKEN))} (known: {', '.join(sorted(BROKEN))})."
        )
    return cls
