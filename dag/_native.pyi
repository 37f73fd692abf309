"""Types of dag/_native.c: a HAMT set (dag/hamt.py), spliced blocks (dag/block.py); the Bloom
filter, merge and inserts (dag/store.py); the encoder (dag/cbor.py) and the signer
(dag/did.py)."""

import builtins
from collections.abc import Callable, Iterable
from typing import Any

from dag.block import Block

def hamt_set(
    top: Any,
    cache: Any,
    lookup: Callable[[bytes], Any],
    key: bytes,
    value: bytes,
    node_type: type,
    root_prefix: bytes,
    root_suffix: bytes,
    root_cid: bytes,
) -> tuple[Block, list[Block]] | None: ...
def bloom_add(
    bits: bytearray, mask: int, keys: Iterable[bytes | int] | Iterable[tuple[bytes | int]]
) -> int: ...
def bloom_maybe(bits: bytearray, mask: int, keys: Iterable[bytes]) -> list[bytes]: ...
def merge_rows(bucket: list[bytes], entries: dict[bytes, int], out: list[int]) -> int: ...
def bind_blocks(cid_type: type, block_type: type, not_decoded: object) -> None: ...
def spliced(data: bytes) -> Block: ...
def bind_signer(address: int) -> None: ...
def cbor_encode(value: object) -> bytes: ...
def sign_spliced(prefix: bytes, message: bytes, secret: bytes) -> bytes: ...
def insert_rows(
    blocks: list[Block] | tuple[Block, ...],
    bits: bytearray,
    mask: int,
    first: int,
    buf: bytearray,
    end: int,
) -> tuple[list[int | bytearray], list[bytes]] | None: ...
def insert_record(
    keys: list[bytes],
    first: int,
    pending: dict[bytes, int],
    buckets: list[list[bytes]],
    log: list[tuple[dict[bytes, int] | None, bytes, int]],
) -> None: ...

class NodeTable:
    """hamt.NodeCache's nodes by binary CID, least recently used first."""

    bytes: int
    size: int
    max_bytes: int
    def __init__(self, size: int, max_bytes: int) -> None: ...
    def __len__(self) -> int: ...
    def get(self, key: builtins.bytes) -> Any: ...
    def touch(self, key: builtins.bytes) -> None: ...
    def put(self, key: builtins.bytes, node: Any, weight: int) -> None: ...
    def drop(self, key: builtins.bytes) -> bool: ...
    def items(self) -> list[tuple[builtins.bytes, Any, int]]: ...
