"""Signatures checked on worker threads before the core steps the frames (issue 20).

Theory of operation. Ed25519 verification is ~38 us of C in libsodium (or OpenSSL), run
with the GIL released, so it can use a second core while the event loop goes on. With
`[[replica]] verify_threads = N` (N > 0) the node puts this stage between the inbox the
transport fills and the task that steps the core:

    transport -> BoundedInbox -> PreVerify.run -> channel -> step loop -> Replica.step

`run` takes what is queued (at most GROUP frames), finds the signatures the core will
check in it (the envelope of a REQUEST, PRE-PREPARE, PREPARE or COMMIT, and every request
of a PRE-PREPARE's batch), asks the core's Verifier which of them it has no verdict on
(`Verifier.jobs`), has them checked on at most N threads at once (`crypto.check_jobs`,
split into N parts), hands the verdicts to the Verifier (`Verifier.admit`) and only then
forwards the frames, in order. The core is unchanged: it calls `Verifier.verify` as
always, which finds the verdict under the key of the exact bytes (public key, signature,
signing payload) and so never answers for other bytes; a verdict forgotten (the memo is
bounded, crypto.VERDICTS) or never reached (a frame this stage could not parse, a
signature left out) is reached inline, as without the pool. Decoding here is only to find
signatures; the core decodes and checks everything again.

What is not sent to the threads: a frame that does not decode; a second request of one
client within a group (a flooding client's newer writes may be dropped unverified by the
core, verified.DeferredRequests: the stage must not spend what that budget saves); and a
group with fewer than MIN_JOBS signatures, since a thread hop costs ~55 us of CPU here,
more than a verification (they are checked inline by the core, as with verify_threads 0).
Ticks and other inputs pass through in order.

The bytes in flight are still bounded by the BoundedInbox (the step loop calls `taken`),
and the channel to the step loop holds at most one group.
"""

from __future__ import annotations

from typing import Any

import trio

from ..protocol import codec
from ..protocol.crypto import Verifier, VerifyJob, check_jobs
from ..protocol.events import Received
from ..protocol.messages import Envelope, MsgType, envelope_from_bytes

GROUP = 64
"""Frames taken per round: what is queued when the stage wakes, at most this many."""
MIN_JOBS = 8
"""Fewer signatures than this in a group are left to the core: a hop costs ~55 us of CPU
(measured no better with 4; docs/architecture.md, "Verifying on worker threads")."""


_REQUEST, _PRE_PREPARE, _PREPARE, _COMMIT = (int(t) for t in (
    MsgType.REQUEST, MsgType.PRE_PREPARE, MsgType.PREPARE, MsgType.COMMIT))


def _kind(body: bytes) -> int:
    """The message type of a body without decoding it: a body is a short CBOR array whose
    first item is the type, a small integer (messages.to_body). Only a hint (a body that
    lies only loses its pre-verification); the core decodes everything."""
    if len(body) > 1 and 0x81 <= body[0] <= 0x97:
        return body[1]
    return -1


def signatures(event: Any, clients: set[str]) -> list[Envelope]:
    """The envelopes whose signatures the core will check when it steps `event`; none if
    it does not decode. `clients` are the clients with a request in this group already."""
    if type(event) is not Received:
        return []
    try:
        env = envelope_from_bytes(event.data)
    except codec.CodecError:
        return []
    kind = _kind(env.body)
    if kind == _REQUEST:
        if type(env.signer) is not str or env.signer in clients:
            return []
        clients.add(env.signer)
        return [env]
    if kind == _PREPARE or kind == _COMMIT:
        return [env]
    if kind == _PRE_PREPARE:
        out = [env]
        for data in env.attachment or ():  # the batch rides beside the signed body
            try:
                out.append(envelope_from_bytes(data))
            except codec.CodecError:
                pass
        return out
    return []


class PreVerify:
    """The stage: `run` reads `source` and forwards every input to `sink`, after the
    signatures of each group are checked on worker threads and handed to `verifier`."""

    def __init__(self, verifier: Verifier, threads: int) -> None:
        assert threads > 0 and verifier.memo_size > 0
        self.verifier = verifier
        self.threads = threads
        self.limiter = trio.CapacityLimiter(threads)
        self.impl = verifier.implementation
        self.hops = 0
        """Thread hops made."""
        self.offloaded = 0
        """Signatures checked on worker threads."""

    def plan(self, group: list[Any]) -> list[list[VerifyJob]]:
        """The jobs of a group, split into at most `threads` parts (none: below MIN_JOBS)."""
        clients: set[str] = set()
        envs: list[Envelope] = []
        for event in group:
            envs.extend(signatures(event, clients))
        jobs = self.verifier.jobs(envs) if len(envs) >= MIN_JOBS else []
        if len(jobs) < MIN_JOBS:
            return []
        parts = max(1, min(self.threads, len(jobs) // MIN_JOBS))
        size = -(-len(jobs) // parts)
        return [jobs[i : i + size] for i in range(0, len(jobs), size)]

    async def check(self, parts: list[list[VerifyJob]]) -> None:
        """Check each part on a worker thread (at most `threads` at once), then admit
        the verdicts, on the event loop."""
        verdicts: list[list[bool]] = [[] for _ in parts]

        async def one(i: int) -> None:
            verdicts[i] = await trio.to_thread.run_sync(check_jobs, parts[i], self.impl, limiter=self.limiter)

        if len(parts) == 1:
            await one(0)
        else:
            async with trio.open_nursery() as nursery:
                for i in range(len(parts)):
                    nursery.start_soon(one, i)
        for jobs, ok in zip(parts, verdicts, strict=True):
            self.verifier.admit(jobs, ok)
            self.offloaded += len(jobs)
        self.hops += len(parts)

    async def run(self, source: trio.MemoryReceiveChannel, sink: trio.MemorySendChannel) -> None:
        async for event in source:
            group = [event]
            while len(group) < GROUP:
                try:
                    group.append(source.receive_nowait())
                except (trio.WouldBlock, trio.EndOfChannel):
                    break
            parts = self.plan(group)
            if parts:
                await self.check(parts)
            for event in group:
                await sink.send(event)
