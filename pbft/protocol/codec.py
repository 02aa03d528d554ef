"""Strict canonical CBOR and length-prefixed framing (docs/formats.md "The wire").

Theory of operation: every byte string a peer sends is untrusted. One value has exactly
one accepted encoding (RFC 8949 section 4.2.1, core deterministic encoding), so a
signature or digest over the bytes can never be made to cover two different meanings and
a received message never needs re-encoding: the bytes are the canonical form.

The decoder is our own rather than cbor2's, because cbor2 accepts tags, duplicate map
keys, indefinite lengths and non-minimal heads, and recurses without bound. It accepts
only the subset our messages use: unsigned and negative integers within 64 bits, byte
strings, UTF-8 text, arrays, maps with keys in strictly increasing bytewise order (so no
duplicates), false, true and null. Anything else raises `CodecError`, and nothing else is
ever raised for any input (checked by hypothesis in tests/test_codec.py).
"""

from __future__ import annotations

import struct

MAX_DEPTH = 8
"""Deepest nesting of arrays and maps accepted; our messages need 4."""

MAX_FRAME = 16 * 1024 * 1024
"""Largest frame body accepted, checked on the length prefix before the body is read."""

_U64 = 1 << 64


class CodecError(ValueError):
    """The peer sent bytes that are not one canonical value of our subset."""


class FrameError(CodecError):
    """A frame whose length prefix exceeds the limit."""


# -- encoding ---------------------------------------------------------------------------


def _head(major: int, n: int) -> bytes:
    mt = major << 5
    if n < 24:
        return _SMALL_HEADS[mt | n]
    if n < 0x100:
        return bytes((mt | 24, n))
    if n < 0x10000:
        return bytes((mt | 25,)) + n.to_bytes(2, "big")
    if n < 0x100000000:
        return bytes((mt | 26,)) + n.to_bytes(4, "big")
    if n < _U64:
        return bytes((mt | 27,)) + n.to_bytes(8, "big")
    raise CodecError("integer out of 64-bit range")


_SMALL_HEADS = tuple(bytes((i,)) for i in range(256))
"""One-byte heads, prebuilt: most heads in our messages are one byte."""


def _encode(value: object, out: list[bytes]) -> None:
    # Exact-type fast paths first (the common case, one comparison each); subclasses
    # (bool, IntEnum, bytearray, ...) take the general path below.
    t = type(value)
    if t is bytes:
        n = len(value)  # type: ignore[arg-type]
        out.append(_SMALL_HEADS[0x40 | n] if n < 24 else _head(2, n))
        out.append(value)  # type: ignore[arg-type]
    elif t is int:
        if 0 <= value < 24:  # type: ignore[operator]
            out.append(_SMALL_HEADS[value])  # type: ignore[index]
        elif value >= 0:  # type: ignore[operator]
            out.append(_head(0, value))  # type: ignore[arg-type]
        else:
            out.append(_head(1, -1 - value))  # type: ignore[operator]
    elif t is list or t is tuple:
        n = len(value)  # type: ignore[arg-type]
        append = out.append
        append(_SMALL_HEADS[0x80 | n] if n < 24 else _head(4, n))
        for item in value:  # type: ignore[attr-defined]
            # The same fast paths inline, saving a call per item of a message.
            t = type(item)
            if t is bytes:
                n = len(item)
                append(_SMALL_HEADS[0x40 | n] if n < 24 else _head(2, n))
                append(item)
            elif t is int and 0 <= item < 24:
                append(_SMALL_HEADS[item])
            else:
                _encode(item, out)
    elif t is str:
        b = value.encode("utf-8")  # type: ignore[attr-defined]
        out.append(_head(3, len(b)))
        out.append(b)
    # bool before int: bool is a subclass of int.
    elif value is True:
        out.append(b"\xf5")
    elif value is False:
        out.append(b"\xf4")
    elif value is None:
        out.append(b"\xf6")
    elif isinstance(value, int):
        if value >= 0:
            out.append(_head(0, value))
        else:
            out.append(_head(1, -1 - value))
    elif isinstance(value, bytes | bytearray | memoryview):
        b = bytes(value)
        out.append(_head(2, len(b)))
        out.append(b)
    elif isinstance(value, str):
        b = value.encode("utf-8")
        out.append(_head(3, len(b)))
        out.append(b)
    elif isinstance(value, list | tuple):
        out.append(_head(4, len(value)))
        for item in value:
            _encode(item, out)
    elif isinstance(value, dict):
        items = sorted((encode(k), v) for k, v in value.items())
        out.append(_head(5, len(items)))
        for kb, v in items:
            out.append(kb)
            _encode(v, out)
    else:
        raise CodecError(f"cannot encode {type(value).__name__}")


def encode(value: object) -> bytes:
    """The canonical encoding of `value` (tuples encode as arrays)."""
    out: list[bytes] = []
    _encode(value, out)
    return b"".join(out)


# -- decoding ---------------------------------------------------------------------------
#
# One function per item, position threaded through arguments and results rather than a
# reader object: a method call and two attribute writes per item were most of the cost.
# The checks, and their order, are the same for every item: truncation, reserved and
# indefinite heads, minimal heads, then the major type's own rules.


def _item(data: bytes, pos: int, depth: int) -> tuple[object, int]:
    if pos >= len(data):
        raise CodecError("truncated")
    ib = data[pos]
    major = ib >> 5
    n = ib & 0x1F
    pos += 1
    if n >= 24:
        if n > 27:
            # 28-30 reserved, 31 indefinite length / break.
            raise CodecError("indefinite length or reserved head")
        info = n
        end = pos + (1 << (info - 24))
        if end > len(data):
            raise CodecError("truncated")
        n = int.from_bytes(data[pos:end], "big")
        # Minimal-length heads only (RFC 8949 section 4.2.1).
        if (info == 24 and n < 24) or (info > 24 and n < (1 << (4 << (info - 24)))):
            raise CodecError("non-canonical head")
        pos = end
    if major == 2:
        end = pos + n
        if end > len(data):
            raise CodecError("truncated")
        return data[pos:end], end
    if major == 0:
        return n, pos
    if major == 4:
        if depth >= MAX_DEPTH:
            raise CodecError("nesting too deep")
        # Each item takes at least one byte: refuse counts the input cannot hold
        # before allocating anything for them.
        if n > len(data) - pos:
            raise CodecError("truncated")
        out = []
        append = out.append
        depth += 1
        for _ in range(n):
            # Inline the commonest items (small unsigned integers, short byte strings);
            # anything else, or anything at the end of the input, takes the full path.
            if pos < len(data):
                ib = data[pos]
                if ib < 24:
                    append(ib)
                    pos += 1
                    continue
                if 0x40 <= ib < 0x58:
                    end = pos + 1 + (ib - 0x40)
                    if end <= len(data):
                        append(data[pos + 1 : end])
                        pos = end
                        continue
                elif ib == 0x18 and pos + 1 < len(data):
                    # Unsigned integer with a one-byte argument (24..255 is minimal).
                    k = data[pos + 1]
                    if k >= 24:
                        append(k)
                        pos += 2
                        continue
                elif 0x60 <= ib < 0x78:
                    # Short text (client names): strict UTF-8 as in the full path.
                    end = pos + 1 + (ib - 0x60)
                    if end <= len(data):
                        try:
                            append(data[pos + 1 : end].decode("utf-8"))
                        except UnicodeDecodeError:
                            raise CodecError("invalid UTF-8") from None
                        pos = end
                        continue
                elif ib == 0x58 and pos + 1 < len(data):
                    # Byte string with a one-byte length (24..255: minimal, else the
                    # full path raises): signatures, digests, small envelopes.
                    k = data[pos + 1]
                    end = pos + 2 + k
                    if k >= 24 and end <= len(data):
                        append(data[pos + 2 : end])
                        pos = end
                        continue
            v, pos = _item(data, pos, depth)
            append(v)
        return out, pos
    if major == 3:
        end = pos + n
        if end > len(data):
            raise CodecError("truncated")
        try:
            return data[pos:end].decode("utf-8"), end
        except UnicodeDecodeError:
            raise CodecError("invalid UTF-8") from None
    if major == 1:
        return -1 - n, pos
    if major == 5:
        if depth >= MAX_DEPTH:
            raise CodecError("nesting too deep")
        if n > len(data) - pos:
            raise CodecError("truncated")
        m: dict[object, object] = {}
        prev = b""
        for i in range(n):
            kstart = pos
            key, pos = _item(data, pos, depth + 1)
            kbytes = data[kstart:pos]
            if i and kbytes <= prev:
                raise CodecError("map keys not in canonical order or duplicated")
            if isinstance(key, list | dict):
                raise CodecError("map key must be a scalar")
            prev = kbytes
            m[key], pos = _item(data, pos, depth + 1)
        return m, pos
    if major == 6:
        raise CodecError("tags are not accepted")
    # major 7: simple values and floats
    if ib == 0xF4:
        return False, pos
    if ib == 0xF5:
        return True, pos
    if ib == 0xF6:
        return None, pos
    raise CodecError("floats and simple values are not accepted")


def decode(data: bytes) -> object:
    """Decode exactly one canonical value filling all of `data`, or raise CodecError."""
    if type(data) is not bytes:
        data = bytes(data)
    try:
        value, pos = _item(data, 0, 0)
    except RecursionError:  # pragma: no cover - MAX_DEPTH keeps us far from this
        raise CodecError("nesting too deep") from None
    if pos != len(data):
        raise CodecError("trailing bytes")
    return value


# -- framing ----------------------------------------------------------------------------

_LEN = struct.Struct(">I")


def frame(body: bytes) -> bytes:
    """A 4-byte big-endian length prefix followed by `body`."""
    return _LEN.pack(len(body)) + body


class FrameReader:
    """Sans-IO frame splitter: feed bytes as they arrive, get whole frame bodies back.

    The length prefix is checked against `max_frame` before any of the body is buffered,
    so an oversize frame costs four bytes of memory, not the size it claims.
    """

    def __init__(self, max_frame: int = MAX_FRAME) -> None:
        self.max_frame = max_frame
        self._buf = bytearray()

    def feed(self, data: bytes) -> list[bytes]:
        self._buf += data
        frames: list[bytes] = []
        buf = self._buf
        pos = 0
        while len(buf) - pos >= 4:
            (size,) = _LEN.unpack_from(buf, pos)
            if size > self.max_frame:
                raise FrameError(f"frame of {size} bytes exceeds the limit of {self.max_frame}")
            if len(buf) - pos - 4 < size:
                break
            frames.append(bytes(buf[pos + 4 : pos + 4 + size]))
            pos += 4 + size
        if pos:
            del buf[:pos]
        return frames

    @property
    def buffered(self) -> int:
        return len(self._buf)


def read_head(buf: bytes, pos: int) -> tuple[int, int, int]:
    """The CBOR head at `pos`, not decoding what follows: (major type, argument, position
    after the head); ValueError or IndexError if there is no well-formed head there."""
    b = buf[pos]
    major, info = b >> 5, b & 0x1F
    if info < 24:
        return major, info, pos + 1
    if info > 27:
        raise ValueError("indefinite or reserved")
    size = 1 << (info - 24)
    end = pos + 1 + size
    if end > len(buf):
        raise ValueError("short")
    return major, int.from_bytes(buf[pos + 1 : end], "big"), end
