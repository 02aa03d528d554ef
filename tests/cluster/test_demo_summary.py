"""`pbft demo`'s closing status lines: a replica whose stable checkpoint is above what it
executed is said to be catching up (fetching that checkpoint's state)."""

from __future__ import annotations

from pbft.cluster.demo import status_row
from pbft.protocol.messages import Status


def test_a_replica_behind_its_stable_checkpoint_is_catching_up():
    assert status_row(0, Status(1, 94, 128, 3)).split() == [
        "0", "1", "94", "128", "catching", "up:", "fetching", "the", "state", "of", "its", "stable", "checkpoint",
        "(state", "transfer)"]
    assert status_row(1, Status(1, 167, 160, 7)).split() == ["1", "1", "167", "160"]
    assert status_row(2, None).split() == ["2", "unreachable"]
