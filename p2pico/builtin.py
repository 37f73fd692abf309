"""The rulesets p2pico ships (``rulesets/`` at the top of the repository).

Neighbours: p2pico.engine (its ``ruleset_dirs`` include this folder, so
``ctx:install``/``ctx:newPico`` may name these files by ``file://`` URL).

A ruleset's source travels with the pico's state, so an engine that adopts a
moved pico does not need the same folder; the URL is only where it came from.
"""

from __future__ import annotations

from pathlib import Path

RULESETS_DIR = Path(__file__).resolve().parent.parent / "rulesets"


def path(rid: str) -> Path:
    """Where the shipped ruleset ``rid`` lives (``rulesets/<rid>.krl``)."""
    return RULESETS_DIR / f"{rid}.krl"


def url(rid: str) -> str:
    """The ``file://`` URL of the shipped ruleset ``rid``, for ``ctx:install``."""
    return path(rid).as_uri()


def source(rid: str) -> str:
    """The KRL source of the shipped ruleset ``rid``."""
    return path(rid).read_text(encoding="utf-8")


def shipped(rid: str) -> bool:
    """Whether p2pico ships a ruleset ``rid`` (KRL's rid syntax has no ``/``)."""
    return "/" not in rid and path(rid).is_file()
