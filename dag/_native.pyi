"""Types of dag/_native.c: a HAMT set (dag/hamt.py); the Bloom filter and merge (dag/store.py)."""

from collections.abc import Callable, Iterable
from typing import Any

def hamt_set(
    top: Any,
    cache: Any,
    lookup: Callable[[bytes], Any],
    key: bytes,
    digest: bytes,
    entry: bytes,
    node_type: type,
    root_prefix: bytes,
    root_suffix: bytes,
    root_cid: bytes,
) -> tuple[bytes, bytes, list[tuple[bytes, bytes]]] | None: ...
def bloom_add(
    bits: bytearray, mask: int, keys: Iterable[bytes | int] | Iterable[tuple[bytes | int]]
) -> int: ...
def bloom_maybe(bits: bytearray, mask: int, keys: Iterable[bytes]) -> list[bytes]: ...
def merge_rows(bucket: list[bytes], entries: dict[bytes, int], out: list[int]) -> int: ...
