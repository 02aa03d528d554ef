"""The public service API (pbft/service/api.py) and its two services (kvservice, ledger).

What a user relies on: writes apply only when execute returns; any failure of their code
is the same error result on every replica; a query cannot write; scans see the
operation's own writes; the key-value store's multi-key write is all or nothing; and the
ledger's total never changes.
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pbft.protocol import codec
from pbft.protocol.store import MemoryStore
from pbft.service.api import MAX_VALUE, Hosted, Service, ServiceError, State
from pbft.service.kvservice import KeyValue, prefix_end
from pbft.service.ledger import Ledger


def op(*args):
    return codec.encode(list(args))


def result(data: bytes):
    return codec.decode(data)


small = st.binary(max_size=3)


@settings(max_examples=200, deadline=None)
@given(
    st.dictionaries(small, small, max_size=20),
    st.dictionaries(small, st.none() | small, max_size=10),
    small,
    st.none() | small,
    st.integers(0, 12),
)
def test_a_scan_sees_the_operations_own_writes(stored, writes, start, end, limit):
    store = MemoryStore()
    for k, v in stored.items():
        store.put(k, v)
    state = State(store)
    model = dict(stored)
    for k, v in writes.items():
        if v is None:
            state.delete(k)
            model.pop(k, None)
        else:
            state.put(k, v)
            model[k] = v
    expect = sorted((k, v) for k, v in model.items() if k >= start and (end is None or k < end))[:limit]
    assert state.scan(start, end, limit) == expect
    state._apply()
    assert store.scan(b"", None, 100) == sorted(model.items())


class Flaky(Service):
    name = "flaky"

    def execute(self, state, operation, client):
        state.put(b"touched", b"1")
        if operation == b"boom":
            raise ValueError(f"bad thing at {object()!r}")
        if operation == b"none":
            return None
        return b"ok"

    def query(self, state, operation, client):
        if operation == b"write":
            state.put(b"x", b"1")
        return None


def test_an_exception_is_the_same_error_on_every_replica_and_writes_nothing():
    a, b = Hosted(Flaky()), Hosted(Flaky())
    ra, rb = a.execute(b"boom", "c0"), b.execute(b"boom", "c0")
    assert ra == rb
    assert result(ra)["error"].startswith("ValueError: bad thing at <object object at 0x?")
    assert a.store.get(b"touched") is None
    assert result(a.execute(b"none", "c0")) == {"error": "TypeError: execute returned NoneType, not bytes"}
    assert a.store.get(b"touched") is None
    assert a.execute(b"fine", "c0") == b"ok" and a.store.get(b"touched") == b"1"


class Verbose(Service):
    name = "verbose"

    def execute(self, state, operation, client):
        state.put(b"touched", b"1")
        return b"x" * int(operation)

    def query(self, state, operation, client):
        return b"y" * int(operation)


def test_a_result_no_reply_can_carry_is_an_error_and_its_writes_are_discarded():
    """A REPLY carries at most MAX_RESULT bytes: a larger result could reach no client,
    and the reply cache would keep it in the state. Like any error result, its writes
    are discarded, so a client told it failed may safely try again (review)."""
    from pbft.protocol.messages import MAX_RESULT

    h = Hosted(Verbose())
    big = str(MAX_RESULT + 1).encode()
    assert result(h.execute(big, "c0")) == {"error": f"result of {MAX_RESULT + 1} bytes, larger than {MAX_RESULT}"}
    assert h.store.get(b"touched") is None
    assert result(h.query(big, "c0"))["error"].startswith(f"result of {MAX_RESULT + 1} bytes")
    assert len(h.execute(str(MAX_RESULT).encode(), "c0")) == MAX_RESULT and h.store.get(b"touched") == b"1"


def test_a_query_cannot_write():
    h = Hosted(Flaky())
    assert result(h.query(b"write", "c0")) == {"error": "ReadOnlyState: a query cannot write"}
    assert h.store.get(b"x") is None


def test_limits_and_types_are_error_results():
    kv = Hosted(KeyValue())
    assert "longer than" in result(kv.execute(op("put", b"k", b"v" * (MAX_VALUE + 1)), "c0"))["error"]
    assert "longer than" in result(kv.execute(op("put", b"k" * 2000, b"v"), "c0"))["error"]
    assert "error" in result(kv.execute(b"\xff", "c0"))


def test_a_setup_that_raises_stops_the_replica_with_one_sentence():
    class Broken(Service):
        def setup(self, state):
            raise RuntimeError("no config")

    with pytest.raises(ServiceError, match="setup raised RuntimeError: no config"):
        Hosted(Broken())


def test_compare_and_set():
    kv = Hosted(KeyValue())
    assert result(kv.execute(op("cas", b"k", None, b"1"), "c0")) is True
    assert result(kv.execute(op("cas", b"k", None, b"2"), "c0")) == ["conflict", b"1"]
    assert result(kv.execute(op("cas", b"k", b"1", b"2"), "c0")) is True
    assert result(kv.execute(op("cas", b"k", b"2", None), "c0")) is True
    assert result(kv.query(op("get", b"k"), "c0")) is None


def test_multi_put_is_all_or_nothing():
    kv = Hosted(KeyValue())
    kv.execute(op("put", b"gone", b"x"), "c0")
    assert result(kv.execute(op("mput", [[b"a", b"1"], [b"gone", None], [b"b", b"2"]]), "c0")) is True
    assert result(kv.query(op("scan", b"", None, 10), "c0")) == [[b"a", b"1"], [b"b", b"2"]]
    bad = op("mput", [[b"c", b"3"], [b"d", b"x" * (MAX_VALUE + 1)]])
    assert "error" in result(kv.execute(bad, "c0"))
    assert kv.store.get(b"c") is None


def test_list_pages_through_a_prefix():
    kv = Hosted(KeyValue())
    kv.execute(op("mput", [[b"user/%02d" % i, b"v"] for i in range(25)] + [[b"users", b"x"], [b"usea", b"x"]]), "c0")
    seen, after = [], b""
    while True:
        page = result(kv.query(op("list", b"user/", after, 10), "c0"))
        seen += [k for k, _ in page]
        if len(page) < 10:
            break
        after = page[-1][0]
    assert seen == [b"user/%02d" % i for i in range(25)]
    assert prefix_end(b"a\xff\xff") == b"b" and prefix_end(b"\xff") is None


def test_read_only_operations_are_queries_and_writes_are_not():
    kv = Hosted(KeyValue())
    assert kv.query(op("put", b"k", b"v"), "c0") is None
    assert result(kv.query(op("get", b"k"), "c0")) is None
    assert "error" in result(kv.query(op("scan", b"", None, True), "c0"))


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 5), st.integers(0, 5), st.integers(-5, 1500)), max_size=60))
def test_the_ledger_never_creates_money(transfers):
    ledger = Hosted(Ledger(accounts=5, balance=1000))
    for sender, to, amount in transfers:
        out = result(ledger.execute(op("transfer", f"c{to}", amount), f"c{sender}"))
        assert out[0] in ("ok", "refused")
        assert result(ledger.query(op("total"), "c0")) == 5000
    balances = [result(ledger.query(op("balance", f"c{i}"), "c0")) for i in range(5)]
    assert sum(balances) == 5000 and min(balances) >= 0


def test_the_ledger_refuses_what_would_break_it():
    ledger = Hosted(Ledger(accounts=2, balance=10))
    assert result(ledger.execute(op("transfer", "c1", 11), "c0")) == ["refused", "insufficient funds"]
    assert result(ledger.execute(op("transfer", "c9", 1), "c0")) == ["refused", "no such account"]
    assert result(ledger.execute(op("transfer", "c0", 1), "c0")) == ["refused", "a transfer to oneself"]
    assert result(ledger.execute(op("transfer", "c1", 0), "c0"))[0] == "refused"
    assert "error" in result(ledger.execute(op("transfer", "c1", True), "c0"))
    assert "error" in result(ledger.execute(b"\xff", "c0"))


def test_snapshot_restore_and_digest_agree_across_replicas():
    a, b = Hosted(KeyValue()), Hosted(KeyValue())
    for i in range(30):
        a.execute(op("put", b"k%d" % i, b"v%d" % i), "c0")
    b.restore(a.snapshot())
    assert a.digest() == b.digest()
    with pytest.raises(ValueError):
        b.restore(b"\xff")


def test_sys_exit_in_a_service_is_an_error_result_not_an_exit():
    class Quits(Service):
        def execute(self, state, operation, client):
            state.put(b"k", b"v")
            raise SystemExit(3)

    h = Hosted(Quits())
    assert result(h.execute(b"x", "c0")) == {"error": "SystemExit: 3"}
    assert h.store.get(b"k") is None
