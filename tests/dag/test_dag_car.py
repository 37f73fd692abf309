"""CARv1 (dag/car.py) against the spec fixture and our sample state, plus every refusal; DAG-PB (dag/pb.py)."""

from __future__ import annotations

import base64
import io
import json
from pathlib import Path

import pytest

from dag import cbor
from dag.block import Block
from dag.car import MAX_SECTION, CarError, car_header, read_car, write_car
from dag.cid import CID, DAG_PB, encode_varint
from dag.head import HEAD_TAG, InvalidHead, verify_chain, verify_head
from dag.pb import DagPbError
from dag.pb import decode as pb_decode
from dag.store import MemoryBlockStore, walk

CAR_FIXTURES = Path(__file__).resolve().parents[2].parent / "shared" / "fixtures" / "ipld" / "car"
BASIC = (CAR_FIXTURES / "carv1-basic.car").read_bytes()
BASIC_JSON = json.loads((CAR_FIXTURES / "carv1-basic.json").read_text())
SAMPLE = (CAR_FIXTURES / "p2pico-sample-state.car").read_bytes()


def from_dag_json(v: object) -> object:
    """The fixture's DAG-JSON: {"/": "cid"} is a link, {"/": {"bytes": b64}} bytes."""
    if isinstance(v, dict):
        if set(v) == {"/"}:
            inner = v["/"]
            if isinstance(inner, str):
                return CID.parse(inner)
            return base64.b64decode(inner["bytes"] + "=" * (-len(inner["bytes"]) % 4))
        return {k: from_dag_json(x) for k, x in v.items()}
    if isinstance(v, list):
        return [from_dag_json(x) for x in v]
    return v


def read(data: bytes) -> tuple[list[CID], list[Block]]:
    roots, blocks = read_car(io.BytesIO(data))
    return roots, list(blocks)


def car_error(data: bytes) -> CarError:
    with pytest.raises(CarError) as info:
        read(data)
    return info.value


def test_spec_fixture_reads_back_as_described() -> None:
    roots, blocks = read(BASIC)
    assert roots == [CID.parse(r["/"]) for r in BASIC_JSON["header"]["roots"]]
    described = BASIC_JSON["blocks"]
    assert [str(b.cid) for b in blocks] == [d["cid"]["/"] for d in described]
    assert {b.cid.version for b in blocks} == {0, 1}  # CIDv0 sections too
    for block, d in zip(blocks, described, strict=True):
        assert len(block.data) == d["blockLength"]
        assert block.data == BASIC[d["blockOffset"] : d["blockOffset"] + d["blockLength"]]
        assert block.value == from_dag_json(d["content"])


def test_spec_fixture_rewrites_byte_identical() -> None:
    roots, blocks = read(BASIC)
    out = io.BytesIO()
    assert write_car(out, roots, blocks) == len(BASIC)
    assert out.getvalue() == BASIC


def test_sample_state_fixture() -> None:
    """The research probe's sample: 13 blocks, 2 signed heads, 5 rulesets, root = newest head."""
    [root], blocks = read(SAMPLE)
    assert len(blocks) == 13
    store = MemoryBlockStore()
    store.put_many(blocks)
    assert {b.cid for b in walk(store, root)} == {b.cid for b in blocks}
    newest = verify_head(store.get_block(root))  # type: ignore[arg-type]
    assert newest.seq == 2
    bodies = [b.value[1][HEAD_TAG] for b in blocks if isinstance(b.value, list)]  # type: ignore[index]
    assert sorted(body["seq"] for body in bodies) == [1, 2]
    assert {body["pico"] for body in bodies} == {newest.pico}
    state = store.get_block(newest.state).value  # type: ignore[union-attr]
    assert len(store.get_block(state["rulesets"]).value) == 5  # type: ignore[index, union-attr, arg-type]
    # The probe numbered its first head 1, with no prev; our chains start at genesis seq 0.
    with pytest.raises(InvalidHead, match=r"exactly the genesis head .*\(seq 1\)$"):
        verify_chain(store.get_block, root)


def test_round_trip() -> None:
    blocks = [Block.encode({"n": i, "raw": Block.raw(b"x" * i).cid}) for i in range(20)]
    blocks += [Block.raw(b"x" * i) for i in range(20)]
    blocks += [Block.encode({"big": b"\x00" * 300_000})]
    roots = [blocks[0].cid, blocks[-1].cid]
    out = io.BytesIO()
    n = write_car(out, roots, blocks)
    assert n == len(out.getvalue())
    assert read(out.getvalue()) == (roots, blocks)
    assert read(car_header([])) == ([], [])


def section_offsets() -> list[int]:
    return [d["offset"] for d in BASIC_JSON["blocks"]]


def test_corrupted_block_names_its_section() -> None:
    d = BASIC_JSON["blocks"][2]
    data = bytearray(BASIC)
    data[d["blockOffset"]] ^= 1
    e = car_error(bytes(data))
    assert e.offset == d["offset"] == 325
    assert str(e).startswith(
        f"CAR byte 325: block does not match its CID: block bytes do not match CID {d['cid']['/']}"
    )


def test_truncated_inputs() -> None:
    offsets = section_offsets()
    e = car_error(BASIC[: offsets[3] + 10])
    assert (e.offset, e.reason) == (offsets[3], "truncated section: 8 of 128 bytes")
    e = car_error(BASIC[:50])
    assert e.offset == 0
    assert e.reason.startswith("bad header: truncated")
    e = car_error(b"")
    assert e.reason == "bad header: the input is empty"
    e = car_error(BASIC + b"\xff")
    assert (e.offset, e.reason) == (len(BASIC), "truncated section length")
    # Cut exactly between sections: a shorter, valid CAR.
    _roots, blocks = read(BASIC[: offsets[3]])
    assert len(blocks) == 3


def test_bad_headers() -> None:
    assert car_error(car_header([])[:1] + b"\xa0").reason == "bad header: truncated: 1 of 17 bytes"
    v2 = cbor.encode({"version": 2})
    assert car_error(encode_varint(len(v2)) + v2).reason == "unsupported CAR version 2 (only 1)"
    not_cbor = b"\xa2\x01\x02"
    e = car_error(encode_varint(len(not_cbor)) + not_cbor)
    assert e.offset == 1
    assert e.reason.startswith("bad header: not DAG-CBOR")
    bad_roots = cbor.encode({"roots": ["x"], "version": 1})
    e = car_error(encode_varint(len(bad_roots)) + bad_roots)
    assert e.reason == "bad header: roots must be a list of CIDs"
    e = car_error(encode_varint(0))
    assert e.reason.startswith("bad header: length 0")


def test_bad_sections() -> None:
    head = car_header([])
    at = len(head)
    e = car_error(head + encode_varint(MAX_SECTION + 1))
    assert (e.offset, e.reason) == (
        at,
        f"section of {MAX_SECTION + 1} bytes is over the 4194304-byte maximum",
    )
    assert car_error(head + b"\x00").reason == "empty section"
    e = car_error(head + b"\x04\x02\x71\x12\x20")
    assert (e.offset, e.reason) == (at, "CID does not parse: CID of 36 bytes in a section of 4")
    block = Block.encode({"a": 1})
    section = b"\x02" + block.cid.buffer[1:] + block.data  # CID version 2
    e = car_error(head + encode_varint(len(section)) + section)
    assert e.reason == "CID does not parse: unsupported CID version 2"
    unsupported = CID.v1(0x0129, block.cid.multihash)  # dag-json: not a codec we verify
    section = unsupported.buffer + block.data
    e = car_error(head + encode_varint(len(section)) + section)
    assert e.reason.startswith(f"block {unsupported} is invalid: unsupported codec 0x129")


def test_dag_pb() -> None:
    assert Block.decode(CID.parse("QmdfTbBqBPQ7VNxZEYEj14VmRuZBkqFbiwReogJgS1zR1n"), b"").value == {
        "Links": []
    }
    target = CID.of(b"t")
    link = b"\x0a" + bytes([len(target.buffer)]) + target.buffer + b"\x12\x01a\x18\x05"
    node = b"\x12" + bytes([len(link)]) + link + b"\x0a\x02hi"
    block = Block.decode(CID.v1(DAG_PB, CID.of(node).multihash), node)
    assert block.value == {"Links": [{"Hash": target, "Name": "a", "Tsize": 5}], "Data": b"hi"}
    assert block.links() == [target]
    # Data before Links is accepted (IPFS data exists in both orders).
    assert pb_decode(b"\x0a\x02hi" + node[: 2 + len(link)])["Data"] == b"hi"
    refused = {
        b"\x0a\x00\x0a\x00": "Data appears twice",
        b"\x1a\x00": "unexpected field 3",
        b"\x12\x02\x12\x00": "no Hash",
        b"\x12\x05\x12\x01a\x0a\x00": "field 1 after field 2",
        b"\x12\x02\x0a\x01": "length 1 runs past the end",
        b"\x12\x03\x0a\x01\x00": "Hash is not a CID",
    }
    for data, reason in refused.items():
        with pytest.raises(DagPbError, match=reason):
            pb_decode(data)
