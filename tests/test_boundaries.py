"""Import boundaries between p2pico's packages, checked on the source with ast.

- Only p2pico/net.py imports libp2p (the py-libp2p dependency stays behind one module).
- krl/ and dag/ are pure libraries: no p2pico, protocols, libp2p or trio.
- protocols/ is sans-I/O: no trio, except in modules named ``*_trio.py`` (the thin drivers).
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("p2pico", "krl", "dag", "protocols")


def source_files(package: str) -> list[Path]:
    return sorted((ROOT / package).rglob("*.py"))


def imported_modules(path: Path, root: Path = ROOT) -> Iterator[str]:
    """Absolute names of every module ``path`` imports, relative imports resolved.

    Also catches ``importlib.import_module("x")`` and ``__import__("x")`` with a literal.
    """
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    # The package a relative import starts from: the file's directory, as dotted parts.
    package_parts = list(path.relative_to(root).parent.parts)
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package_parts[: len(package_parts) - (node.level - 1)]
                if node.module:
                    yield ".".join([*base, node.module])
                else:  # ``from .. import x``: x is a module (or a name) of that package
                    yield from (".".join([*base, alias.name]) for alias in node.names)
            elif node.module:
                yield node.module
        elif isinstance(node, ast.Call) and node.args:
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", None)
            first = node.args[0]
            literal = first.value if isinstance(first, ast.Constant) else None
            if name in ("import_module", "__import__") and isinstance(literal, str):
                yield literal


def top_level_imports(path: Path) -> set[str]:
    return {name.split(".")[0] for name in imported_modules(path) if name}


def relative(path: Path) -> str:
    return path.relative_to(ROOT).as_posix()


def test_imported_modules_resolves_relative_and_dynamic_imports(tmp_path: Path) -> None:
    """The checker itself: relative and dynamic imports are seen."""
    (tmp_path / "protocols").mkdir()
    probe = tmp_path / "protocols" / "probe.py"
    probe.write_text(
        "from . import framing\nfrom .framing import x\nimport importlib\n"
        "importlib.import_module('trio')\n__import__('libp2p.peer')\nfrom .. import dag\n",
        encoding="utf-8",
    )
    assert set(imported_modules(probe, tmp_path)) == {
        "protocols.framing",
        "importlib",
        "trio",
        "libp2p.peer",
        "dag",
    }


def test_only_net_imports_libp2p() -> None:
    """libp2p is imported by p2pico/net.py and nowhere else in the packages."""
    importers = {
        relative(path)
        for package in PACKAGES
        for path in source_files(package)
        if "libp2p" in top_level_imports(path)
    }
    assert importers <= {"p2pico/net.py"}, importers


@pytest.mark.parametrize("package", ["krl", "dag"])
def test_pure_packages_import_no_engine_or_io(package: str) -> None:
    """krl/ and dag/ import neither p2pico, protocols, libp2p nor trio."""
    forbidden = {"p2pico", "protocols", "libp2p", "trio"}
    offenders = {
        relative(path): sorted(top_level_imports(path) & forbidden)
        for path in source_files(package)
        if top_level_imports(path) & forbidden
    }
    assert offenders == {}


def test_protocols_are_sans_io() -> None:
    """protocols/*.py never import trio, except the ``*_trio.py`` drivers."""
    offenders = [
        relative(path)
        for path in source_files("protocols")
        if not path.name.endswith("_trio.py") and "trio" in top_level_imports(path)
    ]
    assert offenders == []
