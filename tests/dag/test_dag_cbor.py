import math
import struct

import cbor2
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dag import _cbor_strict
from dag.cbor import (
    MAX_DEPTH,
    DagCborError,
    decode,
    decode_trusted,
    encode,
    encode_cid,
    encode_str,
    encode_uint,
)
from dag.cid import CID, RAW

LINK = CID.of(b"link")

# hex input -> exact error message
DECODE_ERRORS = {
    "non-minimal int": ("1801", "at offset 0: non-minimal integer encoding (1 written in 2 bytes)"),
    "non-minimal length": (
        "780161",
        "at offset 0: non-minimal length encoding (1 written in 2 bytes)",
    ),
    "half float": ("f93e00", "at offset 0: float must be 64-bit, found 16-bit"),
    "single float": ("fa3fc00000", "at offset 0: float must be 64-bit, found 32-bit"),
    "unsorted keys": (
        "a2616201616102",
        'at offset 4: map keys out of order: "a" after "b" (keys sort by byte length, then bytewise)',
    ),
    "longer key first": (
        "a262616101616202",
        'at offset 5: map keys out of order: "b" after "aa" (keys sort by byte length, then bytewise)',
    ),
    "duplicate key": ("a2616101616102", 'at offset 4: duplicate map key "a"'),
    "int key": ("a10102", "at offset 1: map key must be a text string, found unsigned int"),
    "tag 1": (
        "c11a5f5e1000",
        "at offset 0: tag 1 is not allowed (DAG-CBOR only allows tag 42, for CIDs)",
    ),
    "bignum": (
        "c249010000000000000000",
        "at offset 0: tag 2 is not allowed (DAG-CBOR only allows tag 42, for CIDs)",
    ),
    "tag 42 as d9002a": (
        "d9002a4100",
        "at offset 0: non-minimal tag encoding (42 written in 3 bytes)",
    ),
    "tag 42 without 0x00": (
        "d82a582401711220" + "00" * 32,
        "at offset 2: CID in tag 42 must start with the 0x00 multibase prefix",
    ),
    "tag 42 holding text": (
        "d82a6161",
        "at offset 2: tag 42 must hold a byte string, found text string",
    ),
    "undefined": ("f7", "at offset 0: undefined is not allowed"),
    "simple value": ("f0", "at offset 0: simple value 16 is not allowed"),
    "NaN": ("fb7ff8000000000000", "at offset 0: float NaN is not allowed"),
    "-Infinity in a map": (
        "a16161fbfff0000000000000",
        "at offset 3, $.a: float -Infinity is not allowed",
    ),
    "trailing byte": ("0101", "at offset 1: 1 trailing byte after the value"),
    "two objects": ("01820102", "at offset 1: 3 trailing bytes after the value"),
    "truncated": ("8301", "at offset 2, $[1]: unexpected end of data: expected a value"),
    "truncated string": (
        "6361",
        "at offset 0: unexpected end of data: need 3 bytes at offset 1, only 1 left",
    ),
    "invalid utf-8": (
        "8162c328",
        "at offset 1, $[0]: invalid UTF-8 in string: invalid continuation byte at string byte 0",
    ),
    "indefinite array": ("9f01ff", "at offset 0: indefinite-length array is not allowed"),
    "indefinite string": ("7f6161ff", "at offset 0: indefinite-length text string is not allowed"),
    "break": ("ff", "at offset 0: unexpected break code (0xff)"),
    "reserved ai": ("1c", "at offset 0: invalid additional information 28 for unsigned int"),
    "empty": ("", "at offset 0: unexpected end of data: expected a value"),
    "huge length": (
        "5bffffffffffffffff00",
        "at offset 0: unexpected end of data: need 18446744073709551615 bytes at offset 9, only 1 left",
    ),
    "path with odd key": ("a16461206221f7", 'at offset 6, $["a b!"]: undefined is not allowed'),
}


@pytest.mark.parametrize(("hexdata", "message"), DECODE_ERRORS.values(), ids=list(DECODE_ERRORS))
def test_decode_errors(hexdata: str, message: str) -> None:
    data = bytes.fromhex(hexdata)
    with pytest.raises(DagCborError) as info:
        decode(data)
    assert str(info.value) == message
    assert info.value.offset is not None
    assert 0 <= info.value.offset <= len(data)


def test_error_attributes() -> None:
    with pytest.raises(DagCborError) as info:
        decode(bytes.fromhex("820061") + b"")
    err = info.value
    assert isinstance(err, ValueError)
    assert (err.offset, err.path) == (2, "$[1]")


ENCODE_ERRORS = {
    "nan in list": ({"a": [1, 2, math.nan]}, "at $.a[2]: float NaN is not allowed"),
    "inf": ([math.inf], "at $[0]: float Infinity is not allowed"),
    "too big": (
        {"n": 2**64},
        "at $.n: integer 18446744073709551616 is outside the DAG-CBOR range -2**64 .. 2**64-1",
    ),
    "too small": (
        -(2**64) - 1,
        "at $: integer -18446744073709551617 is outside the DAG-CBOR range -2**64 .. 2**64-1",
    ),
    "int key": ({1: 2}, "at $: map key 1 is int; DAG-CBOR map keys must be str"),
    "set": (
        {"s": {1}},
        "at $.s: cannot encode set: the DAG-CBOR data model is None, bool, int, float, str, bytes, list, dict and CID",
    ),
    "bytearray": (
        [bytearray(b"x")],
        "at $[0]: cannot encode bytearray: the DAG-CBOR data model is None, bool, int, float, str, bytes, list, dict and CID",
    ),
    "surrogate": (
        {"x y": ["\ud800"]},
        'at $["x y"][0]: string is not valid Unicode text (surrogates not allowed)',
    ),
}


@pytest.mark.parametrize(("value", "message"), ENCODE_ERRORS.values(), ids=list(ENCODE_ERRORS))
def test_encode_errors(value: object, message: str) -> None:
    with pytest.raises(DagCborError) as info:
        encode(value)
    assert str(info.value) == message


def test_encode_cyclic_value() -> None:
    cyclic: list[object] = []
    cyclic.append(cyclic)
    with pytest.raises(
        DagCborError, match=r"nesting deeper than 256 levels \(is the value cyclic\?\)"
    ):
        encode(cyclic)


def test_depth_limit_both_ways() -> None:
    deep: object = 0
    for _ in range(MAX_DEPTH):
        deep = [deep]
    data = encode(deep)
    assert decode(data) == deep
    with pytest.raises(DagCborError, match="nesting deeper than 256 levels"):
        encode([deep])
    with pytest.raises(
        DagCborError, match=r"^at offset 256, \$(\[0\]){256}: nesting deeper than 256 levels$"
    ):
        decode(b"\x81" + data)


def test_exact_encodings() -> None:
    assert encode(True) == b"\xf5"
    assert encode(False) == b"\xf4"
    assert encode(None) == b"\xf6"
    assert encode(1.0) == bytes.fromhex("fb3ff0000000000000")  # faithful: no float -> int
    assert encode((1, "a")) == encode([1, "a"]) == bytes.fromhex("82016161")
    assert encode({"b": 1, "aa": 2, "a": 3}) == bytes.fromhex("a361610361620162616102")
    assert encode(2**64 - 1) == bytes.fromhex("1bffffffffffffffff")
    assert encode(-(2**64)) == bytes.fromhex("3bffffffffffffffff")
    assert encode(LINK) == bytes.fromhex("d82a582500") + LINK.buffer
    assert decode(encode({"l": [LINK, CID.of(b"r", RAW)]})) == {"l": [LINK, CID.of(b"r", RAW)]}
    assert type(decode(encode(True))) is bool


def test_decode_accepts_bytes_like() -> None:
    assert decode(bytearray(b"\x01")) == 1
    assert decode(memoryview(b"\x82\x01\x02")) == [1, 2]


# -- properties --------------------------------------------------------------------------------

cids = st.binary(max_size=8).map(CID.of) | st.binary(max_size=8).map(lambda b: CID.of(b, RAW))
scalars = (
    st.none()
    | st.booleans()
    | st.integers(-(2**64), 2**64 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text()
    | st.binary()
    | cids
)
values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=5), inner, max_size=5)
    ),
    max_leaves=30,
)


def _cbor2_oracle(value: object) -> bytes:
    """cbor2's canonical mode with 64-bit floats and tag 42: an independent DAG-CBOR encoder."""

    def f64(enc: cbor2.CBOREncoder, v: float) -> None:
        enc.write(struct.pack(">Bd", 0xFB, v))

    def link(enc: cbor2.CBOREncoder, c: CID) -> None:
        enc.encode(cbor2.CBORTag(42, b"\x00" + c.buffer))

    return cbor2.dumps(value, canonical=True, encoders={float: f64, CID: link})


@given(values)
def test_round_trip(value: object) -> None:
    data = encode(value)
    assert data == _cbor2_oracle(value)
    assert decode(data) == value
    assert encode(decode(data)) == data


def _check_bytes(data: bytes) -> None:
    try:
        value = decode(data)
    except DagCborError as exc:
        err = exc
    else:
        assert encode(value) == data
        assert _cbor_strict.read(data) == value
        return
    assert err.offset is None or 0 <= err.offset <= len(data)
    with pytest.raises(DagCborError):
        _cbor_strict.read(data)  # the slow reader agrees


@settings(max_examples=500)
@given(st.binary(max_size=40))
def test_any_bytes_decode_or_dagcbor_error(data: bytes) -> None:
    _check_bytes(data)


@settings(max_examples=500, suppress_health_check=[HealthCheck.too_slow])
@given(values, st.data())
def test_mutated_encodings(value: object, draw: st.DataObject) -> None:
    data = bytearray(encode(value))
    op = draw.draw(st.sampled_from(["flip", "cut", "insert"]))
    i = draw.draw(st.integers(0, len(data) - 1))
    if op == "flip":
        data[i] ^= 1 << draw.draw(st.integers(0, 7))
    elif op == "cut":
        del data[i:]
    else:
        data.insert(i, draw.draw(st.integers(0, 255)))
    _check_bytes(bytes(data))


@given(values)
def test_decode_trusted_agrees_with_decode_on_canonical_bytes(value: object) -> None:
    data = encode(value)
    assert decode_trusted(data) == decode(data)
    assert encode(decode_trusted(data)) == data


@given(st.text(), st.integers(0, 2**64 - 1), cids)
def test_item_encoders_give_the_bytes_encode_gives(s: str, n: int, cid: CID) -> None:
    assert encode_str(s) == encode(s)
    assert encode_uint(n) == encode(n)
    assert encode_cid(cid) == encode(cid)


def test_item_encoders_take_any_cid_and_refuse_negative_ints() -> None:
    v0 = CID.parse("QmdfTbBqBPQ7VNxZEYEj14VmRuZBkqFbiwReogJgS1zR1n")  # 34 bytes
    identity = CID.v1(0x71, b"\x00\x03abc")  # 6 bytes
    assert encode_cid(v0) == encode(v0)
    assert encode_cid(identity) == encode(identity)
    with pytest.raises(ValueError, match="non-negative"):
        encode_uint(-1)
