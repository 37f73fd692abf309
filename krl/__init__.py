"""KRL, the rule language of picos: lexer -> parser -> compiler -> runtime.

The engine-facing API: :func:`compile_ruleset` turns source into a
:class:`Ruleset`, whose ``select``/``run``/``query`` methods process events and
queries through a :class:`Context` the engine supplies, within a :class:`Budget`.
"""

from . import ast
from .compiler import compile_ruleset
from .errors import KrlBudgetExceeded, KrlCompileError, KrlError, KrlRuntimeError, KrlSyntaxError
from .parser import parse_expression, parse_ruleset
from .runtime import Budget, Context, Event, Rule, RuleResult, Ruleset, Selection

__all__ = [
    "Budget",
    "Context",
    "Event",
    "KrlBudgetExceeded",
    "KrlCompileError",
    "KrlError",
    "KrlRuntimeError",
    "KrlSyntaxError",
    "Rule",
    "RuleResult",
    "Ruleset",
    "Selection",
    "ast",
    "compile_ruleset",
    "parse_expression",
    "parse_ruleset",
]
