"""Types of dag/_native.c: a HAMT set (dag/hamt.py), spliced blocks (dag/block.py); the Bloom
filter and merge (dag/store.py)."""

from collections.abc import Callable, Iterable
from typing import Any, TypeVar

from dag.block import Block

_N = TypeVar("_N")  # a hamt._Node

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
def insert_rows(
    blocks: list[Block] | tuple[Block, ...], bits: bytearray, mask: int, first: int
) -> tuple[list[int | bytearray], list[bytes]] | None: ...
def insert_record(
    keys: list[bytes],
    first: int,
    pending: dict[bytes, int],
    buckets: list[list[bytes]],
    log: list[tuple[dict[bytes, int] | None, bytes, int]],
) -> None: ...
def cache_entry(node: _N, weight: int) -> tuple[_N, int]: ...
