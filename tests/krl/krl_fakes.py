"""Fakes for the KRL tests: an in-memory Context and a tiny event loop."""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

import krl


class FakeContext:
    """An in-memory stand-in for the engine's per-transaction context."""

    def __init__(self, pico_id: str = "pico-1", eci: str = "eci-1") -> None:
        self.pico_id = pico_id
        self.eci = eci
        self.ents: dict[tuple[str, str], object] = {}
        self.raised: list[tuple[str, str, Mapping[str, object], str | None]] = []
        self.directives: list[tuple[str, Mapping[str, object]]] = []
        self.logs: list[tuple[str, str]] = []
        self.rule_states: dict[tuple[str, str], object] = {}
        self.rule_state_writes = 0
        self.scheduled: list[
            tuple[str, str, Mapping[str, object], float | None, str | None, str | None]
        ] = []
        self.modules: dict[str, krl.Ruleset] = {}  # the rulesets "installed" on the pico
        self.module_lookups: list[str] = []
        self.sent: list[tuple[str, str, str, Mapping[str, object]]] = []
        self.jobs: list[dict[str, object]] = []  # what schedule_list reports
        self.removed: list[str] = []
        self.queries: list[tuple[str, str, str, Mapping[str, object]]] = []
        self.query_result: object = None

    def ent_get(self, rid: str, name: str) -> object:
        return self.ents.get((rid, name))

    def ent_set(self, rid: str, name: str, value: object) -> None:
        self.ents[(rid, name)] = value

    def ent_clear(self, rid: str, name: str) -> None:
        self.ents.pop((rid, name), None)

    def raise_event(
        self, domain: str, type: str, attrs: Mapping[str, object], for_rid: str | None
    ) -> None:
        self.raised.append((domain, type, attrs, for_rid))

    def send_directive(self, name: str, options: Mapping[str, object]) -> None:
        self.directives.append((name, options))

    def log(self, level: str, message: str) -> None:
        self.logs.append((level, message))

    def schedule_event(
        self,
        domain: str,
        type: str,
        attrs: Mapping[str, object],
        at: float | None,
        timespec: str | None,
        setting_name: str | None,
    ) -> str:
        self.scheduled.append((domain, type, attrs, at, timespec, setting_name))
        return f"job-{len(self.scheduled)}"

    def get_module(self, rid: str) -> krl.Ruleset:
        self.module_lookups.append(rid)
        if rid not in self.modules:
            raise krl.KrlRuntimeError(f"Module not found: {rid}")
        return self.modules[rid]

    def send_event(self, target: str, domain: str, type: str, attrs: Mapping[str, object]) -> None:
        self.sent.append((target, domain, type, attrs))

    def schedule_list(self) -> list[dict[str, object]]:
        return copy.deepcopy(self.jobs)

    def schedule_remove(self, job_id: str) -> bool:
        before = len(self.jobs)
        self.jobs = [job for job in self.jobs if job["id"] != job_id]
        self.removed.append(job_id)
        return len(self.jobs) < before

    def query_pico(self, target: str, rid: str, name: str, args: Mapping[str, object]) -> object:
        self.queries.append((target, rid, name, args))
        return self.query_result

    def rule_state_get(self, rid: str, rule: str) -> object:
        return self.rule_states.get((rid, rule))

    def rule_state_set(self, rid: str, rule: str, state: object) -> None:
        assert state != self.rule_states.get((rid, rule)), "rule_state_set without a change"
        self.rule_state_writes += 1
        if state is None:
            self.rule_states.pop((rid, rule), None)
        else:
            self.rule_states[(rid, rule)] = copy.deepcopy(state)


def send_event(
    ruleset: krl.Ruleset,
    ctx: FakeContext,
    domain: str,
    type: str,
    attrs: Mapping[str, object] | None = None,
    budget: krl.Budget | None = None,
    max_events: int = 50,
    time: float = 0.0,
) -> list[tuple[str, Mapping[str, object]]]:
    """Process one event and, breadth-first, every event it raises; return the directives."""
    budget = budget or krl.Budget()
    queue = [krl.Event(domain, type, dict(attrs or {}), time=time)]
    start = len(ctx.directives)
    handled = 0
    while queue and handled < max_events:
        event = queue.pop(0)
        handled += 1
        before = len(ctx.raised)
        for selection in ruleset.iter_select(event, ctx, budget):
            result = ruleset.run(selection, event, ctx, budget)
            if result.halted:  # `error error`: only its system:error event is left
                queue.clear()
                del ctx.raised[before:-1]
            if result.last:
                break
        for d, t, a, _ in ctx.raised[before:]:
            queue.append(krl.Event(d, t, a, time=time))
    return ctx.directives[start:]


def evaluate(
    expr: str, ctx: FakeContext | None = None, budget: krl.Budget | None = None, **attrs: Any
) -> Any:
    """Evaluate a KRL expression through a throwaway ruleset and a shared query."""
    source = f"ruleset t.eval {{ meta {{ shares v }} global {{ v = function() {{ {expr} }} }} }}"
    ruleset = krl.compile_ruleset(source)
    return ruleset.query("v", {}, ctx or FakeContext(), budget or krl.Budget())
