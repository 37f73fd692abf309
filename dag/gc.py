"""Garbage collection of a block store (store.py) with a retention window over head chains (head.py).

`collect(store, roots, keep_history=N)` keeps every block reachable from `roots` and deletes
the rest.  A root that is a head block (the shape sign_head makes) keeps itself and its N
previous heads, each with its state and cause; the head before the window (its `prev`) and
everything only it reaches are garbage.  `keep_history=None` keeps the whole history.

After such a collection the oldest kept head links to a block that is gone, so the chain no
longer verifies from genesis: head.verify_chain_tail reads what is left (p2pico's log reports
"history truncated at seq K").  A later collection treats a missing block as the end of
that branch, so GC can be run again over a truncated store.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Protocol

from dag.block import Block
from dag.cid import CID, DAG_CBOR
from dag.head import HEAD_TAG, VARSIG_ED25519_DAG_CBOR
from dag.store import BlockStore, get_with_links


class CollectableStore(BlockStore, Protocol):
    def cids(self) -> Iterator[CID]: ...
    def delete_many(self, cids: Iterable[CID]) -> int: ...


@dataclass(frozen=True, slots=True)
class GcReport:
    kept: int  # blocks in the store after the collection (or that would be, on a dry run)
    deleted: int
    bytes_freed: int
    # root head -> seq of the oldest head kept, for each chain the window cut
    truncated: Mapping[CID, int] = field(default_factory=dict)
    missing: int = 0  # blocks reachable from the roots that were already absent


@dataclass(frozen=True, slots=True)
class _HeadLinks:
    seq: int
    prev: CID | None
    others: tuple[CID, ...]  # state, cause


def _head_links(block: Block) -> _HeadLinks | None:
    """The links of a head-shaped block (signature not checked: GC only decides what stays)."""
    if block.cid.codec != DAG_CBOR:
        return None
    v = block.value
    if type(v) is not list or len(v) != 2 or type(v[1]) is not dict:
        return None
    payload = v[1]
    if payload.get("h") != VARSIG_ED25519_DAG_CBOR or type(payload.get(HEAD_TAG)) is not dict:
        return None
    body = payload[HEAD_TAG]
    seq, prev = body.get("seq"), body.get("prev")
    if type(seq) is not int or not (prev is None or isinstance(prev, CID)):
        return None
    others = tuple(c for k, c in body.items() if k != "prev" and isinstance(c, CID))
    return _HeadLinks(seq, prev, others)


def reachable(
    store: BlockStore, roots: Iterable[CID], *, keep_history: int | None = None
) -> tuple[set[CID], dict[CID, int], int]:
    """(live CIDs, truncated chains {root: oldest kept seq}, missing count) for `collect`."""
    if keep_history is not None and keep_history < 0:
        raise ValueError(f"keep_history must be None or >= 0, not {keep_history}")
    live: set[CID] = set()
    missing: set[CID] = set()
    cut: dict[CID, tuple[int, CID]] = {}  # root -> (oldest kept seq, the prev left out)
    budget_seen: dict[CID, float] = {}  # head -> the largest window left when it was visited
    stack: list[CID] = []

    def visit_chain(root: CID) -> None:
        cid: CID | None = root
        budget = math.inf if keep_history is None else float(keep_history)
        last_seq: int | None = None
        while cid is not None:
            if budget_seen.get(cid, -1.0) >= budget:
                return  # another root already kept at least as much from here
            block = store.get_block(cid)
            if block is None:
                missing.add(cid)
                if last_seq is not None:  # truncated by an earlier collection
                    cut[root] = (last_seq, cid)
                return
            links = _head_links(block)
            if links is None:  # not a head after all: keep it and all it links to
                stack.append(cid)
                return
            budget_seen[cid] = budget
            live.add(cid)
            stack.extend(links.others)
            last_seq = links.seq
            if links.prev is None:
                return
            if budget <= 0:
                cut[root] = (last_seq, links.prev)
                return
            budget -= 1
            cid = links.prev

    for root in roots:
        visit_chain(root)
    walked: set[CID] = set()  # generic walk: every link is followed
    while stack:
        cid = stack.pop()
        if cid in walked:
            continue
        walked.add(cid)
        got = get_with_links(store, cid)
        if got is None:
            missing.add(cid)
            continue
        live.add(cid)
        stack.extend(link for link in got[1] if link not in walked)
    truncated = {root: seq for root, (seq, prev) in cut.items() if prev not in live}
    return live, truncated, len(missing)


def collect(
    store: CollectableStore,
    roots: Iterable[CID],
    *,
    keep_history: int | None,
    dry_run: bool = False,
) -> GcReport:
    """Delete every block not reachable from `roots` (heads: within the retention window)."""
    live, truncated, missing = reachable(store, roots, keep_history=keep_history)
    garbage: list[CID] = []
    freed = 0
    total = 0
    for cid in store.cids():
        total += 1
        if cid not in live:
            data = store.get(cid)
            freed += len(data) if data is not None else 0
            garbage.append(cid)
    deleted = len(garbage) if dry_run else store.delete_many(garbage)
    return GcReport(
        kept=total - deleted if not dry_run else total - len(garbage),
        deleted=deleted,
        bytes_freed=freed,
        truncated=truncated,
        missing=missing,
    )
