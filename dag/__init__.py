"""Content-addressed pico state: CIDs, strict DAG-CBOR, blocks, did:key, signed heads, stores.

Modules: cid, cbor (+ _cbor_strict), block, did, head, store, state. See dag/README.md.
Nothing here imports p2pico, protocols, krl, libp2p or trio.
"""
