"""ipld/codec-fixtures: every positive DAG-CBOR fixture round-trips; every negative one is refused."""

import json
from pathlib import Path

import pytest

from dag.block import Block, iter_links
from dag.cbor import DagCborError, decode, encode
from dag.cid import CID

CODEC_FIXTURES = (
    Path(__file__).resolve().parents[2].parent / "shared" / "fixtures" / "ipld" / "codec-fixtures"
)
POSITIVE = sorted((CODEC_FIXTURES / "fixtures").glob("*/*.dag-cbor"))
NEGATIVE = [
    case
    for f in sorted((CODEC_FIXTURES / "negative-fixtures" / "dag-cbor" / "decode").glob("*.json"))
    for case in json.loads(f.read_text())
]


def test_fixtures_present() -> None:
    assert len(POSITIVE) == 128, f"expected 128 .dag-cbor fixtures under {CODEC_FIXTURES}"
    assert NEGATIVE, f"no negative fixtures under {CODEC_FIXTURES}"


@pytest.mark.parametrize("path", POSITIVE, ids=[p.parent.name for p in POSITIVE])
def test_positive(path: Path) -> None:
    data = path.read_bytes()
    value = decode(data)
    assert encode(value) == data
    assert str(CID.of(data)) == path.stem


@pytest.mark.parametrize("path", POSITIVE, ids=[p.parent.name for p in POSITIVE])
def test_decode_links_is_decode_and_links(path: Path) -> None:
    """A walk's one-parse step gives the block and the links decode() and links() give."""
    data = path.read_bytes()
    cid = CID.of(data)
    block, links = Block.decode_links(cid, data)
    assert block == Block.decode(cid, data)
    assert block.value == decode(data)
    assert links == list(iter_links(decode(data)))


@pytest.mark.parametrize("case", NEGATIVE, ids=[c["name"] for c in NEGATIVE])
def test_negative_as_a_block(case: dict[str, str]) -> None:
    """decode_links refuses what decode() refuses, with the codec's error."""
    data = bytes.fromhex(case["hex"])
    with pytest.raises(DagCborError):
        Block.decode_links(CID.of(data), data)


@pytest.mark.parametrize("case", NEGATIVE, ids=[c["name"] for c in NEGATIVE])
def test_negative(case: dict[str, str]) -> None:
    with pytest.raises(DagCborError) as info:
        decode(bytes.fromhex(case["hex"]))
    if case["name"] == "duplicate map keys":
        assert 'duplicate map key "foo"' in str(info.value)


def test_float_half_fixture_is_64_bit() -> None:
    assert encode(0.5) == bytes.fromhex("fb3fe0000000000000")
