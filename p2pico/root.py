"""The node's root pico: the pico pico-engine's developer UI starts from.

Neighbours: p2pico.node (calls ``start_root`` once the engine and mesh serve, before
HTTP), p2pico.engine (hosts it, refuses to move it), p2pico.home (remembers its DID),
p2pico.builtin (the shipped rulesets), p2pico.http (``GET /api/ui-context``).

As pico-engine 1.4 does at every start (krl-catalog.md §3.15):

1. The first start makes the root pico: a normal pico of the mesh (its own
   ``did:key``, a location record like any other), without the allow-all ``p2pico``
   channel ``p2pico pico new`` hands out.  Its DID goes in the node's home.
2. Every start (re)installs the shipped ``ROOT_RULESETS`` that exist and compile, in
   that order, with their ``file://`` URLs (``p2pico.builtin``): a ruleset not yet
   there is added, a changed one is replaced and keeps its entity variables.  Nothing
   changed, nothing is committed.  A shipped ruleset that does not compile is logged
   and left out (the installed version, if any, stays).
3. ``engine_ui:setup`` (waited for) makes or updates the ``engine,ui`` channel; its id
   is what ``GET /api/ui-context`` gives.  Then ``engine:started`` goes to that
   channel without waiting, as pico-engine sends it.

The root pico never moves (p2pico.engine refuses): it is the node's entry point, the
one ``/api/ui-context`` names, and the next start would reinstall rulesets on it.
"""

from __future__ import annotations

import logging
from importlib import metadata

import krl
from p2pico import builtin
from p2pico import channels as chan
from p2pico.engine import Engine, InstalledRuleset, PicoError, Work

log = logging.getLogger("p2pico.root")

# pico-engine 1.4 installs these and io.picolabs.did-o (p2pico has no DIDComm module).
ROOT_RULESETS = (
    "io.picolabs.pico-engine-ui",
    "io.picolabs.wrangler",
    "io.picolabs.subscription",
    "io.picolabs.pds",
)
UI_RID = "io.picolabs.pico-engine-ui"
UI_TAGS = ["engine", "ui"]


def version() -> str:
    """p2pico's version, which ``/api/ui-context`` gives where pico-engine gives its own."""
    try:
        return metadata.version("p2pico")
    except metadata.PackageNotFoundError:  # run from a checkout that is not installed
        return "0.0.0"


def shipped_rulesets() -> list[tuple[InstalledRuleset, str]]:
    """The ROOT_RULESETS that are in ``rulesets/`` and compile, with their URLs."""
    found: list[tuple[InstalledRuleset, str]] = []
    for rid in ROOT_RULESETS:
        path = builtin.path(rid)
        if not path.exists():
            log.info("root pico: %s is not shipped yet; not installed", rid)
            continue
        source = path.read_text(encoding="utf-8")
        try:
            compiled = krl.compile_ruleset(source, filename=str(path))
        except krl.KrlError as e:
            log.error("root pico: shipped %s does not compile; not installed: %s", rid, e)
            continue
        if compiled.rid != rid:
            log.error("root pico: %s holds ruleset %s; not installed", path, compiled.rid)
            continue
        found.append((InstalledRuleset(rid, source, compiled), builtin.url(rid)))
    return found


async def start_root(engine: Engine) -> str:
    """Make or upgrade the node's root pico and set it up; its DID (``engine.root_did``).

    Runs once the engine serves (and the mesh, which publishes a new pico's record).
    """
    home = engine.home
    did = home.root_did()
    if did is not None and did in engine.unloadable:
        # Its data is kept; making another root would hide the problem.
        log.error("root pico %s could not be loaded: %s", did, engine.unloadable[did])
        engine.root_did = did
        return did
    if did is None or not engine.hosts(did):
        if did is not None:
            log.warning("root pico %s is no longer hosted here; making a new one", did)
        pico = engine.create_pico([], first_channel=False)
        home.set_root_did(pico.did)
        did = pico.did
        if engine.on_new_pico is not None:
            await engine.on_new_pico(pico)
        log.info("root pico made: %s", did)
    engine.root_did = did
    changed = await engine.install_rulesets(did, shipped_rulesets())
    if changed:
        log.info("root pico %s: installed %s", did, ", ".join(changed))
    try:  # by DID: the owner path, no channel needed before the UI ruleset makes one
        await engine.submit(did, Work("event", event=krl.Event("engine_ui", "setup", {})))
    except PicoError as e:
        log.error("root pico %s: engine_ui:setup failed: %s", did, e)
    eci = ui_eci(engine)
    if eci is not None:
        started = Work("event", event=krl.Event("engine", "started", {}), eci=eci)
        try:
            engine.queue_event(did, started)
        except PicoError as e:
            log.error("root pico %s: engine:started not sent: %s", did, e)
    return did


def ui_eci(engine: Engine) -> str | None:
    """The root pico's ``engine,ui`` channel, or None (no root yet, or no UI ruleset)."""
    pico = engine.picos.get(engine.root_did or "")
    if pico is None:
        return None
    for eci, record in sorted(pico.channels.items()):
        if not record.get("family") and sorted(chan.tags_of(record)) == UI_TAGS:
            return eci
    return None


def ui_context(engine: Engine) -> dict[str, object]:
    """``GET /api/ui-context``: ``{"version", "eci"}``; PicoError saying why there is none."""
    did = engine.root_did
    if did is None:
        raise PicoError("this node has no root pico")
    if did in engine.unloadable:
        raise PicoError(f"the root pico {did} could not be loaded: {engine.unloadable[did]}")
    eci = ui_eci(engine)
    if eci is None:
        raise PicoError(
            f"the root pico {did} has no engine,ui channel (is {UI_RID} installed there?)"
        )
    return {"version": version(), "eci": eci}
