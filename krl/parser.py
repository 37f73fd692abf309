"""Parse tokens from the lexer into ``ast`` nodes for the compiler.

Neighbours: ``lexer`` (tokens in), ``ast`` (nodes out), ``compiler`` (the consumer).

Expressions and event expressions are parsed with Pratt's top-down operator
precedence technique, as pico-engine's ``krl-parser`` does: each token kind has a
left binding power (``BINDING_POWER`` for expressions, ``EVENT_BINDING_POWER`` for
``select when`` expressions); a *nud* function parses a token that starts an
expression and a *led* function parses a token that continues one. ``_expression``
keeps consuming leds while the next token binds tighter than the current right
binding power. Everything else (rulesets, rules, postludes) is recursive descent.

Every error names what was expected and what was found; block-closing errors also
say where the block was opened.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal, NoReturn

from . import ast
from .errors import KrlSyntaxError, line_column
from .lexer import Token, tokenize

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


def _describe(tok: Token) -> str:
    if tok.kind == "EOF":
        return "end of input"
    if tok.kind == "STRING":
        return "a string"
    if tok.kind == "NUMBER":
        return f"number {tok.text}"
    if tok.kind == "REGEXP":
        return "a regular expression"
    if tok.kind in ("CHEVRON_OPEN", "CHEVRON_STRING"):
        return "a chevron string"
    if tok.kind == "CHEVRON_CLOSE":
        return "'>>'"
    return f"'{tok.text}'"


class _Parser:
    def __init__(self, source: str) -> None:
        self.src = source
        self.tokens = tokenize(source)
        self.i = 0
        self.tok = self.tokens[0]
        self.depth = 0
        self.choosing = False

    # -- token helpers -----------------------------------------------------

    def fail(self, message: str, tok: Token | None = None) -> NoReturn:
        tok = tok or self.tok
        offset = tok.start
        if tok.kind == "EOF" and self.i > 0:
            # Point just past the last real token rather than at trailing blank lines.
            offset = self.tokens[self.i - 1].end
        raise KrlSyntaxError.at(message, self.src, offset)

    def expected(self, what: str) -> NoReturn:
        self.fail(f"expected {what}, found {_describe(self.tok)}")

    def where(self, tok: Token) -> str:
        line, column, _ = line_column(self.src, tok.start)
        return f"line {line}, column {column}"

    def advance(self) -> Token:
        tok = self.tok
        if tok.kind != "EOF":
            self.i += 1
            self.tok = self.tokens[self.i]
        return tok

    def peek(self, k: int = 1) -> Token:
        return self.tokens[min(self.i + k, len(self.tokens) - 1)]

    def at_raw(self, text: str) -> bool:
        return self.tok.kind == "RAW" and self.tok.text == text

    def at_word(self, word: str) -> bool:
        return self.tok.kind == "SYMBOL" and self.tok.text == word

    def accept_raw(self, text: str) -> Token | None:
        if self.at_raw(text):
            return self.advance()
        return None

    def accept_word(self, word: str) -> Token | None:
        if self.at_word(word):
            return self.advance()
        return None

    def expect_raw(self, text: str, context: str = "") -> Token:
        if not self.at_raw(text):
            self.expected(f"'{text}'{context}")
        return self.advance()

    def expect_word(self, word: str, context: str = "") -> Token:
        if not self.at_word(word):
            self.expected(f"'{word}'{context}")
        return self.advance()

    def expect_close(self, closer: str, opener: Token, what: str) -> Token:
        kind = {"}": "RAW", ")": "RAW", "]": "RAW", "BEESTING": "BEESTING_CLOSE"}[closer]
        if self.tok.kind != kind or (kind == "RAW" and self.tok.text != closer):
            shown = "}" if closer == "BEESTING" else closer
            self.expected(f"'{shown}' to close the {what} opened at {self.where(opener)}")
        return self.advance()

    def word(self, what: str) -> Token:
        if self.tok.kind != "SYMBOL":
            self.expected(what)
        return self.advance()

    def identifier(self, what: str = "an identifier") -> ast.Identifier:
        tok = self.tok
        if tok.kind != "SYMBOL" or tok.text in RESERVED:
            self.expected(what)
        self.advance()
        return ast.Identifier(ast.Span(tok.start, tok.end), tok.text)

    def identifier_list(self, what: str) -> tuple[ast.Identifier, ...]:
        ids = [self.identifier(what)]
        while self.accept_raw(","):
            ids.append(self.identifier(what))
        return tuple(ids)

    def span_from(self, start: int) -> ast.Span:
        prev = self.tokens[self.i - 1] if self.i > 0 else self.tok
        return ast.Span(start, max(start, prev.end))

    def nest(self) -> None:
        self.depth += 1
        if self.depth > MAX_NESTING:
            self.fail(f"expressions are nested more than {MAX_NESTING} levels deep")

    # -- expressions -------------------------------------------------------

    def lbp(self, tok: Token) -> int:
        if (
            self.choosing
            and tok.text == "{"
            and self.peek().kind == "SYMBOL"
            and self.peek(2).text in ("=>", "(", ":")
        ):
            return 0
        if tok.kind == "RAW" or (tok.kind == "SYMBOL" and tok.text in ("like", "cmp")):
            return BINDING_POWER.get(tok.text, 0)
        return 0

    def expression(self, rbp: int = 0, what: str = "an expression") -> ast.Expr:
        self.nest()
        tok = self.tok
        nud = _nud(tok)
        if nud is None:
            self.expected(what)
        self.advance()
        left = nud(self, tok)
        while rbp < self.lbp(self.tok):
            tok = self.advance()
            left = self.led(tok, left)
        self.depth -= 1
        return left

    def nud_number(self, tok: Token) -> ast.Expr:
        assert isinstance(tok.value, int | float)
        return ast.Number(ast.Span(tok.start, tok.end), tok.value)

    def nud_string(self, tok: Token) -> ast.Expr:
        assert isinstance(tok.value, str)
        return ast.String(ast.Span(tok.start, tok.end), tok.value)

    def nud_regexp(self, tok: Token) -> ast.Expr:
        assert isinstance(tok.value, tuple)
        pattern, flags = tok.value
        return ast.RegExp(ast.Span(tok.start, tok.end), pattern, flags)

    def nud_chevron(self, tok: Token) -> ast.Expr:
        parts: list[ast.Expr] = []
        while True:
            cur = self.tok
            if cur.kind == "CHEVRON_STRING":
                self.advance()
                assert isinstance(cur.value, str)
                parts.append(ast.String(ast.Span(cur.start, cur.end), cur.value))
            elif cur.kind == "BEESTING_OPEN":
                self.advance()
                parts.append(self.expression())
                self.expect_close("BEESTING", cur, "'#{'")
            else:
                break
        # The lexer guarantees CHEVRON_CLOSE here (or it reported the unterminated chevron).
        self.advance()
        return ast.Chevron(self.span_from(tok.start), tuple(parts))

    def nud_symbol(self, tok: Token) -> ast.Expr:
        if tok.text in RESERVED:
            self.fail(f"expected an expression, found reserved word '{tok.text}'", tok)
        if self.at_raw(":") and self.peek().kind == "SYMBOL":
            self.advance()
            name = self.advance()
            return ast.DomainIdentifier(ast.Span(tok.start, name.end), tok.text, name.text)
        return ast.Identifier(ast.Span(tok.start, tok.end), tok.text)

    def nud_constant(self, tok: Token) -> ast.Expr:
        span = ast.Span(tok.start, tok.end)
        if tok.text == "null":
            return ast.Null(span)
        return ast.Boolean(span, tok.text == "true")

    def nud_prefix(self, tok: Token) -> ast.Expr:
        operand = self.expression(PREFIX_BINDING_POWER)
        op = "not" if tok.text == "not" else tok.text
        assert op in ("-", "+", "not")
        return ast.Unary(ast.Span(tok.start, operand.span.end), op, operand)  # type: ignore[arg-type]

    def nud_paren(self, tok: Token) -> ast.Expr:
        inner = self.expression()
        self.expect_close(")", tok, "parenthesis")
        return inner

    def nud_array(self, tok: Token) -> ast.Expr:
        items: list[ast.Expr] = []
        while not self.at_raw("]"):
            items.append(self.expression())
            if not self.accept_raw(","):
                break
        self.expect_close("]", tok, "array")
        return ast.Array(self.span_from(tok.start), tuple(items))

    def nud_map(self, tok: Token) -> ast.Expr:
        entries: list[tuple[ast.String, ast.Expr]] = []
        while not self.at_raw("}"):
            key_tok = self.tok
            if key_tok.kind != "STRING":
                if key_tok.kind == "EOF":
                    self.expect_close("}", tok, "map")
                self.expected("a string map key or '}'")
            self.advance()
            assert isinstance(key_tok.value, str)
            key = ast.String(ast.Span(key_tok.start, key_tok.end), key_tok.value)
            self.expect_raw(":", " after the map key")
            entries.append((key, self.expression()))
            if not self.accept_raw(","):
                break
        self.expect_close("}", tok, "map")
        return ast.Map(self.span_from(tok.start), tuple(entries))

    def nud_function(self, tok: Token) -> ast.Expr:
        params = self.parameters()
        open_brace = self.expect_raw("{", " to start the function body")
        body = self.declarations()
        if self.at_raw("}"):
            self.expected("the function's result expression")
        self.accept_word("return")
        result = self.expression(what="the function's result expression")
        self.accept_raw(";")
        self.expect_close("}", open_brace, "function body")
        return ast.Function(self.span_from(tok.start), params, body, result)

    def nud_defaction(self, tok: Token) -> ast.Expr:
        params = self.parameters()
        open_brace = self.expect_raw("{", " to start the defaction body")
        body = self.declarations()
        block = None
        if not self.at_raw("}") and not self.at_word("return") and not self.at_word("returns"):
            block = self.action_block()
        result = None
        if self.accept_word("return") or self.accept_word("returns"):
            result = self.expression(what="the defaction's result expression")
            self.accept_raw(";")
        self.expect_close("}", open_brace, "defaction body")
        return ast.DefAction(self.span_from(tok.start), params, body, block, result)

    def parameters(self) -> tuple[ast.Param, ...]:
        open_paren = self.expect_raw("(", " to start the parameter list")
        params: list[ast.Param] = []
        while not self.at_raw(")"):
            ident = self.identifier("a parameter name")
            default = self.expression() if self.accept_raw("=") else None
            params.append(ast.Param(ident.span, ident.name, default))
            if not self.accept_raw(","):
                break
        self.expect_close(")", open_paren, "parameter list")
        return tuple(params)

    def arguments(self, open_paren: Token) -> tuple[ast.Arg, ...]:
        args: list[ast.Arg] = []
        while not self.at_raw(")"):
            value = self.expression()
            if isinstance(value, ast.Identifier) and self.accept_raw("="):
                named = self.expression()
                args.append(ast.Arg(ast.Span(value.span.start, named.span.end), value.name, named))
            else:
                args.append(ast.Arg(value.span, None, value))
            if not self.accept_raw(","):
                break
        self.expect_close(")", open_paren, "argument list")
        return tuple(args)

    def led(self, tok: Token, left: ast.Expr) -> ast.Expr:
        op = tok.text
        start = left.span.start
        if op == "(":
            args = self.arguments(tok)
            return ast.Call(self.span_from(start), left, args)
        if op == ".":
            name_tok = self.tok
            if name_tok.kind != "SYMBOL":
                self.expected("an operator or key name after '.'")
            self.advance()
            name: ast.Identifier | ast.DomainIdentifier
            if self.at_raw(":") and self.peek().kind == "SYMBOL":
                self.advance()
                last = self.advance()
                name = ast.DomainIdentifier(
                    ast.Span(name_tok.start, last.end), name_tok.text, last.text
                )
            else:
                name = ast.Identifier(ast.Span(name_tok.start, name_tok.end), name_tok.text)
            if self.at_raw("("):
                args = self.arguments(self.advance())
                return ast.DotCall(self.span_from(start), left, name, args)
            if isinstance(name, ast.DomainIdentifier):
                self.expected("'(' after the module function name")
            return ast.DotAccess(self.span_from(start), left, name)
        if op == "{":
            key = self.expression()
            self.expect_close("}", tok, "path")
            return ast.Path(self.span_from(start), left, key)
        if op == "[":
            key = self.expression()
            self.expect_close("]", tok, "index")
            return ast.Index(self.span_from(start), left, key)
        if op == "=>":
            then = self.expression(BINDING_POWER["=>"])
            self.expect_raw("|", " between the branches of '=>'")
            otherwise = self.expression()
            return ast.Conditional(self.span_from(start), left, then, otherwise)
        right = self.expression(BINDING_POWER[op])
        return ast.Binary(ast.Span(start, right.span.end), op, left, right)

    # -- declarations -----------------------------------------------------

    def at_declaration(self) -> bool:
        nxt = self.peek()
        return (
            self.tok.kind == "SYMBOL"
            and self.tok.text not in RESERVED
            and nxt.kind == "RAW"
            and nxt.text == "="
        )

    def declaration(self) -> ast.Declaration:
        name = self.identifier("a declaration")
        self.expect_raw("=")
        value = self.expression()
        return ast.Declaration(ast.Span(name.span.start, value.span.end), name, value)

    def declarations(self) -> tuple[ast.Declaration, ...]:
        decls: list[ast.Declaration] = []
        while self.at_declaration():
            decls.append(self.declaration())
            self.accept_raw(";")
        return tuple(decls)

    def declaration_block(self, what: str) -> tuple[ast.Declaration, ...]:
        open_brace = self.expect_raw("{", f" to start the {what} block")
        decls = self.declarations()
        if not self.at_raw("}"):
            if self.tok.kind == "EOF":
                self.expect_close("}", open_brace, f"{what} block")
            self.expected(f"a declaration (name = expression) or '}}' to close the {what} block")
        self.advance()
        return decls

    # -- ruleset ------------------------------------------------------------

    def ruleset(self) -> ast.Ruleset:
        start = self.expect_word("ruleset").start
        rid = self.ruleset_id()
        open_brace = self.expect_raw("{", " after the ruleset id")
        meta: list[ast.MetaProperty] = []
        if self.at_word("version"):  # deprecated top-level version; recorded as meta
            ver = self.advance()
            value = self.expression()
            meta.append(ast.MetaExpr(self.span_from(ver.start), "version", value))
        if self.at_word("meta"):
            meta.extend(self.meta_block())
        global_decls: tuple[ast.Declaration, ...] = ()
        if self.accept_word("global"):
            global_decls = self.declaration_block("global")
        rules: list[ast.Rule] = []
        while self.at_word("rule"):
            rules.append(self.rule())
        if not self.at_raw("}"):
            if self.tok.kind == "EOF":
                self.expect_close("}", open_brace, "ruleset block")
            self.expected("'rule' or '}' to close the ruleset block")
        self.advance()
        if self.tok.kind != "EOF":
            self.expected("end of input after the ruleset")
        return ast.Ruleset(self.span_from(start), rid, tuple(meta), global_decls, tuple(rules))

    def ruleset_id(self) -> str:
        first = self.word("a ruleset id (like io.picolabs.hello)")
        parts = [first.text]
        prev = first
        # The id is one unbroken run of words joined by "." or "-", e.g. io.picolabs.did-o.
        while (
            self.tok.kind == "RAW"
            and self.tok.text in (".", "-")
            and self.tok.start == prev.end
            and self.peek().start == self.tok.end
            and self.peek().kind in ("SYMBOL", "NUMBER")
        ):
            parts.append(self.advance().text)
            prev = self.advance()
            parts.append(prev.text)
        return "".join(parts)

    def meta_block(self) -> list[ast.MetaProperty]:
        self.advance()
        open_brace = self.expect_raw("{", " after 'meta'")
        props: list[ast.MetaProperty] = []
        while self.tok.kind == "SYMBOL":
            props.append(self.meta_property())
        if not self.at_raw("}"):
            if self.tok.kind == "EOF":
                self.expect_close("}", open_brace, "meta block")
            self.expected("a meta property or '}' to close the meta block")
        self.advance()
        return props

    def meta_property(self) -> ast.MetaProperty:
        key = self.advance()
        word = key.text
        if word in ("name", "description", "author", "version"):
            return ast.MetaExpr(self.span_from(key.start), word, self.expression())
        if word in ("shares", "share", "provides", "provide"):
            names = self.identifier_list("a global name")
            kind = "shares" if word.startswith("share") else "provides"
            return ast.MetaNames(self.span_from(key.start), kind, names)  # type: ignore[arg-type]
        if word == "logging":
            tok = self.tok
            if not (self.at_word("on") or self.at_word("off")):
                self.expected("'on' or 'off' after 'logging'")
            self.advance()
            value = ast.Boolean(ast.Span(tok.start, tok.end), tok.text == "on")
            return ast.MetaExpr(self.span_from(key.start), "logging", value)
        if word == "use":
            self.expect_word("module", " after 'use'")
            rid = self.ruleset_id()
            version = None
            if self.accept_word("version"):
                v = self.expression()
                if not isinstance(v, ast.String):
                    self.fail("expected a string after 'version'")
                version = v
            alias = self.identifier("an alias name") if self.accept_word("alias") else None
            with_: list[ast.Declaration] = []
            if self.accept_word("with"):
                with_.append(self.declaration())
                while self.accept_word("and") or self.at_declaration():
                    with_.append(self.declaration())
            return ast.UseModule(self.span_from(key.start), rid, version, alias, tuple(with_))
        if word == "configure":
            self.expect_word("using", " after 'configure'")
            return ast.Configure(self.span_from(key.start), self.declarations())
        self.fail(f"unsupported meta property '{word}'", key)

    # -- rules ------------------------------------------------------------

    def rule(self) -> ast.Rule:
        start = self.advance().start
        name = self.identifier("a rule name")
        active = True
        if self.accept_word("is"):
            if not (self.at_word("active") or self.at_word("inactive")):
                self.expected("'active' or 'inactive'")
            active = self.advance().text == "active"
        open_brace = self.expect_raw("{", " to start the rule body")
        if not self.at_word("select"):
            self.expected("'select' at the start of the rule body")
        self.advance()
        select: ast.EventExpr | None = None
        select_where: ast.Expr | None = None
        within = None
        if self.accept_word("where"):  # salient for every event
            select_where = self.expression()
        else:
            self.expect_word("when", " after 'select'")
            select = self.event_expression()
        if select is not None and self.at_word("within"):
            w = self.advance()
            value = self.expression()
            unit = self.tok
            if unit.kind != "SYMBOL" or unit.text.removesuffix("s") not in WITHIN_UNITS:
                self.expected("a time unit (seconds, minutes, hours, days, weeks, months, years)")
            self.advance()
            within = ast.Within(self.span_from(w.start), value, unit.text.removesuffix("s"))
        foreach: list[ast.ForEach] = []
        while self.at_word("foreach"):
            fe = self.advance()
            collection = self.expression()
            self.expect_word("setting", " after the foreach expression")
            open_paren = self.expect_raw("(", " after 'setting'")
            names = self.identifier_list("a variable name")
            self.expect_close(")", open_paren, "setting list")
            foreach.append(ast.ForEach(self.span_from(fe.start), collection, names))
        pre: tuple[ast.Declaration, ...] = ()
        if self.accept_word("pre"):
            pre = self.declaration_block("pre")
        action_block = None
        if self.tok.kind == "SYMBOL" and self.tok.text not in (
            "fired", "notfired", "always", "finally", "else",
        ):  # fmt: skip
            action_block = self.action_block()
        postlude = self.postlude()
        if not self.at_raw("}"):
            if self.tok.kind == "EOF":
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

    def event_lbp(self, tok: Token) -> int:
        if tok.kind == "SYMBOL":
            return EVENT_BINDING_POWER.get(tok.text, 0)
        return 0

    def event_expression(self, rbp: int = 0) -> ast.EventExpr:
        self.nest()
        tok = self.tok
        left = self.event_nud(tok)
        while rbp < self.event_lbp(self.tok):
            left = self.event_led(self.advance(), left)
        self.depth -= 1
        return left

    def event_nud(self, tok: Token) -> ast.EventExpr:
        if tok.kind == "RAW" and tok.text == "(":
            self.advance()
            inner = self.event_expression()
            self.expect_close(")", tok, "parenthesis")
            return inner
        if tok.kind != "SYMBOL":
            self.expected("an event domain")
        counted = tok.text in COUNTED_OPERATORS and self.peek().kind == "NUMBER"
        if counted or (
            tok.text in EVENT_GROUP_OPERATORS
            and self.peek().kind == "RAW"
            and self.peek().text == "("
        ):
            self.advance()
            count = None
            if counted:
                num = self.tok
                if not isinstance(num.value, int) or num.value < 0:
                    self.expected(f"a whole number after '{tok.text}'")
                count = num.value
                self.advance()
            open_paren = self.expect_raw("(")
            args = [self.event_expression()]
            while tok.text not in ("count", "repeat") and self.accept_raw(","):
                args.append(self.event_expression())
            self.expect_close(")", open_paren, "event list")
            aggregator = None
            if (
                tok.text in ("count", "repeat")
                and self.tok.kind == "SYMBOL"
                and self.tok.text in AGGREGATORS
                and self.peek().text == "("
            ):
                agg = self.advance()
                agg_paren = self.advance()
                names = self.identifier_list("a variable name")
                self.expect_close(")", agg_paren, f"'{agg.text}' list")
                aggregator = ast.Aggregator(self.span_from(agg.start), agg.text, names)
            return ast.EventOp(self.span_from(tok.start), tok.text, tuple(args), count, aggregator)
        return self.event_pattern()

    def event_pattern(self) -> ast.EventPattern:
        domain = self.advance()
        self.accept_raw(":")
        if self.tok.kind != "SYMBOL":
            self.expected(f"an event type after the event domain '{domain.text}'")
        etype = self.advance()
        attrs: list[ast.AttributeMatch] = []
        while self.tok.kind == "SYMBOL" and self.peek().kind == "REGEXP":
            attr = self.advance()
            regex = self.nud_regexp(self.advance())
            assert isinstance(regex, ast.RegExp)
            attrs.append(ast.AttributeMatch(self.span_from(attr.start), attr.text, regex))
        where = self.expression() if self.accept_word("where") else None
        setting: tuple[ast.Identifier, ...] = ()
        if self.accept_word("setting"):
            open_paren = self.expect_raw("(", " after 'setting'")
            setting = self.identifier_list("a variable name")
            self.expect_close(")", open_paren, "setting list")
        if where is None and self.accept_word("where"):
            where = self.expression()
        return ast.EventPattern(
            self.span_from(domain.start), domain.text, etype.text, tuple(attrs), setting, where
        )

    def event_led(self, tok: Token, left: ast.EventExpr) -> ast.EventExpr:
        op = tok.text
        if op in ("between", "not"):
            if op == "not":
                self.expect_word("between", " after 'not'")
                op = "not between"
            open_paren = self.expect_raw("(", f" after '{op}'")
            first = self.event_expression()
            self.expect_raw(",", f" between the events of '{op}'")
            second = self.event_expression()
            self.expect_close(")", open_paren, "event list")
            return ast.EventOp(self.span_from(left.span.start), op, (left, first, second))
        right = self.event_expression(EVENT_BINDING_POWER[op])
        return ast.EventOp(ast.Span(left.span.start, right.span.end), op, (left, right))

    # -- actions ------------------------------------------------------------

    def action_block(self) -> ast.ActionBlock:
        start = self.tok.start
        condition = None
        if self.accept_word("if"):
            condition = self.expression()
            self.expect_word("then", " after the 'if' condition")
        kind: Literal["every", "choose", "sample"] = "every"
        discriminant = None
        if self.at_word("every") or self.at_word("sample") or self.at_word("choose"):
            word = self.advance().text
            kind = "choose" if word == "choose" else "sample" if word == "sample" else "every"
            if kind == "choose":
                # `{ label =>` or `{ action(` starts the block rather than a path.
                self.choosing = True
                try:
                    discriminant = self.expression()
                finally:
                    self.choosing = False
            open_brace = self.expect_raw("{", f" to start the '{kind}' block")
            actions: list[ast.Action] = []
            while not self.at_raw("}") and self.tok.kind != "EOF":
                actions.append(self.action())
            self.expect_close("}", open_brace, f"'{kind}' block")
        else:
            actions = [self.action()]
        return ast.ActionBlock(self.span_from(start), condition, kind, discriminant, tuple(actions))

    def action(self) -> ast.Action:
        start = self.tok.start
        label = None
        if self.tok.kind == "SYMBOL" and self.peek().kind == "RAW" and self.peek().text == "=>":
            label = self.advance().text
            self.advance()
        callee = self.action_name()
        if not self.at_raw("("):
            self.expected("'(' to call the action")
        args = self.arguments(self.advance())
        setting: tuple[ast.Identifier, ...] = ()
        if self.accept_word("setting"):
            open_paren = self.expect_raw("(", " after 'setting'")
            setting = self.identifier_list("a variable name")
            self.expect_close(")", open_paren, "setting list")
        self.accept_raw(";")
        return ast.Action(self.span_from(start), label, callee, args, setting)

    def action_name(self) -> ast.Identifier | ast.DomainIdentifier:
        ident = self.identifier("an action")
        if self.at_raw(":") and self.peek().kind == "SYMBOL":
            self.advance()
            name = self.advance()
            return ast.DomainIdentifier(ast.Span(ident.span.start, name.end), ident.name, name.text)
        return ident

    # -- postlude -----------------------------------------------------------

    def postlude(self) -> ast.Postlude | None:
        start = self.tok.start
        fired = notfired = always = None
        if self.accept_word("always"):
            always = self.statements("always")
        elif self.accept_word("fired"):
            fired = self.statements("fired")
            if self.accept_word("else"):
                notfired = self.statements("else")
            if self.accept_word("finally"):
                always = self.statements("finally")
        elif self.accept_word("notfired"):
            notfired = self.statements("notfired")
            if self.accept_word("else"):
                fired = self.statements("else")
            if self.accept_word("finally"):
                always = self.statements("finally")
        elif self.at_word("else") or self.at_word("finally"):
            self.fail(f"'{self.tok.text}' must follow a 'fired' or 'notfired' block")
        else:
            return None
        return ast.Postlude(self.span_from(start), fired, notfired, always)

    def statements(self, what: str) -> tuple[ast.Statement, ...]:
        open_brace = self.expect_raw("{", f" after '{what}'")
        stmts: list[ast.Statement] = []
        while not self.at_raw("}"):
            if self.tok.kind == "EOF":
                self.expect_close("}", open_brace, f"{what} block")
            stmts.append(self.statement())
            self.accept_raw(";")
        self.advance()
        return tuple(stmts)

    def statement(self) -> ast.Statement:
        stmt = self.statement_core()
        if self.at_word("on") and self.peek().kind == "SYMBOL" and self.peek().text == "final":
            self.advance()
            self.advance()
            return ast.Guarded(self.span_from(stmt.span.start), stmt, None)
        if self.accept_word("if"):
            condition = self.expression()
            return ast.Guarded(ast.Span(stmt.span.start, condition.span.end), stmt, condition)
        return stmt

    def statement_core(self) -> ast.Statement:
        tok = self.tok
        if tok.kind != "SYMBOL":
            self.expected("a postlude statement")
        word = tok.text
        if word == "clear":
            self.advance()
            domain, name = self.ent_name("after 'clear'")
            path = self.ent_path()
            return ast.ClearEnt(self.span_from(tok.start), name, path, domain)
        if word == "raise":
            return self.raise_statement()
        if (
            word in ("log", "error")
            and self.peek().kind == "SYMBOL"
            and self.peek().text in LOG_LEVELS
        ):
            self.advance()
            level = self.advance().text
            message = self.expression()
            if word == "error":
                return ast.ErrorStatement(self.span_from(tok.start), level, message)
            return ast.LogStatement(self.span_from(tok.start), level, message)
        if word == "log":
            self.advance()
            self.expected("a log level (" + ", ".join(LOG_LEVELS) + ")")
        if word == "last":
            self.advance()
            return ast.Last(ast.Span(tok.start, tok.end))
        if word == "schedule":
            return self.schedule_statement()
        if self.peek().kind == "RAW" and self.peek().text == ":":
            domain, name = self.ent_name("in an assignment")
            path = self.ent_path()
            self.expect_raw(":=", " to assign the entity variable")
            value = self.expression()
            return ast.EntAssign(self.span_from(tok.start), name, path, value, domain)
        if self.at_declaration():
            return self.declaration()
        self.expected(
            "a postlude statement (ent:name := value, clear, raise, log, last or name = value)"
        )

    def ent_name(self, context: str) -> tuple[str, str]:
        """``domain:name``; any domain parses (the compiler accepts only ``ent``)."""
        if not (self.tok.kind == "SYMBOL" and self.peek().text == ":"):
            self.expected(f"'ent:name' {context}")
        domain = self.advance().text
        self.expect_raw(":")
        return domain, self.word("an entity variable name").text

    def ent_path(self) -> ast.Expr | None:
        open_brace = self.accept_raw("{")
        if open_brace is None:
            return None
        path = self.expression()
        self.expect_close("}", open_brace, "path")
        return path

    def schedule_statement(self) -> ast.ScheduleEvent:
        start = self.advance().start
        domain = None
        if not self.accept_word("event"):
            domain = self.identifier("an event domain or 'event' after 'schedule'").name
            self.expect_word("event", f" after 'schedule {domain}'")
        etype = self.expression(what="an event type")
        at = repeat = attributes = None
        if self.accept_word("at"):
            at = self.expression()
        elif self.accept_word("repeat"):
            repeat = self.expression()
        else:
            self.expected("'at' or 'repeat' in the schedule statement")
        if self.accept_word("attributes"):
            attributes = self.expression()
        setting = None
        if self.accept_word("setting"):
            open_paren = self.expect_raw("(", " after 'setting'")
            setting = self.identifier("a variable name")
            self.expect_close(")", open_paren, "setting list")
        return ast.ScheduleEvent(
            self.span_from(start), domain, etype, at, repeat, attributes, setting
        )

    def raise_statement(self) -> ast.RaiseEvent:
        start = self.advance().start
        domain = None
        if not self.accept_word("event"):
            domain = self.identifier("an event domain or 'event' after 'raise'").name
            self.expect_word("event", f" after 'raise {domain}'")
        etype = self.expression(what="an event type")
        for_rid = attributes = None
        for _ in range(2):  # "for" and "attributes", in either order
            if for_rid is None and self.accept_word("for"):
                for_rid = self.expression()
            elif attributes is None and self.accept_word("attributes"):
                attributes = self.expression()
        return ast.RaiseEvent(self.span_from(start), domain, etype, for_rid, attributes)


_NUD_RAW: dict[str, Callable[[_Parser, Token], ast.Expr]] = {
    "(": _Parser.nud_paren,
    "[": _Parser.nud_array,
    "{": _Parser.nud_map,
    "-": _Parser.nud_prefix,
    "+": _Parser.nud_prefix,
}
_NUD_WORD: dict[str, Callable[[_Parser, Token], ast.Expr]] = {
    "not": _Parser.nud_prefix,
    "function": _Parser.nud_function,
    "defaction": _Parser.nud_defaction,
    "null": _Parser.nud_constant,
    "true": _Parser.nud_constant,
    "false": _Parser.nud_constant,
}
_NUD_KIND: dict[str, Callable[[_Parser, Token], ast.Expr]] = {
    "NUMBER": _Parser.nud_number,
    "STRING": _Parser.nud_string,
    "REGEXP": _Parser.nud_regexp,
    "CHEVRON_OPEN": _Parser.nud_chevron,
}


def _nud(tok: Token) -> Callable[[_Parser, Token], ast.Expr] | None:
    if tok.kind == "RAW":
        return _NUD_RAW.get(tok.text)
    if tok.kind == "SYMBOL":
        return _NUD_WORD.get(tok.text, _Parser.nud_symbol)
    return _NUD_KIND.get(tok.kind)


def parse_ruleset(source: str) -> ast.Ruleset:
    """Parse a whole ruleset; raises :class:`KrlSyntaxError` on any error."""
    return _Parser(source).ruleset()


def parse_expression(source: str) -> ast.Expr:
    """Parse a single expression (used by tests and tools)."""
    parser = _Parser(source)
    expr = parser.expression()
    if parser.tok.kind != "EOF":
        parser.expected("end of input")
    return expr
