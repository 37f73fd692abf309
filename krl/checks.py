"""Static checks run before compilation: a defaction is called only as an action.

pico-engine's compiler knows which names hold a ``defaction`` literal and refuses to
call one in an expression (in a function, a ``pre`` value, an action's argument, a
postlude), and refuses to list one in ``shares``.  Both compilers here would only
fail when the call runs; this pass makes them compile errors, at the callee.

A name holds a defaction when its declaration's value is a defaction literal, or a
name that holds one (``b = a``).  Scopes follow the compiler's: global functions and
defactions are declared before any global value, and a ``pre`` or function-body
value is declared after its expression.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Sequence
from typing import NoReturn

from . import ast
from .errors import KrlCompileError

_LITERALS = (ast.Function, ast.DefAction)


class _Scope:
    __slots__ = ("actions", "names", "parent")

    def __init__(self, parent: _Scope | None) -> None:
        self.parent = parent
        self.names: set[str] = set()
        self.actions: set[str] = set()

    def declare(self, name: str, is_action: bool) -> None:
        self.names.add(name)
        if is_action:
            self.actions.add(name)
        else:
            self.actions.discard(name)

    def is_action(self, name: str) -> bool:
        scope: _Scope | None = self
        while scope is not None:
            if name in scope.names:
                return name in scope.actions
            scope = scope.parent
        return False


class _Checker:
    def __init__(self, source: str, filename: str) -> None:
        self.source = source
        self.filename = filename

    def fail(self, message: str, span: ast.Span) -> NoReturn:
        raise KrlCompileError.at(message, self.source, span.start, self.filename)

    def holds_action(self, value: ast.Expr, scope: _Scope) -> bool:
        if isinstance(value, ast.DefAction):
            return True
        return isinstance(value, ast.Identifier) and scope.is_action(value.name)

    # -- scopes -----------------------------------------------------------

    def ruleset(self, tree: ast.Ruleset) -> None:
        scope = _Scope(None)
        for prop in tree.meta:
            if isinstance(prop, ast.Configure):
                for decl in prop.declarations:
                    self.expr(decl.value, scope)
                    scope.declare(decl.name.name, False)
            elif isinstance(prop, ast.UseModule):
                for decl in prop.with_:
                    self.expr(decl.value, scope)
        for decl in tree.global_decls:
            if isinstance(decl.value, _LITERALS):
                scope.declare(decl.name.name, isinstance(decl.value, ast.DefAction))
        for decl in tree.global_decls:
            if not isinstance(decl.value, _LITERALS):
                self.expr(decl.value, scope)
                scope.declare(decl.name.name, self.holds_action(decl.value, scope))
        for decl in tree.global_decls:
            if isinstance(decl.value, _LITERALS):
                self.expr(decl.value, scope)
        for prop in tree.meta:
            if isinstance(prop, ast.MetaNames) and prop.key == "shares":
                for ident in prop.names:
                    if scope.is_action(ident.name):
                        self.fail(
                            f"'{ident.name}' is a defaction; only functions and values can be "
                            "listed in shares",
                            ident.span,
                        )
        for rule in tree.rules:
            self.rule(rule, _Scope(scope))

    def rule(self, rule: ast.Rule, scope: _Scope) -> None:
        if rule.select_where is not None:
            self.expr(rule.select_where, scope)
        if rule.select is not None:
            self.event_expr(rule.select, scope)
        if rule.within is not None:
            self.expr(rule.within.value, scope)
        for loop in rule.foreach:
            self.expr(loop.collection, scope)
            for ident in loop.setting:
                scope.declare(ident.name, False)
        self.declarations(rule.pre, scope)
        if rule.action_block is not None:
            self.action_block(rule.action_block, scope)
        if rule.postlude is not None:
            for part in (rule.postlude.fired, rule.postlude.notfired, rule.postlude.always):
                for statement in part or ():
                    self.statement(statement, scope)

    def event_expr(self, node: object, scope: _Scope) -> None:
        if isinstance(node, ast.EventPattern):
            for ident in node.setting:
                scope.declare(ident.name, False)
            if node.where is not None:
                self.expr(node.where, scope)
            return
        for child in _children(node):
            self.event_expr(child, scope)

    def declarations(self, decls: Sequence[ast.Declaration], scope: _Scope) -> None:
        for decl in decls:
            if isinstance(decl.value, _LITERALS):  # declared first: it may call itself
                scope.declare(decl.name.name, isinstance(decl.value, ast.DefAction))
                self.expr(decl.value, scope)
            else:
                self.expr(decl.value, scope)
                scope.declare(decl.name.name, self.holds_action(decl.value, scope))

    def action_block(self, block: ast.ActionBlock, scope: _Scope) -> None:
        for expr in (block.condition, block.discriminant):
            if expr is not None:
                self.expr(expr, scope)
        for action in block.actions:
            for arg in action.args:  # the callee may be a defaction: that is what it is for
                self.expr(arg.value, scope)
            for ident in action.setting:
                scope.declare(ident.name, False)

    def function(self, node: ast.Function | ast.DefAction, outer: _Scope) -> None:
        scope = _Scope(outer)
        for param in node.params:
            if param.default is not None:
                self.expr(param.default, scope)
            scope.declare(param.name, False)
        self.declarations(node.body, scope)
        if isinstance(node, ast.DefAction) and node.block is not None:
            self.action_block(node.block, scope)
        if node.result is not None:
            self.expr(node.result, scope)

    def statement(self, node: object, scope: _Scope) -> None:
        if isinstance(node, ast.Guarded):
            if node.condition is not None:
                self.expr(node.condition, scope)
            self.statement(node.statement, scope)
            return
        self.expr(node, scope)  # a statement's fields are expressions
        if isinstance(node, ast.ScheduleEvent) and node.setting is not None:
            scope.declare(node.setting.name, False)

    # -- expressions ------------------------------------------------------

    def expr(self, node: object, scope: _Scope) -> None:
        if isinstance(node, ast.Function | ast.DefAction):
            self.function(node, scope)
            return
        if isinstance(node, ast.Call) and isinstance(node.callee, ast.Identifier):
            self.callee(node.callee, scope)
        elif isinstance(node, ast.DotCall) and isinstance(node.name, ast.Identifier):
            self.callee(node.name, scope)
        for child in _children(node):
            self.expr(child, scope)

    def callee(self, name: ast.Identifier, scope: _Scope) -> None:
        if scope.is_action(name.name):
            self.fail(
                f"'{name.name}' is a defaction and can only be used in an action block",
                name.span,
            )


def _children(node: object) -> Iterator[object]:
    """The AST nodes held by ``node``'s fields (through tuples), in field order."""
    for name in ast.field_names(node):
        if name != "span":
            yield from _nodes(getattr(node, name))


def _nodes(value: object) -> Iterator[object]:
    if isinstance(value, tuple):
        for item in value:
            yield from _nodes(item)
    elif dataclasses.is_dataclass(value) and not isinstance(value, type):
        yield value


def check_ruleset(tree: ast.Ruleset, source: str, filename: str) -> None:
    """Raise KrlCompileError at the first defaction called as a function or shared."""
    _Checker(source, filename).ruleset(tree)
