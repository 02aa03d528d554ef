"""The message log (pbft/protocol/log.py) directly: what proves our committed slots to a
peer that lags inside our log (`committed_proof`, TOCS 2002 5.3's retransmission), slot
by slot. Written from mutmut's survivors: every test that reached it had a log of whole,
committed slots of one view, in order, so a `continue` made `break`, or an `or` made
`and`, passed."""

from __future__ import annotations

import pytest

from pbft.protocol.log import MessageLog
from pbft.protocol.messages import PrePrepare

pytestmark = pytest.mark.timeout(60)

D = b"\x11" * 32


def _slot(log: MessageLog, seq: int, view: int, *, batch: bool = True, pre_prepare: bool = True,
          committed: bool = True) -> None:
    s = log.slot(seq, view)
    if pre_prepare:
        s.pre_prepare = PrePrepare(view, seq, D, (b"request %d" % seq,) if batch else None)
        s.pre_prepare_env = b"pp %d" % seq
    for signer in range(3):
        s.prepares.add(signer, D, b"prepare %d by %d" % (seq, signer))
        if committed:
            s.commits.add(signer, D, b"commit %d by %d" % (seq, signer))
    s.prepares.reached(D, 2)
    if committed:
        assert s.commits.reached(D, 3)


def test_the_committed_proof_skips_each_slot_that_proves_nothing_and_goes_on():
    log = MessageLog(window=16)
    _slot(log, 1, 0)                           # whole and committed: sent
    _slot(log, 2, 0, committed=False)          # prepared only
    _slot(log, 3, 0, pre_prepare=False)        # committed by its votes, no pre-prepare here
    _slot(log, 4, 0, batch=False)              # committed by digest: its batch is not here
    _slot(log, 5, 1)                           # committed in another view
    _slot(log, 7, 0)                           # after a gap (6): sent
    out = log.committed_proof(to=2, first=1, last=7, view=0)
    assert out == [
        b"pp 1", b"prepare 1 by 0", b"prepare 1 by 1", b"commit 1 by 0", b"commit 1 by 1",
        b"pp 7", b"prepare 7 by 0", b"prepare 7 by 1", b"commit 7 by 0", b"commit 7 by 1",
    ]  # replica 2's own votes are not sent back to it
    assert log.committed_proof(to=2, first=2, last=6, view=0) == []
    assert log.committed_proof(to=3, first=1, last=1, view=0)[1:3] == [b"prepare 1 by 0", b"prepare 1 by 1"]
