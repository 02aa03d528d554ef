"""The partition tree and the copy-on-write store (pbft/protocol/partition.py, store.py).

The properties that matter: the incrementally kept root equals the root computed from
scratch over the same entries (so replicas that wrote in different orders, or rebuilt
from a transfer, agree); a kept checkpoint's buckets read back exactly as the state was
then, whatever was written since; and the checks a fetcher applies accept what an honest
server sends and refuse any change to it.
"""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from pbft.protocol import partition as p
from pbft.protocol.store import MemoryStore

keys = st.binary(min_size=0, max_size=6)
values = st.binary(min_size=0, max_size=8)
ops = st.lists(
    st.one_of(
        st.tuples(st.just("put"), keys, values),
        st.tuples(st.just("delete"), keys, st.just(b"")),
        st.tuples(st.just("checkpoint"), st.just(b""), st.just(b"")),
        st.tuples(st.just("release"), st.just(b""), st.just(b"")),
        st.tuples(st.just("rollback"), st.just(b""), st.just(b"")),
    ),
    max_size=80,
)


def fresh_root(entries: dict[bytes, bytes]) -> bytes:
    tree = p.PartitionTree()
    by_bucket: dict[int, list] = {}
    for k, v in entries.items():
        by_bucket.setdefault(p.bucket_of(k), []).append((k, v))
        tree.touch(p.bucket_of(k))
    return tree.refresh(lambda b: by_bucket.get(b, []))


def test_empty_tree_root_is_the_fresh_root_of_nothing():
    assert p.PartitionTree().root == fresh_root({})
    assert p.PartitionTree().refresh(lambda b: []) == fresh_root({})


@settings(max_examples=150, deadline=None)
@given(ops)
def test_incremental_root_and_kept_checkpoints_match_a_model(script):
    store = MemoryStore()
    model: dict[bytes, bytes] = {}
    snapshots: dict[int, dict[bytes, bytes]] = {}
    seq = 0
    for op, k, v in script:
        if op == "put":
            store.put(k, v)
            model[k] = v
        elif op == "delete":
            assert store.delete(k) == (k in model)
            model.pop(k, None)
        elif op == "checkpoint":
            seq += 10
            assert store.checkpoint(seq) == fresh_root(model)
            snapshots[seq] = dict(model)
        elif op == "rollback" and snapshots:
            # Back to the newest kept checkpoint but one: the later ones are forgotten.
            target = sorted(snapshots)[max(0, len(snapshots) - 2)]
            store.rollback(target)
            model = dict(snapshots[target])
            snapshots = {c: s for c, s in snapshots.items() if c <= target}
        elif op == "release" and snapshots:
            oldest = min(snapshots)
            store.release(oldest + 1)
            del snapshots[oldest]
        assert store.get(k) == model.get(k)
    assert store.digest() == fresh_root(model)
    assert store.scan(b"", None, 10**6) == sorted(model.items())
    for c, state in snapshots.items():
        assert store.digest_at(c) == fresh_root(state)
        got = {}
        for b in {p.bucket_of(k) for k in state} | {p.bucket_of(k) for k in model}:
            entries = store.bucket_at(c, b)
            assert entries is not None
            assert p.check_leaf(store.trees[c].levels[0][b], b, entries)
            got.update(entries)
        assert got == state


def test_scan_is_a_paged_range():
    store = MemoryStore()
    for i in range(50):
        store.put(b"k%02d" % i, b"%d" % i)
    assert [k for k, _ in store.scan(b"k10", b"k20", 100)] == [b"k%02d" % i for i in range(10, 20)]
    assert [k for k, _ in store.scan(b"k10", None, 3)] == [b"k10", b"k11", b"k12"]
    assert store.scan(b"z", None, 5) == []


def test_a_fetcher_walks_only_to_the_buckets_that_differ():
    # A replica that missed a few writes compares children top-down with a server's kept
    # checkpoint and ends at exactly the buckets the writes touched.
    ours, theirs = MemoryStore(), MemoryStore()
    for i in range(2000):
        ours.put(b"key%d" % i, b"v")
        theirs.put(b"key%d" % i, b"v")
    written = [b"key%d" % i for i in (3, 500, 1999)] + [b"new"]
    for k in written:
        theirs.put(k, b"w")
    root = theirs.checkpoint(100)
    ours.digest()
    frontier = [(p.DEPTH, 0, root)]
    fetched = []
    asked = 0
    while frontier:
        level, index, expected = frontier.pop()
        children = theirs.children_at(100, level, index)
        asked += 1
        assert children is not None and p.check_children(expected, level, children)
        base = 0 if level == p.DEPTH else index * p.FANOUT
        mine = ours.tree.children(level, index)
        for j, (a, b) in enumerate(zip(mine, children, strict=True)):
            if a != b:
                if level == 1:
                    fetched.append(base + j)
                else:
                    frontier.append((level - 1, base + j, b))
    assert sorted(fetched) == sorted({p.bucket_of(k) for k in written})
    assert asked <= 1 + len(written)
    for b in fetched:
        entries = theirs.bucket_at(100, b)
        assert p.check_leaf(theirs.trees[100].levels[0][b], b, entries)
        ours.install_bucket(b, entries)
    assert ours.digest() == root


def test_checks_refuse_tampered_answers():
    store = MemoryStore()
    for i in range(100):
        store.put(b"key%d" % i, b"v%d" % i)
    root = store.checkpoint(10)
    top = store.children_at(10, p.DEPTH, 0)
    assert p.check_children(root, p.DEPTH, top)
    assert not p.check_children(root, p.DEPTH, top[:-1])
    assert not p.check_children(root, p.DEPTH, (bytes(32),) + top[1:])
    assert not p.check_children(root, p.DEPTH - 1, top)  # right hashes, wrong level
    b = p.bucket_of(b"key7")
    entries = store.bucket_at(10, b)
    leaf = store.trees[10].levels[0][b]
    assert p.check_leaf(leaf, b, entries)
    assert not p.check_leaf(leaf, b, entries[:-1])
    assert not p.check_leaf(leaf, b, entries + entries[:1])  # a duplicate key
    assert not p.check_leaf(leaf, b, [(k, v + b"x") for k, v in entries])
    other = next(i for i in range(10**4) if p.bucket_of(b"x%d" % i) != b)
    assert not p.check_leaf(p.leaf_digest(entries + [(b"x%d" % other, b"")]), b, entries + [(b"x%d" % other, b"")])


def test_checkpoints_must_increase_and_unknown_ones_are_not_served():
    store = MemoryStore()
    store.checkpoint(10)
    try:
        store.checkpoint(10)
    except ValueError:
        pass
    else:
        raise AssertionError("a repeated checkpoint was accepted")
    assert store.bucket_at(20, 0) is None and store.children_at(20, 1, 0) is None
    assert store.children_at(10, 0, 0) is None and store.children_at(10, 1, p.FANOUT) is None
    assert store.bucket_at(10, p.BUCKETS) is None


@settings(max_examples=60, deadline=None)
@given(st.dictionaries(keys, values, max_size=6), keys, st.none() | values)
def test_a_leafs_sum_kept_by_updates_equals_the_sum_of_its_entries(entries, key, new):
    """`update_sum`, which a durable store keeps its leaves' sums by (pbft.node.statestore),
    gives the sum `leaf_sum` computes from scratch: put, replace and delete."""
    old = entries.get(key)
    after = dict(entries)
    if new is None:
        after.pop(key, None)
    else:
        after[key] = new
    total = p.update_sum(p.leaf_sum(entries.items()), key, old, new)
    assert total == p.leaf_sum(after.items())


def test_the_digests_are_pinned():
    """A checkpoint's digest is the root of this tree, and replicas of different builds
    must compute the same one to count one another's CHECKPOINTs (4.3): the hashing of an
    entry, a leaf and a node is a format. These values change only with it."""
    assert p.leaf_digest([(b"k", b"v")]).hex() == "9a11d1789296b489601e0ab6cc5194f0cc8e951cc6ea53f65ee5e1837d0e8421"
    assert p.node_digest(1, [p.EMPTY[0]] * p.FANOUT).hex() == (
        "abb67bdebcdac23c52898a551a3c9cafb0ef72aceab077d5dee223dfa8d67932"
    )
