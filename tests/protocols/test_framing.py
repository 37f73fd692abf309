"""protocols.framing: varints and length-prefixed frames, fed whole, byte by byte and in bulk."""

from __future__ import annotations

import subprocess
import sys

import pytest

from protocols.framing import (
    MAX_FRAME_SIZE,
    MAX_VARINT_LEN,
    FrameDecoder,
    FramingError,
    decode_uvarint,
    encode_frame,
    encode_uvarint,
)

# (value, encoding) pairs from the multiformats unsigned-varint spec's examples.
VARINT_CASES = [
    (0, b"\x00"),
    (1, b"\x01"),
    (127, b"\x7f"),
    (128, b"\x80\x01"),
    (255, b"\xff\x01"),
    (300, b"\xac\x02"),
    (16384, b"\x80\x80\x01"),
    ((1 << 63) - 1, b"\xff" * 8 + b"\x7f"),
]


@pytest.mark.parametrize(("value", "encoded"), VARINT_CASES)
def test_uvarint_round_trip(value: int, encoded: bytes) -> None:
    """Spec examples encode to the spec bytes and decode back, with trailing bytes left alone."""
    assert encode_uvarint(value) == encoded
    assert decode_uvarint(encoded + b"tail") == (value, len(encoded))


@pytest.mark.parametrize(("value", "encoded"), VARINT_CASES)
def test_uvarint_incomplete_needs_more(value: int, encoded: bytes) -> None:
    """Every strict prefix of a varint decodes to None (need more data)."""
    for cut in range(len(encoded)):
        assert decode_uvarint(encoded[:cut]) is None


def test_uvarint_rejects_out_of_range_values() -> None:
    """Negative values and values of 2**63 or more cannot be encoded."""
    with pytest.raises(ValueError, match=r"^uvarint must be non-negative, got -1$"):
        encode_uvarint(-1)
    with pytest.raises(ValueError, match=r"^uvarint must be below 2\*\*63"):
        encode_uvarint(1 << 63)


def test_uvarint_too_long() -> None:
    """A tenth varint byte is refused without waiting for the varint to end."""
    with pytest.raises(FramingError, match=r"^varint longer than 9 bytes$"):
        decode_uvarint(b"\x80" * MAX_VARINT_LEN)


@pytest.mark.parametrize("encoded", [b"\x80\x00", b"\x81\x00", b"\xff\x80\x00"])
def test_uvarint_non_minimal(encoded: bytes) -> None:
    """A trailing zero group makes the varint non-minimal."""
    with pytest.raises(FramingError, match=r"^non-minimal varint"):
        decode_uvarint(encoded)


def test_frame_whole() -> None:
    """One frame fed at once comes out once, then the decoder needs more data."""
    decoder = FrameDecoder()
    decoder.feed(encode_frame(b"hello"))
    assert decoder.next_frame() == b"hello"
    assert decoder.next_frame() is None
    assert decoder.buffered == 0


def test_frame_byte_by_byte() -> None:
    """Fed one byte at a time, a frame appears exactly when its last byte arrives."""
    payload = bytes(range(256)) * 2  # 512 bytes: a 2-byte length prefix
    wire = encode_frame(payload)
    decoder = FrameDecoder()
    for i, byte in enumerate(wire):
        decoder.feed(bytes([byte]))
        frame = decoder.next_frame()
        if i < len(wire) - 1:
            assert frame is None
        else:
            assert frame == payload


def test_many_frames_in_one_chunk_with_trailing_bytes() -> None:
    """Frames sharing a chunk come out in order; a partial frame after them stays buffered."""
    payloads = [b"", b"a", b"bc" * 100, b"\x00" * 200]
    partial = encode_frame(b"rest")[:3]
    decoder = FrameDecoder()
    decoder.feed(b"".join(encode_frame(p) for p in payloads) + partial)
    out = []
    while (frame := decoder.next_frame()) is not None:
        out.append(frame)
    assert out == payloads
    assert decoder.buffered == len(partial)
    decoder.feed(encode_frame(b"rest")[3:])
    assert decoder.next_frame() == b"rest"


def test_empty_feed_is_harmless() -> None:
    """Feeding b"" changes nothing."""
    decoder = FrameDecoder()
    decoder.feed(b"")
    assert decoder.next_frame() is None


def test_oversize_frame_rejected_from_its_prefix() -> None:
    """A declared length over the maximum fails as soon as the prefix is complete."""
    decoder = FrameDecoder(max_frame_size=10)
    decoder.feed(encode_uvarint(11))
    with pytest.raises(FramingError, match=r"^frame of 11 bytes exceeds the maximum of 10$"):
        decoder.next_frame()


def test_default_maximum_is_four_mib() -> None:
    """The default limit is 4 MiB: exactly that is accepted, one byte more is not."""
    assert MAX_FRAME_SIZE == 4 * 1024 * 1024
    decoder = FrameDecoder()
    decoder.feed(encode_uvarint(MAX_FRAME_SIZE))
    assert decoder.next_frame() is None
    decoder = FrameDecoder()
    decoder.feed(encode_uvarint(MAX_FRAME_SIZE + 1))
    with pytest.raises(FramingError, match=r"exceeds the maximum of 4194304$"):
        decoder.next_frame()


def test_encode_refuses_oversize() -> None:
    """encode_frame refuses a payload a peer with the same limit would refuse."""
    with pytest.raises(FramingError, match=r"^frame of 5 bytes exceeds the maximum of 4$"):
        encode_frame(b"12345", max_frame_size=4)


def test_errors_are_sticky() -> None:
    """After a bad varint every later call fails the same way."""
    decoder = FrameDecoder()
    decoder.feed(b"\x80\x00")
    with pytest.raises(FramingError, match=r"^non-minimal varint"):
        decoder.next_frame()
    with pytest.raises(FramingError, match=r"^non-minimal varint"):
        decoder.next_frame()
    with pytest.raises(FramingError, match=r"^non-minimal varint"):
        decoder.feed(encode_frame(b"ok"))


def test_bad_varint_in_stream() -> None:
    """A too-long length prefix after a good frame: the good frame first, then the error."""
    decoder = FrameDecoder()
    decoder.feed(encode_frame(b"good") + b"\xff" * 10)
    assert decoder.next_frame() == b"good"
    with pytest.raises(FramingError, match=r"^varint longer than 9 bytes$"):
        decoder.next_frame()


def test_framing_imports_no_io_libraries() -> None:
    """Importing protocols.framing pulls in neither trio nor libp2p."""
    code = (
        "import sys, protocols.framing\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('trio', 'libp2p'))\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
