"""Fakes for the KRL tests: an in-memory Context and a tiny event loop."""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from typing import Any

import krl


class FakeContext:
    """An in-memory stand-in for the engine's per-transaction context."""

    def __init__(self, pico_id: str = "pico-1", eci: str = "eci-1") -> None:
        self.pico_id = pico_id
        self.eci = eci
        self.txn_id = "txn-1"
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
        # http: requests made (method, url, headers, body, follow_redirects) and autosends
        self.http_requests: list[tuple[str, str, list[tuple[str, str]], bytes | None, bool]] = []
        self.http_response: dict[str, object] = {
            "content": "ok",
            "content_type": "text/plain",
            "content_length": 2,
            "headers": {"content-type": "text/plain"},
            "status_code": 200,
            "status_line": "OK",
        }
        self.http_autosends: list[tuple[object, ...]] = []
        self.event_queries: list[tuple[object, ...]] = []
        self.flushed: list[str] = []
        self.log_entries: list[dict[str, object]] = []
        self.host: str | None = "http://127.0.0.1:8000"

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

    def http_request(
        self,
        method: str,
        url: str,
        headers: Sequence[tuple[str, str]],
        body: bytes | None,
        follow_redirects: bool,
    ) -> dict[str, object]:
        self.http_requests.append((method, url, list(headers), body, follow_redirects))
        return copy.deepcopy(self.http_response)

    def http_autosend(self, *args: object) -> None:
        self.http_autosends.append(args)

    def event_query(self, *args: object) -> object:
        self.event_queries.append(args)
        return self.query_result

    def logs(self) -> list[dict[str, object]]:
        return copy.deepcopy(self.log_entries)

    def flush(self, url: str) -> None:
        self.flushed.append(url)

    def base_url(self) -> str | None:
        return self.host

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
