"""A primary that tells the two halves of the backups different things.

Run it:  pbft scenario run examples/attacks/two_faced_primary.toml

For every PRE-PREPARE it sends, half of the backups get the honest one and the other
half get a second, equally well signed PRE-PREPARE for the same (view, seq) whose batch
lacks its last request. Neither version can gather 2f matching PREPAREs, so the backups'
timers expire and they replace the primary by a view change (OSDI'99 section 4.4); the
oracle checks that no two correct replicas ever execute different batches at one seq.
"""

from pbft.adversary import Behaviour, Outgoing, Param, PrePrepare, batch_digest


class TwoFacedPrimary(Behaviour):
    """Equivocates: a different PRE-PREPARE for one (view, seq) to each half."""

    parameters = {"from_seq": Param.integer(1, lo=1, help="first sequence number to lie about")}

    def setup(self) -> None:
        self.lies = 0
        self._forged: dict[tuple[int, int], bytes] = {}  # one lie per slot, resent alike

    def on_send(self, out: Outgoing) -> None:
        msg = out.message
        if not isinstance(msg, PrePrepare) or msg.seq < self.args.from_seq or len(msg.batch) < 2:
            return
        peers = self.state.peers()
        if out.to not in peers[len(peers) // 2:]:
            return  # the first half gets the truth
        key = (msg.view, msg.seq)
        if key not in self._forged:
            other = msg.batch[:-1]
            # forge() signs with this replica's own key: the lie is attributable.
            self._forged[key] = self.forge(PrePrepare(msg.view, msg.seq, batch_digest(other), other))
            self.lies += 1
        out.replace(self._forged[key])
