"""The one build step pyproject.toml cannot state: dag/_native.c, a commit's hot paths in C
(a one-key HAMT set and the node cache's table for dag/hamt.py; spliced blocks for
dag/block.py, with a block's links; the block store's Bloom filter, index-merge rows and
inserts for dag/store.py, and their statements bound on its SQLite connection; cbor.encode and cbor.decode for dag/cbor.py; a head's signature
spliced into its envelope for dag/did.py).
It is optional: where it cannot be compiled (no C compiler, or no OpenSSL headers), the
install goes on and dag/ uses its Python paths."""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "dag._native",
            sources=["dag/_native.c"],
            libraries=["crypto"],
            extra_compile_args=["-O2"],
            optional=True,
        )
    ]
)
