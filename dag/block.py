"""Blocks: bytes bound to their CID (cid.py), decoded with cbor.py (or pb.py); stored by store.py."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator
from typing import Final, NoReturn, final

from dag import cbor, pb
from dag.cid import CID, DAG_CBOR, DAG_PB, RAW, SHA2_256

try:  # the C commit path (setup.py builds it where it can: it is optional)
    from dag import _native
except ImportError:  # pragma: no cover - a build without a C compiler or OpenSSL headers
    _native = None  # type: ignore[assignment]

_PRIVATE: Final = object()
_NOT_DECODED: Final = object()


class BlockError(ValueError):
    """A block cannot be built or verified (unsupported codec or hash function)."""


class BlockMismatchError(BlockError):
    """The bytes of a block do not hash to its CID."""


@final
class Block:
    """Bytes whose CID is known to match; build one with encode(), raw() or decode()."""

    __slots__ = ("_value", "cid", "data")

    cid: CID
    data: bytes
    _value: object

    def __init__(self, cid: CID, data: bytes, value: object, *, _token: object = None) -> None:
        if _token is not _PRIVATE:
            raise TypeError("use Block.encode(), Block.raw() or Block.decode() to make a Block")
        object.__setattr__(self, "cid", cid)
        object.__setattr__(self, "data", data)
        object.__setattr__(self, "_value", value)

    @classmethod
    def encode(cls, value: object) -> Block:
        """DAG-CBOR encode `value` (raises cbor.DagCborError)."""
        return cls._spliced(cbor.encode(value))  # our encoder's bytes: canonical

    @classmethod
    def _spliced(cls, data: bytes) -> Block:
        """A DAG-CBOR block from bytes this package assembled from ``cbor.encode`` pieces.

        For dag/ only (head.py, hamt.py, state.py splice cached encodings instead of
        re-encoding whole values). The CID is computed from ``data``, so it matches; the
        bytes are canonical by construction (tests compare them with ``cbor.encode``); the
        value is decoded from them on first use. Where dag/_native.c is built, its
        ``spliced`` takes this method's place (the same Block, in a quarter of the time).
        """
        block = _new(cls)  # the slots' setters: cheaper than __init__'s object.__setattr__
        _set_cid(block, CID.of(data, DAG_CBOR))
        _set_data(block, data)
        _set_value(block, _NOT_DECODED)
        return block

    @classmethod
    def raw(cls, data: bytes) -> Block:
        data = bytes(data)
        return cls(CID.of(data, RAW), data, data, _token=_PRIVATE)

    @classmethod
    def decode(cls, cid: CID, data: bytes) -> Block:
        """Check `data` against `cid` (sha2-256; dag-cbor, raw or dag-pb) and strictly decode it
        (with dag/_native.c, dag-cbor is only checked canonical here, and decoded on first use)."""
        return cls._decode(cid, data)[0]

    @classmethod
    def decode_links(cls, cid: CID, data: bytes) -> tuple[Block, list[CID]]:
        """``decode``, with the block's ``links()``: a walk's step, which parses the bytes once
        where dag/_native.c checks them canonical (twice otherwise: check, then links)."""
        block, links = cls._decode(cid, data)
        return block, block.links() if links is None else links

    @classmethod
    def _decode(cls, cid: CID, data: bytes) -> tuple[Block, list[CID] | None]:
        data = bytes(data)
        if cid.codec not in (DAG_CBOR, RAW, DAG_PB):
            raise BlockError(
                f"unsupported codec 0x{cid.codec:x} in {cid} (only dag-cbor, raw and dag-pb)"
            )
        if cid.hash_code != SHA2_256:
            raise BlockError(
                f"unsupported hash function 0x{cid.hash_code:x} in {cid} (only sha2-256)"
            )
        digest = hashlib.sha256(data).digest()
        if digest != cid.digest:
            _mismatch(cid, digest)
        value: object
        links = None
        if cid.codec == DAG_CBOR:
            links = _canonical_links(data)
            value = _NOT_DECODED if links is not None else cbor.decode(data)
        elif cid.codec == DAG_PB:  # IPFS blocks, e.g. in a CAR; we never write them
            value = pb.decode(data)
        else:
            value = data
        return cls(cid, data, value, _token=_PRIVATE), links

    @property
    def value(self) -> object:
        """The decoded value (bytes for raw blocks); shared, so do not mutate it."""
        v = self._value
        if v is _NOT_DECODED:
            v = cbor.decode(self.data)
            object.__setattr__(self, "_value", v)
        return v

    def links(self) -> list[CID]:
        """Every CID inside the value, depth-first, in encoded order (none for raw blocks)."""
        if self.cid.codec == RAW:
            return []
        if self._value is _NOT_DECODED and _native is not None and self.cid.codec == DAG_CBOR:
            try:
                return _native.cbor_links(self.data)  # no value made (checked canonical)
            except Exception:  # as .value would: cbor.decode says what is wrong
                pass
        return _links(self.value)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Block):
            return self.cid == other.cid
        return NotImplemented

    def __hash__(self) -> int:
        return hash(self.cid)

    def __repr__(self) -> str:
        return f"Block({self.cid}, {len(self.data)} bytes)"

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError("Block is immutable")

    def __delattr__(self, name: str) -> None:
        raise AttributeError("Block is immutable")


_new: Final = object.__new__
_set_cid: Final = Block.__dict__["cid"].__set__
_set_data: Final = Block.__dict__["data"].__set__
_set_value: Final = Block.__dict__["_value"].__set__
_SPLICED_PY: Final = Block._spliced  # the Python code, kept for tests/dag/test_dag_native.py

if _native is not None:  # C makes CID and Block objects (HAMT nodes, spliced blocks)
    _native.bind_blocks(CID, Block, _NOT_DECODED)
    setattr(Block, "_spliced", staticmethod(_native.spliced))  # noqa: B010  (a method)


def _mismatch(cid: CID, digest: bytes) -> NoReturn:
    raise BlockMismatchError(
        f"block bytes do not match CID {cid}: digest is {digest.hex()}, CID wants {cid.digest.hex()}"
    )


def iter_links(value: object) -> Iterator[CID]:
    """Yield every CID in a decoded DAG-CBOR value, depth-first."""
    if type(value) is CID:
        yield value
    elif type(value) is dict:
        for v in value.values():
            yield from iter_links(v)
    elif type(value) is list or type(value) is tuple:
        for v in value:
            yield from iter_links(v)


def _links_py(value: object) -> list[CID]:
    return list(iter_links(value))


# list(iter_links(value)), in C where dag/_native.c is built (tests/dag/test_dag_native.py)
_links: Callable[[object], list[CID]] = _links_py if _native is None else _native.links


def _canonical_links(data: bytes) -> list[CID] | None:
    """The links of `data` if dag/_native.c finds it canonical DAG-CBOR (then Block.decode
    leaves the value to be decoded on first use: a block read for its links or bytes makes no
    Python objects of it); None without the C extension or when C refuses (cbor.decode then
    decides)."""
    if _native is None:
        return None
    try:
        links: list[CID] = _native.cbor_links(data)
    except Exception:
        return None
    return links
