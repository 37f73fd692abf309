"""Load, expand and run the shared KRL case files (tests/krl/cases/*.json) against an engine over HTTP.

The format is documented in tests/krl/cases/README.md. This module has no pytest in it: it
loads cases, talks to an engine through its HTTP API (in process through an ASGI transport, or
a real server) and compares results. tests/krl/test_krl_cases.py turns each case into a test.

Run ``python tests/krl/cases_runner.py --expand [FILE]`` to print the cases with expression
tables expanded into plain rulesets and steps, for another engine's own runner.
"""

from __future__ import annotations

import json
import os
import re
import sys
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Protocol

import httpx

CASES_DIR = Path(__file__).resolve().parent / "cases"

CASE_KEYS = {
    "name",
    "doc",
    "ruleset",
    "rulesets",
    "global",
    "exprs",
    "steps",
    "install_error",
    "p2pico_differs",
    "p2pico",
    "xfail",
}
STEP_KEYS = {
    "event",
    "query",
    "time",
    "directives",
    "result",
    "error",
    "p2pico_differs",
    "p2pico",
    "doc",
}
EXPR_KEYS = {"expr", "result", "error", "p2pico_differs", "p2pico", "xfail", "doc"}
OUTCOMES = ("directives", "result", "error")


class CaseFormatError(ValueError):
    pass


@dataclass
class Case:
    """One case, with expression tables already expanded into a ruleset and query steps."""

    file: str
    name: str
    rulesets: list[str]
    steps: list[dict[str, Any]]
    install_error: str | None = None
    p2pico_differs: str | None = None
    p2pico: dict[str, Any] | None = None  # the install outcome on p2pico, if it differs
    xfail: str | None = None
    rids: list[str] = field(default_factory=list)

    @property
    def id(self) -> str:
        return f"{self.file}::{self.name}"

    @property
    def needs_time(self) -> bool:
        """Does a step give the event's time (the reference tests' ``useEventInputTime``)?"""
        return any("time" in step for step in self.steps)


def _source(value: object, where: str) -> str:
    """A ruleset is a string or, for readability in JSON, a list of lines."""
    if isinstance(value, str):
        return value
    if isinstance(value, list) and all(isinstance(line, str) for line in value):
        return "\n".join(value)
    raise CaseFormatError(f"{where}: a ruleset must be a string or a list of lines")


RID_RE = re.compile(r"^\s*ruleset\s+([A-Za-z][A-Za-z0-9_.-]*)", re.MULTILINE)


def _rid(source: str) -> str:
    m = RID_RE.search(source)
    return m.group(1) if m else ""


def _check_outcome(step: dict[str, Any], where: str, *, allow_directives: bool) -> None:
    present = [k for k in OUTCOMES if k in step]
    if len(present) != 1:
        raise CaseFormatError(f"{where}: needs exactly one of {OUTCOMES}, found {present}")
    if present[0] == "directives" and not allow_directives:
        raise CaseFormatError(f"{where}: a query expects 'result' or 'error', not directives")
    alt = step.get("p2pico")
    if alt is not None:
        if "p2pico_differs" not in step:
            raise CaseFormatError(f"{where}: 'p2pico' needs a 'p2pico_differs' reason")
        if not isinstance(alt, dict) or len([k for k in OUTCOMES if k in alt]) != 1:
            raise CaseFormatError(f"{where}: 'p2pico' is an object with one of {OUTCOMES}")


def _slug(text: str) -> str:
    """Text as rid segments: letters, digits and "-", each segment starting with a letter
    (both parsers refuse a rid segment such as "-0o72-" that starts with a digit)."""
    parts = [p for p in re.split(r"[^a-z0-9]+", text.lower()) if p]
    return "-".join(p if p[0].isalpha() else "n" + p for p in parts) or "case"


def expand(file: str, raw: dict[str, Any]) -> list[Case]:
    """One case object of a file into runnable cases (an expression table may split off its xfails)."""
    where = f"{file}: case {raw.get('name')!r}"
    unknown = set(raw) - CASE_KEYS
    if unknown or not isinstance(raw.get("name"), str):
        raise CaseFormatError(f"{where}: unknown keys {sorted(unknown)} or no name")
    name: str = raw["name"]
    common = {
        "p2pico_differs": raw.get("p2pico_differs"),
        "xfail": raw.get("xfail"),
    }
    if "exprs" in raw:
        if {"ruleset", "rulesets", "steps", "install_error"} & set(raw):
            raise CaseFormatError(f"{where}: 'exprs' replaces ruleset and steps")
        exprs = raw["exprs"]
        for i, e in enumerate(exprs):
            if not isinstance(e, dict) or set(e) - EXPR_KEYS or "expr" not in e:
                raise CaseFormatError(f"{where}: expr {i} must be {{expr, result|error, ...}}")
            _check_outcome(e, f"{where}: expr {e['expr']!r}", allow_directives=False)
        globals_src = _source(raw.get("global", ""), where)
        normal = [e for e in exprs if "xfail" not in e]
        cases = []
        if normal:
            cases.append(_expr_case(file, name, globals_src, normal, **common))
        for e in exprs:
            if "xfail" in e:
                cases.append(
                    _expr_case(
                        file,
                        f"{name} [{e['expr']}]",
                        globals_src,
                        [e],
                        p2pico_differs=common["p2pico_differs"],
                        xfail=e["xfail"],
                    )
                )
        return cases
    if "global" in raw:
        raise CaseFormatError(f"{where}: 'global' is only for expression tables")
    if ("ruleset" in raw) == ("rulesets" in raw):
        raise CaseFormatError(f"{where}: needs exactly one of 'ruleset' and 'rulesets'")
    sources = [raw["ruleset"]] if "ruleset" in raw else raw["rulesets"]
    rulesets = [_source(s, where) for s in sources]
    steps = raw.get("steps", [])
    if "install_error" in raw and steps:
        raise CaseFormatError(f"{where}: a case with install_error has no steps")
    for i, step in enumerate(steps):
        swhere = f"{where}: step {i}"
        if set(step) - STEP_KEYS or ("event" in step) == ("query" in step):
            raise CaseFormatError(f"{swhere}: needs 'event' or 'query' and known keys only")
        _check_outcome(step, swhere, allow_directives="event" in step)
        if "time" in step and (
            "event" not in step or not isinstance(step["time"], int) or step["time"] < 0
        ):
            raise CaseFormatError(f"{swhere}: 'time' (epoch ms, an integer) is for events only")
        if "event" in step:
            ev = step["event"]
            if set(ev) - {"domain", "type", "attrs", "eci"} or not {"domain", "type"} <= set(ev):
                raise CaseFormatError(f"{swhere}: event is {{domain, type, attrs?, eci?}}")
        else:
            q = step["query"]
            if set(q) - {"rid", "name", "args", "eci"} or "name" not in q:
                raise CaseFormatError(f"{swhere}: query is {{rid?, name, args?, eci?}}")
    p2pico_install = raw.get("p2pico")
    if p2pico_install is not None and (
        "p2pico_differs" not in raw or set(p2pico_install) != {"install_error"}
    ):
        raise CaseFormatError(f"{where}: case-level 'p2pico' is {{install_error}} with a reason")
    return [
        Case(
            file,
            name,
            rulesets,
            list(steps),
            install_error=raw.get("install_error"),
            p2pico=p2pico_install,
            rids=[_rid(s) for s in rulesets],
            **common,
        )
    ]


def _expr_case(
    file: str,
    name: str,
    globals_src: str,
    exprs: list[dict[str, Any]],
    *,
    p2pico_differs: str | None,
    xfail: str | None,
) -> Case:
    """The documented expansion: one shared function ``eN`` per expression, one query per function."""
    rid = f"krl.cases.{_slug(Path(file).stem)}.{_slug(name)}"[:120].rstrip(".-")
    names = [f"e{i}" for i in range(len(exprs))]
    lines = [f"ruleset {rid} {{", f"  meta {{ shares {', '.join(names)} }}", "  global {"]
    if globals_src.strip():
        lines += ["    " + line for line in globals_src.splitlines()]
    for fn, e in zip(names, exprs, strict=True):
        lines.append(f"    {fn} = function() {{\n      {e['expr']}\n    }}")
    lines += ["  }", "}"]
    steps = []
    for fn, e in zip(names, exprs, strict=True):
        step: dict[str, Any] = {"query": {"rid": rid, "name": fn}, "doc": e["expr"]}
        for k in ("result", "error", "p2pico_differs", "p2pico"):
            if k in e:
                step[k] = e[k]
        steps.append(step)
    return Case(
        file,
        name,
        ["\n".join(lines)],
        steps,
        rids=[rid],
        p2pico_differs=p2pico_differs,
        xfail=xfail,
    )


def load_cases(directory: Path = CASES_DIR) -> list[Case]:
    cases: list[Case] = []
    for path in sorted(directory.glob("*.json")):
        raw = json.loads(path.read_text())
        if not isinstance(raw, list):
            raise CaseFormatError(f"{path.name}: a case file is a JSON list of cases")
        for item in raw:
            cases.extend(expand(path.name, item))
    seen: set[str] = set()
    for c in cases:
        if c.id in seen:
            raise CaseFormatError(f"duplicate case {c.id}")
        seen.add(c.id)
    return cases


# -- comparing ----------------------------------------------------------------------

JSON_TYPES = {
    "null": type(None),
    "boolean": bool,
    "string": str,
    "array": list,
    "object": dict,
}


def matches(expected: object, actual: object) -> bool:
    """Deep equality, where ``{"$regex": p}`` matches a string and ``{"$type": t}`` a JSON type.

    Numbers compare by value (``1`` equals ``1.0``, as in JSON), booleans are not numbers.
    """
    if isinstance(expected, dict) and len(expected) == 1:
        [(key, arg)] = expected.items()
        if key == "$regex":
            return isinstance(actual, str) and re.search(arg, actual) is not None
        if key == "$type":
            if arg == "number":
                return isinstance(actual, int | float) and not isinstance(actual, bool)
            return isinstance(actual, JSON_TYPES[arg]) and not (
                arg != "boolean" and isinstance(actual, bool)
            )
        if key == "$any":
            return True
    if isinstance(expected, bool) or isinstance(actual, bool):
        return type(expected) is type(actual) and expected == actual
    if isinstance(expected, int | float) and isinstance(actual, int | float):
        return expected == actual
    if isinstance(expected, dict):
        return (
            isinstance(actual, dict)
            and expected.keys() == actual.keys()
            and all(matches(v, actual[k]) for k, v in expected.items())
        )
    if isinstance(expected, list):
        return (
            isinstance(actual, list)
            and len(expected) == len(actual)
            and all(matches(e, a) for e, a in zip(expected, actual, strict=True))
        )
    return type(expected) is type(actual) and expected == actual


# -- engines ------------------------------------------------------------------------


class InstallError(Exception):
    pass


class Engine(Protocol):
    is_p2pico: bool
    # Sets the time (epoch ms) of the events that follow, or None when the engine cannot.
    set_time: Callable[[int], None] | None

    async def new_pico(self, case: Case) -> str:
        """A fresh pico with the case's rulesets installed in order; its eci. InstallError."""
        ...

    async def dispose(self, eci: str) -> None: ...


def _is_error(body: object) -> str | None:
    if isinstance(body, dict) and set(body) == {"error"} and isinstance(body["error"], str):
        return body["error"]
    return None


async def _json(response: httpx.Response) -> object:
    if not response.content:
        return None  # pico-engine and p2pico send a null result as an empty body
    return response.json()


class P2picoEngine:
    """Any engine with p2pico's ``POST /api/picos {"rulesets": [source…]} -> {"did", "eci"}``."""

    is_p2pico = True

    def __init__(
        self, client: httpx.AsyncClient, set_time: Callable[[int], None] | None = None
    ) -> None:
        self.client = client
        self.set_time = set_time  # only in process: the engine's clock

    async def new_pico(self, case: Case) -> str:
        r = await self.client.post("/api/picos", json={"rulesets": case.rulesets})
        body = r.json()
        if (err := _is_error(body)) is not None:
            raise InstallError(err)
        r.raise_for_status()
        return str(body["eci"])

    async def dispose(self, eci: str) -> None:
        pass  # picos of an in-process mesh vanish with it; a real node keeps them


class PicoEngine:
    """pico-engine 1.x, driven only through its root UI channel (catalog §4, §5.4).

    1. ``GET /api/ui-context`` gives the root pico's UI eci.
    2. ``engine_ui:new`` on it creates a child; the root's ``pico`` query lists children UI ecis.
    3. Each ruleset is written to ``KRL_CASES_KRL_DIR`` and installed with ``engine_ui:install
       {url}`` on the child's UI eci; the URL is ``KRL_CASES_KRL_BASE_URL`` + file name (default
       ``file://`` + that directory, which works when the engine runs on this machine).
    4. ``engine_ui:new_channel`` makes an allow-all channel tagged ``krl-cases``; its id (from the
       child's ``pico`` query) is the case's eci.
    5. Afterwards ``engine_ui:del {eci: child UI eci}`` on the root deletes the child.
    """

    is_p2pico = False
    set_time = None  # pico-engine's HTTP API takes no event time
    UI_RID = "io.picolabs.pico-engine-ui"
    ALLOW_ALL_EVENTS: ClassVar[dict[str, list[dict[str, str]]]] = {
        "allow": [{"domain": "*", "name": "*"}],
        "deny": [],
    }
    ALLOW_ALL_QUERIES: ClassVar[dict[str, list[dict[str, str]]]] = {
        "allow": [{"rid": "*", "name": "*"}],
        "deny": [],
    }

    def __init__(self, client: httpx.AsyncClient, krl_dir: Path, base_url: str | None) -> None:
        self.client = client
        self.krl_dir = krl_dir
        self.base_url = base_url or krl_dir.resolve().as_uri() + "/"
        self.root_ui: str | None = None
        self.child_ui: dict[str, str] = {}
        self.count = 0

    async def _event(self, eci: str, domain: str, type: str, attrs: dict[str, Any]) -> object:
        r = await self.client.post(f"/c/{eci}/event-wait/{domain}/{type}", json=attrs)
        body = await _json(r)
        if (err := _is_error(body)) is not None:
            raise InstallError(f"{domain}:{type}: {err}")
        return body

    async def _pico(self, ui_eci: str) -> dict[str, Any]:
        r = await self.client.get(f"/c/{ui_eci}/query/{self.UI_RID}/pico")
        body = await _json(r)
        if not isinstance(body, dict):
            raise InstallError(f"unexpected reply to the pico query: {body!r}")
        return body

    async def new_pico(self, case: Case) -> str:
        if self.root_ui is None:
            r = await self.client.get("/api/ui-context")
            self.root_ui = str(r.json()["eci"])
        before = set((await self._pico(self.root_ui)).get("children") or [])
        self.count += 1
        await self._event(self.root_ui, "engine_ui", "new", {"name": f"krl-case-{self.count}"})
        after = set((await self._pico(self.root_ui)).get("children") or [])
        [child_ui] = after - before
        try:
            for i, source in enumerate(case.rulesets):
                fname = f"{_slug(case.id)}-{i}.krl"
                (self.krl_dir / fname).write_text(source)
                await self._event(
                    child_ui, "engine_ui", "install", {"url": self.base_url + fname, "config": {}}
                )
            installed = {r.get("rid") for r in (await self._pico(child_ui)).get("rulesets", [])}
            missing = [rid for rid in case.rids if rid not in installed]
            if missing:
                raise InstallError(f"not installed: {missing}")
            await self._event(
                child_ui,
                "engine_ui",
                "new_channel",
                {
                    "tags": ["krl-cases"],
                    "eventPolicy": self.ALLOW_ALL_EVENTS,
                    "queryPolicy": self.ALLOW_ALL_QUERIES,
                },
            )
            channels = (await self._pico(child_ui)).get("channels", [])
            [eci] = [c["id"] for c in channels if c.get("tags") == ["krl-cases"]]
        except BaseException:
            await self._del_child(child_ui)
            raise
        self.child_ui[eci] = child_ui
        return str(eci)

    async def _del_child(self, child_ui: str) -> None:
        assert self.root_ui is not None
        await self.client.post(
            f"/c/{self.root_ui}/event-wait/engine_ui/del", json={"eci": child_ui}
        )

    async def dispose(self, eci: str) -> None:
        child_ui = self.child_ui.pop(eci, None)
        if child_ui is not None:
            await self._del_child(child_ui)


async def detect_engine(client: httpx.AsyncClient, flavour: str) -> Engine:
    """``KRL_CASES_ENGINE``: ``p2pico``, ``pico-engine`` or ``auto`` (asks ``/api/node``, which
    only p2pico serves: p2pico also serves pico-engine's ``/api/ui-context``)."""
    if flavour == "auto":
        r = await client.get("/api/node")
        ok = r.status_code == 200 and "json" in r.headers.get("content-type", "")
        flavour = "p2pico" if ok and "peer_id" in r.json() else "pico-engine"
    if flavour == "p2pico":
        return P2picoEngine(client)
    if flavour == "pico-engine":
        krl_dir = Path(os.environ.get("KRL_CASES_KRL_DIR") or tempfile.mkdtemp(prefix="krl-cases-"))
        os.makedirs(krl_dir, exist_ok=True)
        return PicoEngine(client, krl_dir, os.environ.get("KRL_CASES_KRL_BASE_URL"))
    raise ValueError(f"KRL_CASES_ENGINE must be auto, p2pico or pico-engine, not {flavour!r}")


# -- running ------------------------------------------------------------------------


def _expectation(step: dict[str, Any], is_p2pico: bool) -> dict[str, Any] | None:
    """The outcome to check on this engine, or None to skip the step."""
    if is_p2pico and "p2pico_differs" in step:
        return step.get("p2pico")
    return {k: step[k] for k in OUTCOMES if k in step}


async def run_case(client: httpx.AsyncClient, engine: Engine, case: Case) -> list[str]:
    """Run every step; return the mismatches (empty when the case passes)."""
    install_error = case.install_error
    if engine.is_p2pico and case.p2pico is not None:
        install_error = case.p2pico["install_error"]
    try:
        eci = await engine.new_pico(case)
    except InstallError as e:
        if install_error is not None and install_error in str(e):
            return []
        return [
            f"install: {e}"
            if install_error is None
            else f"install error {e!s:.300} lacks {install_error!r}"
        ]
    if install_error is not None:
        await engine.dispose(eci)
        return [f"install succeeded; expected an error containing {install_error!r}"]
    problems: list[str] = []
    try:
        for i, step in enumerate(case.steps):
            expect = _expectation(step, engine.is_p2pico)
            if expect is None:
                continue
            label = f"step {i} ({step.get('doc') or _describe(step)})"
            if "time" in step:
                if engine.set_time is None:
                    return [f"{label}: this engine cannot take an event time"]
                engine.set_time(step["time"])
            if "event" in step:
                ev = step["event"]
                r = await client.post(
                    f"/sky/event/{ev.get('eci', eci)}/none/{ev['domain']}/{ev['type']}",
                    json=ev.get("attrs", {}),
                )
                body = await _json(r)
                err = _is_error(body)
                if "error" in expect:
                    if err is None or expect["error"] not in err:
                        problems.append(
                            f"{label}: expected error {expect['error']!r}, got {body!r:.400}"
                        )
                    continue
                if err is not None or not isinstance(body, dict):
                    problems.append(f"{label}: {body!r:.400}")
                    continue
                got = [
                    {"name": d.get("name"), "options": d.get("options")} for d in body["directives"]
                ]
                if not matches(expect["directives"], got):
                    problems.append(f"{label}: expected {expect['directives']!r}, got {got!r}")
            else:
                q = step["query"]
                rid = q.get("rid") or case.rids[-1]
                r = await client.post(
                    f"/sky/cloud/{q.get('eci', eci)}/{rid}/{q['name']}", json=q.get("args", {})
                )
                body = await _json(r)
                err = _is_error(body)
                if "error" in expect:
                    if err is None or expect["error"] not in err:
                        problems.append(
                            f"{label}: expected error {expect['error']!r}, got {body!r:.400}"
                        )
                elif err is not None or not matches(expect["result"], body):
                    problems.append(f"{label}: expected {expect['result']!r}, got {body!r:.400}")
    finally:
        await engine.dispose(eci)
    return problems


def _describe(step: dict[str, Any]) -> str:
    if "event" in step:
        return f"event {step['event']['domain']}:{step['event']['type']}"
    return f"query {step['query']['name']}"


def _expanded(cases: list[Case]) -> Iterator[dict[str, Any]]:
    for c in cases:
        out: dict[str, Any] = {"name": c.name, "rulesets": c.rulesets}
        for k in ("install_error", "p2pico_differs", "p2pico", "xfail"):
            if getattr(c, k) is not None:
                out[k] = getattr(c, k)
        if c.steps:
            out["steps"] = c.steps
        yield out


if __name__ == "__main__":
    if sys.argv[1:2] != ["--expand"]:
        sys.exit("usage: cases_runner.py --expand [FILE.json]")
    selected = load_cases()
    if len(sys.argv) > 2:
        selected = [c for c in selected if c.file == Path(sys.argv[2]).name]
    json.dump(list(_expanded(selected)), sys.stdout, indent=2, ensure_ascii=False)
    print()
