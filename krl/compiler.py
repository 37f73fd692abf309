"""Compile ``ast`` nodes from the parser into Python closures for the runtime.

Neighbours: ``parser`` (syntax trees in), ``runtime`` (the :class:`~krl.runtime.Ruleset`
out, and the value semantics), ``stdlib`` (operators and built-in functions).

Design: every expression becomes a closure ``eval(frame, run) -> value`` and every
statement a closure ``exec(frame, run) -> None``, built once when the ruleset is
loaded. Names are resolved here, at compile time, to (scope depth, slot index), so
running a rule never looks a name up by string. A frame is a Python list whose slot
0 links to the enclosing scope's frame (rule frame -> global frame; function frame
-> the frame the function literal was evaluated in). Function literals are the
exception: ``codegen`` turns each into a generated Python function (same frames and
slots, same results and errors), and uses these closures for what it does not
generate; ``compile_ruleset(…, codegen=False)`` keeps them as closures too.

Safety: KRL can only reach what these closures reach: member access goes through
``stdlib.get_key``/``get_path`` (maps and arrays only), calls only accept KRL and
stdlib functions, and the engine is reached only through the ``Context`` protocol.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from typing import Any, NoReturn

from . import ast
from .checks import check_ruleset
from .codegen import describe_callee, function_code
from .errors import KrlCompileError, KrlRuntimeError
from .eventexp import (
    MAX_TRANSITIONS,
    Guard,
    MachineTooLarge,
    PatternCode,
    build_machine,
    stateful_matcher,
)
from .parser import WITHIN_UNITS, parse_ruleset
from .runtime import (
    Eval,
    Event,
    Exec,
    Frame,
    FunctionCode,
    KrlAction,
    KrlCallable,
    KrlFunction,
    Matcher,
    ModuleFunction,
    ModuleInstance,
    ModuleUse,
    Rule,
    Ruleset,
    Run,
    StdlibFunction,
    StopRule,
    closure_entry,
    module_error,
    to_number,
    to_plain,
    to_string,
    truthy,
    type_of,
)
from .stdlib import (
    ACTIONS,
    BINARY_OPS,
    MODULE_ACTIONS,
    MODULES,
    REFERENCE_MODULES,
    STDLIB,
    add_text,
    compile_regex,
    delete_path,
    get_key,
    get_path,
    join_text,
    key_path,
    op_neg,
    parse_time,
    schedule_record,
    set_path,
)

__all__ = ["compile_ruleset"]


def compile_ruleset(source: str, *, filename: str = "<krl>", codegen: bool = True) -> Ruleset:
    """Parse and compile KRL source; raises KrlSyntaxError or KrlCompileError.

    ``codegen=False`` compiles function literals to closures too, instead of to
    generated Python (``krl.codegen``): slower, the same results and errors (the
    tests compare the two)."""
    tree = parse_ruleset(source)
    try:
        check_ruleset(tree, source, filename)
        return _Compiler(source, filename, tree.rid, codegen).ruleset(tree)
    except RecursionError:
        # The parser caps nesting, but a chain like `a + a + … + a` is a left-deep tree.
        message = "expressions are nested too deeply to compile (a very long chain of operators?)"
        raise KrlCompileError.at(message, source, 0, filename) from None


class Scope:
    """Compile-time map from names to frame slots; one per global/rule/function body."""

    def __init__(self, parent: Scope | None) -> None:
        self.parent = parent
        self.names: dict[str, int] = {}
        self.size = 1  # slot 0 links to the parent frame

    def declare(self, name: str) -> int:
        slot = self.names.get(name)
        if slot is None:
            slot = self.names[name] = self.size
            self.size += 1
        return slot

    def depth(self) -> int:
        """How many links lead from this scope's frame to the global frame."""
        depth, scope = 0, self.parent
        while scope is not None:
            depth, scope = depth + 1, scope.parent
        return depth

    def resolve(self, name: str) -> tuple[int, int] | None:
        scope: Scope | None = self
        depth = 0
        while scope is not None:
            slot = scope.names.get(name)
            if slot is not None:
                return depth, slot
            scope = scope.parent
            depth += 1
        return None


def _annotate(err: KrlRuntimeError, span: ast.Span) -> None:
    if err.span is None:
        err.span = (span.start, span.end)


def _const(value: object) -> Eval:
    return lambda f, r: value


def _read(depth: int, slot: int) -> Eval:
    if depth == 0:
        return lambda f, r: f[slot]
    if depth == 1:
        return lambda f, r: f[0][slot]
    if depth == 2:
        return lambda f, r: f[0][0][slot]

    def read(f: Frame, r: Run) -> Any:
        for _ in range(depth):
            f = f[0]
        return f[slot]

    return read


def _is_constant(node: ast.Expr) -> bool:
    return isinstance(node, ast.Null | ast.Boolean | ast.Number | ast.String | ast.RegExp)


def _is_stateful(node: ast.EventExpr) -> bool:
    """True unless the expression is one event or an ``or`` of events (no state needed)."""
    if isinstance(node, ast.EventPattern):
        return False
    return node.op != "or" or any(_is_stateful(a) for a in node.args)


def _is_pure(node: object) -> bool:
    """True if evaluating ``node`` cannot observe the pico, the event or the clock."""
    if isinstance(node, ast.Function | ast.DefAction):
        return True  # its body runs later, with the caller's context
    if isinstance(node, ast.DomainIdentifier | ast.Call | ast.DotCall):
        return False
    names = ast.field_names(node)
    if names:
        return all(_is_pure(getattr(node, name)) for name in names)
    if isinstance(node, tuple):
        return all(_is_pure(item) for item in node)
    return True


class _Compiler:
    def __init__(self, source: str, filename: str, rid: str, codegen: bool = True) -> None:
        self.source = source
        self.filename = filename
        self.rid = rid
        self.codegen = codegen  # function literals become generated Python functions
        self.aliases: set[str] = set()  # `use module … alias A`: the prefixes A

    def fail(self, message: str, span: ast.Span) -> NoReturn:
        raise KrlCompileError.at(message, self.source, span.start, self.filename)

    # -- ruleset ---------------------------------------------------------

    def ruleset(self, tree: ast.Ruleset) -> Ruleset:
        meta, shares, provides = self.meta(tree)
        gscope = Scope(None)
        # `__testing` is always declared; a global may redefine it (reading this one).
        testing_slot = gscope.declare("__testing")
        testing = self.testing_map(tree)
        configure, uses = self.modules(tree, gscope)
        configured = {name for _, name, _ in configure}
        global_steps, globals_pure = self.globals(tree.global_decls, gscope, configured)
        globals_pure = globals_pure and all(
            _is_pure(d.value)
            for p in tree.meta
            if isinstance(p, ast.Configure)
            for d in p.declarations
        )
        for names, what in ((shares, "shares"), (provides, "provides")):
            for ident in names:
                if ident.name not in gscope.names:
                    self.fail(
                        f"'{ident.name}' is listed in {what} but not declared in global", ident.span
                    )
        rules: list[Rule] = []
        seen: dict[str, ast.Rule] = {}
        for node in tree.rules:
            if node.name.name in seen:
                self.fail(f"duplicate rule name '{node.name.name}'", node.name.span)
            seen[node.name.name] = node
            if node.active:
                rules.append(self.rule(node, gscope))
        nglobals = gscope.size
        steps = tuple(global_steps)
        configure_steps = tuple(configure)

        def global_init(run: Run, instance: ModuleInstance) -> Frame:
            frame: Frame = [None] * nglobals
            frame[0] = instance  # the global frame has no parent: it keeps its instance
            frame[testing_slot] = testing
            config = instance.config
            for slot, name, default in configure_steps:
                if config is not None and name in config:
                    frame[slot] = config[name]
                else:
                    frame[slot] = default(frame, run)
            for slot, ev in steps:
                frame[slot] = ev(frame, run)
            return frame

        return Ruleset(
            rid=tree.rid,
            meta=meta,
            shares=frozenset(i.name for i in shares),
            provides=frozenset(i.name for i in provides),
            rules=tuple(rules),
            global_names=dict(gscope.names),
            global_init=global_init,
            globals_are_pure=globals_pure,
            source=self.source,
            filename=self.filename,
            uses=uses,
        )

    def modules(
        self, tree: ast.Ruleset, gscope: Scope
    ) -> tuple[list[tuple[int, str, Eval]], list[ModuleUse]]:
        """``configure using`` parameters (global slots) and ``use module`` clauses, in
        meta order: a ``with`` value or a default may use the parameters before it."""
        configure: list[tuple[int, str, Eval]] = []
        uses: list[ModuleUse] = []
        for prop in tree.meta:
            if isinstance(prop, ast.Configure):
                for decl in prop.declarations:
                    name = decl.name.name
                    if name in gscope.names:
                        self.fail(
                            f"'{name}' is already declared in configure using", decl.name.span
                        )
                    default = self.expr(decl.value, gscope, name)
                    configure.append((gscope.declare(name), name, default))
            elif isinstance(prop, ast.UseModule):
                alias = prop.alias.name if prop.alias is not None else prop.rid
                span = prop.alias.span if prop.alias is not None else prop.span
                if alias in self.aliases:
                    self.fail(f"the module alias '{alias}' is used twice", span)
                if alias == "ent":
                    self.fail("'ent' cannot be a module alias", span)
                values: list[tuple[str, Eval]] = []
                for decl in prop.with_:
                    if any(decl.name.name == n for n, _ in values):
                        self.fail(f"'{decl.name.name}' is given twice in with", decl.name.span)
                    values.append((decl.name.name, self.expr(decl.value, gscope)))
                self.aliases.add(alias)
                uses.append(ModuleUse(alias, prop.rid, tuple(values)))
        return configure, uses

    def testing_map(self, tree: ast.Ruleset) -> dict[str, object]:
        """The generated ``__testing`` value: ``{queries: [{name, args}], events: [{domain,
        name, attrs}]}``, from ``shares`` and every rule's events and the attributes it reads."""
        functions = {
            d.name.name: [p.name for p in d.value.params]
            for d in tree.global_decls
            if isinstance(d.value, ast.Function)
        }
        queries: list[object] = []
        for prop in tree.meta:
            if isinstance(prop, ast.MetaNames) and prop.key == "shares":
                for ident in prop.names:
                    queries.append({"name": ident.name, "args": functions.get(ident.name, [])})
        events: list[object] = []
        for rule in tree.rules:
            pairs: dict[tuple[str, str], None] = {}
            attrs: dict[str, None] = {}
            if rule.select is not None:
                _event_pairs(rule.select, pairs, attrs)
            _attrs_read(rule, attrs)
            for domain, etype in pairs:
                events.append({"domain": domain, "name": etype, "attrs": list(attrs)})
        return {"queries": queries, "events": events}

    def meta(
        self, tree: ast.Ruleset
    ) -> tuple[dict[str, object], list[ast.Identifier], list[ast.Identifier]]:
        meta: dict[str, object] = {}
        shares: list[ast.Identifier] = []
        provides: list[ast.Identifier] = []
        for prop in tree.meta:
            if isinstance(prop, ast.UseModule | ast.Configure):
                continue  # see modules()
            if prop.key in meta:
                self.fail(f"meta property '{prop.key}' is given more than once", prop.span)
            if isinstance(prop, ast.MetaNames):
                (shares if prop.key == "shares" else provides).extend(prop.names)
                meta[prop.key] = [i.name for i in prop.names]
            else:
                meta[prop.key] = self.constant(prop.value, f"meta {prop.key}")
        return meta, shares, provides

    def constant(self, node: ast.Expr, what: str) -> object:
        if isinstance(node, ast.Null):
            return None
        if isinstance(node, ast.Boolean | ast.Number | ast.String):
            return node.value
        if isinstance(node, ast.Chevron) and all(isinstance(p, ast.String) for p in node.parts):
            return "".join(p.value for p in node.parts if isinstance(p, ast.String))
        self.fail(f"{what} must be a constant (a string, number, boolean or null)", node.span)

    def globals(
        self, decls: Sequence[ast.Declaration], scope: Scope, configured: set[str]
    ) -> tuple[list[tuple[int, Eval]], bool]:
        """Values are compiled in order (no forward references); functions see every name."""
        seen: set[str] = set()
        for decl in decls:
            if decl.name.name in seen:
                self.fail(f"'{decl.name.name}' is already declared in global", decl.name.span)
            if decl.name.name in configured:
                self.fail(
                    f"'{decl.name.name}' is already declared in configure using", decl.name.span
                )
            seen.add(decl.name.name)
            if isinstance(decl.value, ast.Function | ast.DefAction):
                scope.declare(decl.name.name)
        evals: dict[int, Eval] = {}
        later: list[ast.Declaration] = []
        for decl in decls:
            if isinstance(decl.value, ast.Function | ast.DefAction):
                later.append(decl)
                continue
            ev = self.expr(decl.value, scope)
            evals[id(decl)] = ev
            scope.declare(decl.name.name)
        for decl in later:
            evals[id(decl)] = self.expr(decl.value, scope, decl.name.name)
        steps = [(scope.names[d.name.name], evals[id(d)]) for d in decls]
        return steps, all(_is_pure(d.value) for d in decls)

    # -- rules -----------------------------------------------------------

    def rule(self, node: ast.Rule, gscope: Scope) -> Rule:
        scope = Scope(gscope)
        setting_names: list[str] = []
        if node.select is None:  # `select where <expr>`: every event, if expr is truthy
            assert node.select_where is not None
            matcher = self.select_where(node.select_where, scope)
            events: frozenset[tuple[str, str]] = frozenset()
            needs_globals = True
        else:
            self.collect_settings(node.select, setting_names)
            for name in setting_names:
                scope.declare(name)
            if node.within is not None or _is_stateful(node.select):
                matcher, events = self.state_machine(node, scope)
            else:
                matcher, events = self.event_expr(node.select, scope)
            needs_globals = self.has_where(node.select) or node.within is not None
        loops = tuple(self.foreach(fe, scope) for fe in node.foreach)

        pre: list[tuple[int, Eval]] = []
        declared: set[str] = set()
        for decl in node.pre:
            if decl.name.name in declared:
                self.fail(f"'{decl.name.name}' is already declared in pre", decl.name.span)
            declared.add(decl.name.name)
            if isinstance(decl.value, ast.Function | ast.DefAction):  # may call itself
                slot = scope.declare(decl.name.name)
                ev = self.expr(decl.value, scope, decl.name.name)
            else:
                ev = self.expr(decl.value, scope, decl.name.name)
                slot = scope.declare(decl.name.name)
            pre.append((slot, ev))
        pre_steps = tuple(pre)

        condition: Eval | None = None
        perform: Exec | None = None
        has_actions = node.action_block is not None
        if node.action_block is not None:
            condition, perform = self.action_block(node.action_block, scope)

        post = node.postlude
        fired = self.statements(post.fired if post else None, scope)
        notfired = self.statements(post.notfired if post else None, scope)
        always = self.statements(post.always if post else None, scope)

        def once(frame: Frame, run: Run) -> bool:
            for slot, ev in pre_steps:
                frame[slot] = ev(frame, run)
            did_fire = True
            if has_actions:
                did_fire = condition is None or truthy(condition(frame, run))
                if did_fire and perform is not None:
                    perform(frame, run)
            run.fired = did_fire
            for stmt in fired if did_fire else notfired:
                stmt(frame, run)
            for stmt in always:
                stmt(frame, run)
            return did_fire

        body = once
        if loops:

            def body(frame: Frame, run: Run) -> bool:
                return _run_loops(loops, 0, once, frame, run, True)

        return Rule(
            node.name.name,
            events,
            tuple(setting_names),
            matcher,
            needs_globals,
            body,
            scope.size,
            any_event=node.select is None,
        )

    def select_where(self, node: ast.Expr, scope: Scope) -> Matcher:
        where = self.expr(node, scope)
        span = node.span

        def match(event: Event, frame: Frame, run: Run) -> bool:
            try:
                return truthy(where(frame, run))
            except KrlRuntimeError as err:
                _annotate(err, span)
                raise

        return match

    def foreach(self, node: ast.ForEach, scope: Scope) -> tuple[Eval, int, int | None]:
        if len(node.setting) > 2:
            self.fail("foreach sets at most two variables (value, key)", node.setting[2].span)
        collection = self.expr(node.collection, scope)
        value_slot = scope.declare(node.setting[0].name)
        key_slot = scope.declare(node.setting[1].name) if len(node.setting) > 1 else None
        return collection, value_slot, key_slot

    def collect_settings(self, node: ast.EventExpr, out: list[str]) -> None:
        if isinstance(node, ast.EventPattern):
            idents: tuple[ast.Identifier, ...] = node.setting
        else:
            for arg in node.args:
                self.collect_settings(arg, out)
            idents = node.aggregator.names if node.aggregator is not None else ()
        for ident in idents:
            if ident.name not in out:
                out.append(ident.name)

    def state_machine(
        self, node: ast.Rule, scope: Scope
    ) -> tuple[Matcher, frozenset[tuple[str, str]]]:
        """A stateful select: the expression's machine, run against state kept by the Context."""
        assert node.select is not None
        self.check_event_ops(node.select)
        patterns: list[PatternCode] = []
        numbered: dict[tuple[int, int], int] = {}

        def index(pattern: ast.EventPattern, agg: ast.Aggregator | None) -> int:
            key = (id(pattern), id(agg))
            if key not in numbered:
                numbered[key] = len(patterns)
                aggregator = None
                if agg is not None:
                    aggregator = (agg.op, tuple(i.name for i in agg.names))
                guard = self.pattern_guard(pattern, scope)
                setting = tuple(i.name for i in pattern.setting)
                patterns.append(
                    PatternCode(pattern.domain, pattern.type, guard, setting, aggregator)
                )
            return numbered[key]

        try:
            machine = build_machine(node.select, index)
        except MachineTooLarge:
            self.fail(
                f"this event expression needs more than {MAX_TRANSITIONS} state transitions",
                node.select.span,
            )
        names: list[str] = []
        self.collect_settings(node.select, names)
        slots = {name: scope.names[name] for name in names}
        within = None
        if node.within is not None:
            limit = self.expr(node.within.value, scope)
            seconds = WITHIN_UNITS[node.within.unit]
            span = node.within.value.span

            def within(frame: Frame, run: Run) -> object:
                value = to_number(limit(frame, run))
                if value is None:
                    raise KrlRuntimeError("within expects a number", span=(span.start, span.end))
                return value * seconds

        matcher = stateful_matcher(self.rid, node.name.name, machine, patterns, slots, within)
        events = frozenset((p.domain, p.type) for p in patterns)
        return matcher, events

    def check_event_ops(self, node: ast.EventExpr) -> None:
        if isinstance(node, ast.EventPattern):
            return
        if node.op == "any":
            assert node.count is not None
            if not 0 < node.count < len(node.args):
                self.fail(
                    f"'any {node.count}' needs a number between 1 and {len(node.args) - 1}"
                    f" (one less than the number of events)",
                    node.span,
                )
        if node.op in ("count", "repeat") and not node.count:
            self.fail(f"'{node.op}' needs a count of at least 1", node.span)
        if node.count is not None and node.count > MAX_TRANSITIONS:
            self.fail(f"'{node.op}' counts at most {MAX_TRANSITIONS} events", node.span)
        for arg in node.args:
            self.check_event_ops(arg)

    def has_where(self, node: ast.EventExpr) -> bool:
        if isinstance(node, ast.EventPattern):
            return node.where is not None
        return any(self.has_where(a) for a in node.args)

    def event_expr(
        self, node: ast.EventExpr, scope: Scope
    ) -> tuple[Matcher, frozenset[tuple[str, str]]]:
        if isinstance(node, ast.EventPattern):
            return self.event_pattern(node, scope), frozenset({(node.domain, node.type)})
        assert node.op == "or", "stateful expressions go through state_machine"
        branches = [self.event_expr(arg, scope) for arg in node.args]
        slot_sets = [self.pattern_slots(arg, scope) for arg in node.args]
        plans: list[tuple[Matcher, tuple[int, ...]]] = []
        for i, (matcher, _) in enumerate(branches):
            others = {s for j, slots in enumerate(slot_sets) if j != i for s in slots}
            plans.append((matcher, tuple(sorted(others - set(slot_sets[i])))))
        events = frozenset().union(*(e for _, e in branches))

        def match_or(event: Event, frame: Frame, run: Run) -> bool:
            for matcher, clear in plans:
                if matcher(event, frame, run):
                    for slot in clear:  # the branch that did not match binds null
                        frame[slot] = None
                    return True
            return False

        return match_or, events

    def pattern_slots(self, node: ast.EventExpr, scope: Scope) -> set[int]:
        names: list[str] = []
        self.collect_settings(node, names)
        return {scope.names[n] for n in names}

    def event_pattern(self, node: ast.EventPattern, scope: Scope) -> Matcher:
        domain, etype = node.domain, node.type
        guard = self.pattern_guard(node, scope)
        if guard is None:
            return lambda event, frame, run: event.type == etype and event.domain == domain

        def match(event: Event, frame: Frame, run: Run) -> bool:
            if event.type != etype or event.domain != domain:
                return False
            return guard(event, frame, run) is not None

        return match

    def pattern_guard(self, node: ast.EventPattern, scope: Scope) -> Guard | None:
        """The attribute, setting and where checks of a pattern (None if it has none)."""
        if not node.attrs and not node.setting and node.where is None:
            return None
        checks = tuple((a.name, self.regex(a.regex)) for a in node.attrs)
        slots = tuple(scope.names[i.name] for i in node.setting)
        where = self.expr(node.where, scope) if node.where is not None else None
        where_span = node.where.span if node.where is not None else node.span

        def guard(event: Event, frame: Frame, run: Run) -> list[object] | None:
            captures: list[object] = []
            attrs = event.attrs
            for name, rx in checks:
                # a present null matches as "null" (as(…, "String")); only a missing key is ""
                text = to_string(attrs[name]) if name in attrs else ""
                m = rx.pattern.search(rx.subject(text))
                if m is None:
                    return None
                captures.extend(m.groups())
            for i, slot in enumerate(slots):
                frame[slot] = captures[i] if i < len(captures) else None
            if where is not None:
                try:
                    if not truthy(where(frame, run)):
                        return None
                except KrlRuntimeError as err:
                    _annotate(err, where_span)
                    raise
            return captures

        return guard

    def action_block(self, block: ast.ActionBlock, scope: Scope) -> tuple[Eval | None, Exec]:
        """The block's ``if`` condition (if any) and the code that runs its actions."""
        condition = self.expr(block.condition, scope) if block.condition is not None else None
        actions = tuple(self.action(a, scope) for a in block.actions)
        if block.kind == "every":

            def every(frame: Frame, run: Run) -> None:
                for act in actions:
                    act(frame, run)

            return condition, every
        if block.kind == "sample":

            def sample(frame: Frame, run: Run) -> None:
                if actions:
                    run.budget.random.choice(actions)(frame, run)

            return condition, sample
        assert block.discriminant is not None
        labels: dict[str, Exec] = {}
        for node, act in zip(block.actions, actions, strict=True):
            if node.label is None:
                self.fail(
                    "every action in a 'choose' block needs a label (name => action)", node.span
                )
            labels.setdefault(node.label, act)
        discriminant = self.expr(block.discriminant, scope)

        def choose(frame: Frame, run: Run) -> None:
            act = labels.get(to_string(discriminant(frame, run)))
            if act is not None:  # no match: no action, yet the rule still fired
                act(frame, run)

        return condition, choose

    def action(self, node: ast.Action, scope: Scope) -> Exec:
        callee = node.callee
        if len(node.setting) > 1:
            self.fail("an action can set only one variable", node.setting[1].span)
        if isinstance(callee, ast.DomainIdentifier):
            if callee.domain in self.aliases:
                call = self.module_call(callee, (), node.args, scope, node.span, action=True)
            else:
                builtin = MODULE_ACTIONS.get(callee.domain, {}).get(callee.name)
                if builtin is None:
                    left_out = callee.domain in REFERENCE_MODULES
                    self.fail(
                        f"the action '{callee.domain}:{callee.name}' is not supported "
                        + ("by p2pico" if left_out else "yet"),
                        callee.span,
                    )
                call = self.static_call(builtin, (), node.args, scope, node.span)
        elif scope.resolve(callee.name) is not None:
            call = self.defaction_call(callee, node, scope)
        else:
            fn = ACTIONS.get(callee.name)
            if fn is None:
                self.fail(f"'{callee.name}' is not an action", callee.span)
            call = self.static_call(fn, (), node.args, scope, node.span)
        if not node.setting:

            def act(frame: Frame, run: Run) -> None:
                call(frame, run)

            return act
        slot = scope.declare(node.setting[0].name)

        def act_setting(frame: Frame, run: Run) -> None:
            frame[slot] = call(frame, run)

        return act_setting

    def defaction_call(self, callee: ast.Identifier, node: ast.Action, scope: Scope) -> Eval:
        """A call of a variable that must hold a ``defaction`` when it runs."""
        target = self.identifier(callee, scope)
        positional, named_list = self.arguments(node.args, scope)
        named = tuple((k, ev) for k, ev, _ in named_list)
        span = (node.span.start, node.span.end)
        name = callee.name

        def call(frame: Frame, run: Run) -> Any:
            action = target(frame, run)
            if not isinstance(action, KrlAction):
                raise KrlRuntimeError(
                    f"'{name}' is not an action (it is {type_of(action)})", span=span
                )
            values = [e(frame, run) for e in positional]
            kwargs = {k: ev(frame, run) for k, ev in named} if named else None
            try:
                return action.perform(run, values, kwargs)
            except KrlRuntimeError as err:
                if err.span is None:
                    err.span = span
                raise

        return call

    # -- postlude statements ---------------------------------------------

    def statements(self, nodes: Sequence[ast.Statement] | None, scope: Scope) -> tuple[Exec, ...]:
        return tuple(self.statement(n, scope) for n in nodes or ())

    def statement(self, node: ast.Statement, scope: Scope) -> Exec:
        inner = self.statement_core(node, scope)
        span = node.span

        def stmt(frame: Frame, run: Run) -> None:
            try:
                inner(frame, run)
            except KrlRuntimeError as err:
                _annotate(err, span)
                raise

        return stmt

    def statement_core(self, node: ast.Statement, scope: Scope) -> Exec:
        rid = self.rid
        if isinstance(node, ast.Guarded):
            inner = self.statement_core(node.statement, scope)
            if node.condition is None:  # "on final": the last iteration of every foreach

                def on_final(frame: Frame, run: Run) -> None:
                    if run.final:
                        inner(frame, run)

                return on_final
            cond = self.expr(node.condition, scope)

            def guarded(frame: Frame, run: Run) -> None:
                if truthy(cond(frame, run)):
                    inner(frame, run)

            return guarded
        if isinstance(node, ast.Declaration):
            value = self.expr(node.value, scope, node.name.name)
            slot = scope.declare(node.name.name)

            def declare(frame: Frame, run: Run) -> None:
                frame[slot] = value(frame, run)

            return declare
        if isinstance(node, ast.EntAssign):
            return self.ent_assign(node, scope)
        if isinstance(node, ast.ClearEnt):
            self.check_ent_domain(node.domain, node.span)
            name = node.name
            if node.path is None:
                return lambda f, r: r.ctx.ent_clear(rid, name)
            path = self.expr(node.path, scope)

            def clear_path(frame: Frame, run: Run) -> None:
                current = run.ctx.ent_get(rid, name)
                run.ctx.ent_set(rid, name, delete_path(current, key_path(path(frame, run))))

            return clear_path
        if isinstance(node, ast.RaiseEvent):
            return self.raise_event(node, scope)
        if isinstance(node, ast.LogStatement):
            level = node.level
            message = self.expr(node.message, scope)
            return lambda f, r: r.ctx.log(level, to_string(message(f, r)))
        if isinstance(node, ast.ErrorStatement):
            return self.error_statement(node, scope)
        if isinstance(node, ast.ScheduleEvent):
            return self.schedule_event(node, scope)
        if isinstance(node, ast.Last):

            def last(frame: Frame, run: Run) -> None:
                run.last = True
                raise StopRule

            return last
        raise AssertionError(f"unknown statement {node!r}")  # pragma: no cover

    def check_ent_domain(self, domain: str, span: ast.Span) -> None:
        if domain != "ent":
            self.fail(f"only ent: variables can be assigned or cleared, found '{domain}:'", span)

    def ent_assign(self, node: ast.EntAssign, scope: Scope) -> Exec:
        self.check_ent_domain(node.domain, node.span)
        rid, name = self.rid, node.name
        value = self.expr(node.value, scope)
        what = f"the value of ent:{name}"
        if node.path is None:

            def assign(frame: Frame, run: Run) -> None:
                v = to_plain(value(frame, run), what)
                if v is None:
                    run.ctx.ent_clear(rid, name)
                else:
                    run.ctx.ent_set(rid, name, v)

            return assign
        path = self.expr(node.path, scope)

        def assign_path(frame: Frame, run: Run) -> None:
            keys = key_path(path(frame, run))
            v = to_plain(value(frame, run), what)
            current = run.ctx.ent_get(rid, name)
            run.ctx.ent_set(rid, name, set_path(current, keys, v, lists=True))

        return assign_path

    def error_statement(self, node: ast.ErrorStatement, scope: Scope) -> Exec:
        """``system:error`` to this ruleset; ``error error`` also halts the transaction."""
        level = node.level
        value = self.expr(node.value, scope)

        def error(frame: Frame, run: Run) -> None:
            attrs = {
                "level": level,
                "data": to_plain(value(frame, run), "error data"),
                "rid": run.rid,
                "rule_name": run.rule,
                "genus": "user",
            }
            run.ctx.raise_event("system", "error", attrs, run.rid)
            if level == "error":
                run.last = run.halted = True
                raise StopRule

        return error

    def event_name(self, domain: str | None, etype: Eval, what: str) -> Eval:
        """(domain, type) of a raised or scheduled event; ``"d:t"`` when no domain is given."""

        def name(frame: Frame, run: Run) -> tuple[str, str]:
            kind = to_string(etype(frame, run))
            if domain is not None:
                return domain, kind
            d, sep, t = re.sub(r"\s+", "", kind).partition(":")
            if not sep or not d or not t:
                raise KrlRuntimeError(f'{what} expects "domain:type", found {kind!r}')
            return d, t

        return name

    def event_attributes(self, node: ast.Expr | None, scope: Scope) -> Eval:
        if node is None:
            return _const({})
        attributes = self.expr(node, scope)

        def attrs(frame: Frame, run: Run) -> Any:
            value = attributes(frame, run)
            if value is None:
                return {}
            if not isinstance(value, dict):
                raise KrlRuntimeError(f"event attributes must be a Map, not {type_of(value)}")
            return to_plain(value, "event attributes")

        return attrs

    def schedule_event(self, node: ast.ScheduleEvent, scope: Scope) -> Exec:
        name = self.event_name(node.domain, self.expr(node.type, scope), "schedule event")
        attrs = self.event_attributes(node.attributes, scope)
        at = self.expr(node.at, scope) if node.at is not None else None
        repeat = self.expr(node.repeat, scope) if node.repeat is not None else None
        setting = node.setting.name if node.setting is not None else None
        slot = scope.declare(setting) if setting is not None else None

        def schedule(frame: Frame, run: Run) -> None:
            domain, kind = name(frame, run)
            when = timespec = None
            if at is not None:
                when = parse_time(run, at(frame, run)).timestamp()
            if repeat is not None:
                timespec = to_string(repeat(frame, run))
            event_attrs = attrs(frame, run)
            job = run.ctx.schedule_event(domain, kind, event_attrs, when, timespec, setting)
            if slot is not None:  # the job's record, as schedule:get(id) shows it
                eci = run.ctx.eci if run.event is not None else None
                frame[slot] = schedule_record(job, eci, domain, kind, event_attrs, when, timespec)

        return schedule

    def raise_event(self, node: ast.RaiseEvent, scope: Scope) -> Exec:
        name = self.event_name(node.domain, self.expr(node.type, scope), "raise event")
        attrs = self.event_attributes(node.attributes, scope)
        for_rid = self.expr(node.for_rid, scope) if node.for_rid is not None else None

        def raise_(frame: Frame, run: Run) -> None:
            domain, kind = name(frame, run)
            values = attrs(frame, run)
            target = for_rid(frame, run) if for_rid is not None else None
            run.ctx.raise_event(domain, kind, values, None if target is None else to_string(target))

        return raise_

    # -- expressions -------------------------------------------------------

    def regex(self, node: ast.RegExp) -> Any:
        try:
            return compile_regex(node.pattern, node.flags)
        except ValueError as err:
            self.fail(str(err), node.span)

    def expr(self, node: ast.Expr, scope: Scope, name: str = "function") -> Eval:
        if isinstance(node, ast.Null):
            return _const(None)
        if isinstance(node, ast.Boolean | ast.Number | ast.String):
            return _const(node.value)
        if isinstance(node, ast.RegExp):
            return _const(self.regex(node))
        if isinstance(node, ast.Identifier):
            return self.identifier(node, scope)
        if isinstance(node, ast.DomainIdentifier):
            return self.domain_identifier(node, scope)
        if isinstance(node, ast.Function | ast.DefAction):
            return self.function(node, scope, name)
        method = getattr(self, "expr_" + type(node).__name__)
        result: Eval = method(node, scope)
        return result

    def expr_Chevron(self, node: ast.Chevron, scope: Scope) -> Eval:
        parts = tuple(self.expr(p, scope) for p in node.parts)
        if all(isinstance(p, ast.String) for p in node.parts):
            return _const("".join(p.value for p in node.parts if isinstance(p, ast.String)))
        return lambda f, r: join_text(r, [to_string(p(f, r)) for p in parts])

    def expr_Array(self, node: ast.Array, scope: Scope) -> Eval:
        if all(_is_constant(i) for i in node.items):
            value = [
                self.constant(i, "") if not isinstance(i, ast.RegExp) else self.regex(i)
                for i in node.items
            ]
            return lambda f, r: value  # never mutated, so it can be shared
        items = tuple(self.expr(i, scope) for i in node.items)
        return lambda f, r: [item(f, r) for item in items]

    def expr_Map(self, node: ast.Map, scope: Scope) -> Eval:
        entries = tuple((k.value, self.expr(v, scope)) for k, v in node.entries)
        return lambda f, r: {k: v(f, r) for k, v in entries}

    def identifier(self, node: ast.Identifier, scope: Scope) -> Eval:
        where = scope.resolve(node.name)
        if where is not None:
            return _read(*where)
        fn = STDLIB.get(node.name)
        if fn is not None:
            return _const(fn)
        if node.name in ACTIONS:
            self.fail(
                f"'{node.name}' is an action and can only be used in an action block", node.span
            )
        self.fail(f"undefined name '{node.name}'", node.span)

    def domain_identifier(self, node: ast.DomainIdentifier, scope: Scope) -> Eval:
        if node.domain == "ent":
            rid, name = self.rid, node.name
            return lambda f, r: r.ctx.ent_get(rid, name)
        if node.domain in self.aliases:
            provided = self.provided(node, scope)

            def module_value(f: Frame, r: Run) -> Any:
                inner, value = provided(f, r)
                if isinstance(value, KrlCallable) and not isinstance(value, KrlAction):
                    return ModuleFunction(value, inner.ruleset)
                return value

            return module_value
        member = self.module_member(node)
        if isinstance(member, StdlibFunction):  # a module function used without ()
            impl = member.impl
            return lambda f, r: impl(r)
        prop = member
        return lambda f, r: prop(r)

    def module_member(self, node: ast.DomainIdentifier) -> Any:
        module = MODULES.get(node.domain)
        if module is None:
            if node.domain in REFERENCE_MODULES:
                self.fail(f"the module '{node.domain}' is not supported by p2pico", node.span)
            self.fail(
                f"unknown module '{node.domain}' (no 'use module … alias {node.domain}')",
                node.span,
            )
        member = module.get(node.name)
        if member is None:
            if node.name in MODULE_ACTIONS.get(node.domain, {}):
                self.fail(
                    f"'{node.domain}:{node.name}' is an action and can only be used in an "
                    "action block",
                    node.span,
                )
            if node.domain in REFERENCE_MODULES:
                self.fail(f"'{node.domain}:{node.name}' is not supported by p2pico", node.span)
            self.fail(f"'{node.domain}:{node.name}' is not defined", node.span)
        return member

    def provided(
        self, node: ast.DomainIdentifier, scope: Scope
    ) -> Callable[[Frame, Run], tuple[Run, object]]:
        """``alias:name`` of a used module: resolved at run time to (module run, value)."""
        alias, name, depth = node.domain, node.name, scope.depth()
        span = (node.span.start, node.span.end)

        def provided(f: Frame, r: Run) -> tuple[Run, object]:
            g = f
            for _ in range(depth):
                g = g[0]
            inner: Run | None = None
            try:
                instance = g[0].use(alias, g, r)  # `with` values: the user's code
                inner = r.module_run(instance.ruleset)
                return inner, instance.provided(alias, name, inner)  # the module's globals
            except KrlRuntimeError as err:
                if inner is not None:
                    module_error(err, inner)
                if err.span is None:
                    err.span = span
                raise

        return provided

    def module_call(
        self,
        callee: ast.DomainIdentifier,
        before: tuple[Eval, ...],
        args: Sequence[ast.Arg],
        scope: Scope,
        span: ast.Span,
        action: bool = False,
    ) -> Eval:
        """``alias:f(…)`` (or the action ``alias:act(…)``): run as the module's code."""
        provided = self.provided(callee, scope)
        positional, named_list = self.arguments(args, scope)
        evals = (*before, *positional)
        named = tuple((k, ev) for k, ev, _ in named_list)
        shown = f"'{callee.domain}:{callee.name}'"
        where = (span.start, span.end)

        def call(f: Frame, r: Run) -> Any:
            inner, fn = provided(f, r)
            if action:
                if not isinstance(fn, KrlAction):
                    raise KrlRuntimeError(
                        f"{shown} is not an action (it is {type_of(fn)})", span=where
                    )
            elif not isinstance(fn, KrlCallable):
                raise KrlRuntimeError(
                    f"{shown} is not a function (it is {type_of(fn)})", span=where
                )
            values = [e(f, r) for e in evals]
            kwargs = {k: ev(f, r) for k, ev in named} if named else None
            try:
                if isinstance(fn, KrlAction) and action:
                    return fn.perform(inner, values, kwargs)
                return fn.call(inner, values, kwargs)
            except KrlRuntimeError as err:
                module_error(err, inner)
                _annotate(err, span)
                raise

        return call

    def function(self, node: ast.Function | ast.DefAction, scope: Scope, name: str) -> Eval:
        if isinstance(node, ast.Function) and self.codegen:  # generated Python
            code = function_code(self, node, scope, name)
            return lambda f, r: KrlFunction(code, f)
        fscope = Scope(scope)
        params: list[tuple[str, Eval | None]] = []
        for param in node.params:
            if param.name in fscope.names:
                self.fail(f"duplicate parameter '{param.name}'", param.span)
            default = self.expr(param.default, fscope) if param.default is not None else None
            fscope.declare(param.name)
            params.append((param.name, default))
        body: list[tuple[int, Eval]] = []
        for decl in node.body:
            if decl.name.name in fscope.names:
                self.fail(
                    f"'{decl.name.name}' is already declared in this function", decl.name.span
                )
            if isinstance(decl.value, ast.Function | ast.DefAction):  # may call itself
                slot = fscope.declare(decl.name.name)
                ev = self.expr(decl.value, fscope, decl.name.name)
            else:
                ev = self.expr(decl.value, fscope, decl.name.name)
                slot = fscope.declare(decl.name.name)
            body.append((slot, ev))
        names = tuple(n for n, _ in params)
        if isinstance(node, ast.Function):
            result = self.expr(node.result, fscope)
            entry = closure_entry(tuple(params), tuple(body), result, fscope.size)
            code = FunctionCode(names, entry, name)
            return lambda f, r: KrlFunction(code, f)
        actions = None
        if node.block is not None:
            condition, perform = self.action_block(node.block, fscope)

            def actions(frame: Frame, run: Run) -> None:
                if condition is None or truthy(condition(frame, run)):
                    perform(frame, run)

        result = self.expr(node.result, fscope) if node.result is not None else _const(None)
        entry = closure_entry(tuple(params), tuple(body), result, fscope.size, actions)
        action_code = FunctionCode(names, entry, name)
        return lambda f, r: KrlAction(action_code, f)

    def expr_Unary(self, node: ast.Unary, scope: Scope) -> Eval:
        operand = self.expr(node.operand, scope)
        if node.op == "not":
            return lambda f, r: not truthy(operand(f, r))
        if node.op == "+":
            return operand
        span = node.span

        def negate(f: Frame, r: Run) -> Any:
            try:
                return op_neg(operand(f, r))
            except KrlRuntimeError as err:
                _annotate(err, span)
                raise

        return negate

    def expr_Binary(self, node: ast.Binary, scope: Scope) -> Eval:
        left = self.expr(node.left, scope)
        right = self.expr(node.right, scope)
        if node.op == "&&":

            def and_(f: Frame, r: Run) -> Any:
                value = left(f, r)
                return right(f, r) if truthy(value) else value

            return and_
        if node.op == "||":

            def or_(f: Frame, r: Run) -> Any:
                value = left(f, r)
                return value if truthy(value) else right(f, r)

            return or_
        span = node.span
        if node.op == "+":

            def add(f: Frame, r: Run) -> Any:
                try:
                    return add_text(r, left(f, r), right(f, r))
                except KrlRuntimeError as err:
                    _annotate(err, span)
                    raise

            return add
        op = BINARY_OPS[node.op]

        def binary(f: Frame, r: Run) -> Any:
            try:
                return op(left(f, r), right(f, r))
            except KrlRuntimeError as err:
                _annotate(err, span)
                raise

        return binary

    def expr_Conditional(self, node: ast.Conditional, scope: Scope) -> Eval:
        test = self.expr(node.test, scope)
        then = self.expr(node.then, scope)
        otherwise = self.expr(node.otherwise, scope)
        return lambda f, r: then(f, r) if truthy(test(f, r)) else otherwise(f, r)

    def expr_Path(self, node: ast.Path, scope: Scope) -> Eval:
        target = self.expr(node.target, scope)
        key = self.expr(node.key, scope)
        return lambda f, r: get_path(target(f, r), key(f, r))

    def expr_Index(self, node: ast.Index, scope: Scope) -> Eval:
        target = self.expr(node.target, scope)
        key = self.expr(node.key, scope)
        return lambda f, r: get_key(target(f, r), key(f, r))

    def expr_DotAccess(self, node: ast.DotAccess, scope: Scope) -> Eval:
        target = self.expr(node.target, scope)
        key = node.name.name
        return lambda f, r: get_key(target(f, r), key)

    def expr_Call(self, node: ast.Call, scope: Scope) -> Eval:
        callee = node.callee
        if isinstance(callee, ast.Identifier) and scope.resolve(callee.name) is None:
            fn = STDLIB.get(callee.name)
            if fn is not None:
                return self.static_call(fn, (), node.args, scope, node.span)
        if isinstance(callee, ast.DomainIdentifier) and callee.domain in self.aliases:
            return self.module_call(callee, (), node.args, scope, node.span)
        if isinstance(callee, ast.DomainIdentifier) and callee.domain != "ent":
            member = self.module_member(callee)
            if not isinstance(member, StdlibFunction):
                self.fail(f"'{callee.domain}:{callee.name}' is not a function", callee.span)
            return self.static_call(member, (), node.args, scope, node.span)
        return self.dynamic_call(self.expr(callee, scope), (), node.args, scope, node.span, callee)

    def expr_DotCall(self, node: ast.DotCall, scope: Scope) -> Eval:
        receiver = self.expr(node.receiver, scope)
        name = node.name
        if isinstance(name, ast.DomainIdentifier) and name.domain in self.aliases:
            return self.module_call(name, (receiver,), node.args, scope, node.span)
        if isinstance(name, ast.DomainIdentifier):
            member = self.module_member(name)
            if not isinstance(member, StdlibFunction):
                self.fail(f"'{name.domain}:{name.name}' is not a function", name.span)
            return self.static_call(member, (receiver,), node.args, scope, node.span)
        if scope.resolve(name.name) is not None:
            fn_eval = self.identifier(name, scope)
            return self.dynamic_call(fn_eval, (receiver,), node.args, scope, node.span, name)
        fn = STDLIB.get(name.name)
        if fn is None:
            self.fail(f"unknown operator or function '{name.name}'", name.span)
        return self.static_call(fn, (receiver,), node.args, scope, node.span)

    def arguments(
        self, args: Sequence[ast.Arg], scope: Scope
    ) -> tuple[list[Eval], list[tuple[str, Eval, ast.Span]]]:
        positional: list[Eval] = []
        named: list[tuple[str, Eval, ast.Span]] = []
        for arg in args:
            if arg.name is None:
                if named:
                    self.fail("positional arguments must come before named arguments", arg.span)
                positional.append(self.expr(arg.value, scope))
            else:
                named.append((arg.name, self.expr(arg.value, scope), arg.span))
        return positional, named

    def static_call(
        self,
        fn: StdlibFunction,
        before: tuple[Eval, ...],
        args: Sequence[ast.Arg],
        scope: Scope,
        span: ast.Span,
    ) -> Eval:
        """A call to a known stdlib function, with arguments arranged at compile time."""
        positional, named = self.arguments(args, scope)
        evals = [*before, *positional]
        if not fn.variadic:
            evals = evals[: len(fn.params)]
        for key, ev, arg_span in named:
            if key not in fn.params:
                self.fail(f"'{fn.name}' has no parameter named '{key}'", arg_span)
            index = fn.params.index(key)
            while len(evals) <= index:
                evals.append(_const(None))
            evals[index] = ev
        impl = fn.impl
        if len(evals) == 1:
            (a,) = evals

            def call1(f: Frame, r: Run) -> Any:
                try:
                    return impl(r, a(f, r))
                except KrlRuntimeError as err:
                    _annotate(err, span)
                    raise

            return call1
        if len(evals) == 2:
            a, b = evals

            def call2(f: Frame, r: Run) -> Any:
                try:
                    return impl(r, a(f, r), b(f, r))
                except KrlRuntimeError as err:
                    _annotate(err, span)
                    raise

            return call2
        all_args = tuple(evals)

        def call(f: Frame, r: Run) -> Any:
            try:
                return impl(r, *[e(f, r) for e in all_args])
            except KrlRuntimeError as err:
                _annotate(err, span)
                raise

        return call

    def dynamic_call(
        self,
        callee: Eval,
        before: tuple[Eval, ...],
        args: Sequence[ast.Arg],
        scope: Scope,
        span: ast.Span,
        callee_node: ast.Expr,
    ) -> Eval:
        """A call whose target is only known at run time (a variable holding a function)."""
        positional, named_list = self.arguments(args, scope)
        evals = (*before, *positional)
        named = tuple((k, ev) for k, ev, _ in named_list)
        shown = describe_callee(callee_node)

        def call(f: Frame, r: Run) -> Any:
            fn = callee(f, r)
            if not isinstance(fn, KrlCallable):
                raise KrlRuntimeError(
                    f"{shown} is not a function (it is {type_of(fn)})", span=(span.start, span.end)
                )
            values = [e(f, r) for e in evals]
            kwargs = {k: ev(f, r) for k, ev in named} if named else None
            try:
                return fn.call(r, values, kwargs)
            except KrlRuntimeError as err:
                _annotate(err, span)
                raise

        return call


def _foreach_pairs(value: object) -> list[tuple[object, object]]:
    """(value, key) pairs: arrays give indexes, maps keys, strings their characters."""
    if isinstance(value, list):
        return [(v, i) for i, v in enumerate(value)]
    if isinstance(value, dict):
        return [(v, k) for k, v in value.items()]
    if isinstance(value, str):
        return [(ch, str(i)) for i, ch in enumerate(value)]
    return []  # null, numbers and the rest: no iterations


def _run_loops(
    loops: tuple[tuple[Eval, int, int | None], ...],
    depth: int,
    once: Callable[[Frame, Run], bool],
    frame: Frame,
    run: Run,
    final: bool,
) -> bool:
    """Run the rule body once per combination of the nested ``foreach`` values."""
    if depth == len(loops):
        run.final = final
        return once(frame, run)
    collection, value_slot, key_slot = loops[depth]
    pairs = _foreach_pairs(collection(frame, run))
    fired = False
    for i, (value, key) in enumerate(pairs):
        run.budget.charge(run)
        frame[value_slot] = value
        if key_slot is not None:
            frame[key_slot] = key
        fired = _run_loops(loops, depth + 1, once, frame, run, final and i == len(pairs) - 1)
    return fired


def _event_pairs(
    node: ast.EventExpr, pairs: dict[tuple[str, str], None], attrs: dict[str, None]
) -> None:
    """The (domain, type) pairs of an event expression, and its attribute-match names."""
    if isinstance(node, ast.EventPattern):
        pairs[(node.domain, node.type)] = None
        for match in node.attrs:
            attrs[match.name] = None
        return
    for arg in node.args:
        _event_pairs(arg, pairs, attrs)


def _attrs_read(node: object, attrs: dict[str, None]) -> None:
    """Attribute names read as ``event:attr("x")`` or ``event:attrs{"x"}`` anywhere in ``node``."""
    if isinstance(node, ast.Call | ast.Path | ast.Index):
        target = node.callee if isinstance(node, ast.Call) else node.target
        if isinstance(target, ast.DomainIdentifier) and target.domain == "event":
            key: object = None
            if isinstance(node, ast.Call) and target.name == "attr" and node.args:
                key = node.args[0].value
            elif not isinstance(node, ast.Call) and target.name == "attrs":
                key = node.key
            if isinstance(key, ast.String):
                attrs[key.value] = None
    if isinstance(node, tuple):
        for item in node:
            _attrs_read(item, attrs)
    else:
        for name in ast.field_names(node):
            _attrs_read(getattr(node, name), attrs)
