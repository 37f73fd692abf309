"""protocols.bitswap: the Bitswap 1.2.0 protobuf codec, answers to wantlists, fetch sessions."""

from __future__ import annotations

import contextlib
import subprocess
import sys
from collections.abc import Callable

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from dag.block import Block
from dag.cid import CID, DAG_CBOR, DAG_PB, RAW
from protocols import bitswap as codec
from protocols.bitswap import (
    MAX_BLOCK_SIZE,
    MAX_CID_SIZE,
    MAX_MESSAGE_SIZE,
    MAX_WANTLIST_ENTRIES,
    BitswapError,
    BlockPresence,
    FetchSession,
    Message,
    PayloadBlock,
    PresenceType,
    WantEntry,
    WantType,
    answer,
    cid_from_payload,
    cid_prefix,
    decode,
    encode,
)

HELLO = Block.raw(b"hello")
NODE = Block.encode({"a": 1, "link": HELLO.cid})


def test_known_bytes_built_by_hand_from_the_spec() -> None:
    """Every field of the 1.2.0 .proto, written out key by key (tag = field << 3 | wire type)."""
    cid = HELLO.cid.buffer
    assert len(cid) == 36
    entry = (
        b"\x0a\x24" + cid  # block = 1, length-delimited, 36 bytes
        + b"\x10\x07"  # priority = 2, varint 7
        + b"\x18\x01"  # cancel = 3, true
        + b"\x20\x01"  # wantType = 4, Have
        + b"\x28\x01"  # sendDontHave = 5, true
    )  # fmt: skip
    wantlist = b"\x0a" + bytes([len(entry)]) + entry + b"\x10\x01"  # entries = 1; full = 2
    block = (
        b"\x0a\x04\x01\x55\x12\x20" + b"\x12\x05hello"
    )  # prefix = 1 (v1 raw sha2-256/32); data = 2
    presence = b"\x0a\x24" + cid + b"\x10\x01"  # cid = 1; type = 2, DontHave
    data = (
        b"\x0a" + bytes([len(wantlist)]) + wantlist  # wantlist = 1
        + b"\x1a" + bytes([len(block)]) + block  # payload = 3
        + b"\x22" + bytes([len(presence)]) + presence  # blockPresences = 4
        + b"\x28\xac\x02"  # pendingBytes = 5, 300
    )  # fmt: skip
    expected = Message(
        entries=(WantEntry(HELLO.cid, 7, True, WantType.HAVE, True),),
        full=True,
        payload=(PayloadBlock(b"\x01\x55\x12\x20", b"hello"),),
        presences=(BlockPresence(HELLO.cid, PresenceType.DONT_HAVE),),
        pending_bytes=300,
    )
    assert decode(data) == expected
    assert encode(expected) == data
    assert cid_from_payload(expected.payload[0]) == HELLO.cid


def test_empty_message_and_defaults() -> None:
    assert encode(Message()) == b""
    assert decode(b"") == Message()
    # proto3 defaults are left out: a want-block entry with priority 0 is just its CID
    entry = WantEntry(NODE.cid, priority=0)
    assert encode(Message(entries=(entry,))) == b"\x0a\x28\x0a\x26\x0a\x24" + NODE.cid.buffer


def test_negative_int32_uses_ten_bytes_and_round_trips() -> None:
    message = Message(entries=(WantEntry(NODE.cid, priority=-1),), pending_bytes=-(1 << 31))
    data = encode(message)
    assert b"\x10" + b"\xff" * 9 + b"\x01" in data
    assert decode(data) == message
    with pytest.raises(ValueError, match="int32"):
        encode(Message(pending_bytes=1 << 31))


def test_unknown_fields_are_skipped() -> None:
    """Fields a newer peer might add, in every wire type, do not disturb the known ones."""
    unknown = (
        b"\x30\x05"  # field 6, varint
        + b"\x39" + b"\x00" * 8  # field 7, 64-bit
        + b"\x42\x03abc"  # field 8, length-delimited
        + b"\x4d" + b"\x00" * 4  # field 9, 32-bit
    )  # fmt: skip
    data = unknown + encode(Message(pending_bytes=5))
    assert decode(data) == Message(pending_bytes=5)


def test_repeated_wantlist_fields_merge() -> None:
    one = encode(Message(entries=(WantEntry(HELLO.cid),)))
    two = encode(Message(entries=(WantEntry(NODE.cid),), full=True))
    assert decode(one + two) == Message(
        entries=(WantEntry(HELLO.cid), WantEntry(NODE.cid)), full=True
    )


def test_legacy_blocks_field_is_decoded_not_sent() -> None:
    data = b"\x12\x05hello"
    assert decode(data) == Message(legacy_blocks=(b"hello",))
    with pytest.raises(ValueError, match=r"1\.0\.0"):
        encode(decode(data))


def test_cid_prefix() -> None:
    assert cid_prefix(NODE.cid) == b"\x01\x71\x12\x20"
    v0 = CID(0, DAG_PB, b"\x12\x20" + bytes(32))
    assert cid_prefix(v0) == b"\x00\x70\x12\x20"
    assert cid_from_payload(PayloadBlock(cid_prefix(NODE.cid), NODE.data)) == NODE.cid


@pytest.mark.parametrize(
    ("prefix", "match"),
    [
        (b"\x01\x71\x12", "bad CID prefix"),  # only three varints
        (b"\x01\x71\x12\x20\x00", "trailing"),
        (b"\x01\x71\x13\x40", "only sha2-256"),  # sha2-512
        (b"\x00\x71\x12\x20", "CIDv0"),
        (b"\x02\x71\x12\x20", "bad CID prefix"),  # CID version 2
    ],
)
def test_bad_prefixes(prefix: bytes, match: str) -> None:
    with pytest.raises(BitswapError, match=match):
        cid_from_payload(PayloadBlock(prefix, b"x"))


# --- malformed input -----------------------------------------------------------------------

MALFORMED = [
    (b"\x0a", "truncated varint", 1),  # wantlist key, length missing
    (b"\x28\xff", "truncated varint", 1),  # pendingBytes varint cut short
    (b"\x28" + b"\xff" * 10 + b"\x01", "longer than 10", 1),
    (b"\x28" + b"\xff" * 9 + b"\x7f", "exceeds 64 bits", 1),
    (b"\x0a\x05\x00", "runs past the end", 2),
    (b"\x08\x01", "expected length-delimited", 0),  # wantlist as a varint
    (b"\x2a\x00", "expected varint", 0),  # pendingBytes as bytes
    (b"\x0b", "unsupported wire type 3", 0),  # a group
    (b"\x0e", "unsupported wire type 6", 0),
    (b"\x00", "invalid field number 0", 0),
    (b"\x39\x00\x00", "truncated 64-bit", 1),
    (b"\x0a\x04\x0a\x02\x0a\x00", "invalid CID", 6),  # a wantlist entry whose CID is empty
    (b"\x0a\x04\x0a\x02\x0a\x00", "field entry.block", 6),
    (b"\x22\x02\x10\x01", "presence without a CID", None),
    (b"\x22\x24\x0a\x22" + NODE.cid.buffer[:34], "invalid CID", 4),
]


@pytest.mark.parametrize(("data", "match", "offset"), MALFORMED)
def test_malformed_input_raises_bitswap_error(data: bytes, match: str, offset: int | None) -> None:
    with pytest.raises(BitswapError, match=match) as info:
        decode(data)
    if offset is not None:
        assert info.value.offset == offset


def test_bad_enum_values_are_refused() -> None:
    entry = b"\x0a\x24" + HELLO.cid.buffer + b"\x20\x02"  # wantType 2
    data = b"\x0a" + bytes([len(entry) + 2]) + b"\x0a" + bytes([len(entry)]) + entry
    with pytest.raises(BitswapError, match="unknown wantType 2"):
        decode(data)
    presence = b"\x0a\x24" + HELLO.cid.buffer + b"\x10\x05"
    with pytest.raises(BitswapError, match="unknown presence type 5"):
        decode(b"\x22" + bytes([len(presence)]) + presence)


def test_size_limits() -> None:
    with pytest.raises(BitswapError, match="exceeds the maximum"):
        decode(bytes(MAX_MESSAGE_SIZE + 1))
    big_block = b"\x0a\x00" + b"\x12" + _uv(MAX_BLOCK_SIZE + 1) + bytes(MAX_BLOCK_SIZE + 1)
    with pytest.raises(BitswapError, match="block of 2097153 bytes"):
        decode(b"\x1a" + _uv(len(big_block)) + big_block)
    long_cid = b"\x01\x55\x00" + _uv(MAX_CID_SIZE) + bytes(MAX_CID_SIZE)
    entry = b"\x0a" + _uv(len(long_cid)) + long_cid
    wantlist = b"\x0a" + _uv(len(entry)) + entry
    with pytest.raises(BitswapError, match="CID of 133 bytes"):
        decode(b"\x0a" + _uv(len(wantlist)) + wantlist)


def test_entry_count_limit() -> None:
    # every want of real (36-byte) CIDs that fits in a message is taken
    real = b"\x0a\x26\x0a\x24" + HELLO.cid.buffer
    most = real * ((MAX_MESSAGE_SIZE - 8) // len(real))
    assert len(decode(b"\x0a" + _uv(len(most)) + most).entries) == len(most) // len(real)
    # the count cap binds only on tiny (identity-hash) CIDs
    entry = b"\x0a\x07\x0a\x05" + b"\x01\x55\x00\x01\x61"
    wantlist = entry * (MAX_WANTLIST_ENTRIES + 1)
    with pytest.raises(BitswapError, match=f"more than {MAX_WANTLIST_ENTRIES} entries"):
        decode(b"\x0a" + _uv(len(wantlist)) + wantlist)
    ok = entry * MAX_WANTLIST_ENTRIES
    assert len(decode(b"\x0a" + _uv(len(ok)) + ok).entries) == MAX_WANTLIST_ENTRIES
    with pytest.raises(ValueError, match="exceed the maximum"):
        encode(Message(entries=(WantEntry(HELLO.cid),) * (MAX_WANTLIST_ENTRIES + 1)))


def _uv(n: int) -> bytes:
    out = bytearray()
    while n >= 0x80:
        out.append(n & 0x7F | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


# --- round trips and fuzzing ----------------------------------------------------------------

cids = st.builds(
    lambda data, codec: CID.of(data, codec), st.binary(max_size=8), st.sampled_from([RAW, DAG_CBOR])
)
int32 = st.integers(-(1 << 31), (1 << 31) - 1)
messages = st.builds(
    Message,
    entries=st.lists(
        st.builds(
            WantEntry,
            cids,
            int32,
            st.booleans(),
            st.sampled_from(WantType),
            st.booleans(),
        ),
        max_size=5,
    ).map(tuple),
    full=st.booleans(),
    payload=st.lists(
        st.builds(PayloadBlock, st.binary(max_size=8), st.binary(max_size=64)), max_size=3
    ).map(tuple),
    presences=st.lists(
        st.builds(BlockPresence, cids, st.sampled_from(PresenceType)), max_size=3
    ).map(tuple),
    pending_bytes=int32,
)


@given(messages)
def test_round_trip(message: Message) -> None:
    data = encode(message)
    assert decode(data) == message
    assert encode(decode(data)) == data


@given(st.binary(max_size=512))
@settings(max_examples=500)
def test_arbitrary_bytes_give_a_message_or_bitswap_error(data: bytes) -> None:
    with contextlib.suppress(BitswapError):
        decode(data)


@given(messages, st.integers(0, 10_000), st.integers(0, 255))
def test_mutated_messages_give_a_message_or_bitswap_error(
    message: Message, at: int, byte: int
) -> None:
    data = bytearray(encode(message))
    if data:
        data[at % len(data)] = byte
    for candidate in (bytes(data), bytes(data[: at % (len(data) + 1)])):
        with contextlib.suppress(BitswapError):
            decode(candidate)


# The common shapes have their own paths (an entry as encoders write it, a CIDv1 sha2-256
# prefix); the general ones must agree with them wherever they are taken.

field_bytes = st.one_of(
    st.builds(lambda c: b"\x0a" + _uv(len(c.buffer)) + c.buffer, cids),  # block
    st.builds(  # a varint field: priority, cancel, wantType, sendDontHave, or unknown 6..7
        lambda n, v: _uv(n << 3) + _uv(v),
        st.integers(2, 7),
        st.one_of(
            st.integers(0, 300),
            st.integers(0, 1 << 35),
            # two bytes whose second reads as the key of field 3, 4 or 5
            st.sampled_from([0x18 << 7 | 0x05, 0x20 << 7 | 0x7F, 0x28 << 7]),
        ),
    ),
    st.binary(max_size=4),
)


@given(st.lists(field_bytes, max_size=7), st.integers(0, 60), st.integers(0, 255))
# a two-byte priority (0x85 0x18) then bytes that, read a byte off, are the plain shape too
@example([b"\x0a\x24" + HELLO.cid.buffer, b"\x10\x85\x18\x20\x28\x01"], 60, 0)
@settings(max_examples=400)
def test_the_plain_entry_path_agrees_with_the_field_by_field_path(
    fields: list[bytes], at: int, byte: int
) -> None:
    data = damaged(fields, at, byte)
    assert_paths_agree(codec._decode_plain_entry, codec._decode_entry_fields, data)


def damaged(fields: list[bytes], at: int, byte: int) -> bytes:
    """The fields' bytes, with the byte at `at` (if there is one) set to `byte`: now and
    then a damaged byte."""
    data = bytearray(b"".join(fields))
    if data and at < len(data):
        data[at] = byte
    return bytes(data)


def assert_paths_agree(
    plain: Callable[[bytes, int, int], object | None],
    general: Callable[[bytes, int, int], object],
    data: bytes,
) -> None:
    """Where the plain path takes `data` (not None), the general one gives the same value
    or the same error."""

    def outcome(path: Callable[[bytes, int, int], object | None]) -> object:
        try:
            return path(data, 0, len(data))
        except BitswapError as error:
            return str(error)

    taken = outcome(plain)
    if taken is not None:
        assert outcome(general) == taken


@given(
    st.builds(
        WantEntry,
        cids,
        st.integers(0, 127),
        st.booleans(),
        st.sampled_from(WantType),
        st.booleans(),
    )
)
def test_entries_as_we_encode_them_take_the_plain_path(entry: WantEntry) -> None:
    data = codec._encode_entry(entry)
    assert codec._decode_plain_entry(data, 0, len(data)) == entry


payload_fields = st.one_of(
    st.builds(lambda p: b"\x0a" + _uv(len(p)) + p, st.binary(max_size=140)),  # prefix
    st.builds(  # data: lengths of one to four varint bytes, some past the block limit
        lambda d, extra: b"\x12" + _uv(len(d) + extra) + d,
        st.binary(max_size=300),
        st.sampled_from([0, 0, 0, 1 << 7, 1 << 14, MAX_BLOCK_SIZE, MAX_BLOCK_SIZE + 1]),
    ),
    st.builds(lambda n, v: _uv(n << 3) + _uv(v), st.integers(3, 7), st.integers(0, 300)),
    st.binary(max_size=4),
)


@given(st.lists(payload_fields, max_size=4), st.integers(0, 400), st.integers(0, 255))
# a two-byte data length whose second byte is zero (0x80 0x00: a long form of 0)
@example([b"\x0a\x01\x55", b"\x12\x80\x00"], 400, 0)
@settings(max_examples=400)
def test_the_plain_payload_path_agrees_with_the_field_by_field_path(
    fields: list[bytes], at: int, byte: int
) -> None:
    data = damaged(fields, at, byte)
    assert_paths_agree(codec._decode_plain_payload, codec._decode_payload_fields, data)


def test_the_plain_payload_path_needs_no_limit_checks() -> None:
    # it takes prefixes of at most 127 bytes and data of less than 2**21 (see its docstring)
    assert MAX_CID_SIZE >= 0x7F
    assert MAX_BLOCK_SIZE >= (1 << 21) - 1


@pytest.mark.parametrize("size", [0, 1, 127, 128, 16_383, 16_384, 262_144, MAX_BLOCK_SIZE - 1])
def test_blocks_as_we_encode_them_take_the_plain_path(size: int) -> None:
    block = Block.raw(bytes(size))
    item = PayloadBlock(cid_prefix(block.cid), block.data)
    data = codec.encode(Message(payload=(item,)))
    (_, _, _, start, end), *_ = codec._fields(data, 0, len(data), "Message")
    assert codec._decode_plain_payload(data, start, end) == item


@pytest.mark.parametrize("codec_code", [RAW, DAG_CBOR, DAG_PB, 0x0129, 0x7F])
def test_cid_prefix_paths_agree(codec_code: int) -> None:
    data = b"some block"
    cid = CID.of(data, codec_code)
    assert cid_prefix(cid) == codec._prefix_varints(cid)
    assert cid_from_payload(PayloadBlock(cid_prefix(cid), data)) == cid


# --- answer and FetchSession ----------------------------------------------------------------


def test_answer_follows_the_spec() -> None:
    blocks = {HELLO.cid: HELLO.data, NODE.cid: NODE.data}
    absent = CID.of(b"absent", RAW)
    absent_quiet = CID.of(b"quiet", RAW)
    wants = Message(
        entries=(
            WantEntry(HELLO.cid, priority=1),  # want-block, have: the block
            WantEntry(NODE.cid, priority=5, want_type=WantType.HAVE),  # want-have: HAVE
            WantEntry(absent, send_dont_have=True),  # don't have, asked: DONT_HAVE
            WantEntry(absent_quiet),  # don't have, not asked: nothing
            WantEntry(HELLO.cid, cancel=True),  # a cancel: nothing
        )
    )
    replies, missing = answer(wants, blocks.get)
    assert replies == [
        Message(
            payload=(PayloadBlock(b"\x01\x55\x12\x20", b"hello"),),
            presences=(
                BlockPresence(NODE.cid, PresenceType.HAVE),
                BlockPresence(absent, PresenceType.DONT_HAVE),
            ),
        )
    ]
    assert missing == [absent, absent_quiet]


def test_answer_splits_large_replies() -> None:
    big = [Block.raw(bytes([i]) * MAX_BLOCK_SIZE) for i in range(3)]
    store = {b.cid: b.data for b in big}
    replies, _ = answer(Message(entries=tuple(WantEntry(b.cid) for b in big)), store.get)
    assert [len(r.payload) for r in replies] == [1, 1, 1]
    assert all(len(encode(r)) <= MAX_MESSAGE_SIZE for r in replies)


def test_fetch_session() -> None:
    session = FetchSession([HELLO.cid, NODE.cid, HELLO.cid])
    assert session.request().entries == (
        WantEntry(HELLO.cid, 1, False, WantType.BLOCK, True),
        WantEntry(NODE.cid, 1, False, WantType.BLOCK, True),
    )
    tampered = PayloadBlock(cid_prefix(HELLO.cid), b"hellO")
    stranger = Block.raw(b"stranger")
    got = session.receive(
        Message(
            payload=(tampered, PayloadBlock(cid_prefix(stranger.cid), stranger.data)),
            presences=(BlockPresence(NODE.cid, PresenceType.DONT_HAVE),),
        )
    )
    assert got == []
    assert session.unsolicited == 2
    assert session.outstanding == [HELLO.cid]
    got = session.receive(Message(payload=(PayloadBlock(cid_prefix(HELLO.cid), b"hello"),)))
    assert got == [(HELLO.cid, b"hello")]
    assert session.done
    # every want is revoked at the end, the answered and the refused ones too
    assert session.cancel() == Message(
        entries=(WantEntry(HELLO.cid, cancel=True), WantEntry(NODE.cid, cancel=True))
    )


def test_codec_imports_no_trio() -> None:
    code = "import sys, protocols.bitswap; assert 'trio' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)
