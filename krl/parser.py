"""Parse tokens from the lexer into ``ast`` nodes for the compiler.

Neighbours: ``lexer`` (tokens in), ``ast`` (nodes out), ``compiler`` (the consumer).

Expressions and event expressions are parsed with Pratt's top-down operator
precedence technique, as pico-engine's ``krl-parser`` does: each token kind has a
left binding power (``BINDING_POWER`` for expressions, ``EVENT_BINDING_POWER`` for
``select when`` expressions); a *nud* function parses a token that starts an
expression and a *led* function parses a token that continues one. ``expression``
keeps consuming leds while the next token binds tighter than the current right
binding power. Everything else (rulesets, rules, postludes) is recursive descent.

Tokens are the lexer's ``Tok`` tuples ``(key, kind, value, start, end)``; the
key is the text of a symbol or punctuation, so ``tok[0] == "("`` or
``tok[0] == "rule"`` tests kind and text in one comparison, and the binding
power and nud tables are looked up by key. The hot paths (``expression``,
``advance``) are written out by hand for speed.

Every error names what was expected and what was found; block-closing errors also
say where the block was opened.
"""

from __future__ import annotations

import dataclasses
import gc
from collections.abc import Callable
from typing import Literal, NoReturn, TypeVar

from . import ast
from .errors import KrlSyntaxError, line_column
from .lexer import (
    BEESTING_OPEN,
    CHEVRON_CLOSE,
    CHEVRON_OPEN,
    CHEVRON_STRING,
    EOF,
    KEY_BEESTING_CLOSE,
    KEY_CHEVRON_OPEN,
    KEY_NUMBER,
    KEY_REGEXP,
    KEY_STRING,
    NUMBER,
    REGEXP,
    STRING,
    SYMBOL,
    Tok,
    scan,
)

__all__ = ["BINDING_POWER", "EVENT_BINDING_POWER", "parse_expression", "parse_ruleset"]

# Left binding powers of expression operators (higher binds tighter).
BINDING_POWER: dict[str, int] = {
    "(": 90,
    ".": 80, "[": 80, "{": 80,
    "*": 60, "/": 60, "%": 60,
    "+": 50, "-": 50,
    "==": 40, "!=": 40, "<": 40, "<=": 40, ">": 40, ">=": 40,
    "like": 40, "><": 40, "<=>": 40, "cmp": 40,
    "&&": 30,
    "||": 20,
    "=>": 10,
}  # fmt: skip
PREFIX_BINDING_POWER = 70

EVENT_BINDING_POWER: dict[str, int] = {
    "or": 20,
    "and": 30,
    "before": 40, "then": 40, "after": 40,
    "between": 50, "not": 50,
}  # fmt: skip

# Words that cannot name a variable.
RESERVED = frozenset(
    {"defaction", "function", "return", "not", "setting", "null", "true", "false", "like", "cmp"}
)
# Words that operate on event expressions as a function: ``and(a x, b y)``.
EVENT_GROUP_OPERATORS = frozenset({"and", "or", "before", "then", "after"})
# Words that take a count first: ``any 2 (a x, b y)``, ``count 3 (a x)``, ``repeat 3 (a x)``.
COUNTED_OPERATORS = frozenset({"any", "count", "repeat"})
AGGREGATORS = frozenset({"max", "min", "sum", "avg", "push"})
# ``within N unit``: the unit's length in seconds (a month is 30 days, a year 365).
WITHIN_UNITS: dict[str, int] = {
    "second": 1, "minute": 60, "hour": 3600, "day": 86400, "week": 604800,
    "month": 2592000, "year": 31536000,
}  # fmt: skip
LOG_LEVELS = ("error", "warn", "info", "debug")
# Deeper nesting than this is rejected, so no input can exhaust Python's stack.
MAX_NESTING = 120

# Words that end a rule's actions: what follows is its postlude.
_POSTLUDE_WORDS = frozenset({"fired", "notfired", "always", "finally", "else"})

_T = TypeVar("_T")


def _setters(cls: type[object]) -> list[Callable[[object, object], None]]:
    # Each field of a slotted dataclass is a slot descriptor on the class.
    return [cls.__dict__[f.name].__set__ for f in dataclasses.fields(cls)]  # type: ignore[arg-type]


def _builder(cls: type[_T]) -> Callable[..., _T]:
    """A fast positional constructor for the frozen, slotted node class ``cls``.

    A frozen dataclass's ``__init__`` sets each field through
    ``object.__setattr__``; this makes the instance with ``object.__new__`` and
    fills its slots through their descriptors, about twice as fast, with the
    same result (``ast`` nodes have no ``__post_init__``; tests compare both).
    """
    new = object.__new__
    setters = _setters(cls)
    if len(setters) == 2:
        s1, s2 = setters

        def build2(a: object, b: object) -> _T:
            node = new(cls)
            s1(node, a)
            s2(node, b)
            return node

        return build2
    s1, s2, s3 = setters  # used for nodes of 2 or 3 fields

    def build3(a: object, b: object, c: object) -> _T:
        node = new(cls)
        s1(node, a)
        s2(node, b)
        s3(node, c)
        return node

    return build3


def _spanned(cls: type[_T]) -> Callable[..., _T]:
    """Like ``_builder``, but the first two arguments are the start and end of its span."""
    new = object.__new__
    span_cls = ast.Span
    set_start, set_end = _setters(span_cls)
    setters = _setters(cls)
    assert dataclasses.fields(cls)[0].name == "span"  # type: ignore[arg-type]
    if len(setters) == 2:
        s1, s2 = setters

        def build2(start: int, end: int, b: object) -> _T:
            span = new(span_cls)
            set_start(span, start)
            set_end(span, end)
            node = new(cls)
            s1(node, span)
            s2(node, b)
            return node

        return build2
    if len(setters) == 3:
        s1, s2, s3 = setters

        def build3(start: int, end: int, b: object, c: object) -> _T:
            span = new(span_cls)
            set_start(span, start)
            set_end(span, end)
            node = new(cls)
            s1(node, span)
            s2(node, b)
            s3(node, c)
            return node

        return build3
    s1, s2, s3, s4 = setters  # used for nodes of 2 to 4 fields

    def build4(start: int, end: int, b: object, c: object, d: object) -> _T:
        span = new(span_cls)
        set_start(span, start)
        set_end(span, end)
        node = new(cls)
        s1(node, span)
        s2(node, b)
        s3(node, c)
        s4(node, d)
        return node

    return build4


# The nodes the parser makes most often (one per token or so), built fast:
# _span(start, end), _arg(span, name, value), _param(span, name, default), and
# for the others _node(start, end, *other fields) (the span is made from start, end).
_span: Callable[[int, int], ast.Span] = _builder(ast.Span)
_arg: Callable[[ast.Span, str | None, ast.Expr], ast.Arg] = _builder(ast.Arg)
_param: Callable[[ast.Span, str, ast.Expr | None], ast.Param] = _builder(ast.Param)
_identifier: Callable[[int, int, str], ast.Identifier] = _spanned(ast.Identifier)
_domain_identifier: Callable[[int, int, str, str], ast.DomainIdentifier] = _spanned(
    ast.DomainIdentifier
)
_string: Callable[[int, int, str], ast.String] = _spanned(ast.String)
_number: Callable[[int, int, int | float], ast.Number] = _spanned(ast.Number)
_call: Callable[[int, int, ast.Expr, tuple[ast.Arg, ...]], ast.Call] = _spanned(ast.Call)
_dot_call: Callable[
    [int, int, ast.Expr, ast.Identifier | ast.DomainIdentifier, tuple[ast.Arg, ...]], ast.DotCall
] = _spanned(ast.DotCall)
_binary: Callable[[int, int, str, ast.Expr, ast.Expr], ast.Binary] = _spanned(ast.Binary)
_path: Callable[[int, int, ast.Expr, ast.Expr], ast.Path] = _spanned(ast.Path)
_map: Callable[[int, int, tuple[tuple[ast.String, ast.Expr], ...]], ast.Map] = _spanned(ast.Map)
_array: Callable[[int, int, tuple[ast.Expr, ...]], ast.Array] = _spanned(ast.Array)
_declaration: Callable[[int, int, ast.Identifier, ast.Expr], ast.Declaration] = _spanned(
    ast.Declaration
)


class _Parser:
    __slots__ = ("choosing", "depth", "i", "src", "tok", "tokens")

    def __init__(self, source: str) -> None:
        self.src = source
        self.tokens = scan(source)
        self.i = 0
        self.tok = self.tokens[0]
        self.depth = 0
        self.choosing = False

    # -- token helpers -----------------------------------------------------

    def text(self, tok: Tok) -> str:
        """The source text of a token."""
        return self.src[tok[3] : tok[4]]

    def describe(self, tok: Tok) -> str:
        kind = tok[1]
        if kind == EOF:
            return "end of input"
        if kind == STRING:
            return "a string"
        if kind == NUMBER:
            return f"number {self.text(tok)}"
        if kind == REGEXP:
            return "a regular expression"
        if kind in (CHEVRON_OPEN, CHEVRON_STRING):
            return "a chevron string"
        if kind == CHEVRON_CLOSE:
            return "'>>'"
        return f"'{self.text(tok)}'"

    def fail(self, message: str, tok: Tok | None = None) -> NoReturn:
        tok = tok or self.tok
        offset = tok[3]
        if tok[1] == EOF and self.i > 0:
            # Point just past the last real token rather than at trailing blank lines.
            offset = self.tokens[self.i - 1][4]
        raise KrlSyntaxError.at(message, self.src, offset)

    def expected(self, what: str) -> NoReturn:
        self.fail(f"expected {what}, found {self.describe(self.tok)}")

    def where(self, tok: Tok) -> str:
        line, column, _ = line_column(self.src, tok[3])
        return f"line {line}, column {column}"

    def advance(self) -> Tok:
        tok = self.tok
        if tok[1] != EOF:
            self.i += 1
            self.tok = self.tokens[self.i]
        return tok

    def peek(self, k: int = 1) -> Tok:
        tokens = self.tokens
        i = self.i + k
        return tokens[i] if i < len(tokens) else tokens[-1]

    def accept(self, key: str) -> Tok | None:
        """The current token, consumed, if its key (a word or punctuation) is ``key``."""
        tok = self.tok
        if tok[0] == key:
            self.i += 1
            self.tok = self.tokens[self.i]
            return tok
        return None

    def expect(self, key: str, context: str = "") -> Tok:
        tok = self.tok
        if tok[0] != key:
            self.expected(f"'{key}'{context}")
        self.i += 1
        self.tok = self.tokens[self.i]
        return tok

    def expect_close(self, closer: str, opener: Tok, what: str) -> Tok:
        """``closer`` is "}", ")", "]" or "BEESTING" (the "}" that ends a ``#{``)."""
        tok = self.tok
        if tok[0] != (KEY_BEESTING_CLOSE if closer == "BEESTING" else closer):
            shown = "}" if closer == "BEESTING" else closer
            self.expected(f"'{shown}' to close the {what} opened at {self.where(opener)}")
        self.i += 1
        self.tok = self.tokens[self.i]
        return tok

    def word(self, what: str) -> Tok:
        tok = self.tok
        if tok[1] != SYMBOL:
            self.expected(what)
        self.i += 1
        self.tok = self.tokens[self.i]
        return tok

    def identifier(self, what: str = "an identifier") -> ast.Identifier:
        tok = self.tok
        if tok[1] != SYMBOL or tok[0] in RESERVED:
            self.expected(what)
        self.i += 1
        self.tok = self.tokens[self.i]
        return _identifier(tok[3], tok[4], tok[0])

    def identifier_list(self, what: str) -> tuple[ast.Identifier, ...]:
        ids = [self.identifier(what)]
        while self.tok[0] == ",":
            self.advance()
            ids.append(self.identifier(what))
        return tuple(ids)

    def span_from(self, start: int) -> ast.Span:
        end = self.tokens[self.i - 1][4] if self.i > 0 else self.tok[4]
        return _span(start, end if end > start else start)

    def nest(self) -> None:
        self.depth += 1
        if self.depth > MAX_NESTING:
            self.fail(f"expressions are nested more than {MAX_NESTING} levels deep")

    # -- expressions -------------------------------------------------------

    def expression(self, rbp: int = 0, what: str = "an expression") -> ast.Expr:
        depth = self.depth = self.depth + 1
        if depth > MAX_NESTING:
            self.fail(f"expressions are nested more than {MAX_NESTING} levels deep")
        tokens = self.tokens
        tok = self.tok
        kind = tok[1]
        # The commonest nuds (a name, a string) are written out here.
        if kind is SYMBOL and tok[0] not in _NUD_WORD:
            i = self.i + 1
            nxt = tokens[i]
            if nxt[0] == ":" and tokens[i + 1][1] is SYMBOL:
                name = tokens[i + 1]
                i += 2
                nxt = tokens[i]
                left: ast.Expr = _domain_identifier(tok[3], name[4], tok[0], name[0])
            else:
                left = _identifier(tok[3], tok[4], tok[0])
            self.i = i
            self.tok = nxt
        elif kind is STRING:
            self.i += 1
            nxt = self.tok = tokens[self.i]
            left = _string(tok[3], tok[4], tok[2])  # type: ignore[arg-type]
        else:
            nud = _NUD.get(tok[0])
            if nud is None:
                if kind is SYMBOL:  # a reserved word that starts no expression
                    self.fail(f"expected an expression, found reserved word '{tok[0]}'", tok)
                self.expected(what)
            self.i += 1
            self.tok = tokens[self.i]
            left = nud(self, tok)
            nxt = self.tok
        while True:
            key = nxt[0]
            if rbp >= _BP_GET(key, 0):
                break
            if key == "{" and self.choosing and self.choose_block_starts():
                break
            self.i += 1
            self.tok = tokens[self.i]
            led = _LED_GET(key)
            if led is None:
                right = self.expression(BINDING_POWER[key])
                left = _binary(left.span.start, right.span.end, key, left, right)
            else:
                left = led(self, nxt, left)
            nxt = self.tok
        self.depth = depth - 1
        return left

    def choose_block_starts(self) -> bool:
        """In ``choose e { … }``: does this "{" start the block rather than a path?"""
        return self.peek()[1] == SYMBOL and self.peek(2)[0] in ("=>", "(", ":")

    def nud_number(self, tok: Tok) -> ast.Expr:
        value = tok[2]
        assert isinstance(value, int | float)
        return _number(tok[3], tok[4], value)

    def nud_string(self, tok: Tok) -> ast.Expr:
        value = tok[2]
        assert isinstance(value, str)
        return _string(tok[3], tok[4], value)

    def nud_regexp(self, tok: Tok) -> ast.RegExp:
        value = tok[2]
        assert isinstance(value, tuple)
        pattern, flags = value
        return ast.RegExp(_span(tok[3], tok[4]), pattern, flags)

    def nud_chevron(self, tok: Tok) -> ast.Expr:
        parts: list[ast.Expr] = []
        while True:
            cur = self.tok
            kind = cur[1]
            if kind == CHEVRON_STRING:
                self.advance()
                value = cur[2]
                assert isinstance(value, str)
                parts.append(_string(cur[3], cur[4], value))
            elif kind == BEESTING_OPEN:
                self.advance()
                parts.append(self.expression())
                self.expect_close("BEESTING", cur, "'#{'")
            else:
                break
        # The lexer guarantees CHEVRON_CLOSE here (or it reported the unterminated chevron).
        self.advance()
        return ast.Chevron(self.span_from(tok[3]), tuple(parts))

    def nud_constant(self, tok: Tok) -> ast.Expr:
        span = _span(tok[3], tok[4])
        if tok[0] == "null":
            return ast.Null(span)
        return ast.Boolean(span, tok[0] == "true")

    def nud_prefix(self, tok: Tok) -> ast.Expr:
        operand = self.expression(PREFIX_BINDING_POWER)
        op = tok[0]
        assert op in ("-", "+", "not")
        return ast.Unary(_span(tok[3], operand.span.end), op, operand)  # type: ignore[arg-type]

    def nud_paren(self, tok: Tok) -> ast.Expr:
        inner = self.expression()
        self.expect_close(")", tok, "parenthesis")
        return inner

    # In the methods below, the closing token is checked in line and
    # ``expect_close`` is called only to report it missing.

    def nud_array(self, tok: Tok) -> ast.Expr:
        items: list[ast.Expr] = []
        tokens = self.tokens
        while self.tok[0] != "]":
            items.append(self.expression())
            if self.tok[0] != ",":
                break
            self.i += 1
            self.tok = tokens[self.i]
        close = self.tok
        if close[0] != "]":
            self.expect_close("]", tok, "array")
        self.i += 1
        self.tok = tokens[self.i]
        return _array(tok[3], close[4], tuple(items))

    def nud_map(self, tok: Tok) -> ast.Expr:
        entries: list[tuple[ast.String, ast.Expr]] = []
        tokens = self.tokens
        while self.tok[0] != "}":
            key_tok = self.tok
            if key_tok[0] != KEY_STRING:
                if key_tok[1] == EOF:
                    self.expect_close("}", tok, "map")
                self.expected("a string map key or '}'")
            self.i += 1
            self.tok = tokens[self.i]
            key = _string(key_tok[3], key_tok[4], key_tok[2])  # type: ignore[arg-type]
            if self.tok[0] != ":":
                self.expect(":", " after the map key")
            self.i += 1
            self.tok = tokens[self.i]
            entries.append((key, self.expression()))
            if self.tok[0] != ",":
                break
            self.i += 1
            self.tok = tokens[self.i]
        close = self.tok
        if close[0] != "}":
            self.expect_close("}", tok, "map")
        self.i += 1
        self.tok = tokens[self.i]
        return _map(tok[3], close[4], tuple(entries))

    def nud_function(self, tok: Tok) -> ast.Expr:
        params = self.parameters()
        open_brace = self.expect("{", " to start the function body")
        body = self.declarations()
        if self.tok[0] == "}":
            self.expected("the function's result expression")
        self.accept("return")
        result = self.expression(what="the function's result expression")
        self.accept(";")
        self.expect_close("}", open_brace, "function body")
        return ast.Function(self.span_from(tok[3]), params, body, result)

    def nud_defaction(self, tok: Tok) -> ast.Expr:
        params = self.parameters()
        open_brace = self.expect("{", " to start the defaction body")
        body = self.declarations()
        block = None
        if self.tok[0] not in ("}", "return", "returns"):
            block = self.action_block()
        result = None
        if self.accept("return") or self.accept("returns"):
            result = self.expression(what="the defaction's result expression")
            self.accept(";")
        self.expect_close("}", open_brace, "defaction body")
        return ast.DefAction(self.span_from(tok[3]), params, body, block, result)

    def parameters(self) -> tuple[ast.Param, ...]:
        open_paren = self.expect("(", " to start the parameter list")
        params: list[ast.Param] = []
        while self.tok[0] != ")":
            ident = self.identifier("a parameter name")
            default = self.expression() if self.accept("=") else None
            params.append(_param(ident.span, ident.name, default))
            if not self.accept(","):
                break
        self.expect_close(")", open_paren, "parameter list")
        return tuple(params)

    def arguments(self, open_paren: Tok) -> tuple[ast.Arg, ...]:
        """The arguments after ``open_paren`` and the ")" that closes them."""
        args: list[ast.Arg] = []
        tokens = self.tokens
        while self.tok[0] != ")":
            value = self.expression()
            if self.tok[0] == "=" and isinstance(value, ast.Identifier):
                self.i += 1
                self.tok = tokens[self.i]
                named = self.expression()
                args.append(_arg(_span(value.span.start, named.span.end), value.name, named))
            else:
                args.append(_arg(value.span, None, value))
            if self.tok[0] != ",":
                break
            self.i += 1
            self.tok = tokens[self.i]
        if self.tok[0] != ")":
            self.expect_close(")", open_paren, "argument list")
        self.i += 1
        self.tok = tokens[self.i]
        return tuple(args)

    def led_call(self, tok: Tok, left: ast.Expr) -> ast.Expr:
        args = self.arguments(tok)
        return _call(left.span.start, self.tokens[self.i - 1][4], left, args)

    def led_dot(self, tok: Tok, left: ast.Expr) -> ast.Expr:
        name_tok = self.tok
        if name_tok[1] is not SYMBOL:
            self.expected("an operator or key name after '.'")
        tokens = self.tokens
        i = self.i + 1
        nxt = tokens[i]
        name: ast.Identifier | ast.DomainIdentifier
        if nxt[0] == ":" and tokens[i + 1][1] is SYMBOL:
            last = tokens[i + 1]
            i += 2
            nxt = tokens[i]
            name = _domain_identifier(name_tok[3], last[4], name_tok[0], last[0])
        else:
            name = _identifier(name_tok[3], name_tok[4], name_tok[0])
        self.i = i
        self.tok = nxt
        if nxt[0] == "(":
            self.i += 1
            self.tok = tokens[self.i]
            args = self.arguments(nxt)
            return _dot_call(left.span.start, tokens[self.i - 1][4], left, name, args)
        if isinstance(name, ast.DomainIdentifier):
            self.expected("'(' after the module function name")
        return ast.DotAccess(self.span_from(left.span.start), left, name)

    def led_path(self, tok: Tok, left: ast.Expr) -> ast.Expr:
        key = self.expression()
        close = self.tok
        if close[0] != "}":
            self.expect_close("}", tok, "path")
        self.i += 1
        self.tok = self.tokens[self.i]
        return _path(left.span.start, close[4], left, key)

    def led_index(self, tok: Tok, left: ast.Expr) -> ast.Expr:
        key = self.expression()
        self.expect_close("]", tok, "index")
        return ast.Index(self.span_from(left.span.start), left, key)

    def led_conditional(self, tok: Tok, left: ast.Expr) -> ast.Expr:
        then = self.expression(BINDING_POWER["=>"])
        self.expect("|", " between the branches of '=>'")
        otherwise = self.expression()
        return ast.Conditional(self.span_from(left.span.start), left, then, otherwise)

    # -- declarations -----------------------------------------------------

    def at_declaration(self) -> bool:
        tok = self.tok
        return tok[1] is SYMBOL and self.tokens[self.i + 1][0] == "=" and tok[0] not in RESERVED

    def declaration(self) -> ast.Declaration:
        name = self.identifier("a declaration")
        if self.tok[0] != "=":
            self.expect("=")
        self.i += 1
        self.tok = self.tokens[self.i]
        value = self.expression()
        return _declaration(name.span.start, value.span.end, name, value)

    def declarations(self) -> tuple[ast.Declaration, ...]:
        decls: list[ast.Declaration] = []
        while self.at_declaration():
            decls.append(self.declaration())
            if self.tok[0] == ";":
                self.advance()
        return tuple(decls)

    def declaration_block(self, what: str) -> tuple[ast.Declaration, ...]:
        open_brace = self.expect("{", f" to start the {what} block")
        decls = self.declarations()
        if self.tok[0] != "}":
            if self.tok[1] == EOF:
                self.expect_close("}", open_brace, f"{what} block")
            self.expected(f"a declaration (name = expression) or '}}' to close the {what} block")
        self.advance()
        return decls

    # -- ruleset ------------------------------------------------------------

    def ruleset(self) -> ast.Ruleset:
        start = self.expect("ruleset")[3]
        rid = self.ruleset_id()
        open_brace = self.expect("{", " after the ruleset id")
        meta: list[ast.MetaProperty] = []
        if self.tok[0] == "version":  # deprecated top-level version; recorded as meta
            ver = self.advance()
            value = self.expression()
            meta.append(ast.MetaExpr(self.span_from(ver[3]), "version", value))
        if self.tok[0] == "meta":
            meta.extend(self.meta_block())
        global_decls: tuple[ast.Declaration, ...] = ()
        if self.accept("global"):
            global_decls = self.declaration_block("global")
        rules: list[ast.Rule] = []
        while self.tok[0] == "rule":
            rules.append(self.rule())
        if self.tok[0] != "}":
            if self.tok[1] == EOF:
                self.expect_close("}", open_brace, "ruleset block")
            self.expected("'rule' or '}' to close the ruleset block")
        self.advance()
        if self.tok[1] != EOF:
            self.expected("end of input after the ruleset")
        return ast.Ruleset(self.span_from(start), rid, tuple(meta), global_decls, tuple(rules))

    def ruleset_id(self) -> str:
        first = self.word("a ruleset id (like io.picolabs.hello)")
        parts = [first[0]]
        prev = first
        # The id is one unbroken run of words joined by "." or "-", e.g. io.picolabs.did-o.
        while (
            self.tok[0] in (".", "-")
            and self.tok[3] == prev[4]
            and self.peek()[3] == self.tok[4]
            and self.peek()[1] in (SYMBOL, NUMBER)
        ):
            parts.append(self.advance()[0])
            prev = self.advance()
            parts.append(self.text(prev))
        return "".join(parts)

    def meta_block(self) -> list[ast.MetaProperty]:
        self.advance()
        open_brace = self.expect("{", " after 'meta'")
        props: list[ast.MetaProperty] = []
        while self.tok[1] == SYMBOL:
            props.append(self.meta_property())
        if self.tok[0] != "}":
            if self.tok[1] == EOF:
                self.expect_close("}", open_brace, "meta block")
            self.expected("a meta property or '}' to close the meta block")
        self.advance()
        return props

    def meta_property(self) -> ast.MetaProperty:
        key = self.advance()
        word = key[0]
        if word in ("name", "description", "author", "version"):
            return ast.MetaExpr(self.span_from(key[3]), word, self.expression())
        if word in ("shares", "share", "provides", "provide"):
            names = self.identifier_list("a global name")
            kind = "shares" if word.startswith("share") else "provides"
            return ast.MetaNames(self.span_from(key[3]), kind, names)  # type: ignore[arg-type]
        if word == "logging":
            tok = self.tok
            if tok[0] not in ("on", "off"):
                self.expected("'on' or 'off' after 'logging'")
            self.advance()
            value = ast.Boolean(_span(tok[3], tok[4]), tok[0] == "on")
            return ast.MetaExpr(self.span_from(key[3]), "logging", value)
        if word == "use":
            self.expect("module", " after 'use'")
            rid = self.ruleset_id()
            version = None
            if self.accept("version"):
                v = self.expression()
                if not isinstance(v, ast.String):
                    self.fail("expected a string after 'version'")
                version = v
            alias = self.identifier("an alias name") if self.accept("alias") else None
            with_: list[ast.Declaration] = []
            if self.accept("with"):
                with_.append(self.declaration())
                while self.accept("and") or self.at_declaration():
                    with_.append(self.declaration())
            return ast.UseModule(self.span_from(key[3]), rid, version, alias, tuple(with_))
        if word == "configure":
            self.expect("using", " after 'configure'")
            return ast.Configure(self.span_from(key[3]), self.declarations())
        self.fail(f"unsupported meta property '{word}'", key)

    # -- rules ------------------------------------------------------------

    def rule(self) -> ast.Rule:
        start = self.advance()[3]
        name = self.identifier("a rule name")
        active = True
        if self.accept("is"):
            if self.tok[0] not in ("active", "inactive"):
                self.expected("'active' or 'inactive'")
            active = self.advance()[0] == "active"
        open_brace = self.expect("{", " to start the rule body")
        if self.tok[0] != "select":
            self.expected("'select' at the start of the rule body")
        self.advance()
        select: ast.EventExpr | None = None
        select_where: ast.Expr | None = None
        within = None
        if self.accept("where"):  # salient for every event
            select_where = self.expression()
        else:
            self.expect("when", " after 'select'")
            select = self.event_expression()
        if select is not None and self.tok[0] == "within":
            w = self.advance()
            value = self.expression()
            unit = self.tok
            if unit[1] != SYMBOL or unit[0].removesuffix("s") not in WITHIN_UNITS:
                self.expected("a time unit (seconds, minutes, hours, days, weeks, months, years)")
            self.advance()
            within = ast.Within(self.span_from(w[3]), value, unit[0].removesuffix("s"))
        foreach: list[ast.ForEach] = []
        while self.tok[0] == "foreach":
            fe = self.advance()
            collection = self.expression()
            self.expect("setting", " after the foreach expression")
            open_paren = self.expect("(", " after 'setting'")
            names = self.identifier_list("a variable name")
            self.expect_close(")", open_paren, "setting list")
            foreach.append(ast.ForEach(self.span_from(fe[3]), collection, names))
        pre: tuple[ast.Declaration, ...] = ()
        if self.accept("pre"):
            pre = self.declaration_block("pre")
        action_block = None
        if self.tok[1] == SYMBOL and self.tok[0] not in _POSTLUDE_WORDS:
            action_block = self.action_block()
        postlude = self.postlude()
        if self.tok[0] != "}":
            if self.tok[1] == EOF:
                self.expect_close("}", open_brace, "rule block")
            if postlude is None:
                self.expected(
                    "an action, a postlude (fired, notfired, always) or '}' to close the rule block"
                )
            self.expected("'}' to close the rule block")
        self.advance()
        return ast.Rule(
            self.span_from(start),
            name,
            active,
            select,
            tuple(foreach),
            pre,
            action_block,
            postlude,
            within,
            select_where,
        )

    # -- event expressions (Pratt, with their own binding powers) -----------

    def event_expression(self, rbp: int = 0) -> ast.EventExpr:
        self.nest()
        left = self.event_nud(self.tok)
        get_bp = EVENT_BINDING_POWER.get
        while self.tok[1] == SYMBOL and rbp < get_bp(self.tok[0], 0):
            left = self.event_led(self.advance(), left)
        self.depth -= 1
        return left

    def event_nud(self, tok: Tok) -> ast.EventExpr:
        if tok[0] == "(":
            self.advance()
            inner = self.event_expression()
            self.expect_close(")", tok, "parenthesis")
            return inner
        if tok[1] != SYMBOL:
            self.expected("an event domain")
        op = tok[0]
        counted = op in COUNTED_OPERATORS and self.peek()[1] == NUMBER
        if counted or (op in EVENT_GROUP_OPERATORS and self.peek()[0] == "("):
            self.advance()
            count = None
            if counted:
                num = self.tok[2]
                if not isinstance(num, int) or num < 0:
                    self.expected(f"a whole number after '{op}'")
                count = num
                self.advance()
            open_paren = self.expect("(")
            args = [self.event_expression()]
            while op not in ("count", "repeat") and self.accept(","):
                args.append(self.event_expression())
            self.expect_close(")", open_paren, "event list")
            aggregator = None
            if (
                op in ("count", "repeat")
                and self.tok[1] == SYMBOL
                and self.tok[0] in AGGREGATORS
                and self.peek()[0] == "("
            ):
                agg = self.advance()
                agg_paren = self.advance()
                names = self.identifier_list("a variable name")
                self.expect_close(")", agg_paren, f"'{agg[0]}' list")
                aggregator = ast.Aggregator(self.span_from(agg[3]), agg[0], names)
            return ast.EventOp(self.span_from(tok[3]), op, tuple(args), count, aggregator)
        return self.event_pattern()

    def event_pattern(self) -> ast.EventPattern:
        domain = self.advance()
        self.accept(":")
        if self.tok[1] != SYMBOL:
            self.expected(f"an event type after the event domain '{domain[0]}'")
        etype = self.advance()
        attrs: list[ast.AttributeMatch] = []
        while self.tok[1] == SYMBOL and self.peek()[0] == KEY_REGEXP:
            attr = self.advance()
            regex = self.nud_regexp(self.advance())
            attrs.append(ast.AttributeMatch(self.span_from(attr[3]), attr[0], regex))
        where = self.expression() if self.accept("where") else None
        setting: tuple[ast.Identifier, ...] = ()
        if self.accept("setting"):
            open_paren = self.expect("(", " after 'setting'")
            setting = self.identifier_list("a variable name")
            self.expect_close(")", open_paren, "setting list")
        if where is None and self.accept("where"):
            where = self.expression()
        return ast.EventPattern(
            self.span_from(domain[3]), domain[0], etype[0], tuple(attrs), setting, where
        )

    def event_led(self, tok: Tok, left: ast.EventExpr) -> ast.EventExpr:
        op = tok[0]
        if op in ("between", "not"):
            if op == "not":
                self.expect("between", " after 'not'")
                op = "not between"
            open_paren = self.expect("(", f" after '{op}'")
            first = self.event_expression()
            self.expect(",", f" between the events of '{op}'")
            second = self.event_expression()
            self.expect_close(")", open_paren, "event list")
            return ast.EventOp(self.span_from(left.span.start), op, (left, first, second))
        right = self.event_expression(EVENT_BINDING_POWER[op])
        return ast.EventOp(_span(left.span.start, right.span.end), op, (left, right))

    # -- actions ------------------------------------------------------------

    def action_block(self) -> ast.ActionBlock:
        start = self.tok[3]
        condition = None
        if self.accept("if"):
            condition = self.expression()
            self.expect("then", " after the 'if' condition")
        kind: Literal["every", "choose", "sample"] = "every"
        discriminant = None
        if self.tok[0] in ("every", "sample", "choose"):
            word = self.advance()[0]
            kind = "choose" if word == "choose" else "sample" if word == "sample" else "every"
            if kind == "choose":
                # `{ label =>` or `{ action(` starts the block rather than a path.
                self.choosing = True
                try:
                    discriminant = self.expression()
                finally:
                    self.choosing = False
            open_brace = self.expect("{", f" to start the '{kind}' block")
            actions: list[ast.Action] = []
            while self.tok[0] != "}" and self.tok[1] != EOF:
                actions.append(self.action())
            self.expect_close("}", open_brace, f"'{kind}' block")
        else:
            actions = [self.action()]
        return ast.ActionBlock(self.span_from(start), condition, kind, discriminant, tuple(actions))

    def action(self) -> ast.Action:
        start = self.tok[3]
        label = None
        if self.tok[1] == SYMBOL and self.peek()[0] == "=>":
            label = self.advance()[0]
            self.advance()
        callee = self.action_name()
        if self.tok[0] != "(":
            self.expected("'(' to call the action")
        args = self.arguments(self.advance())
        setting: tuple[ast.Identifier, ...] = ()
        if self.accept("setting"):
            open_paren = self.expect("(", " after 'setting'")
            setting = self.identifier_list("a variable name")
            self.expect_close(")", open_paren, "setting list")
        self.accept(";")
        return ast.Action(self.span_from(start), label, callee, args, setting)

    def action_name(self) -> ast.Identifier | ast.DomainIdentifier:
        ident = self.identifier("an action")
        if self.tok[0] == ":" and self.peek()[1] == SYMBOL:
            self.advance()
            name = self.advance()
            return _domain_identifier(ident.span.start, name[4], ident.name, name[0])
        return ident

    # -- postlude -----------------------------------------------------------

    def postlude(self) -> ast.Postlude | None:
        start = self.tok[3]
        fired = notfired = always = None
        if self.accept("always"):
            always = self.statements("always")
        elif self.accept("fired"):
            fired = self.statements("fired")
            if self.accept("else"):
                notfired = self.statements("else")
            if self.accept("finally"):
                always = self.statements("finally")
        elif self.accept("notfired"):
            notfired = self.statements("notfired")
            if self.accept("else"):
                fired = self.statements("else")
            if self.accept("finally"):
                always = self.statements("finally")
        elif self.tok[0] in ("else", "finally"):
            self.fail(f"'{self.tok[0]}' must follow a 'fired' or 'notfired' block")
        else:
            return None
        return ast.Postlude(self.span_from(start), fired, notfired, always)

    def statements(self, what: str) -> tuple[ast.Statement, ...]:
        open_brace = self.expect("{", f" after '{what}'")
        stmts: list[ast.Statement] = []
        while self.tok[0] != "}":
            if self.tok[1] == EOF:
                self.expect_close("}", open_brace, f"{what} block")
            stmts.append(self.statement())
            self.accept(";")
        self.advance()
        return tuple(stmts)

    def statement(self) -> ast.Statement:
        stmt = self.statement_core()
        if self.tok[0] == "on" and self.peek()[0] == "final":
            self.advance()
            self.advance()
            return ast.Guarded(self.span_from(stmt.span.start), stmt, None)
        if self.accept("if"):
            condition = self.expression()
            return ast.Guarded(_span(stmt.span.start, condition.span.end), stmt, condition)
        return stmt

    def statement_core(self) -> ast.Statement:
        tok = self.tok
        if tok[1] != SYMBOL:
            self.expected("a postlude statement")
        word = tok[0]
        if word == "clear":
            self.advance()
            domain, name = self.ent_name("after 'clear'")
            path = self.ent_path()
            return ast.ClearEnt(self.span_from(tok[3]), name, path, domain)
        if word == "raise":
            return self.raise_statement()
        if word in ("log", "error") and self.peek()[0] in LOG_LEVELS:
            self.advance()
            level = self.advance()[0]
            message = self.expression()
            if word == "error":
                return ast.ErrorStatement(self.span_from(tok[3]), level, message)
            return ast.LogStatement(self.span_from(tok[3]), level, message)
        if word == "log":
            self.advance()
            self.expected("a log level (" + ", ".join(LOG_LEVELS) + ")")
        if word == "last":
            self.advance()
            return ast.Last(_span(tok[3], tok[4]))
        if word == "schedule":
            return self.schedule_statement()
        if self.peek()[0] == ":":
            domain, name = self.ent_name("in an assignment")
            path = self.ent_path()
            self.expect(":=", " to assign the entity variable")
            value = self.expression()
            return ast.EntAssign(self.span_from(tok[3]), name, path, value, domain)
        if self.at_declaration():
            return self.declaration()
        self.expected(
            "a postlude statement (ent:name := value, clear, raise, log, last or name = value)"
        )

    def ent_name(self, context: str) -> tuple[str, str]:
        """``domain:name``; any domain parses (the compiler accepts only ``ent``)."""
        if not (self.tok[1] == SYMBOL and self.peek()[0] == ":"):
            self.expected(f"'ent:name' {context}")
        domain = self.advance()[0]
        self.expect(":")
        return domain, self.word("an entity variable name")[0]

    def ent_path(self) -> ast.Expr | None:
        open_brace = self.accept("{")
        if open_brace is None:
            return None
        path = self.expression()
        self.expect_close("}", open_brace, "path")
        return path

    def schedule_statement(self) -> ast.ScheduleEvent:
        start = self.advance()[3]
        domain = None
        if not self.accept("event"):
            domain = self.identifier("an event domain or 'event' after 'schedule'").name
            self.expect("event", f" after 'schedule {domain}'")
        etype = self.expression(what="an event type")
        at = repeat = attributes = None
        if self.accept("at"):
            at = self.expression()
        elif self.accept("repeat"):
            repeat = self.expression()
        else:
            self.expected("'at' or 'repeat' in the schedule statement")
        if self.accept("attributes"):
            attributes = self.expression()
        setting = None
        if self.accept("setting"):
            open_paren = self.expect("(", " after 'setting'")
            setting = self.identifier("a variable name")
            self.expect_close(")", open_paren, "setting list")
        return ast.ScheduleEvent(
            self.span_from(start), domain, etype, at, repeat, attributes, setting
        )

    def raise_statement(self) -> ast.RaiseEvent:
        start = self.advance()[3]
        domain = None
        if not self.accept("event"):
            domain = self.identifier("an event domain or 'event' after 'raise'").name
            self.expect("event", f" after 'raise {domain}'")
        etype = self.expression(what="an event type")
        for_rid = attributes = None
        for _ in range(2):  # "for" and "attributes", in either order
            if for_rid is None and self.accept("for"):
                for_rid = self.expression()
            elif attributes is None and self.accept("attributes"):
                attributes = self.expression()
        return ast.RaiseEvent(self.span_from(start), domain, etype, for_rid, attributes)


# Nud functions by token key (symbols not listed here are names, parsed in
# ``expression`` itself), led functions by operator (any other operator is binary).
_NUD: dict[str, Callable[[_Parser, Tok], ast.Expr]] = {
    "(": _Parser.nud_paren,
    "[": _Parser.nud_array,
    "{": _Parser.nud_map,
    "-": _Parser.nud_prefix,
    "+": _Parser.nud_prefix,
    "not": _Parser.nud_prefix,
    "function": _Parser.nud_function,
    "defaction": _Parser.nud_defaction,
    "null": _Parser.nud_constant,
    "true": _Parser.nud_constant,
    "false": _Parser.nud_constant,
    KEY_NUMBER: _Parser.nud_number,
    KEY_STRING: _Parser.nud_string,
    KEY_REGEXP: _Parser.nud_regexp,
    KEY_CHEVRON_OPEN: _Parser.nud_chevron,
}
# Symbols that are not names in an expression: the words above and the other
# reserved words (which start no expression).
_NUD_WORD = frozenset(RESERVED | {"null", "true", "false"})
_LED: dict[str, Callable[[_Parser, Tok, ast.Expr], ast.Expr]] = {
    "(": _Parser.led_call,
    ".": _Parser.led_dot,
    "{": _Parser.led_path,
    "[": _Parser.led_index,
    "=>": _Parser.led_conditional,
}
_LED_GET = _LED.get
_BP_GET = BINDING_POWER.get


def parse_ruleset(source: str) -> ast.Ruleset:
    """Parse a whole ruleset; raises :class:`KrlSyntaxError` on any error."""
    # The tokens and the tree hold no reference cycles, so the cyclic garbage
    # collector has nothing to find while they are built; its passes over the
    # young objects were a tenth of the parse time. It is paused for the parse
    # (when it was running) and resumed after, whatever happens.
    if not gc.isenabled():
        return _Parser(source).ruleset()
    gc.disable()
    try:
        return _Parser(source).ruleset()
    finally:
        gc.enable()


def parse_expression(source: str) -> ast.Expr:
    """Parse a single expression (used by tests and tools)."""
    parser = _Parser(source)
    expr = parser.expression()
    if parser.tok[1] != EOF:
        parser.expected("end of input")
    return expr
