"""``p2pico node drain``: move every pico of this engine to other engines, then take no more.

Neighbours: p2pico.mesh (moves, the ``draining`` flag), p2pico.http (``POST /api/drain``
streams the steps as JSON lines), p2pico.cli (prints the progress).

The engine first stops taking picos (moves in and ``pico new`` are refused), then moves
its picos one at a time, each to the connected engine that hosts the fewest picos by the
location records held here, counting the ones this drain has sent it.  An engine that
refuses a move (it is draining too, or failed) is not asked again during this drain;
the pico is offered to the next one.  The node's root pico stays: it is the node's own.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

from p2pico.engine import PicoError

if TYPE_CHECKING:
    from p2pico.mesh import Mesh

log = logging.getLogger("p2pico.drain")


def _targets(mesh: Mesh, refused: set[str], sent: Counter[str]) -> list[str]:
    """Connected engines, those with the fewest picos first."""
    load: Counter[str] = Counter(r.host for r in mesh.records.values())
    load.update(sent)
    peers = [p for p in mesh.net.connected_peers() if p != mesh.peer_id and p not in refused]
    return sorted(peers, key=lambda p: (load[p], p))


async def drain(mesh: Mesh) -> AsyncIterator[dict[str, object]]:
    """Move every pico away; yields one progress step per pico, then a summary."""
    mesh.draining = True
    engine = mesh.engine
    dids = [did for did in engine.picos if did != engine.root_did]
    total = len(dids)
    refused: set[str] = set()
    sent: Counter[str] = Counter()
    moved: list[str] = []
    failed: dict[str, str] = {}
    yield {"draining": True, "total": total}
    for i, did in enumerate(dids, 1):
        if not engine.hosts(did):  # left meanwhile (deleted, moved, taken over)
            yield {"did": did, "done": i, "total": total, "skipped": "no longer hosted here"}
            continue
        why = "no other engine is connected"
        for peer in _targets(mesh, refused, sent):
            try:
                result = await mesh.move(did, peer)
            except PicoError as e:
                why = f"{peer}: {e}"
                log.info("drain: %s refused %s: %s", peer, did, e)
                if "draining" in str(e) or "did not answer" in str(e):
                    refused.add(peer)
                continue
            sent[peer] += 1
            moved.append(did)
            yield {"did": did, "to": peer, "seq": result.get("seq"), "done": i, "total": total}
            break
        else:
            failed[did] = why
            yield {"did": did, "error": why, "done": i, "total": total}
    left = [did for did in engine.picos if did != engine.root_did]
    yield {
        "drained": len(moved),
        "failed": failed,
        "left": left,
        "root_stays": engine.root_did,
        "refusing_new_picos": True,
    }
