"""Recovery: rebuild a replica from what an earlier run persisted (docs/architecture.md "The durability contract").

Theory of operation. Every promise a replica makes is durable before anything that
follows it is sent (`Persist` actions, ahead of sends): its signed votes (so it can never
sign a conflicting one after a restart, OSDI'99 4.2's "never sends conflicting
messages"), the pre-prepares it answered, its prepared certificates (4.4: they must
survive into VIEW-CHANGEs), which slots it executed, its view and whether it is active,
its stable checkpoint with its proof, and a window jump to a checkpoint whose state it
was still fetching. `recover` reads those records back into a fresh replica, before any
step; what it missed while down it then learns like any lagging replica (retransmission
and state transfer, TOCS 5.3). A store that contradicts itself raises ValueError: a
replica refuses to start from it rather than lie.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from . import codec
from .events import Action, Note, Persist, Record
from .log import Slot
from .messages import (
    Prepare,
    PrePrepare,
    ViewChange,
    decode_envelope,
    envelope_from_bytes,
    from_body,
)
from .safety import vote_slot
from .statetransfer import split, state_root
from .viewchange import ViewStatus, check_checkpoint_proof, check_view_change

if TYPE_CHECKING:
    from .replica import Replica

ACCEPTED = "accepted-pre-prepare"
"""Tag of the VOTE record holding the primary's pre-prepare a backup answered."""

QUORUM_TAG = "new-view-timer"
"""Tag of the VIEW record naming the view whose new-view timer had started (2f+1 were in
it); the untagged VIEW record holds the view itself."""


def recover(rep: Replica, records: list[Persist]) -> list[Action]:
    """Rebuild `rep` from what an earlier run persisted, before any step.

    Restores the stable checkpoint, replays executed batches above it in order,
    reloads every vote it signed (so it can never sign a conflicting one) and its
    prepared certificates, and re-enters its view. What it missed while down it
    then learns like any lagging replica: retransmission and state transfer.
    """
    assert rep.last_executed == 0 and not rep.log.slots, "recover() a fresh replica"
    rep._out = []
    by_kind: dict[Record, list[Persist]] = {}
    for r in records:
        by_kind.setdefault(r.record, []).append(r)
    for r in by_kind.get(Record.CHECKPOINT, [])[-1:]:
        seq, sdigest, proof, state = codec.decode(r.value)  # type: ignore[misc]
        if state_root(split(state)) != sdigest:
            # The state on disk is not the one 2f+1 replicas signed: never serve it.
            raise ValueError(f"the stored checkpoint state at n={seq} does not match its signed digest")
        if check_checkpoint_proof(rep.config, rep.verifier, seq, tuple(proof)) != sdigest:
            raise ValueError(f"the stored proof of checkpoint n={seq} is for another digest")
        rep._restore_state(seq, sdigest, state)
        rep._make_stable(seq, sdigest, tuple(proof))
    accepted = [r for r in by_kind.get(Record.VOTE, []) if r.tag == ACCEPTED]
    for r in by_kind.get(Record.VOTE, []):
        if r.tag == ACCEPTED:
            continue
        env, msg = decode_envelope(r.value)
        rep.safety.signed[vote_slot(msg)] = (msg.digest, env)  # type: ignore[arg-type]
    pre_prepares: dict[tuple[int, int], bytes] = {}
    for r in sorted(by_kind.get(Record.PREPARED, []), key=lambda r: (r.seq, r.view)):
        pp_env, *prepares = codec.decode(r.value)  # type: ignore[misc]
        pre_prepares[(r.seq, r.view)] = pp_env
        if r.seq > rep.log.low:
            rep.prepared_certs[r.seq] = (r.view, pp_env, tuple(prepares))
    for r in sorted(by_kind.get(Record.EXECUTED, []), key=lambda r: r.seq):
        if r.seq != rep.last_executed + 1:
            continue
        # An EXECUTED record names its slot; older data directories hold the
        # pre-prepare itself.
        pp_data = r.value or pre_prepares.get((r.seq, r.view))
        if pp_data is None:
            # Cannot happen: PREPARED is written with or before EXECUTED and truncated
            # with it. Refuse loudly rather than start from a store that lies.
            raise ValueError(f"the EXECUTED record of n={r.seq} has no PREPARED record")
        pp = from_body(envelope_from_bytes(pp_data).body)
        assert isinstance(pp, PrePrepare)
        requests = []
        for req_data in pp.batch:
            req = rep.verified.check(req_data)
            if not isinstance(req, str):
                requests.append((req, req_data))
        slot = Slot(r.seq, r.view, pp, pp_data, tuple(requests))
        slot.commits.done = True  # executed before the restart: committed then
        rep._execute(slot)
    for r in by_kind.get(Record.WINDOW, [])[-1:]:
        seq, sdigest, proof = codec.decode(r.value)  # type: ignore[misc]
        if seq > rep.log.low:
            # We had jumped to a stable checkpoint whose state we were still fetching:
            # back to that window, and the transfer starts again (chunks are asked
            # for at the first retransmission).
            if check_checkpoint_proof(rep.config, rep.verifier, seq, tuple(proof)) != sdigest:
                raise ValueError(f"the stored proof of checkpoint n={seq} is for another digest")
            rep._learn_stable(seq, sdigest, tuple(proof))
    views = by_kind.get(Record.VIEW, [])
    for r in [r for r in views if r.tag != QUORUM_TAG][-1:]:
        view, active, vc_data = codec.decode(r.value)  # type: ignore[misc]
        rep.view = view
        rep.status = ViewStatus.NORMAL if active else ViewStatus.VIEW_CHANGE
        if active:
            rep.new_view_data = vc_data  # the NEW-VIEW we installed (b"": view 0)
        quorum = [codec.decode(q.value) for q in views if q.tag == QUORUM_TAG][-1:]
        if not active and quorum == [view]:
            # 2f+1 were in this view before the restart: its new-view timer runs again.
            rep.new_view_timeout.start(rep.ticks, rep._vc_timeout_ticks)
        if not active and vc_data:
            vc = from_body(envelope_from_bytes(vc_data).body)
            assert isinstance(vc, ViewChange)
            rep.view_changes.received[rep.id] = check_view_change(
                rep.config, rep.verifier, rep.id, vc, vc_data, rep._check_cert
            )
    # The pre-prepares we answered, our own pre-prepares and votes of this view above
    # what we executed go back into the log; the primary numbers new batches after
    # the last it signed.
    for r in accepted:
        if r.view == rep.view and rep.log.in_window(r.seq) and r.seq > rep.last_executed:
            pp = from_body(envelope_from_bytes(r.value).body)
            assert isinstance(pp, PrePrepare)
            reqs = [(rep.verified.check(d), d) for d in pp.batch]
            slot = rep.log.slot(r.seq, r.view)
            slot.pre_prepare, slot.pre_prepare_env = pp, r.value
            slot.requests = tuple((q, d) for q, d in reqs if not isinstance(q, str))
    for (_, view, seq), (_, env) in sorted(rep.safety.signed.items()):
        if view != rep.view or not rep.log.in_window(seq) or seq <= rep.last_executed:
            continue
        msg = from_body(env.body)
        if isinstance(msg, PrePrepare):
            requests = [(rep.verified.check(d), d) for d in msg.batch]
            slot = rep.log.slot(seq, view)
            slot.pre_prepare, slot.pre_prepare_env = msg, env.to_bytes()
            slot.requests = tuple((q, d) for q, d in requests if not isinstance(q, str))
            rep.next_seq = max(rep.next_seq, seq + 1)
        elif isinstance(msg, Prepare):
            slot = rep.log.slot(seq, view)
            slot.my_prepare = env.to_bytes()
            slot.prepares[rep.id] = (msg.digest, slot.my_prepare)
    rep.next_seq = max(rep.next_seq, rep.last_executed + 1)
    # Until we hear where the others are, we do not judge the primary; our STATUS goes
    # out at the first tick.
    rep._located = False
    rep._located_by = rep.ticks + 2 * rep._vc_timeout_ticks
    rep.retransmit_timeout.start(rep.ticks - rep._retransmit_ticks)
    notes = [a for a in rep._out if isinstance(a, Note)]
    notes.append(
        Note(f"recovered: view {rep.view}, executed {rep.last_executed}, stable {rep.log.low}")
    )
    rep._out = []
    return notes
