"""Mutual TLS 1.3 contexts and naming the peer of a channel (docs/formats.md, "Key files").

Theory of operation. Every connection, replica to replica and client to replica, is TLS 1.3
with certificates on both sides, verified against the cluster CA. A certificate proves that
the CA vouched for a key, and the handshake proves that the peer holds that key. Which node
the peer is comes from the cluster file, not the certificate's CN or a host name: `peer_id`
looks the certificate's Ed25519 key up among the replica and client public keys. That
binding is what authenticates REPLY messages, which travel unsigned over the channel.

Host names are not checked (`check_hostname = False`): replicas are addressed by IP in the
cluster file, and the CA chain plus the key binding say more than a name would.
"""

from __future__ import annotations

import ssl
from typing import Protocol

from cryptography import x509

from pbft.errors import ConfigError
from pbft.protocol.config import OPERATOR, ClusterConfig
from pbft.protocol.messages import Signer

from .clusterfile import Identity, certificate_key, describe


class HasPeerCert(Protocol):
    """What `peer_id` needs: trio.SSLStream, ssl.SSLObject and ssl.SSLSocket all qualify."""

    def getpeercert(self, binary_form: bool = ...) -> object: ...


def _context(identity: Identity, purpose: int) -> ssl.SSLContext:
    ctx = ssl.SSLContext(purpose)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    ctx.maximum_version = ssl.TLSVersion.TLSv1_3
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_REQUIRED
    try:
        ctx.load_verify_locations(cafile=identity.ca_path)
    except (ssl.SSLError, OSError) as exc:
        raise ConfigError(
            f"the CA certificate {identity.ca_path} cannot be loaded: {_reason(exc)}."
        ) from None
    try:
        # A password callable even for an unencrypted key: OpenSSL must never prompt on a
        # terminal (load_identity already opened the key, so this one is the right one).
        ctx.load_cert_chain(
            certfile=identity.cert_path,
            keyfile=identity.key_path,
            password=lambda: identity.key_passphrase or b"",
        )
    except (ssl.SSLError, OSError) as exc:
        raise ConfigError(
            f"the certificate {identity.cert_path} and key {identity.key_path} of "
            f"{describe(identity.node_id)} cannot be loaded: {_reason(exc)}."
        ) from None
    return ctx


def _reason(exc: Exception) -> str:
    reason = getattr(exc, "reason", None) or getattr(exc, "strerror", None) or str(exc)
    return str(reason).lower().replace("_", " ")


def server_context(identity: Identity) -> ssl.SSLContext:
    """Context for accepting connections: TLS 1.3 only, client certificate required."""
    ctx = _context(identity, ssl.PROTOCOL_TLS_SERVER)
    # We never resume sessions, so do not spend a round of tickets on every connection.
    ctx.num_tickets = 0
    return ctx


def client_context(identity: Identity) -> ssl.SSLContext:
    """Context for opening connections: TLS 1.3 only, server certificate from our CA."""
    return _context(identity, ssl.PROTOCOL_TLS_CLIENT)


def peer_key(channel: HasPeerCert) -> bytes | None:
    """The raw Ed25519 key of the peer's verified certificate, or None if there is none.

    Call it after the handshake; trio.SSLStream raises NeedHandshakeError before.
    """
    der = channel.getpeercert(binary_form=True)
    if not isinstance(der, bytes) or not der:
        return None
    try:
        cert = x509.load_der_x509_certificate(der)
    except ValueError:
        return None
    return certificate_key(cert)


def peer_id(config: ClusterConfig, channel: HasPeerCert) -> Signer | None:
    """The node at the other end of `channel`: a replica id, a client name, or None.

    Matched by public key against the cluster file, which is authoritative; the CN is
    ignored. None means a certificate the CA signed for a key the file does not list
    (for example a client removed from the file): the caller should close the channel.
    """
    key = peer_key(channel)
    if key is None:
        return None
    for r in config.replicas:
        if r.public_key == key:
            return r.id
    for c in config.clients:
        if c.public_key == key:
            return c.id
    if config.operator_key and config.operator_key == key:
        return OPERATOR
    return None


class PeerTable:
    """`peer_id` against the node's current configuration: a reconfiguration
    (pbft.protocol.epochs) changes who may connect, without a restart (`config` is
    replaced); a removed replica or a replaced key is not known any more."""

    def __init__(self, config: ClusterConfig) -> None:
        self.config = config

    def __call__(self, channel: HasPeerCert) -> Signer | None:
        return peer_id(self.config, channel)
