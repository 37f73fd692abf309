"""The Bitswap 1.2.0 message codec (protocols/bitswap.py), against the protobuf classes that
py-libp2p 0.8.1 ships for the same .proto (``libp2p.bitswap.pb.bitswap_pb2``, on Google's
protobuf runtime: upb, in C), on the same bytes, in the same run; prints JSON, then a table.

Two messages, as a fetch of a wide DAG exchanges them:

- a wantlist of 8,192 want-block entries with sendDontHave (p2pico's largest), and
- a reply of 1,000 payload blocks of about 1 KB (HAMT nodes are 1 to 1.3 KB).

Each is encoded (from a message built beforehand, on both sides) and decoded; best of
``--repeat`` runs, in µs per entry or block. What the
two decoders give differs: ours checks every rule of the module docstring and gives CIDs
(parsed) and frozen dataclasses; protobuf gives its message objects with the CIDs as bytes.
``cid_from_payload`` (the block's CID from its prefix and a sha2-256 of its bytes, which a
client needs before it can use a block) has no counterpart there and is timed alone.

    .venv/bin/python scripts/bench/bitswap_codec.py [--repeat N]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from libp2p.bitswap.pb import bitswap_pb2 as pb2

from dag.block import Block
from protocols import bitswap as ours

WANTS = 8_192
BLOCKS = 1_000


def best_us(fn: Callable[[], object], repeat: int, per: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return round(best / per * 1e6, 2)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=7, help="runs of each (default 7)")
    args = parser.parse_args()

    wanted = [Block.encode({"i": i, "pad": os.urandom(24)}) for i in range(WANTS)]
    wantlist = ours.Message(
        entries=tuple(ours.WantEntry(b.cid, 1, False, ours.WantType.BLOCK, True) for b in wanted)
    )
    sent = [Block.encode({"i": i, "pad": os.urandom(1_000)}) for i in range(BLOCKS)]
    reply = ours.Message(
        payload=tuple(ours.PayloadBlock(ours.cid_prefix(b.cid), b.data) for b in sent)
    )

    def pb_wantlist() -> pb2.Message:
        m = pb2.Message()
        for b in wanted:
            m.wantlist.entries.add(block=b.cid.buffer, priority=1, wantType=0, sendDontHave=True)
        return m

    def pb_reply() -> pb2.Message:
        m = pb2.Message()
        for p in reply.payload:
            m.payload.add(prefix=p.prefix, data=p.data)
        return m

    cases = {}
    for name, message, pb_build, per in (
        ("wantlist", wantlist, pb_wantlist, WANTS),
        ("reply", reply, pb_reply, BLOCKS),
    ):
        data = ours.encode(message)
        built = pb_build()
        parsed = pb2.Message()
        parsed.ParseFromString(data)  # protobuf reads our bytes ...
        assert parsed.SerializeToString() == data  # ... and writes them back the same
        assert ours.decode(built.SerializeToString()) == message  # and we read its bytes

        def pb_decode(data: bytes = data) -> None:
            pb2.Message().ParseFromString(data)

        cases[name] = {
            "items": per,
            "bytes": len(data),
            "ours_encode_us": best_us(lambda m=message: ours.encode(m), args.repeat, per),
            # both encoders start from a message built beforehand
            "protobuf_encode_us": best_us(lambda b=built: b.SerializeToString(), args.repeat, per),
            "ours_decode_us": best_us(lambda d=data: ours.decode(d), args.repeat, per),
            "protobuf_decode_us": best_us(pb_decode, args.repeat, per),
        }
    cases["reply"]["cid_from_payload_us"] = best_us(
        lambda: [ours.cid_from_payload(p) for p in reply.payload], args.repeat, BLOCKS
    )
    print(json.dumps(cases, indent=2))
    print()
    print(
        f"{'µs per item':<14} {'items':>6} {'bytes':>10}  {'encode':>8} {'(protobuf)':>10}  "
        f"{'decode':>8} {'(protobuf)':>10}"
    )
    for name, c in cases.items():
        print(
            f"{name:<14} {c['items']:>6,} {c['bytes']:>10,}  {c['ours_encode_us']:>8} "
            f"{c['protobuf_encode_us']:>10}  {c['ours_decode_us']:>8} {c['protobuf_decode_us']:>10}"
        )
    print(
        f"(protobuf: py-libp2p's bitswap_pb2 on upb, its message built from the same items; "
        f"a reply's block CIDs from prefix + sha2-256: "
        f"{cases['reply']['cid_from_payload_us']} µs a block, ours only)"
    )


if __name__ == "__main__":
    main()
