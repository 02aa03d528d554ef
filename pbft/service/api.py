"""The public service API: replicate your own deterministic state machine with pbft.

A service is a class deriving from `Service`. It keeps no state of its own: everything it
knows lives in the `State` it is handed, a map of byte keys to byte values that pbft owns.
That is what lets pbft checkpoint, digest, persist and transfer any service's state the
same way, at a cost that follows what changed (the partition tree, pbft/protocol/
partition.py), whatever the service does with it.

    class Counter(Service):
        name = "counter"
        version = "1"

        def execute(self, state, operation, client):
            n = int(state.get(b"n") or b"0") + 1
            state.put(b"n", str(n).encode())
            return str(n).encode()

        def query(self, state, operation, client):
            return state.get(b"n") or b"0"

The rules a service must keep (every correct replica runs it on the same operations in
the same order and must reach the same state and results):
* `execute` depends only on the state and its arguments: no clock, no randomness, no
  I/O, no iteration over a set or over a dict filled in another order.
* Its writes take effect only if it returns: an exception discards them and becomes the
  error result `{"error": "<Type>: <message>"}` (hex addresses removed from the message,
  so a default `repr` cannot make replicas disagree). Keep messages deterministic all
  the same: a client accepts a result only when f+1 replicas sent the same bytes.
* `query` answers a read-only operation from the state without writing (a write raises
  `ReadOnlyState`), or returns None when the operation is not read-only: it is then
  ordered and executed like any other.
* Keys up to MAX_KEY bytes, values up to MAX_VALUE; larger ones raise `ValueError` (an
  error result, deterministic like any other).
"""

from __future__ import annotations

import contextlib
import re
import signal
from bisect import bisect_right
from collections.abc import Callable, Iterator
from typing import Any, ClassVar

from ..errors import safe_str
from ..protocol import codec
from ..protocol.messages import MAX_RESULT
from ..protocol.service import SERVICE_PREFIX
from ..protocol.store import Entries, MemoryStore, Namespace, Store

MAX_KEY = 1024
MAX_VALUE = 60 * 1024
MAX_SCAN = 1000
"""Most entries one `scan` returns: a service pages through larger ranges."""
MAX_ERROR = 200
"""Characters of an exception's message kept in its error result."""

_ADDRESS = re.compile(r"0x[0-9a-fA-F]+")


class ReadOnlyState(Exception):
    """A query tried to write."""


class ServiceError(Exception):
    """A service that cannot start (its setup raised): one sentence."""


class State:
    """What `execute` reads and writes: a buffered view of the replicated state. Writes
    are kept aside and applied to the store only when `execute` returns."""

    def __init__(self, store: Store, *, writable: bool = True) -> None:
        self._store = store
        self._writable = writable
        self._writes: dict[bytes, bytes | None] = {}  # None: deleted

    def get(self, key: bytes) -> bytes | None:
        _check_key(key)
        if key in self._writes:
            return self._writes[key]
        return self._store.get(key)

    def put(self, key: bytes, value: bytes) -> None:
        self._check_write(key)
        if not isinstance(value, bytes):
            raise TypeError(f"values are bytes, not {type(value).__name__}")
        if len(value) > MAX_VALUE:
            raise ValueError(f"value longer than {MAX_VALUE} bytes")
        self._writes[key] = value

    def delete(self, key: bytes) -> bool:
        """Remove `key`; whether it was there."""
        self._check_write(key)
        existed = self.get(key) is not None
        self._writes[key] = None
        return existed

    def scan(self, start: bytes = b"", end: bytes | None = None, limit: int = 100) -> Entries:
        """Entries with start <= key < end (no bound for None), in key order, at most
        `limit` (and at most MAX_SCAN): continue from the last key + b"\\0"."""
        _check_key(start)
        if end is not None:
            _check_key(end)
        limit = max(0, min(int(limit), MAX_SCAN))
        if not limit:
            return []
        if not self._writes:
            return self._store.scan(start, end, limit)
        # The store's entries with ours laid over them: ask for enough of the store's to
        # fill `limit` after our deletions, then merge.
        mine = sorted(k for k in self._writes if k >= start and (end is None or k < end))
        theirs = self._store.scan(start, end, limit + len(mine))
        merged = dict(theirs)
        for k in mine:
            v = self._writes[k]
            if v is None:
                merged.pop(k, None)
            else:
                merged[k] = v
        out = sorted(merged.items())
        # Keys past the store's last answer are unsure (it may hold more below them)
        # unless the store ran out.
        if len(theirs) == limit + len(mine) and theirs:
            out = out[: bisect_right([k for k, _ in out], theirs[-1][0])]
        return out[:limit]

    def _check_write(self, key: bytes) -> None:
        if not self._writable:
            raise ReadOnlyState("a query cannot write")
        _check_key(key)

    def _apply(self) -> None:
        for key, value in self._writes.items():
            if value is None:
                self._store.delete(key)
            else:
                self._store.put(key, value)
        self._writes.clear()


def _check_key(key: Any) -> None:
    if not isinstance(key, bytes):
        raise TypeError(f"keys are bytes, not {type(key).__name__}")
    if len(key) > MAX_KEY:
        raise ValueError(f"key longer than {MAX_KEY} bytes")


def error_result(text: str) -> bytes:
    """The result of an operation that failed: `{"error": text}` in canonical CBOR."""
    return codec.encode({"error": text})


def too_large_result(result: bytes) -> bytes:
    """The error result of a result larger than a REPLY may carry (MAX_RESULT): the same
    bytes at every replica, since the result's length is."""
    return error_result(f"result of {len(result)} bytes, larger than {MAX_RESULT}")


def exception_result(exc: BaseException) -> bytes:
    """An exception as the same error result on every replica."""
    message = _ADDRESS.sub("0x?", safe_str(exc, None, one_line=False))
    if len(message) > MAX_ERROR:
        message = message[: MAX_ERROR - 3] + "..."
    return error_result(f"{type(exc).__name__}: {message}" if message else type(exc).__name__)


def _ctrl_c(signum: int, frame: Any) -> None:
    """Python's own Ctrl-C handler (`signal.default_int_handler`, written in C) as a
    Python function, in force while user code runs (`_user_call`): the KeyboardInterrupt
    it raises has this frame in its traceback, so a real Ctrl-C can be told from one the
    user's code raised itself."""
    raise KeyboardInterrupt


_HANDLED = tuple(getattr(signal, name) for name in ("SIGINT", "SIGTERM", "SIGHUP") if hasattr(signal, name))


def operator_interrupt(exc: BaseException) -> bool:
    """Whether `exc`, raised out of a user's service code, is the operator's Ctrl-C (or a
    SIGTERM or SIGHUP handled as one), which still stops the process; any other
    KeyboardInterrupt is the service's own failure, an error result like any exception.

    A real Ctrl-C reaches Python code only through the signal handler in force, and a
    handler written in Python (Trio's while an event loop runs, `_ctrl_c` while
    `_user_call` runs under Python's default handler, the CLI's SIGTERM handlers) raises
    it from its own frame: so a KeyboardInterrupt is the operator's exactly when its
    traceback passes through the code of a handler in force for SIGINT, SIGTERM or SIGHUP.
    One the service raised (`raise KeyboardInterrupt`, a library giving up) does not, and
    every replica turns it into the same error result instead of stopping for good
    (each would replay the operation and stop again)."""
    if not isinstance(exc, KeyboardInterrupt):
        return False
    codes = {_ctrl_c.__code__}
    for signum in _HANDLED:
        code = getattr(signal.getsignal(signum), "__code__", None)
        if code is not None:
            codes.add(code)
    tb = exc.__traceback__
    while tb is not None:
        if tb.tb_frame.f_code in codes:
            return True
        tb = tb.tb_next
    return False


def _user_call(fn: Callable[..., Any], *args: Any) -> Any:
    """`fn(*args)` (a service's own code) with a real Ctrl-C recognisable by
    `operator_interrupt`: when Python's default SIGINT handler is in force (no event loop:
    the simulator, a tool), `_ctrl_c` takes its place for the call. Only the main thread
    receives signals; elsewhere nothing needs changing."""
    if _steady or signal.getsignal(signal.SIGINT) is not signal.default_int_handler:
        return fn(*args)
    try:
        signal.signal(signal.SIGINT, _ctrl_c)
    except ValueError:  # not the main thread, the only one signals interrupt
        return fn(*args)
    try:
        return fn(*args)
    finally:
        if signal.getsignal(signal.SIGINT) is _ctrl_c:
            signal.signal(signal.SIGINT, signal.default_int_handler)


@contextlib.contextmanager
def recognisable_interrupts() -> Iterator[None]:
    """For a block of many calls of a service outside an event loop (a simulation):
    `_ctrl_c` in force throughout, so that `_user_call` does not swap handlers on every
    call (that cost 23 µs a call, a few per cent of a fuzz run)."""
    if signal.getsignal(signal.SIGINT) is not signal.default_int_handler:
        yield
        return
    global _steady
    try:
        signal.signal(signal.SIGINT, _ctrl_c)
    except ValueError:  # not the main thread
        yield
        return
    _steady = True
    try:
        yield
    finally:
        _steady = False
        if signal.getsignal(signal.SIGINT) is _ctrl_c:
            signal.signal(signal.SIGINT, signal.default_int_handler)


_steady = False
"""Inside `recognisable_interrupts`: `_ctrl_c` is in force, `_user_call` looks no further
(`signal.getsignal` alone costs 4 µs)."""


class Service:
    """Derive from this to replicate your own state machine (module docstring)."""

    name: ClassVar[str] = ""
    """Bound into the cluster's identity: replicas running different services refuse to
    work together. Defaults to the class's module and name."""
    version: ClassVar[str] = "1"
    """Change it when the meaning of the state or the operations changes."""

    def setup(self, state: State) -> None:
        """Write the initial state (called once, on an empty state, before any
        operation; every replica must write the same)."""

    def execute(self, state: State, operation: bytes, client: str) -> bytes:
        """Apply one ordered operation; its result. Every service defines it (a class
        named in a [service] table without it is refused when loaded)."""
        raise NotImplementedError(f"{type(self).__name__} does not define execute")

    def query(self, state: State, operation: bytes, client: str) -> bytes | None:
        """Answer a read-only operation without writing, or None if it is not one."""
        return None

    def sample_operation(self, rng: Any, client: str, clients: list[str]) -> tuple[bytes, bool] | None:
        """For the simulator's workload: one operation `client` might send and whether it
        is read-only, drawn with `rng` (a random.Random) only. None: the simulator's own
        key-value workload. `clients` names every client of the run."""
        return None

    @classmethod
    def identity(cls) -> str:
        """"name version": what replicas compare before working together."""
        name = cls.name or f"{cls.__module__}:{cls.__qualname__}"
        return f"{name} {cls.version}"


class Hosted:
    """A `Service` on a `Store`: what the core calls (`pbft.protocol.service.StateMachine`).

    It turns every way user code can fail into a deterministic error result and applies
    an operation's writes only when it returns. `root` is the replica's whole store (what
    the core checkpoints and transfers); the service sees only its part of it, `store`
    (the keys under SERVICE_PREFIX)."""

    def __init__(self, service: Service, store: Store | None = None) -> None:
        self.service = service
        self.root: Store = store if store is not None else MemoryStore()
        self.store: Namespace = Namespace(self.root, SERVICE_PREFIX)
        if not self.root.kept and not self.root.scan(b"", None, 1):
            self._setup()  # a fresh store; a durable one that was set up keeps its state

    def _setup(self) -> None:
        state = State(self.store)
        try:
            _user_call(self.service.setup, state)
        except BaseException as exc:  # noqa: BLE001 - user code
            if operator_interrupt(exc):
                raise
            raise ServiceError(
                f"service {type(self.service).__name__}: setup raised {type(exc).__name__}: {safe_str(exc)}"
            ) from exc
        state._apply()

    def reset(self) -> None:
        """Empty the store, then the service's initial state (a replica whose store
        cannot go back to its genesis checkpoint starts over and replays)."""
        self.root.clear()
        self._setup()

    def execute(self, operation: bytes, client: str) -> bytes:
        state = State(self.store)
        try:
            result = _user_call(self.service.execute, state, operation, client)
            if not isinstance(result, bytes):
                raise TypeError(f"execute returned {type(result).__name__}, not bytes")
        except BaseException as exc:  # noqa: BLE001 - user code: any failure is a result
            if operator_interrupt(exc):
                raise
            return exception_result(exc)
        if len(result) > MAX_RESULT:
            # No REPLY can carry it: an error result, and like any error its writes are
            # discarded (the client is told the operation failed).
            return too_large_result(result)
        state._apply()
        return result

    def query(self, operation: bytes, client: str) -> bytes | None:
        return self.query_on(self.root, operation, client)

    def query_on(self, store: Any, operation: bytes, client: str) -> bytes | None:
        """`query` against `store` (a whole store, anything with get and scan): the
        oracle's reads of past states."""
        state = State(Namespace(store, SERVICE_PREFIX), writable=False)
        try:
            result = _user_call(self.service.query, state, operation, client)
            if result is not None and not isinstance(result, bytes):
                raise TypeError(f"query returned {type(result).__name__}, not bytes or None")
        except BaseException as exc:  # noqa: BLE001 - user code: any failure is a result
            if operator_interrupt(exc):
                raise
            return exception_result(exc)
        if result is not None and len(result) > MAX_RESULT:
            return too_large_result(result)
        return result

    # The service's entries as one value: for tests, tools and the simulator's oracle
    # (the core checkpoints and transfers the store's partition tree instead).

    def snapshot(self) -> bytes:
        return codec.encode([[k, v] for k, v in self.store.scan(b"", None, 1 << 62)])

    def restore(self, snapshot: bytes) -> None:
        try:
            items = codec.decode(snapshot)
        except codec.CodecError as exc:
            raise ValueError(f"unreadable snapshot: {exc}") from None
        if not isinstance(items, list) or not all(
            isinstance(i, list) and len(i) == 2 and all(isinstance(x, bytes) for x in i) for i in items
        ):
            raise ValueError("snapshot is not a list of [key, value] pairs")
        for key, _ in self.store.scan(b"", None, 1 << 62):
            self.store.delete(key)
        for key, value in items:
            self.store.put(key, value)

    def digest(self) -> bytes:
        """The digest of the whole store (the service's entries and the reply cache)."""
        return self.root.digest()
