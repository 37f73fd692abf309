"""Types of dag/_native.c (the C path of a one-key HAMT update; see dag/hamt.py)."""

from collections.abc import Callable
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
