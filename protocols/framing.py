"""Unsigned varints and varint-length-prefixed frames, the framing under every p2pico stream.

Sans-I/O: this module never imports trio or libp2p. A driver feeds it whatever bytes arrived
(``FrameDecoder.feed``) and pulls out complete frames (``FrameDecoder.next_frame``), which
returns ``None`` while a frame is still incomplete.

Wire format (the multiformats unsigned-varint spec, as libp2p uses it everywhere)::

    frame  = uvarint(len(payload)) || payload
    uvarint: 7 bits per byte, least significant group first, high bit set on every byte
             but the last; at most 9 bytes (63 bits); minimal encoding only.

Rules enforced on decode, each a ``FramingError`` naming what was wrong:

1. A varint may be at most ``MAX_VARINT_LEN`` bytes. The spec caps it at 9, and refusing a
   10th byte early means a peer cannot make us buffer an endless run of 0x80 bytes.
2. A varint must be minimal: no trailing 0x00 group (``0x81 0x00`` for 1). The spec requires
   it, and it keeps every length with exactly one encoding.
3. A frame's declared length may not exceed the decoder's ``max_frame_size``. The check runs
   as soon as the length prefix is complete, before any payload is buffered.

After an error the decoder is broken for good: every later call raises the same error, because
the byte stream has lost its frame boundaries and nothing after the bad prefix can be trusted.
"""

from __future__ import annotations

from dag.cid import encode_varint

__all__ = [
    "MAX_FRAME_SIZE",
    "MAX_VARINT_LEN",
    "FrameDecoder",
    "FramingError",
    "decode_uvarint",
    "encode_frame",
    "encode_uvarint",
]

# The multiformats unsigned-varint spec limits varints to 9 bytes, i.e. 63 bits of value.
MAX_VARINT_LEN = 9
_MAX_UVARINT = (1 << (7 * MAX_VARINT_LEN)) - 1

# 4 MiB: room for the largest single message p2pico expects (a 1 MiB payload plus envelope,
# with headroom), while capping what a hostile peer can make us buffer per stream by announcing
# a huge length. It is also js-libp2p's default (it-length-prefixed maxDataLength), so frames
# we accept are frames a JS peer would accept too.
MAX_FRAME_SIZE = 4 * 1024 * 1024


class FramingError(ValueError):
    """The bytes are not a valid varint or frame; the reason is in the message."""


def encode_uvarint(value: int) -> bytes:
    """Encode a non-negative integer below 2**63 as a minimal unsigned varint."""
    if value < 0:
        raise ValueError(f"uvarint must be non-negative, got {value}")
    if value > _MAX_UVARINT:
        raise ValueError(f"uvarint must be below 2**63, got {value}")
    return encode_varint(value)


def decode_uvarint(data: bytes | bytearray | memoryview, offset: int = 0) -> tuple[int, int] | None:
    """Decode the varint starting at ``data[offset]``.

    Returns ``(value, end)`` where ``end`` is the offset just past the varint, or ``None`` if
    the data ends before the varint does.

    Raises:
        FramingError: the varint is longer than ``MAX_VARINT_LEN`` bytes or not minimal.
    """
    value = 0
    for i in range(MAX_VARINT_LEN):
        pos = offset + i
        if pos >= len(data):
            return None
        byte = data[pos]
        value |= (byte & 0x7F) << (7 * i)
        if byte < 0x80:
            if byte == 0 and i > 0:
                raise FramingError(f"non-minimal varint: trailing zero byte after {i} byte(s)")
            return value, pos + 1
    raise FramingError(f"varint longer than {MAX_VARINT_LEN} bytes")


def encode_frame(payload: bytes, *, max_frame_size: int = MAX_FRAME_SIZE) -> bytes:
    """Prefix ``payload`` with its length.

    Raises:
        FramingError: the payload is larger than ``max_frame_size``, so a peer using the same
            limit would refuse it.
    """
    if len(payload) > max_frame_size:
        raise FramingError(f"frame of {len(payload)} bytes exceeds the maximum of {max_frame_size}")
    return encode_uvarint(len(payload)) + payload


class FrameDecoder:
    """Incremental decoder for a stream of length-prefixed frames.

    Feed it bytes in chunks of any size with ``feed``; call ``next_frame`` until it returns
    ``None`` to collect every complete frame. Bytes after the last complete frame stay
    buffered (see ``buffered``).
    """

    def __init__(self, max_frame_size: int = MAX_FRAME_SIZE) -> None:
        if max_frame_size < 0:
            raise ValueError(f"max_frame_size must be >= 0, got {max_frame_size}")
        self.max_frame_size = max_frame_size
        self._buffer = bytearray()
        self._error: FramingError | None = None

    @property
    def buffered(self) -> int:
        """Number of bytes received but not yet returned as part of a frame."""
        return len(self._buffer)

    def feed(self, data: bytes) -> None:
        """Append received bytes. ``b""`` is allowed and does nothing."""
        if self._error is not None:
            raise self._error
        self._buffer += data

    def next_frame(self) -> bytes | None:
        """Return the next complete frame's payload, or ``None`` if more data is needed.

        Raises:
            FramingError: bad varint or oversized frame; raised again on every later call.
        """
        if self._error is not None:
            raise self._error
        try:
            header = decode_uvarint(self._buffer)
        except FramingError as error:
            self._error = error
            raise
        if header is None:
            return None
        length, start = header
        if length > self.max_frame_size:
            self._error = FramingError(
                f"frame of {length} bytes exceeds the maximum of {self.max_frame_size}"
            )
            raise self._error
        end = start + length
        if len(self._buffer) < end:
            return None
        payload = bytes(self._buffer[start:end])
        del self._buffer[:end]
        return payload
