"""A pico's signed history as a CAR: export, verified import, and an audit log with fork reports.

Neighbours: dag.car (the file format), dag.head (verify_chain_tail, chain_gap, detect_fork),
dag.store.walk (what an export holds), p2pico.home (the table of imported heads), p2pico.http
(the routes ``/api/picos/:did/car``, ``/api/import``, ``/api/picos/:did/log``) and p2pico.cli.
dag.sealed (encrypted exports) is applied by p2pico.cli, not here: the node never sees a key.

A pico's current head on this node is the one of the pico it hosts, else the newest
imported head that did not conflict with what the node already held.  An imported head
that does conflict (the same seq as a known head, a different CID, both validly signed)
is kept, flagged as a fork, and reported; it never replaces the current head.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Final

from dag.block import Block
from dag.car import car_header, car_section, read_car
from dag.cid import CID
from dag.head import Head, InvalidHead, chain_gap, detect_fork, verify_chain_tail
from dag.sealed import SEALED_TAG
from dag.store import walk
from p2pico.engine import Engine

# An export is streamed in chunks of about this size.
CHUNK: Final = 64 * 1024


class ImportRefused(ValueError):
    """A CAR that does not hold one complete, verified pico history."""


@dataclass(frozen=True, slots=True)
class Current:
    cid: CID
    seq: int


def current_head(engine: Engine, did: str) -> Current | None:
    """The hosted pico's head, else the newest non-forked imported head, else None."""
    pico = engine.picos.get(did)
    if pico is not None:
        return Current(pico.head, pico.seq)
    imported = [h for h in engine.home.imported_heads(did) if not h.fork]
    if not imported:
        return None
    newest = max(imported, key=lambda h: h.seq)  # max keeps the first of equal seqs
    return Current(newest.cid, newest.seq)


# -- export ----------------------------------------------------------------------------


def car_chunks(engine: Engine, head: CID) -> Iterator[bytes]:
    """A CAR (roots = [head]) of every block reachable from `head`, verified, in chunks.

    A history truncated by ``gc --keep-history`` is exported from its oldest kept head on:
    the missing `prev` of that head is the one block left out (``import --accept-truncated``).
    """
    gap = chain_gap(engine.store.get_block, head)
    buf = bytearray(car_header([head]))
    for block in walk(engine.store, head, absent=[gap[1]] if gap else []):
        buf += car_section(block)
        if len(buf) >= CHUNK:
            yield bytes(buf)
            buf.clear()
    if buf:
        yield bytes(buf)


# -- import ----------------------------------------------------------------------------


def parse_car(data: bytes) -> tuple[list[CID], dict[CID, Block]]:
    """Read and verify every block of a CAR (pure; p2pico.http runs it in a thread)."""
    roots, blocks = read_car(data)
    return roots, {block.cid: block for block in blocks}


def import_blocks(
    engine: Engine, roots: list[CID], blocks: dict[CID, Block], *, accept_truncated: bool = False
) -> dict[str, object]:
    """Check that `roots[0]` is a signed head whose history verifies from genesis, then store.

    Blocks the node already has need not be in the CAR (a delta export works); blocks in
    the CAR that the root does not reach are refused, so an import stores nothing else.

    With `accept_truncated`, a history that starts after genesis (exported after
    ``gc --keep-history``) is accepted: every head it holds is verified (signature, signer,
    each linked to the next), and the reply says from which seq (``"truncated"``, as the log).
    """
    store = engine.store
    if len(roots) != 1:
        raise ImportRefused(f"a pico CAR has one root (its newest head); this one has {len(roots)}")
    root = roots[0]

    def get(cid: CID) -> Block | None:
        return blocks.get(cid) or store.get_block(cid)

    try:
        chain, missing = verify_chain_tail(get, root)
    except InvalidHead as e:
        if _is_sealed_root(get(root)):
            raise ImportRefused(
                "this CAR is a sealed export (p2pico export --encrypt): open it with its key, "
                "p2pico import FILE --key FILE.key"
            ) from None
        raise ImportRefused(f"the root's history does not verify: {e}") from None
    if missing is not None and not accept_truncated:
        lost = f"missing head block {missing} (seq {chain[0].seq - 1})"
        try:  # a state block missing too: the file was cut, not exported truncated
            _check_complete(engine, root, blocks, absent=missing)
        except ImportRefused as e:
            raise ImportRefused(f"the CAR is incomplete (cut short?): {lost}, and {e}") from None
        raise ImportRefused(
            f"the root's history does not verify: {lost}; the CAR holds the heads from seq "
            f"{chain[0].seq} on (a truncated history: import it with --accept-truncated to "
            "verify only those)"
        )
    _check_complete(engine, root, blocks, absent=missing)
    top = chain[-1]
    fork = _fork_with_current(engine, chain)
    stored = store.present(blocks)
    new = [b for b in blocks.values() if b.cid not in stored]
    with engine.home.foreign_blocks():  # never taken for a hosted pico's head
        store.put_many(new)
        engine.home.save_imported_head(top.pico, root, top.seq, fork=fork is not None)
    reply: dict[str, object] = {
        "root": str(root),
        "did": top.pico,
        "seq": top.seq,
        "blocks": len(blocks),
        "new": len(new),
    }
    if fork is not None:
        reply["fork"] = _fork_json(fork[0].seq, [fork[0].cid, fork[1].cid])
    if missing is not None:
        reply.update(_truncated_json(chain[0].seq, missing))
    return reply


def _is_sealed_root(block: Block | None) -> bool:
    """Whether ``block`` is the root of a sealed export (dag.sealed)."""
    if block is None:
        return False
    try:
        value = block.value
    except ValueError:
        return False
    return isinstance(value, dict) and SEALED_TAG in value


def _truncated_json(oldest: int, missing: CID) -> dict[str, object]:
    return {
        "truncated": {"seq": oldest, "missing": str(missing)},
        "note": (
            f"history truncated at seq {oldest}: the heads before it are not on this node "
            "(p2pico gc --keep-history), so the chain was verified back to seq "
            f"{oldest}, not to genesis"
        ),
    }


def _check_complete(
    engine: Engine, root: CID, blocks: dict[CID, Block], *, absent: CID | None = None
) -> None:
    """Every block the root reaches is in the CAR or already here; the CAR holds no others.

    `absent`: the missing `prev` of a truncated history's oldest head, not followed.
    """
    seen, stack = {root}, [root]
    if absent is not None:
        seen.add(absent)
    while stack:
        cid = stack.pop()
        block = blocks.get(cid)
        if block is None:
            if engine.store.has(cid):
                continue  # stored blocks were complete when they were stored
            raise ImportRefused(f"block {cid} is missing: neither in the CAR nor on this node")
        for link in block.links():
            if link not in seen:
                seen.add(link)
                stack.append(link)
    extra = [cid for cid in blocks if cid not in seen]
    if extra:
        raise ImportRefused(
            f"{len(extra)} blocks are not reachable from the root {root}, e.g. {extra[0]}"
        )


def _fork_with_current(engine: Engine, chain: list[Head]) -> tuple[Head, Head] | None:
    """The first pair of heads where `chain` and the current history of its pico differ."""
    current = current_head(engine, chain[-1].pico)
    if current is None:
        return None
    if any(h.seq == current.seq and h.cid == current.cid for h in chain):
        return None  # the import extends (or repeats) what we hold
    try:
        ours, _ = verify_chain_tail(engine.store.get_block, current.cid)  # may be truncated
    except InvalidHead:  # our own copy is broken; the log reports that
        return None
    return _divergence(ours, chain)


def _divergence(a: list[Head], b: list[Head]) -> tuple[Head, Head] | None:
    """Two verified chains (oldest first, either maybe truncated): the first heads of a fork."""
    by_seq = {h.seq: h for h in b}
    for x in a:
        y = by_seq.get(x.seq)
        if y is not None and detect_fork(x, y):
            return x, y
    return None  # one chain is a prefix of the other


def _fork_json(seq: int, heads: list[CID]) -> dict[str, object]:
    return {"seq": seq, "heads": [str(cid) for cid in heads]}


# -- log -------------------------------------------------------------------------------


def log(engine: Engine, did: str, current: Current) -> dict[str, object]:
    """The chain from `current` to genesis, newest first, every signature checked; forks too.

    After ``p2pico gc --keep-history N`` the heads before the retention window are gone: the
    log then lists the heads that are left (each verified, each linked to the next) and says
    ``"truncated": {"seq": K, "missing": prev}`` with a note, instead of failing.
    """
    store = engine.store
    try:
        chain, missing = verify_chain_tail(store.get_block, current.cid)
    except InvalidHead as e:
        return {"did": did, "verified": False, "error": str(e)}
    out: dict[str, object] = {
        "did": did,
        "verified": True,
        "heads": [
            {
                "seq": h.seq,
                "cid": str(h.cid),
                "ts": h.ts,
                "cause": _cause(engine, h.cause),
                "state": str(h.state),
            }
            for h in reversed(chain)
        ],
    }
    if missing is not None:
        out.update(_truncated_json(chain[0].seq, missing))
    forks: list[tuple[Head, Head]] = []
    on_chain = {h.cid for h in chain}
    bottom, top = chain[0].seq, chain[-1].seq
    for imported in engine.home.imported_heads(did):
        # a head flagged when imported, or one the current history has since passed by
        # (hosted here, this node committed its own head of that seq after the import)
        if imported.fork or (imported.cid not in on_chain and bottom <= imported.seq <= top):
            try:
                fork = _divergence(chain, verify_chain_tail(store.get_block, imported.cid)[0])
            except InvalidHead:  # pragma: no cover - it verified when it was imported
                continue
            if fork is not None:
                forks.append(fork)
    if forks:
        seq = min(ours.seq for ours, _ in forks)
        theirs = dict.fromkeys(other.cid for ours, other in forks if ours.seq == seq)
        ours = next(h.cid for h in chain if h.seq == seq)
        out["fork"] = _fork_json(seq, [ours, *theirs])
    return out


def _cause(engine: Engine, cid: CID | None) -> dict[str, object] | None:
    """The event that made a head: {domain, type, eid} from its cause block."""
    if cid is None:
        return None
    block = engine.store.get_block(cid)
    if block is None:
        return {"cid": str(cid), "missing": True}
    value = block.value
    if not isinstance(value, dict):
        return {"cid": str(cid)}
    return {k: value[k] for k in ("domain", "type", "eid") if isinstance(value.get(k), str)}
