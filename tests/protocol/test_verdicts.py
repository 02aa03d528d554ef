"""Verdicts reached off the event loop and handed to the core's Verifier (issue 20, item 2;
pbft.node.preverify): a verdict answers only for the exact bytes it was reached on, so a
pre-verified "yes" can never be reused for other bytes; the memo is bounded and listed."""

from __future__ import annotations

from conftest import CLUSTER_ID, client_key, make_config, make_replica, replica_key, sign_request

from pbft.protocol.crypto import Ed25519, Verifier, check_jobs, seal, use, verdict_key
from pbft.protocol.messages import Envelope, Prepare, envelope_from_bytes

D = b"\x11" * 32


def _verifier(memo: int = 100) -> Verifier:
    return Verifier(CLUSTER_ID, make_config().member_keys(), memo=memo)


def _prejudge(v: Verifier, envs: list[Envelope]) -> int:
    """What the runtime does: jobs, checked (here on this thread), admitted."""
    jobs = v.jobs(envs)
    v.admit(jobs, check_jobs(jobs, v.implementation))
    return len(jobs)


def test_a_prejudged_envelope_is_answered_without_the_library():
    v = _verifier()
    good = envelope_from_bytes(sign_request("alice", b"op", 1))
    assert _prejudge(v, [good, good]) == 1  # duplicates are asked once
    assert v.checked == 1
    assert v.verify(good) and v.checked == 1  # the verdict was found
    assert v.jobs([good]) == []  # and is not asked for again


def test_a_verdict_never_answers_for_other_bytes():
    v = _verifier()
    good = seal(replica_key(1), CLUSTER_ID, 1, Prepare(0, 1, D))
    _prejudge(v, [good])
    checked = v.checked
    assert not v.verify(Envelope(good.body, 2, good.signature))  # another signer (key)
    assert not v.verify(Envelope(good.body + b"\x00", 1, good.signature))  # other body
    bad_sig = good.signature[:-1] + bytes([good.signature[-1] ^ 1])
    assert not v.verify(Envelope(good.body, 1, bad_sig))  # other signature
    assert v.checked == checked + 3  # each went to the library, none to the verdict
    other = Verifier("another-cluster", make_config().member_keys(), memo=100)
    assert other.jobs([good]) and not other.verify(good)  # the payload binds the cluster


def test_a_job_whose_key_and_bytes_disagree_cannot_poison_the_memo():
    """The rule: `admit` keys a verdict by the bytes it was reached on, not by the key a
    job carries. A job carrying a forgery's key with a genuine envelope's bytes (a bug in
    the runtime, or a mix-up of two jobs) verifies "yes"; without the rule, that "yes"
    would be filed under the forgery and the core would accept it."""
    v = _verifier()
    genuine = seal(replica_key(1), CLUSTER_ID, 1, Prepare(0, 1, D))
    forged = Envelope(seal(replica_key(2), CLUSTER_ID, 1, Prepare(0, 2, D)).body, 1, genuine.signature)
    (forged_job,) = v.jobs([forged])
    (genuine_job,) = v.jobs([genuine])
    mixed = (forged_job[0], *genuine_job[1:])
    assert check_jobs([mixed], v.implementation) == [True]
    v.admit([mixed], [True])
    assert not v.verify(forged)
    assert v.verify(genuine)


def test_a_no_is_kept_too_and_both_libraries_agree():
    for impl in Ed25519:
        previous = use(impl)
        try:
            v = _verifier()
            good = envelope_from_bytes(sign_request("bob", b"x", 3))
            bad = Envelope(good.body, "bob", seal(client_key("bob"), CLUSTER_ID, "bob", Prepare(0, 9, D)).signature)
            _prejudge(v, [good, bad])
            checked = v.checked
            assert v.verify(good) and not v.verify(bad) and v.checked == checked
        finally:
            use(previous)


def test_no_jobs_for_what_verify_refuses_on_its_own_or_without_a_memo():
    v = _verifier()
    good = envelope_from_bytes(sign_request("alice", b"op", 1))
    assert v.jobs([Envelope(good.body, "mallory", good.signature)]) == []  # unknown signer
    assert v.jobs([Envelope(good.body, "alice", good.signature[:63])]) == []  # bad shape
    assert _verifier(memo=0).jobs([good]) == []


def test_the_memo_is_bounded_and_listed_by_the_replica():
    v = _verifier(memo=3)
    envs = [envelope_from_bytes(sign_request("alice", b"op%d" % i, i)) for i in range(1, 6)]
    _prejudge(v, envs)
    assert v.bounds() == [("verdicts", 3, 3)]
    assert v.verify(envs[-1]) and v.verify(envs[0])  # the oldest forgotten: asked again
    r = make_replica(make_config(), 1, v)
    assert ("verdicts", 3, 3) in r.bounds()
    r.invariants()


def test_only_64_byte_signatures_are_admitted():
    """The verdict key relies on the signature's fixed length (sha256(k || s || p) is the
    same input for a 63-byte s and a payload one byte longer): a job with another length
    is never kept, whatever its verdict."""
    v = _verifier()
    good = seal(replica_key(1), CLUSTER_ID, 1, Prepare(0, 1, D))
    job = v.jobs([good])[0]
    assert verdict_key(job[1], job[2], job[3]) == verdict_key(job[1], job[2][:63], job[2][63:] + job[3])
    v.admit([(job[0], job[1], job[2][:63], job[2][63:] + job[3])], [True])
    assert v.bounds() == [("verdicts", 0, 100)]


def test_what_is_skipped_does_not_stop_the_envelopes_after_it_being_asked():
    # Found by mutation testing: a `continue` turned `break` asked nothing after the
    # first duplicate, judged or refused envelope (each left to the event loop instead).
    v = _verifier()
    first, second, third = (envelope_from_bytes(sign_request("alice", b"op%d" % i, i)) for i in (1, 2, 3))
    assert [job[2] for job in v.jobs([first, first, second])] == [first.signature, second.signature]
    _prejudge(v, [first])
    assert [job[2] for job in v.jobs([first, third])] == [third.signature]
    unknown = Envelope(first.body, "mallory", first.signature)
    assert [job[2] for job in v.jobs([unknown, third])] == [third.signature]
