"""Syntax-tree nodes built by the parser for the compiler.

Neighbours: ``parser`` builds these nodes; ``compiler`` turns them into closures.
Every node is a frozen, slotted dataclass with a :class:`Span` of source offsets.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Literal

__all__ = [
    "Action",
    "ActionBlock",
    "Aggregator",
    "Arg",
    "Array",
    "AttributeMatch",
    "Binary",
    "Boolean",
    "Call",
    "Chevron",
    "ClearEnt",
    "Conditional",
    "Configure",
    "Declaration",
    "DefAction",
    "DomainIdentifier",
    "DotAccess",
    "DotCall",
    "EntAssign",
    "ErrorStatement",
    "EventExpr",
    "EventOp",
    "EventPattern",
    "Expr",
    "ForEach",
    "Function",
    "Guarded",
    "Identifier",
    "Index",
    "Last",
    "LogStatement",
    "Map",
    "MetaExpr",
    "MetaNames",
    "MetaProperty",
    "Null",
    "Number",
    "Param",
    "Path",
    "Postlude",
    "RaiseEvent",
    "RegExp",
    "Rule",
    "Ruleset",
    "ScheduleEvent",
    "Span",
    "Statement",
    "String",
    "Unary",
    "UseModule",
    "Within",
    "field_names",
]


@dataclass(frozen=True, slots=True)
class Span:
    """Start and end character offsets of a node in the source text."""

    start: int
    end: int


# ---------------------------------------------------------------------------
# Expressions


@dataclass(frozen=True, slots=True)
class Null:
    span: Span


@dataclass(frozen=True, slots=True)
class Boolean:
    span: Span
    value: bool


@dataclass(frozen=True, slots=True)
class Number:
    span: Span
    value: int | float


@dataclass(frozen=True, slots=True)
class String:
    span: Span
    value: str


@dataclass(frozen=True, slots=True)
class Chevron:
    """``<< text #{expr} text >>``: string parts and interpolated expressions."""

    span: Span
    parts: tuple[Expr, ...]


@dataclass(frozen=True, slots=True)
class RegExp:
    """``re#pattern#flags``; ``pattern`` is JavaScript regex syntax with ``\\#`` unescaped."""

    span: Span
    pattern: str
    flags: str


@dataclass(frozen=True, slots=True)
class Array:
    span: Span
    items: tuple[Expr, ...]


@dataclass(frozen=True, slots=True)
class Map:
    span: Span
    entries: tuple[tuple[String, Expr], ...]


@dataclass(frozen=True, slots=True)
class Identifier:
    span: Span
    name: str


@dataclass(frozen=True, slots=True)
class DomainIdentifier:
    """``domain:name``, e.g. ``ent:count``, ``event:attrs``, ``meta:rid``."""

    span: Span
    domain: str
    name: str


@dataclass(frozen=True, slots=True)
class Arg:
    """A call argument; ``name`` is set for a named argument ``f(b = 2)``."""

    span: Span
    name: str | None
    value: Expr


@dataclass(frozen=True, slots=True)
class Call:
    span: Span
    callee: Expr
    args: tuple[Arg, ...]


@dataclass(frozen=True, slots=True)
class DotCall:
    """Method-call sugar ``receiver.name(args)``, meaning ``name(receiver, args)``."""

    span: Span
    receiver: Expr
    name: Identifier | DomainIdentifier
    args: tuple[Arg, ...]


@dataclass(frozen=True, slots=True)
class DotAccess:
    """Deprecated ``m.k``: a map lookup of the key ``"k"``."""

    span: Span
    target: Expr
    name: Identifier


@dataclass(frozen=True, slots=True)
class Path:
    """``m{key}`` or ``m{[k1, k2]}``."""

    span: Span
    target: Expr
    key: Expr


@dataclass(frozen=True, slots=True)
class Index:
    """``a[i]``, the same as a one-key path."""

    span: Span
    target: Expr
    key: Expr


@dataclass(frozen=True, slots=True)
class Unary:
    span: Span
    op: Literal["-", "+", "not"]
    operand: Expr


@dataclass(frozen=True, slots=True)
class Binary:
    span: Span
    op: str
    left: Expr
    right: Expr


@dataclass(frozen=True, slots=True)
class Conditional:
    """``test => then | otherwise``."""

    span: Span
    test: Expr
    then: Expr
    otherwise: Expr


@dataclass(frozen=True, slots=True)
class Param:
    span: Span
    name: str
    default: Expr | None


@dataclass(frozen=True, slots=True)
class Declaration:
    span: Span
    name: Identifier
    value: Expr


@dataclass(frozen=True, slots=True)
class Function:
    span: Span
    params: tuple[Param, ...]
    body: tuple[Declaration, ...]
    result: Expr


@dataclass(frozen=True, slots=True)
class DefAction:
    """``defaction(params) { decls  action-block  [return expr] }``."""

    span: Span
    params: tuple[Param, ...]
    body: tuple[Declaration, ...]
    block: ActionBlock | None
    result: Expr | None


Expr = (
    Null
    | Boolean
    | Number
    | String
    | Chevron
    | RegExp
    | Array
    | Map
    | Identifier
    | DomainIdentifier
    | Call
    | DotCall
    | DotAccess
    | Path
    | Index
    | Unary
    | Binary
    | Conditional
    | Function
    | DefAction
)

# ---------------------------------------------------------------------------
# Ruleset and meta


@dataclass(frozen=True, slots=True)
class MetaExpr:
    """``name "x"``, ``description <<…>>``, ``author``, ``version``, ``logging``."""

    span: Span
    key: str
    value: Expr


@dataclass(frozen=True, slots=True)
class MetaNames:
    """``shares a, b`` and ``provides a, b``."""

    span: Span
    key: Literal["shares", "provides"]
    names: tuple[Identifier, ...]


@dataclass(frozen=True, slots=True)
class UseModule:
    span: Span
    rid: str
    version: String | None
    alias: Identifier | None
    with_: tuple[Declaration, ...]


@dataclass(frozen=True, slots=True)
class Configure:
    span: Span
    declarations: tuple[Declaration, ...]


MetaProperty = MetaExpr | MetaNames | UseModule | Configure


@dataclass(frozen=True, slots=True)
class Ruleset:
    span: Span
    rid: str
    meta: tuple[MetaProperty, ...]
    global_decls: tuple[Declaration, ...]
    rules: tuple[Rule, ...]


# ---------------------------------------------------------------------------
# Rules


@dataclass(frozen=True, slots=True)
class AttributeMatch:
    span: Span
    name: str
    regex: RegExp


@dataclass(frozen=True, slots=True)
class EventPattern:
    """``domain type [attr re#…#]* [setting(…)] [where expr]``."""

    span: Span
    domain: str
    type: str
    attrs: tuple[AttributeMatch, ...]
    setting: tuple[Identifier, ...]
    where: Expr | None


@dataclass(frozen=True, slots=True)
class Aggregator:
    """``max(v)``, ``min(v)``, ``sum(v)``, ``avg(v)`` or ``push(v, …)`` after ``count``/``repeat``."""

    span: Span
    op: str
    names: tuple[Identifier, ...]


@dataclass(frozen=True, slots=True)
class EventOp:
    """``a or b``, ``a and b``, ``before``/``then``/``after``/``between``/``not between``,
    ``any N (…)``, ``count N (…)`` and ``repeat N (…)`` (these two with an optional aggregator)."""

    span: Span
    op: str
    args: tuple[EventExpr, ...]
    count: int | None = None
    aggregator: Aggregator | None = None


EventExpr = EventPattern | EventOp


@dataclass(frozen=True, slots=True)
class Within:
    """``within <expr> <unit>`` after a ``select when`` expression."""

    span: Span
    value: Expr
    unit: str


@dataclass(frozen=True, slots=True)
class ForEach:
    span: Span
    collection: Expr
    setting: tuple[Identifier, ...]


@dataclass(frozen=True, slots=True)
class Action:
    span: Span
    label: str | None
    callee: Identifier | DomainIdentifier
    args: tuple[Arg, ...]
    setting: tuple[Identifier, ...]


@dataclass(frozen=True, slots=True)
class ActionBlock:
    span: Span
    condition: Expr | None
    kind: Literal["every", "choose", "sample"]
    discriminant: Expr | None
    actions: tuple[Action, ...]


@dataclass(frozen=True, slots=True)
class EntAssign:
    """``ent:name := value`` or ``ent:name{path} := value``.

    ``domain`` is the word before the colon: the parser accepts any (as the
    reference parser does) and the compiler rejects all but ``ent``.
    """

    span: Span
    name: str
    path: Expr | None
    value: Expr
    domain: str = "ent"


@dataclass(frozen=True, slots=True)
class ClearEnt:
    """``clear ent:name`` or ``clear ent:name{path}``; ``domain`` as in EntAssign."""

    span: Span
    name: str
    path: Expr | None
    domain: str = "ent"


@dataclass(frozen=True, slots=True)
class RaiseEvent:
    """``raise D event T``; ``domain`` is None for ``raise event "d:t"``."""

    span: Span
    domain: str | None
    type: Expr
    for_rid: Expr | None
    attributes: Expr | None


@dataclass(frozen=True, slots=True)
class LogStatement:
    span: Span
    level: str
    message: Expr


@dataclass(frozen=True, slots=True)
class ErrorStatement:
    """``error <level> expr``: raises ``system:error`` to this ruleset."""

    span: Span
    level: str
    value: Expr


@dataclass(frozen=True, slots=True)
class ScheduleEvent:
    """``schedule D event T (at t | repeat "cron") [attributes m] [setting(id)]``.

    ``domain`` is None for ``schedule event "d:t"``; exactly one of ``at``/``repeat`` is set.
    """

    span: Span
    domain: str | None
    type: Expr
    at: Expr | None
    repeat: Expr | None
    attributes: Expr | None
    setting: Identifier | None


@dataclass(frozen=True, slots=True)
class Last:
    span: Span


@dataclass(frozen=True, slots=True)
class Guarded:
    """``statement if condition`` or ``statement on final`` (``condition`` is None)."""

    span: Span
    statement: Statement
    condition: Expr | None


Statement = (
    EntAssign
    | ClearEnt
    | RaiseEvent
    | ScheduleEvent
    | LogStatement
    | ErrorStatement
    | Last
    | Declaration
    | Guarded
)


@dataclass(frozen=True, slots=True)
class Postlude:
    span: Span
    fired: tuple[Statement, ...] | None
    notfired: tuple[Statement, ...] | None
    always: tuple[Statement, ...] | None


@dataclass(frozen=True, slots=True)
class Rule:
    """A rule; ``select`` is None for ``select where <expr>`` (``select_where`` is set)."""

    span: Span
    name: Identifier
    active: bool
    select: EventExpr | None
    foreach: tuple[ForEach, ...]
    pre: tuple[Declaration, ...]
    action_block: ActionBlock | None
    postlude: Postlude | None
    within: Within | None = None
    select_where: Expr | None = None


_FIELDS: dict[type, tuple[str, ...]] = {}


def field_names(node: object) -> tuple[str, ...]:
    """The field names of an AST node (cached per class); () for anything else. The
    compiler's analyses and krl.checks walk the tree by them."""
    kind = type(node)
    names = _FIELDS.get(kind)
    if names is None:
        if dataclasses.is_dataclass(node) and not isinstance(node, type):
            names = tuple(f.name for f in dataclasses.fields(node))
        else:
            names = ()
        _FIELDS[kind] = names
    return names
