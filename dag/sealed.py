"""Sealed CARs: a pico's history encrypted for public pinning (car.py in, car.py out).

``seal`` turns the blocks of a CAR into a CAR that any IPFS node can import, pin and serve,
but not read; ``unseal`` with the key gives the blocks back, each checked against its CID.

Layout (everything is CIDv1, sha2-256)::

    root   dag-cbor  {"p2pico/sealed@1": {"header": CID, "pages": [CID, ...], "blocks": n}}
    page   dag-cbor  [CID, ...]                      up to PAGE_LINKS sealed blocks, sorted
    header raw       seal({"root": plaintext root CID, "blocks": n})
    block  raw       seal(the plaintext block: its binary CID and its bytes)

    seal(m) = nonce (24 random bytes) || XChaCha20-Poly1305(key, nonce, pad(m), aad=AAD)
    pad(m)  = u32 length of m || m || zeros up to a multiple of PAD bytes

The root and pages are plain DAG-CBOR so that a pinning service pins the whole export
recursively from the root (raw blocks have no links).  They list only the CIDs of the sealed
blocks, in CID order (not in the order of the history).  The key is 32 random bytes, one per
export; whoever holds the CAR without the key learns: that it is a p2pico sealed export, how
many blocks it holds and their sizes rounded up to PAD bytes; not the plaintext CIDs (so not
which pico or which states, nor the DAG's shape), the DID, the heads, or any entity value.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Final

import nacl.bindings
import nacl.exceptions

from dag import cbor
from dag.block import Block
from dag.cid import CID, decode_varint

KEY_BYTES: Final = 32
NONCE_BYTES: Final = nacl.bindings.crypto_aead_xchacha20poly1305_ietf_NPUBBYTES  # 24
TAG_BYTES: Final = nacl.bindings.crypto_aead_xchacha20poly1305_ietf_ABYTES  # 16
AAD: Final = b"p2pico/sealed-block@1"
SEALED_TAG: Final = "p2pico/sealed@1"
PAD: Final = 256
# Links per page: 4096 x 39 bytes keeps a page near 160 KB, under the 256 KiB block limit.
PAGE_LINKS: Final = 4096


class SealedError(ValueError):
    """A sealed CAR that is malformed, or that this key does not open."""


@dataclass(frozen=True, slots=True)
class Sealed:
    """A sealed export: its root (the CAR's one root) and every block, root last."""

    root: CID
    blocks: tuple[Block, ...]


def new_key() -> bytes:
    return secrets.token_bytes(KEY_BYTES)


def _seal(key: bytes, message: bytes) -> bytes:
    padded = len(message).to_bytes(4, "big") + message
    padded += bytes(-len(padded) % PAD)
    nonce = secrets.token_bytes(NONCE_BYTES)
    return nonce + nacl.bindings.crypto_aead_xchacha20poly1305_ietf_encrypt(padded, AAD, nonce, key)


def _open(key: bytes, cid: CID, sealed: bytes) -> bytes:
    if len(sealed) < NONCE_BYTES + TAG_BYTES + 4:
        raise SealedError(f"sealed block {cid} is {len(sealed)} bytes: too short")
    nonce, box = sealed[:NONCE_BYTES], sealed[NONCE_BYTES:]
    try:
        padded = nacl.bindings.crypto_aead_xchacha20poly1305_ietf_decrypt(box, AAD, nonce, key)
    except nacl.exceptions.CryptoError:
        raise SealedError(
            f"cannot open sealed block {cid} with this key (a wrong key, or an altered block)"
        ) from None
    n = int.from_bytes(padded[:4], "big")
    if n > len(padded) - 4:
        raise SealedError(f"sealed block {cid}: length {n} exceeds its {len(padded) - 4} bytes")
    return padded[4 : 4 + n]


def seal(key: bytes, root: CID, blocks: Iterable[Block]) -> Sealed:
    """Seal `blocks` (a pico's export whose root is `root`) with `key`."""
    if len(key) != KEY_BYTES:
        raise SealedError(f"a key is {KEY_BYTES} bytes, not {len(key)}")
    sealed: list[Block] = []
    for block in blocks:
        sealed.append(Block.raw(_seal(key, block.cid.buffer + block.data)))
    header = Block.raw(_seal(key, cbor.encode({"root": root, "blocks": len(sealed)})))
    links = sorted({b.cid for b in sealed}, key=lambda c: c.buffer)
    pages = [
        Block.encode(links[i : i + PAGE_LINKS]) for i in range(0, max(len(links), 1), PAGE_LINKS)
    ]
    index = Block.encode(
        {
            SEALED_TAG: {
                "header": header.cid,
                "pages": [p.cid for p in pages],
                "blocks": len(sealed),
            }
        }
    )
    return Sealed(index.cid, (*sealed, header, *pages, index))


def unseal(key: bytes, root: CID, blocks: dict[CID, Block]) -> tuple[CID, list[Block]]:
    """Open a sealed export: (the plaintext root, every plaintext block, verified).

    `blocks` are the sealed CAR's blocks (each already checked against its CID by
    car.read_car).  Every page-listed block must be present and open with `key`; each opened
    block must match the CID sealed with it (Block.decode), so nothing can be swapped.
    """
    if len(key) != KEY_BYTES:
        raise SealedError(f"a key is {KEY_BYTES} bytes, not {len(key)}")
    index = blocks.get(root)
    if index is None:
        raise SealedError(f"the root {root} is not in the CAR")
    value = index.value
    body = value.get(SEALED_TAG) if isinstance(value, dict) else None
    if not isinstance(body, dict) or not isinstance(body.get("header"), CID):
        raise SealedError(f"the root {root} is not a p2pico sealed export ({SEALED_TAG})")
    pages, count = body.get("pages"), body.get("blocks")
    if not isinstance(pages, list) or type(count) is not int:
        raise SealedError(f"the root {root} has no pages or block count")
    header_block = blocks.get(body["header"])
    if header_block is None:
        raise SealedError(f"the sealed header {body['header']} is missing")
    header = cbor.decode(_open(key, header_block.cid, header_block.data))
    if not isinstance(header, dict) or not isinstance(header.get("root"), CID):
        raise SealedError("the sealed header does not name a root")
    if header.get("blocks") != count:
        raise SealedError(f"the header seals {header.get('blocks')} blocks, the index {count}")
    listed: list[CID] = []
    for page_cid in pages:
        page = blocks.get(page_cid) if isinstance(page_cid, CID) else None
        if page is None or not isinstance(page.value, list):
            raise SealedError(f"index page {page_cid} is missing or not a list")
        listed += [c for c in page.value if isinstance(c, CID)]
    if len(listed) != count:
        raise SealedError(f"the pages list {len(listed)} blocks, the index {count}")
    out: list[Block] = []
    for cid in listed:
        sealed = blocks.get(cid)
        if sealed is None:
            raise SealedError(f"sealed block {cid} is missing from the CAR")
        message = _open(key, cid, sealed.data)
        try:
            plain_cid = CID.parse(message[: _cid_length(message)])
            out.append(Block.decode(plain_cid, message[len(plain_cid.buffer) :]))
        except ValueError as e:
            raise SealedError(f"sealed block {cid} holds a bad block: {e}") from None
    return header["root"], out


def _cid_length(message: bytes) -> int:
    """The length of the binary CIDv1 at the start of `message`."""
    pos = 0
    for _ in range(2):  # version, codec
        _, pos = decode_varint(message, pos)
    _, pos = decode_varint(message, pos)  # hash function
    size, pos = decode_varint(message, pos)
    return pos + size
