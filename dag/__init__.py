"""Content-addressed pico state: CIDs, strict DAG-CBOR, blocks, did:key, signed heads, stores, CARs.

Modules: cid, cbor (+ _cbor_strict), block (+ pb), did, head, store, state, car. See dag/README.md.
Nothing here imports p2pico, protocols, krl, libp2p or trio.
"""
