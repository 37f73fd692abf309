"""dag/sealed.py: a pico's export sealed for public pinning, and opened again with the key."""

from __future__ import annotations

import io

import pytest

from dag.block import Block
from dag.car import read_car, write_car
from dag.cid import DAG_CBOR, RAW, SHA2_256
from dag.did import Keypair
from dag.head import sign_head, verify_chain
from dag.sealed import PAD, PAGE_LINKS, SEALED_TAG, SealedError, new_key, seal, unseal
from dag.state import PicoState, RulesetState, state_blocks


def history(n: int = 3) -> tuple[Keypair, Block, list[Block]]:
    """A small pico history: n heads over states holding a phone number."""
    kp = Keypair.generate()
    blocks: dict[object, Block] = {}
    prev = None
    head = None
    for seq in range(n):
        state = PicoState(
            kp.did, (RulesetState("r", "ruleset r { }", {"phone": f"+1-555-01{seq:02d}"}),)
        )
        root, parts = state_blocks(state)
        head = sign_head(kp, seq=seq, prev=prev, state=root.cid, ts=1_700_000_000_000 + seq)
        for b in (*parts, head):
            blocks[b.cid] = b
        prev = head.cid
    assert head is not None
    return kp, head, list(blocks.values())


def as_car(root: object, blocks: tuple[Block, ...] | list[Block]) -> bytes:
    out = io.BytesIO()
    write_car(out, [root], blocks)  # type: ignore[list-item]
    return out.getvalue()


def test_round_trip_gives_back_every_block_and_a_verifiable_history() -> None:
    kp, head, blocks = history()
    key = new_key()
    sealed = seal(key, head.cid, blocks)
    roots, read = read_car(io.BytesIO(as_car(sealed.root, sealed.blocks)))  # a valid CAR
    held = {b.cid: b for b in read}
    root, plain = unseal(key, roots[0], held)
    assert root == head.cid
    assert {b.cid for b in plain} == {b.cid for b in blocks}
    by_cid = {b.cid: b for b in plain}
    assert [h.seq for h in verify_chain(by_cid.get, root)] == [0, 1, 2]
    assert verify_chain(by_cid.get, root)[-1].pico == kp.did


def test_what_a_pinning_service_sees() -> None:
    kp, head, blocks = history()
    sealed = seal(new_key(), head.cid, blocks)
    data = as_car(sealed.root, sealed.blocks)
    # valid IPFS blocks: CIDv1 sha2-256, raw for the sealed ones, DAG-CBOR for root and pages
    *sealed_blocks, header, page, index = sealed.blocks
    assert index.cid == sealed.root
    assert (index.cid.codec, page.cid.codec, header.cid.codec) == (DAG_CBOR, DAG_CBOR, RAW)
    assert all(b.cid.version == 1 and b.cid.hash_code == SHA2_256 for b in sealed.blocks)
    assert all(b.cid.codec == RAW and len(b.data) % PAD == 40 for b in sealed_blocks)
    assert len(sealed_blocks) == len(blocks) == 11  # 3 heads, states, rulesets; 1 source, channels
    assert index.value == {SEALED_TAG: {"header": header.cid, "pages": [page.cid], "blocks": 11}}
    # the root and pages link every sealed block, so pinning the root pins the export
    assert set(page.links()) == {b.cid for b in sealed_blocks}
    # nothing of the plaintext: no CID, no DID, no value
    for secret in [kp.did.encode(), b"555-01", *(b.cid.buffer for b in blocks)]:
        assert secret not in data
    # a new key per export: sealing again shares no block
    again = seal(new_key(), head.cid, blocks)
    assert not {b.cid for b in again.blocks} & {b.cid for b in sealed.blocks}


def test_wrong_key_and_tampering_are_refused() -> None:
    _, head, blocks = history()
    key = new_key()
    sealed = seal(key, head.cid, blocks)
    held = {b.cid: b for b in sealed.blocks}
    *sealed_blocks, header, _page, _index = sealed.blocks
    with pytest.raises(SealedError, match=r"cannot open sealed block bafk\w+ with this key"):
        unseal(new_key(), sealed.root, held)
    with pytest.raises(SealedError, match="a key is 32 bytes, not 3"):
        unseal(b"abc", sealed.root, held)
    # a block left out
    short = dict(held)
    del short[sealed_blocks[0].cid]
    with pytest.raises(SealedError, match=f"sealed block {sealed_blocks[0].cid} is missing"):
        unseal(key, sealed.root, short)
    # a block re-sealed by someone without the key: a different key cannot be opened
    forged = Block.raw(bytes(len(sealed_blocks[0].data)))
    swapped = {**held, forged.cid: forged}
    del swapped[sealed_blocks[0].cid]
    page = Block.encode(
        sorted([forged.cid, *(b.cid for b in sealed_blocks[1:])], key=lambda c: c.buffer)
    )
    index = Block.encode({SEALED_TAG: {"header": header.cid, "pages": [page.cid], "blocks": 11}})
    swapped.update({page.cid: page, index.cid: index})
    with pytest.raises(SealedError, match="with this key"):
        unseal(key, index.cid, swapped)
    # an index that drops a block (and says so) disagrees with the sealed header
    page = Block.encode(sorted((b.cid for b in sealed_blocks[1:]), key=lambda c: c.buffer))
    index = Block.encode({SEALED_TAG: {"header": header.cid, "pages": [page.cid], "blocks": 10}})
    with pytest.raises(SealedError, match="the header seals 11 blocks, the index 10"):
        unseal(key, index.cid, {**held, page.cid: page, index.cid: index})
    # not a sealed export at all
    with pytest.raises(SealedError, match="is not a p2pico sealed export"):
        unseal(key, head.cid, {head.cid: head})


def test_large_exports_are_paged_under_the_block_limit() -> None:
    blocks = [Block.raw(i.to_bytes(4, "big")) for i in range(PAGE_LINKS + 10)]
    key = new_key()
    sealed = seal(key, blocks[0].cid, blocks)
    index = sealed.blocks[-1]
    assert len(index.value[SEALED_TAG]["pages"]) == 2  # type: ignore[index]
    assert max(len(b.data) for b in sealed.blocks) < 256 * 1024
    root, plain = unseal(key, sealed.root, {b.cid: b for b in sealed.blocks})
    assert root == blocks[0].cid
    assert {b.cid for b in plain} == {b.cid for b in blocks}
