"""The one build step pyproject.toml cannot state: dag/_native.c, the C commit path of a HAMT
update (see dag/hamt.py). It is optional: where it cannot be compiled (no C compiler, or no
OpenSSL headers), the install goes on and dag/ uses its Python path."""

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
