"""CARv1 files (ipld.io/specs/transport/car/carv1): blocks from block.py behind a DAG-CBOR header.

Layout: ``varint(len) ‖ DAG-CBOR {"roots": [CID, ...], "version": 1}`` then, per block,
``varint(len(cid) + len(data)) ‖ binary CID ‖ data``. Reading verifies every block
against its CID (Block.decode); anything wrong is a CarError naming the byte offset.
Neighbours: store.walk (what p2pico exports), head.verify_chain (what it checks on import).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import BinaryIO, Final, NoReturn

from dag import cbor
from dag.block import Block, BlockError, BlockMismatchError
from dag.cid import CID, CIDError, decode_varint, encode_varint

# Our own blocks are at most 256 KiB (the py-libp2p message limit, ipld.md §7), but CARs
# from IPFS tools may hold blocks up to the 1-2 MiB that Bitswap implementations allow.
# 4 MiB per section leaves room for those while bounding what one length prefix can
# make us allocate. The header only lists roots, so 1 MiB is plenty.
MAX_SECTION: Final = 4 * 1024 * 1024
MAX_HEADER: Final = 1024 * 1024


class CarError(ValueError):
    """A CAR that cannot be read: bad header, truncated or oversized section, bad CID or block."""

    def __init__(self, offset: int, reason: str) -> None:
        super().__init__(f"CAR byte {offset}: {reason}")
        self.offset = offset
        self.reason = reason


def car_header(roots: list[CID]) -> bytes:
    """The length-prefixed header; write_car's first bytes."""
    header = cbor.encode({"roots": list(roots), "version": 1})
    return encode_varint(len(header)) + header


def car_section(block: Block) -> bytes:
    """One length-prefixed section: binary CID then the block's bytes."""
    cid = block.cid.buffer
    return encode_varint(len(cid) + len(block.data)) + cid + block.data


def write_car(out: BinaryIO, roots: list[CID], blocks: Iterable[Block]) -> int:
    """Write a CARv1 to `out`; return the number of bytes written."""
    written = out.write(car_header(roots))
    for block in blocks:
        written += out.write(car_section(block))
    return written


class _Reader:
    """Reads exact byte counts from a stream (or from bytes: sliced) and knows its offset."""

    def __init__(self, inp: BinaryIO | bytes) -> None:
        self.inp = inp
        self.data = inp if isinstance(inp, bytes) else None
        self.offset = 0

    def read(self, n: int) -> bytes:
        if self.data is not None:
            out = self.data[self.offset : self.offset + n]
            self.offset += len(out)
            return out
        assert not isinstance(self.inp, bytes)
        chunks, got = [], 0
        while got < n:
            chunk = self.inp.read(n - got)
            if not chunk:
                break
            chunks.append(chunk)
            got += len(chunk)
        data = b"".join(chunks)
        self.offset += len(data)
        return data

    def varint(self, what: str) -> int | None:
        """A length prefix, or None at a clean end of input."""
        start = self.offset
        data = self.data
        if data is not None and data[start : start + 1] < b"\x80":  # one byte (or the end)
            if start >= len(data):
                return None
            self.offset = start + 1
            return data[start]
        raw = bytearray()
        while True:
            b = self.read(1)
            if not b:
                if raw:
                    raise CarError(start, f"truncated {what} length")
                return None
            raw += b
            if not b[0] & 0x80 or len(raw) > 9:
                break
        try:
            return decode_varint(bytes(raw))[0]
        except CIDError as e:
            raise CarError(start, f"bad {what} length: {e}") from None


def _read_header(r: _Reader) -> list[CID]:
    def bad(reason: str, at: int = 0) -> NoReturn:
        raise CarError(at, f"bad header: {reason}")

    n = r.varint("header")
    if n is None:
        bad("the input is empty")
    if not 0 < n <= MAX_HEADER:
        bad(f"length {n} is not in 1..{MAX_HEADER}")
    data = r.read(n)
    if len(data) < n:
        bad(f"truncated: {len(data)} of {n} bytes")
    try:
        header = cbor.decode(data)
    except ValueError as e:
        bad(f"not DAG-CBOR: {e}", r.offset - n)
    if type(header) is not dict:
        bad("not a map")
    if header.get("version") != 1:
        raise CarError(0, f"unsupported CAR version {header.get('version')!r} (only 1)")
    roots = header.get("roots")
    if type(roots) is not list or not all(isinstance(c, CID) for c in roots):
        bad("roots must be a list of CIDs")
    return roots


def _cid_length(section: bytes) -> int:
    """How many bytes of `section` its CID takes (CIDv0: a bare sha2-256 multihash)."""
    if section[:2] == b"\x12\x20":
        return 34
    if section[:1] == b"\x01" and section[1:2] < b"\x80" and section[2:4] == b"\x12\x20":
        return 36  # CIDv1, a one-byte codec, sha2-256: every block we write
    pos = 0
    for _ in range(3):  # version, codec, hash function
        pos = decode_varint(section, pos)[1]
    size, pos = decode_varint(section, pos)
    return pos + size


def _sections(r: _Reader) -> Iterator[Block]:
    while True:
        start = r.offset
        n = r.varint("section")
        if n is None:
            return
        if n == 0:
            raise CarError(start, "empty section")
        if n > MAX_SECTION:
            raise CarError(start, f"section of {n} bytes is over the {MAX_SECTION}-byte maximum")
        section = r.read(n)
        if len(section) < n:
            raise CarError(start, f"truncated section: {len(section)} of {n} bytes")
        try:
            size = _cid_length(section)
            if size > n:
                raise CIDError(f"CID of {size} bytes in a section of {n}")
            cid = CID.parse(section[:size])
        except CIDError as e:
            raise CarError(start, f"CID does not parse: {e}") from None
        try:
            yield Block.decode(cid, section[size:])
        except BlockMismatchError as e:
            raise CarError(start, f"block does not match its CID: {e}") from None
        except (BlockError, ValueError) as e:  # unsupported codec/hash, or not strict DAG-CBOR/PB
            raise CarError(start, f"block {cid} is invalid: {e}") from None


def read_car(inp: BinaryIO | bytes) -> tuple[list[CID], Iterator[Block]]:
    """Read the header now; return the roots and a lazy iterator of verified blocks (from a
    stream, or from bytes already in memory)."""
    r = _Reader(inp)
    roots = _read_header(r)
    return roots, _sections(r)
