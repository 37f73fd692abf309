import dataclasses
import itertools
from unittest import mock

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dag import cbor
from dag.block import Block, BlockMismatchError
from dag.cbor import DagCborError
from dag.cid import CID, RAW
from dag.did import Keypair, verify
from dag.head import (
    HEAD_TAG,
    VARSIG_ED25519_DAG_CBOR,
    Head,
    InvalidHead,
    detect_fork,
    head_payload,
    sign_head,
    verify_chain,
    verify_head,
)

KP = Keypair.from_seed(bytes(32))
OTHER = Keypair.from_seed(bytes(31) + b"\x01")
STATE = CID.of(b"state")


def test_sign_and_verify() -> None:
    block = sign_head(KP, seq=0, prev=None, state=STATE, ts=1_700_000_000_000)
    head = verify_head(block)
    assert head == Head(
        pico=KP.did, seq=0, prev=None, state=STATE, ts=1_700_000_000_000, cause=None, cid=block.cid
    )
    value = block.value
    assert isinstance(value, list)
    sig, payload = value
    assert payload["h"] == VARSIG_ED25519_DAG_CBOR == bytes.fromhex("3401ed01ed011371")
    assert set(payload[HEAD_TAG]) == {"pico", "seq", "prev", "state", "ts", "cause"}
    assert verify(KP.public_key, cbor.encode(payload), sig)  # signature is over DAG-CBOR(payload)
    assert block.links() == [STATE]
    with pytest.raises(dataclasses.FrozenInstanceError):
        head.seq = 1  # type: ignore[misc]


def test_deterministic() -> None:
    a = sign_head(KP, seq=1, prev=STATE, state=STATE, ts=5, cause=STATE)
    assert a.cid == sign_head(KP, seq=1, prev=STATE, state=STATE, ts=5, cause=STATE).cid


def _resign(
    body_changes: dict[str, object], *, key: Keypair = KP, header: bytes = VARSIG_ED25519_DAG_CBOR
) -> Block:
    body = {
        "pico": KP.did,
        "seq": 0,
        "prev": None,
        "state": STATE,
        "ts": 1,
        "cause": None,
        **body_changes,
    }
    payload = {"h": header, HEAD_TAG: body}
    return Block.encode([key.sign(cbor.encode(payload)), payload])


@pytest.mark.parametrize(
    ("block", "message"),
    [
        (_resign({}, key=OTHER), "signature does not verify for did:key:z6MkiTBz"),
        (_resign({"pico": OTHER.did}), "signature does not verify for did:key:z6Mkjchh"),
        (_resign({}, header=b"\x34\x01"), "unsupported varsig header"),
        (_resign({"seq": -1}), "seq must be an int in 0..2\\*\\*53-1, got -1"),
        (_resign({"seq": True}), "seq must be an int"),
        (_resign({"ts": 2**53}), "ts must be an int"),
        (_resign({"seq": 1}), "exactly the genesis head"),
        (_resign({"state": "bafy"}), "state must be a CID, got 'bafy'"),
        (_resign({"pico": "did:web:x"}), "pico is not an Ed25519 did:key: methodNotSupported"),
        (_resign({"extra": 1}), "body must be a map with exactly the keys"),
        (Block.encode({"not": "a head"}), "must be a 2-element array"),
        (Block.encode([b"x", {}]), "signature must be 64 bytes"),
        (Block.encode([bytes(64), {"h": b""}]), "payload must be a map with exactly the keys"),
        (Block.raw(b"raw"), "codec must be dag-cbor"),
    ],
)
def test_invalid_heads(block: Block, message: str) -> None:
    with pytest.raises(InvalidHead, match=f"^head {block.cid}: .*{message}"):
        verify_head(block)


def test_tampered_bytes_rejected() -> None:
    block = sign_head(KP, seq=0, prev=None, state=STATE, ts=7)
    for i in range(len(block.data)):
        for bit in (0x01, 0x80):
            data = bytearray(block.data)
            data[i] ^= bit
            # same CID: the bytes no longer match it
            with pytest.raises(BlockMismatchError):
                Block.decode(block.cid, bytes(data))
            # re-addressed: either not DAG-CBOR any more, or not a valid head
            with pytest.raises((DagCborError, InvalidHead)):
                verify_head(Block.decode(CID.of(bytes(data)), bytes(data)))


def test_sign_head_rejects_bad_arguments() -> None:
    with pytest.raises(InvalidHead, match="exactly the genesis head"):
        sign_head(KP, seq=0, prev=STATE, state=STATE, ts=0)
    with pytest.raises(InvalidHead, match="seq must be an int"):
        sign_head(KP, seq=2**53, prev=STATE, state=STATE, ts=0)
    with pytest.raises(InvalidHead, match="state must be a CID"):
        sign_head(KP, seq=0, prev=None, state="x", ts=0)  # type: ignore[arg-type]
    bad: list[tuple[dict[str, object], str]] = [
        ({"seq": 1, "prev": None}, "exactly the genesis head"),
        ({"seq": True}, "seq must be an int"),
        ({"seq": -1}, "seq must be an int"),
        ({"seq": 1.0}, "seq must be an int"),
        ({"ts": -1}, "ts must be an int"),
        ({"ts": 2**53}, "ts must be an int"),
        ({"ts": "1"}, "ts must be an int"),
        ({"seq": 3, "prev": "x"}, "prev must be a CID"),
        ({"cause": b"x"}, "cause must be a CID"),
        ({"state": None}, "state must be a CID"),
    ]
    for change, message in bad:  # each check (one fast expression, then the one that says)
        args: dict[str, object] = {"seq": 2, "prev": STATE, "state": STATE, "ts": 5}
        args |= change
        with pytest.raises(InvalidHead, match=message):
            sign_head(KP, **args)  # type: ignore[arg-type]
    for seq, prev, cause in ((0, None, None), (1, STATE, STATE), (2**53 - 1, STATE, None)):
        head = verify_head(
            sign_head(KP, seq=seq, prev=prev, state=STATE, ts=2**53 - 1, cause=cause)
        )
        assert (head.seq, head.prev, head.cause, head.ts) == (seq, prev, cause, 2**53 - 1)


def _chain(n: int, key: Keypair = KP) -> list[Block]:
    blocks: list[Block] = []
    for seq in range(n):
        prev = blocks[-1].cid if blocks else None
        blocks.append(sign_head(key, seq=seq, prev=prev, state=CID.of(b"%d" % seq), ts=1000 + seq))
    return blocks


def test_verify_chain() -> None:
    blocks = _chain(5)
    by_cid = {b.cid: b for b in blocks}
    heads = verify_chain(by_cid.get, blocks[-1].cid)
    assert [h.seq for h in heads] == [0, 1, 2, 3, 4]
    assert [h.cid for h in heads] == [b.cid for b in blocks]
    assert heads[0].prev is None
    assert all(h.prev == p.cid for p, h in itertools.pairwise(heads))


def test_verify_chain_missing_block() -> None:
    blocks = _chain(5)
    by_cid = {b.cid: b for b in blocks if b is not blocks[2]}
    with pytest.raises(InvalidHead, match=f"^missing head block {blocks[2].cid} \\(seq 2\\)$"):
        verify_chain(by_cid.get, blocks[-1].cid)
    with pytest.raises(InvalidHead, match=r"missing head block .* \(the newest head\)"):
        verify_chain(lambda cid: None, blocks[-1].cid)


def test_verify_chain_broken() -> None:
    blocks = _chain(3)
    skip = sign_head(KP, seq=3 + 1, prev=blocks[1].cid, state=STATE, ts=9)  # seq 4 -> seq 1
    by_cid = {b.cid: b for b in [*blocks, skip]}
    with pytest.raises(
        InvalidHead,
        match=f"broken chain: head {skip.cid} \\(seq 4\\) links to {blocks[1].cid} with seq 1, expected 3",
    ):
        verify_chain(by_cid.get, skip.cid)


def test_verify_chain_other_signer() -> None:
    mine = _chain(2)
    theirs = sign_head(OTHER, seq=2, prev=mine[1].cid, state=STATE, ts=9)
    by_cid = {b.cid: b for b in [*mine, theirs]}
    with pytest.raises(
        InvalidHead,
        match=f"is signed by {KP.did}, but head {theirs.cid} \\(seq 2\\) by {OTHER.did}",
    ):
        verify_chain(by_cid.get, theirs.cid)


def test_verify_chain_wrong_block_returned() -> None:
    blocks = _chain(2)
    with pytest.raises(InvalidHead, match="but got block"):
        verify_chain(lambda cid: blocks[0], blocks[1].cid)


def test_detect_fork() -> None:
    g = sign_head(KP, seq=0, prev=None, state=STATE, ts=1)
    a = verify_head(sign_head(KP, seq=1, prev=g.cid, state=CID.of(b"a"), ts=2))
    b = verify_head(sign_head(KP, seq=1, prev=g.cid, state=CID.of(b"b"), ts=2))
    assert detect_fork(a, b)
    assert detect_fork(b, a)
    assert not detect_fork(a, a)
    assert not detect_fork(a, verify_head(g))
    c = verify_head(sign_head(OTHER, seq=1, prev=g.cid, state=CID.of(b"a"), ts=2))
    assert not detect_fork(a, c)


_cids = st.sampled_from(
    [
        CID.of(b"a"),
        CID.of(b"b", RAW),
        CID.parse("QmdfTbBqBPQ7VNxZEYEj14VmRuZBkqFbiwReogJgS1zR1n"),  # v0: 34 bytes
        CID.v1(0x71, b"\x00\x03abc"),  # identity multihash: not 36 bytes
    ]
)


@settings(max_examples=300)
@given(
    did=st.text(max_size=300),
    seq=st.integers(0, 2**53 - 1) | st.sampled_from([23, 24, 255, 256, 65535, 65536, 2**32]),
    ts=st.integers(0, 2**53 - 1),
    prev=st.none() | _cids,
    state=_cids,
    cause=st.none() | _cids,
)
def test_the_spliced_payload_is_the_encoded_payload(
    did: str, seq: int, ts: int, prev: CID | None, state: CID, cause: CID | None
) -> None:
    body = {"pico": did, "seq": seq, "prev": prev, "state": state, "ts": ts, "cause": cause}
    want = cbor._encode_py({"h": VARSIG_ED25519_DAG_CBOR, HEAD_TAG: body})
    for native in {cbor.NATIVE, False}:  # encoded in C (where built), spliced in Python
        with mock.patch.object(cbor, "NATIVE", native):
            assert head_payload(did, seq=seq, prev=prev, state=state, ts=ts, cause=cause) == want


def test_a_signed_head_is_the_block_encode_of_its_envelope() -> None:
    prev = CID.of(b"prev")
    block = sign_head(KP, seq=7, prev=prev, state=STATE, ts=1_700_000_000_123, cause=STATE)
    payload = block.value[1]  # type: ignore[index]
    assert block.data == Block.encode([KP.sign(cbor.encode(payload)), payload]).data
    assert verify_head(block).prev == prev
