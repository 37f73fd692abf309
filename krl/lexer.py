"""Turn KRL source text into tokens for the parser.

Neighbours: ``parser`` consumes the token list; errors are ``errors.KrlSyntaxError``.

Token kinds: ``SYMBOL`` (identifiers and keywords), ``NUMBER``, ``STRING``, ``REGEXP``,
``RAW`` (punctuation), the chevron-string kinds ``CHEVRON_OPEN``, ``CHEVRON_STRING``,
``BEESTING_OPEN``, ``BEESTING_CLOSE``, ``CHEVRON_CLOSE``, and a final ``EOF``.

Lexical rules follow pico-engine 1.x: strings unescape only ``\\"`` and ``\\\\``;
chevrons unescape ``\\>``, ``\\#{`` and ``\\\\``; regex literals unescape ``\\#``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from .errors import KrlSyntaxError, line_column

__all__ = ["Token", "tokenize"]

# Longest first: the scanner takes the first entry that matches.
PUNCTUATION = (
    "<=>",
    "<=", "||", "==", "=>", ":=", ">=", "><", "&&", "!=",
    "<", "|", "=", ":", ">", "(", ")", "{", "}", "[", "]", ",", "/", ".", "-", "%", "+", ";", "*",
)  # fmt: skip

# The same table split by length, for the scanner's fast path.
_PUNCT3 = frozenset(p for p in PUNCTUATION if len(p) == 3)
_PUNCT2 = frozenset(p for p in PUNCTUATION if len(p) == 2)
_PUNCT1 = frozenset(p for p in PUNCTUATION if len(p) == 1)

REGEX_FLAGS = "gim"

# \s is str.isspace(); identifiers are ASCII letters, digits, "_" and "$".
_SPACE = re.compile(r"\s*")
_SYMBOL = re.compile(r"[A-Za-z_$][A-Za-z0-9_$]*")
_NUMBER = re.compile(r"[0-9]*(?:\.[0-9]+)?")
_STRING_CHUNK = re.compile(r'[^"\\]*')

# Tokens after which a "." starts a member access rather than a number like ".5".
_VALUE_END_KINDS = frozenset({"SYMBOL", "NUMBER", "STRING", "REGEXP", "CHEVRON_CLOSE"})
_VALUE_END_RAW = frozenset({")", "]", "}"})


@dataclass(frozen=True, slots=True)
class Token:
    kind: str
    text: str  # the raw source text of the token
    value: object  # decoded value: str for strings and symbols, a number, (pattern, flags)
    start: int
    end: int


def _is_digit(ch: str) -> bool:
    return len(ch) == 1 and "0" <= ch <= "9"


def _is_ident_start(ch: str) -> bool:
    return ch.isascii() and (ch.isalpha() or ch in "_$")


class _Lexer:
    def __init__(self, source: str) -> None:
        self.src = source
        self.pos = 0
        self.tokens: list[Token] = []
        # One entry per open chevron ("chevron", start, 0) or interpolation
        # ("beesting", start, brace depth) so "}" and ">>" are read in the right mode.
        self.modes: list[list[object]] = []

    def fail(self, message: str, offset: int) -> KrlSyntaxError:
        err: KrlSyntaxError = KrlSyntaxError.at(message, self.src, offset)
        return err

    def end_of_input(self) -> int:
        """Where "found end of input" points: just past the last non-blank character."""
        return len(self.src.rstrip())

    def where(self, offset: int) -> str:
        line, column, _ = line_column(self.src, offset)
        return f"line {line}, column {column}"

    def emit(self, kind: str, start: int, end: int, value: object = None) -> None:
        text = self.src[start:end]
        self.tokens.append(Token(kind, text, text if value is None else value, start, end))

    def run(self) -> list[Token]:
        src = self.src
        n = len(src)
        while True:
            if self.modes and self.modes[-1][0] == "chevron":
                self.chevron_text()
                continue
            self.skip_space_and_comments()
            if self.pos >= n:
                break
            self.next_token()
        if self.modes:
            kind, start, _ = self.modes[-1]
            assert isinstance(start, int)
            if kind == "beesting":
                raise self.fail(
                    f"expected '}}' to close the '#{{' opened at {self.where(start)}, "
                    "found end of input",
                    self.end_of_input(),
                )
        self.tokens.append(Token("EOF", "", None, n, n))
        return self.tokens

    def skip_space_and_comments(self) -> None:
        src, n = self.src, len(self.src)
        while self.pos < n:
            self.pos = _SPACE.match(src, self.pos).end()  # type: ignore[union-attr]
            if self.pos >= n:
                return
            if src.startswith("//", self.pos):
                end = src.find("\n", self.pos)
                self.pos = n if end == -1 else end + 1
            elif src.startswith("/*", self.pos):
                end = src.find("*/", self.pos + 2)
                if end == -1:
                    raise self.fail(
                        f"expected '*/' to close the comment opened at {self.where(self.pos)}, "
                        "found end of input",
                        self.end_of_input(),
                    )
                self.pos = end + 2
            else:
                return

    def next_token(self) -> None:
        src, start = self.src, self.pos
        ch = src[start]
        if ch == '"':
            self.string()
        elif _is_digit(ch) or (
            ch == "." and _is_digit(src[start + 1 : start + 2]) and not self.after_value()
        ):
            self.number()
        elif _is_ident_start(ch):
            if src.startswith("re#", start):
                self.regexp()
            else:
                end = _SYMBOL.match(src, start).end()  # type: ignore[union-attr]
                self.pos = end
                self.emit("SYMBOL", start, end)
        elif src.startswith("<<", start):
            self.pos = start + 2
            self.emit("CHEVRON_OPEN", start, self.pos)
            self.modes.append(["chevron", start, 0])
        else:
            self.punctuation()

    def after_value(self) -> bool:
        if not self.tokens:
            return False
        last = self.tokens[-1]
        return last.kind in _VALUE_END_KINDS or (last.kind == "RAW" and last.text in _VALUE_END_RAW)

    def punctuation(self) -> None:
        src, start = self.src, self.pos
        if (
            (p := src[start : start + 3]) in _PUNCT3
            or (p := p[:2]) in _PUNCT2
            or (p := p[:1]) in _PUNCT1
        ):
            pass
        else:
            ch = src[start]
            shown = repr(ch) if ch.isprintable() else f"U+{ord(ch):04X}"
            raise self.fail(f"unexpected character {shown}", start)
        self.pos = start + len(p)
        if self.modes:  # inside #{ … }: track braces to find the closing one
            mode = self.modes[-1]
            depth = mode[2]
            assert isinstance(depth, int)
            if p == "{":
                mode[2] = depth + 1
            elif p == "}":
                if depth == 0:
                    self.modes.pop()
                    self.emit("BEESTING_CLOSE", start, self.pos)
                    return
                mode[2] = depth - 1
        self.emit("RAW", start, self.pos)

    def number(self) -> None:
        src, start = self.src, self.pos
        end = _NUMBER.match(src, start).end()  # type: ignore[union-attr]
        self.pos = end
        text = src[start:end]
        is_float = "." in text
        value: int | float
        if is_float:
            value = float(text)
            if value.is_integer() and abs(value) < 2**53:
                value = int(value)
        else:
            value = int(text)
            if value >= 2**53:
                value = float(value)
        self.emit("NUMBER", start, end, value)

    def string(self) -> None:
        src, start = self.src, self.pos
        i = start + 1
        out: list[str] = []
        while True:
            end = _STRING_CHUNK.match(src, i).end()  # type: ignore[union-attr]
            out.append(src[i:end])
            i = end
            if i >= len(src):
                break
            if src[i] == '"':
                self.pos = i + 1
                self.emit("STRING", start, self.pos, "".join(out))
                return
            # a backslash: only \" and \\ are escapes
            if src[i + 1 : i + 2] in ('"', "\\"):
                out.append(src[i + 1])
                i += 2
            else:
                out.append("\\")
                i += 1
        raise self.fail(
            f"expected '\"' to close the string opened at {self.where(start)}, found end of input",
            self.end_of_input(),
        )

    def regexp(self) -> None:
        src, start = self.src, self.pos
        i = start + 3
        out: list[str] = []
        while i < len(src):
            ch = src[i]
            if ch == "\\" and src[i + 1 : i + 2] == "#":
                out.append("#")
                i += 2
            elif ch == "\\" and i + 1 < len(src):
                out.append(src[i : i + 2])
                i += 2
            elif ch == "#":
                i += 1
                flags_start = i
                while i < len(src) and src[i] in REGEX_FLAGS:
                    i += 1
                self.pos = i
                self.emit("REGEXP", start, i, ("".join(out), src[flags_start:i]))
                return
            else:
                out.append(ch)
                i += 1
        raise self.fail(
            f"expected '#' to close the regular expression opened at {self.where(start)}, "
            "found end of input",
            self.end_of_input(),
        )

    def chevron_text(self) -> None:
        src, start = self.src, self.pos
        i = start
        out: list[str] = []
        while i < len(src):
            if src.startswith(">>", i):
                if out:
                    self.emit("CHEVRON_STRING", start, i, "".join(out))
                self.modes.pop()
                self.pos = i + 2
                self.emit("CHEVRON_CLOSE", i, self.pos)
                return
            if src.startswith("#{", i):
                if out:
                    self.emit("CHEVRON_STRING", start, i, "".join(out))
                self.pos = i + 2
                self.emit("BEESTING_OPEN", i, self.pos)
                self.modes.append(["beesting", i, 0])
                return
            ch = src[i]
            if ch == "\\" and src[i + 1 : i + 2] in (">", "\\"):
                out.append(src[i + 1])
                i += 2
            elif ch == "\\" and src.startswith("#{", i + 1):
                out.append("#{")
                i += 3
            else:
                out.append(ch)
                i += 1
        opened = self.modes[-1][1]
        assert isinstance(opened, int)
        raise self.fail(
            f"expected '>>' to close the chevron string opened at {self.where(opened)}, "
            "found end of input",
            self.end_of_input(),
        )


def tokenize(source: str) -> list[Token]:
    """All tokens of ``source``, ending with an ``EOF`` token; raises KrlSyntaxError."""
    return _Lexer(source).run()
