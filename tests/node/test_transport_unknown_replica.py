"""What a replica says when it refuses a certificate its configuration does not list
(walkthrough finding 6): a new replica of a change not yet applied is expected while the
group grows (docs/reconfiguration.md: plan, start the new replicas, then apply)."""

from __future__ import annotations

from unittest import mock

from pbft.node import transport as t


class _Stream:
    def __init__(self, subject: str) -> None:
        self.subject = subject


class _Tcp:
    def __init__(self, host: str) -> None:
        self.socket = mock.Mock(getpeername=lambda: (host, 5555))


def _transport() -> t.Transport:
    tr = t.Transport.__new__(t.Transport)
    tr._unknown_warned = {}
    return tr


def _text(call) -> str:
    fmt, *args = call.args
    return fmt % tuple(args)


def test_a_replica_of_a_pending_change_is_said_at_info_with_a_replica_hint_then_warned_if_it_lasts():
    tr = _transport()
    now = [0.0]
    subject = "CN=replica-4,O=pbft cluster demo"
    with mock.patch.object(t, "_subject", lambda s: s.subject), \
            mock.patch.object(t.trio, "current_time", lambda: now[0]), \
            mock.patch.object(t.log, "warning") as warning, mock.patch.object(t.log, "info") as info, \
            mock.patch.object(t.log, "debug") as debug:
        for _ in range(3):
            tr._warn_unknown_certificate(_Stream(subject), _Tcp("127.0.0.1"))
        assert warning.call_count == 0, "not a warning while a change may be pending"
        assert info.call_count == 1 and debug.call_count == 2
        text = _text(info.call_args)
        assert "CN=replica-4" in text
        assert "a replica of a configuration change not yet applied is admitted once the change takes effect" in text
        assert "client" not in text and "restart" not in text, text
        now[0] = t.UNKNOWN_CERT_WARN_EVERY  # still refused a period later: worth a warning
        tr._warn_unknown_certificate(_Stream(subject), _Tcp("127.0.0.1"))
        assert warning.call_count == 1 and info.call_count == 1
        assert "its cluster file and this replica's disagree" in _text(warning.call_args)


def test_a_client_certificate_keeps_its_warning_and_client_hint():
    tr = _transport()
    with mock.patch.object(t, "_subject", lambda s: s.subject), \
            mock.patch.object(t.trio, "current_time", lambda: 0.0), \
            mock.patch.object(t.log, "warning") as warning, mock.patch.object(t.log, "info") as info:
        tr._warn_unknown_certificate(_Stream("CN=client-carol,O=pbft cluster demo"), _Tcp("127.0.0.1"))
    assert info.call_count == 0 and warning.call_count == 1
    assert "a client added since the replica started is admitted once it restarts" in _text(warning.call_args)


def test_only_a_replica_common_name_counts_as_a_replica():
    assert t._is_replica_subject("CN=replica-4,O=pbft cluster demo")
    assert not t._is_replica_subject("CN=client-replica-4,O=pbft cluster demo")
    assert not t._is_replica_subject("O=replica-4")
    assert not t._is_replica_subject("(none)")
