"""Changing the replica group through consensus: configuration epochs.

Theory of operation. The group's membership (f, the replicas with their keys and
addresses, the clients) changes only by an operator command, a client request signed by
the operator's key (`[operator]` in the cluster file) whose operation is
`["reconfigure", epoch, membership]`. It is ordered like any request; the replica core,
not the service, executes it (`Replica._operator_command`), so every correct replica
takes the same decision at the same sequence number s:

* The command names the next epoch, e+1, and the whole new membership; a command for
  another epoch, one while another change is pending, or a membership that breaks the
  rules (n = 3f+1, ids 0..n-1, distinct keys and addresses) is refused with a result
  that says why.
* The change takes effect after checkpoint B, the first multiple of the checkpoint
  interval at or after s, once B is *stable* (2f+1 CHECKPOINTs of epoch e). Slots up to
  B are ordered and executed in epoch e; nothing above B is executed in epoch e. The
  primary fills the slots up to B with null requests when it has nothing else to order,
  and backups change the view if B is not reached in time.
* Waiting for B to be stable is what keeps the epochs apart: a NEW-VIEW of epoch e+1
  only ever re-issues slots above its stable checkpoint, and that is B or later, so no
  slot is decided by two configurations (the quorums of e and e+1 need not intersect in a
  correct replica). This is the "stop the old group at a checkpoint, start the new one
  from it" of Lamport, Malkhi and Zhou's Vertical Paxos / stoppable state machines, as
  Concord-BFT and BFT-SMaRt do it, on PBFT's checkpoints (OSDI'99 4.3).
* Epochs are bound into what replicas sign (`ClusterConfig.replica_domain`) and into view
  numbers: epoch e's views are e << 32 and up (`first_view`), and epoch e+1 starts in its
  first view with no view change, the primary of that view first. A message signed under
  one epoch never counts in another, and a removed replica or a replaced key is not a
  member of the new epoch's configuration.
* The entry that records the change (`EpochEntry`: epoch, B, the operator's signed
  command) is written into the replicated state itself, under the `CONFIG_PREFIX`
  namespace, when the command executes: it is covered by the checkpoint digests, travels
  with a state transfer, and a restart finds it. A replica rebuilds every epoch's
  configuration from the cluster file's and the commands, applied in order.
* A stable-checkpoint proof is checked against the configuration of any known epoch
  (`Epochs.check_proof`), newest first: 2f+1 members of epoch e sign a CHECKPOINT under
  epoch e only for a checkpoint of epoch e, so this is safe without knowing the epoch's
  range; a replica that joins in epoch e+1 checks the proof of B with epoch e's keys.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from . import codec
from .config import OPERATOR, ClientInfo, ClusterConfig, ReplicaInfo
from .crypto import Verifier, public_key_problem
from .messages import CLIENT_NAME

EPOCH_SHIFT = 32
"""Epoch e's views are [e << 32, (e+1) << 32): about 4 billion view changes per epoch."""

CONFIG_PREFIX = b"c"
"""The store namespace of the epoch entries (the service's is b"s", the reply cache's b"r")."""

MAX_F = 33

UNKNOWN_AFTER = (1 << 63) - 1
"""The boundary of an epoch learnt from a peer: not known, so never reached by itself."""


def first_view(epoch: int) -> int:
    return epoch << EPOCH_SHIFT


def epoch_of_view(view: int) -> int:
    return view >> EPOCH_SHIFT


@dataclass(frozen=True, slots=True)
class Membership:
    """Who is in the group: what an operator command changes."""

    f: int
    replicas: tuple[ReplicaInfo, ...]
    clients: tuple[ClientInfo, ...]

    @classmethod
    def of(cls, config: ClusterConfig) -> Membership:
        return cls(config.f, config.replicas, config.clients)

    def encode(self) -> bytes:
        return codec.encode([
            self.f,
            [[r.id, r.host, r.port, r.public_key] for r in self.replicas],
            [[c.id, c.public_key] for c in self.clients],
        ])

    @classmethod
    def decode(cls, data: bytes) -> Membership:
        """ValueError (one sentence) unless well formed and within the rules."""
        try:
            f, replicas, clients = codec.decode(data)
            rs = tuple(ReplicaInfo(int(i), str(h), int(p), bytes(k)) for i, h, p, k in replicas)
            cs = tuple(ClientInfo(str(n), bytes(k)) for n, k in clients)
        except (codec.CodecError, ValueError, TypeError) as exc:
            raise ValueError(f"a malformed membership ({exc})") from None
        m = cls(f, rs, cs)
        problem = m.problem()
        if problem is not None:
            raise ValueError(problem)
        return m

    def problem(self) -> str | None:
        """What breaks the rules of a configuration, or None."""
        if type(self.f) is not int or not 1 <= self.f <= MAX_F:
            return f"f must be from 1 to {MAX_F}"
        n = 3 * self.f + 1
        if [r.id for r in self.replicas] != list(range(n)):
            return f"f = {self.f} needs replicas 0 to {n - 1}, in order"
        keys = [r.public_key for r in self.replicas] + [c.public_key for c in self.clients]
        for key in keys:
            why = public_key_problem(key) if len(key) == 32 else "not 32 bytes"
            if why is not None:
                return f"a public key is {why}"
        if len(set(keys)) != len(keys):
            return "two members share a public key"
        addresses = [(r.host, r.port) for r in self.replicas]
        if len(set(addresses)) != len(addresses) or not all(0 < p < 65536 and h for h, p in addresses):
            return "replica addresses must be distinct HOST:PORT"
        names = [c.id for c in self.clients]
        if len(set(names)) != len(names) or any(not CLIENT_NAME.match(x) or x == OPERATOR for x in names):
            return "client ids must be distinct names, none of them 'operator'"
        return None


def reconfigure_operation(epoch: int, membership: Membership) -> bytes:
    """The operation of an operator command that makes `epoch` with `membership`."""
    return codec.encode(["reconfigure", epoch, membership.encode()])


def parse_operation(operation: bytes) -> tuple[int, Membership]:
    """(epoch, membership) of a reconfigure operation; ValueError (one sentence) else."""
    try:
        value = codec.decode(operation)
    except codec.CodecError as exc:
        raise ValueError(f"not a command ({exc})") from None
    if not (isinstance(value, list) and len(value) == 3 and value[0] == "reconfigure"):
        raise ValueError("the operator's commands are [\"reconfigure\", epoch, membership]")
    _, epoch, blob = value
    if type(epoch) is not int or epoch < 1 or type(blob) is not bytes:
        raise ValueError("a reconfigure command names an epoch from 1 and a membership")
    return epoch, Membership.decode(blob)


def apply(config: ClusterConfig, epoch: int, m: Membership) -> ClusterConfig:
    """`config` with membership `m`, as epoch `epoch` (everything else stays)."""
    replicas = tuple(
        replace(r, certificate=old.certificate, metrics=old.metrics, verify_threads=old.verify_threads)
        if (old := _by_id(config, r.id)) is not None and (old.host, old.port, old.public_key) == (r.host, r.port, r.public_key)
        else r
        for r in m.replicas
    )
    known = {c.id: c for c in config.clients}
    clients = tuple(
        replace(c, certificate=old.certificate)
        if (old := known.get(c.id)) is not None and old.public_key == c.public_key
        else c
        for c in m.clients
    )
    return replace(config, epoch=epoch, f=m.f, replicas=replicas, clients=clients, client_index={})


def _by_id(config: ClusterConfig, rid: int) -> ReplicaInfo | None:
    return config.replicas[rid] if rid < len(config.replicas) else None


@dataclass(frozen=True, slots=True)
class EpochEntry:
    """Epoch `epoch` began after checkpoint `after`, made by `command` (the operator's
    signed request envelope, which proves who asked)."""

    epoch: int
    after: int
    command: bytes

    def encode(self) -> bytes:
        return codec.encode([self.after, self.command])

    @staticmethod
    def key(epoch: int) -> bytes:
        return b"e" + epoch.to_bytes(8, "big")


def command_operation(command: bytes) -> bytes:
    """The operation inside an operator's request envelope (already checked)."""
    from .messages import Request, decode_envelope

    _, req = decode_envelope(command)
    assert isinstance(req, Request)
    return req.operation


class Epochs:
    """One replica's view of the configurations: every epoch's config and verifier, the
    current epoch, and the change pending (an entry above the current epoch)."""

    def __init__(
        self, base: ClusterConfig, memo: int = 0, earlier: dict[int, ClusterConfig] | None = None,
        shared: dict[int, Verifier] | None = None,
    ) -> None:
        """`base` is the configuration a replica starts in (its cluster file's newest
        epoch), `earlier` those of the epochs before it (the file's history), `shared`
        verifiers one process keeps for all its replicas (the simulator)."""
        self.memo = memo
        self.configs: dict[int, ClusterConfig] = {**(earlier or {}), base.epoch: base}
        self.entries: dict[int, EpochEntry] = {}
        self.current = base.epoch
        self._given = (dict(self.configs), base.epoch)
        self._verifiers: dict[int, tuple[ClusterConfig, Verifier]] = shared if shared is not None else {}
        """(configuration, its verifier) per epoch, perhaps shared with other replicas."""
        self._own: dict[int, tuple[ClusterConfig, Verifier]] = {}
        """Verifiers of this replica's alone (a configuration heard of from a peer)."""
        self._learnt: set[int] = set()
        """Epochs known only from a peer (EPOCHS), not from the state or the file."""

    def reset(self) -> None:
        """Back to what was given: entries learnt from a store are read again after it
        is rolled back (recovery)."""
        configs, current = self._given
        self.configs = dict(configs)
        self.entries = {}
        self.current = current
        self._learnt = set()

    def fork(self) -> Epochs:
        """A copy to look ahead with (it shares the verifiers)."""
        other = Epochs.__new__(Epochs)
        other.memo = self.memo
        other.configs = dict(self.configs)
        other.entries = dict(self.entries)
        other.current = self.current
        other._given = self._given
        other._verifiers = self._verifiers
        other._own = self._own
        other._learnt = set(self._learnt)
        return other

    @property
    def config(self) -> ClusterConfig:
        return self.configs[self.current]

    def verifier(self, epoch: int) -> Verifier:
        """Epoch `epoch`'s verifier, built for the configuration known now: one cached
        for another configuration of that epoch (an attempt a peer relayed, replaced
        since by the one the state holds) is never used (review: a stale key wedged a
        replica)."""
        c = self.configs[epoch]
        cached = self._verifiers.get(epoch)
        if cached is not None and cached[0] == c:
            return cached[1]
        mine = self._own.get(epoch)
        if mine is not None and mine[0] == c:
            return mine[1]
        v = Verifier(c.signing_domain, c.member_keys(), memo=self.memo, replica_domain=c.replica_domain)
        if cached is None and epoch not in self._learnt:
            self._verifiers[epoch] = (c, v)  # shared only for what the state or the file says
        else:
            self._own[epoch] = (c, v)
        return v

    def use_verifier(self, epoch: int, verifier: Verifier) -> None:
        """The verifier the caller built for `epoch` (the simulator shares one)."""
        self._verifiers[epoch] = (self.configs[epoch], verifier)

    @property
    def pending(self) -> EpochEntry | None:
        """The next epoch's entry once this replica's state holds it (a command it
        executed, or a state it installed); one only heard of from a peer is not pending
        here: it does not bound what this replica orders (fuzz seed 17101215)."""
        entry = self.entries.get(self.current + 1)
        return entry if entry is not None and entry.after != UNKNOWN_AFTER else None

    def boundary(self) -> int | None:
        """B: the checkpoint after which the pending epoch begins, or None."""
        p = self.pending
        return None if p is None else p.after

    def add(self, entry: EpochEntry) -> ClusterConfig:
        """Learn `entry` (the next epoch after the last known); its configuration."""
        prev = self.configs[entry.epoch - 1]
        epoch, m = parse_operation(command_operation(entry.command))
        assert epoch == entry.epoch
        config = apply(prev, epoch, m)
        if self.configs.get(epoch) != config:
            # Another configuration of this epoch than the one known (heard of from a
            # peer): the later ones were derived from it, and go with it.
            for later in [e for e in self.configs if e > epoch]:
                del self.configs[later]
                self.entries.pop(later, None)
        self.configs[epoch] = config
        self.entries[epoch] = entry
        self._learnt.discard(epoch)
        return config

    def load(self, read) -> list[str]:
        """Learn the entries a store holds (`read(key) -> bytes | None`), in order from
        the one after the current epoch: the replicated state is the authority, so an
        entry learnt from a peer (`learn`) is replaced by the state's; what could not be
        read, in sentences."""
        problems = []
        epoch = self.current + 1
        while True:
            raw = read(EpochEntry.key(epoch))
            if raw is None:
                return problems
            try:
                after, command = codec.decode(raw)
                self.add(EpochEntry(epoch, after, command))
            except (codec.CodecError, ValueError, TypeError, AssertionError) as exc:
                problems.append(f"epoch {epoch}'s entry does not read: {exc}")
                return problems
            epoch += 1

    def learn(self, epoch: int, command: bytes, verifier: Verifier) -> str | None:
        """An entry a peer sent (EPOCHS): the next unknown epoch, its command signed by
        the operator. Its boundary is not known (a hint from one peer): it never makes
        this replica switch; the state, once fetched, says when (`load`). Why not, or None."""
        from .messages import Request, decode_envelope

        if epoch != max(self.configs) + 1 and epoch not in self._learnt:
            return f"epoch {epoch} is not the next one"
        try:
            env, req = decode_envelope(command)
        except codec.CodecError as exc:
            return f"a malformed command ({exc})"
        if not isinstance(req, Request) or env.signer != OPERATOR or not verifier.verify(env):
            return "not a command signed by the operator"
        try:
            self.add(EpochEntry(epoch, UNKNOWN_AFTER, command))
        except (ValueError, AssertionError) as exc:
            return f"not a reconfiguration ({exc})"
        self._learnt.add(epoch)
        return None

    def heard_only(self, epoch: int) -> bool:
        """Whether epoch `epoch` is known only from a peer (EPOCHS), not from the state."""
        return epoch in self._learnt

    def verify_any(self, env) -> int | None:
        """The epoch under whose configuration `env` verifies, the current one first (for
        the messages that help a peer catch up across epochs: STATUS, STABLE-PROOF,
        FETCH-STATE, STATE-CHUNK)."""
        order = [self.current] + sorted((e for e in self.configs if e != self.current), reverse=True)
        for epoch in order:
            if self.verifier(epoch).verify(env):
                return epoch
        return None

    def due(self, stable: int) -> int | None:
        """The newest known epoch whose boundary `stable` has reached, if it is not the
        current one (then the replica moves to it)."""
        best = None
        for epoch, entry in sorted(self.entries.items()):
            if epoch > self.current and entry.after <= stable:
                best = epoch
        return best

    def check_proof(self, seq: int, proof: tuple[bytes, ...]) -> bytes:
        """The digest a stable-checkpoint proof for `seq` proves, checked against the
        newest epoch whose members signed it (module docstring); InvalidCertificate
        with the current epoch's reason if none."""
        from .viewchange import InvalidCertificate, check_checkpoint_proof

        first: InvalidCertificate | None = None
        for epoch in sorted(self.configs, reverse=True):
            try:
                return check_checkpoint_proof(self.configs[epoch], self.verifier(epoch), seq, proof)
            except InvalidCertificate as exc:
                first = first or exc
        assert first is not None
        raise first
