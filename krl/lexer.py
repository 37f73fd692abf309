"""Turn KRL source text into tokens for the parser.

Neighbours: ``parser`` consumes the token list; errors are ``errors.KrlSyntaxError``.

Token kinds: ``SYMBOL`` (identifiers and keywords), ``NUMBER``, ``STRING``, ``REGEXP``,
``RAW`` (punctuation), the chevron-string kinds ``CHEVRON_OPEN``, ``CHEVRON_STRING``,
``BEESTING_OPEN``, ``BEESTING_CLOSE``, ``CHEVRON_CLOSE``, and a final ``EOF``.

Lexical rules follow pico-engine 1.x: strings unescape only ``\\"`` and ``\\\\``;
chevrons unescape ``\\>``, ``\\#{`` and ``\\\\``; regex literals unescape ``\\#``.

How it is fast: one compiled regular expression (``_TOKEN``) skips blanks and
comments and reads the next token in a single match, and ``match.lastindex``
says which kind it was. Only chevron strings (a mode stack: text, ``#{ … }``,
text, ``>>``) leave that loop, to read their text with ``_CHEVRON_TEXT``. The
parser takes plain tuples (``Tok``) rather than objects; ``tokenize`` wraps
them in :class:`Token` for tools and tests.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from .errors import KrlSyntaxError, line_column

__all__ = ["Tok", "Token", "scan", "tokenize"]

SYMBOL = "SYMBOL"
NUMBER = "NUMBER"
STRING = "STRING"
REGEXP = "REGEXP"
RAW = "RAW"
CHEVRON_OPEN = "CHEVRON_OPEN"
CHEVRON_STRING = "CHEVRON_STRING"
BEESTING_OPEN = "BEESTING_OPEN"
BEESTING_CLOSE = "BEESTING_CLOSE"
CHEVRON_CLOSE = "CHEVRON_CLOSE"
EOF = "EOF"

# A token for the parser: (key, kind, value, start, end). The key is the text of
# a SYMBOL or RAW token and "<kind>" for any other kind, so one comparison
# (``tok[0] == "("``, ``tok[0] == "rule"``) tests kind and text at once: no
# identifier or punctuation is spelled with "<" and a letter.
Tok = tuple[str, str, object, int, int]
KEY_NUMBER = "<NUMBER>"
KEY_STRING = "<STRING>"
KEY_REGEXP = "<REGEXP>"
KEY_CHEVRON_OPEN = "<CHEVRON_OPEN>"
KEY_CHEVRON_STRING = "<CHEVRON_STRING>"
KEY_BEESTING_OPEN = "<BEESTING_OPEN>"
KEY_BEESTING_CLOSE = "<BEESTING_CLOSE>"
KEY_CHEVRON_CLOSE = "<CHEVRON_CLOSE>"
KEY_EOF = "<EOF>"

# Longest first (the regular expression below tries them in this order).
PUNCTUATION = (
    "<=>",
    "<=", "||", "==", "=>", ":=", ">=", "><", "&&", "!=",
    "<", "|", "=", ":", ">", "(", ")", "{", "}", "[", "]", ",", "/", ".", "-", "%", "+", ";", "*",
)  # fmt: skip

REGEX_FLAGS = "gim"

# Blanks (\s is str.isspace()) and comments, then one token. Identifiers are
# ASCII letters, digits, "_" and "$". The groups are the common kinds of token,
# most common first; the rare ones (regular expressions, ".5", "<<") and the
# errors fall to group 7 and are read by ``_other``.
_TOKEN = re.compile(
    r"""
    \s*+ (?: (?: //[^\n]*+ | /\*[\s\S]*?\*/ ) \s*+ )*+
    (?:
        ( [A-Za-qs-z_$][A-Za-z0-9_$]*+ | r(?!e\#)[A-Za-z0-9_$]*+ )  # 1: a symbol, not "re#"
      | (   # 2: one-character punctuation but braces; not "<<", "/*" or ".5"
            [()\[\],;*%+\-] | =(?![=>]) | :(?!=) | \.(?![0-9])
            | <(?![<=]) | >(?![=<]) | \|(?!\|) | /(?!\*)
        )
      | ( <=> | <= | \|\| | == | => | := | >= | >< | && | != )  # 3: longer punctuation
      | ([{}])  # 4: a brace
      | "([^"\\]*+(?:\\[\s\S][^"\\]*+)*+)"  # 5: a string's body
      | ([0-9]++(?:\.[0-9]++)?+)  # 6: a number
      | ([\s\S])  # 7: any other character
      | \Z  # end of input: no group
    )
    """,
    re.VERBOSE,
)
_REGEXP = re.compile(r"re\#((?:[^#\\]++|\\[\s\S])*+)\#([gim]*+)")
_DOT_NUMBER = re.compile(r"\.[0-9]++(?:\.[0-9]++)?+")

# Chevron text up to ">>" or "#{" (a backslash always takes the next character).
_CHEVRON_TEXT = re.compile(r"((?:[^>#\\]++|>(?!>)|#(?!\{)|\\[\s\S])*+)(>>|#\{)")
_STRING_ESCAPE = re.compile(r'\\(["\\])')
_CHEVRON_ESCAPE = re.compile(r"\\(>|\\|#\{)")
_REGEXP_ESCAPE = re.compile(r"\\([\s\S])")

# Keys of tokens after which "." starts a member access rather than a number like ".5".
_VALUE_END_KEYS = frozenset({KEY_NUMBER, KEY_STRING, KEY_REGEXP, KEY_CHEVRON_CLOSE, ")", "]", "}"})


@dataclass(frozen=True, slots=True)
class Token:
    kind: str
    text: str  # the raw source text of the token
    value: object  # decoded value: str for strings and symbols, a number, (pattern, flags)
    start: int
    end: int


def _fail(src: str, message: str, offset: int) -> KrlSyntaxError:
    err: KrlSyntaxError = KrlSyntaxError.at(message, src, offset)
    return err


def _where(src: str, offset: int) -> str:
    line, column, _ = line_column(src, offset)
    return f"line {line}, column {column}"


def _unclosed(src: str, what: str, opened: int) -> KrlSyntaxError:
    # "found end of input" points just past the last non-blank character.
    message = f"expected {what} opened at {_where(src, opened)}, found end of input"
    return _fail(src, message, len(src.rstrip()))


def _number(text: str) -> int | float:
    if "." in text:
        value = float(text)
        if value.is_integer() and abs(value) < 2**53:
            return int(value)
        return value
    whole = int(text)
    return float(whole) if whole >= 2**53 else whole


def _regexp_body(body: str) -> str:
    # \# is "#"; any other backslash pair stays as written.
    return _REGEXP_ESCAPE.sub(lambda m: "#" if m[1] == "#" else m[0], body)


def scan(src: str) -> list[Tok]:
    """All tokens of ``src`` as ``Tok`` tuples, ending with an EOF token."""
    toks: list[Tok] = []
    append = toks.append
    finditer = _TOKEN.finditer
    # One entry per open chevron [True, start, 0] or interpolation [False, start,
    # brace depth], so "}" and ">>" are read in the right mode.
    modes: list[list[int]] = []
    pos = 0
    while pos >= 0:
        if modes and modes[-1][0]:
            pos = _chevron_text(src, pos, modes, toks)
            continue
        # The groups of _TOKEN by number, commonest first (constants are faster
        # than names here, which runs once per token).
        for m in finditer(src, pos):
            group = m.lastindex
            if group == 2:  # one-character punctuation
                text = m[2]
                end = m.end()
                append((text, RAW, text, end - 1, end))
            elif group == 1:  # a symbol
                text = m[1]
                end = m.end()
                append((text, SYMBOL, text, end - len(text), end))
            elif group == 5:  # a string
                body = m[5]
                end = m.end()
                if "\\" in body:
                    body = _STRING_ESCAPE.sub(r"\1", body)
                append((KEY_STRING, STRING, body, m.start(5) - 1, end))
            elif group == 4:  # a brace
                text = m[4]
                end = m.end()
                if modes:  # inside #{ … }: count braces to find the one that closes it
                    mode = modes[-1]
                    if text == "{":
                        mode[2] += 1
                    elif mode[2] == 0:
                        modes.pop()
                        append((KEY_BEESTING_CLOSE, BEESTING_CLOSE, text, end - 1, end))
                        pos = end
                        break  # back to the chevron's text
                    else:
                        mode[2] -= 1
                append((text, RAW, text, end - 1, end))
            elif group == 3:  # longer punctuation
                text = m[3]
                end = m.end()
                append((text, RAW, text, end - len(text), end))
            elif group == 6:  # a number
                text = m[6]
                end = m.end()
                append((KEY_NUMBER, NUMBER, _number(text), end - len(text), end))
            elif group is None:  # end of input
                pos = -1
                break
            else:
                pos = _other(src, m.start(7), modes, toks)
                break  # go on from pos
    if modes:  # a beesting; an open chevron was reported by _chevron_text
        raise _unclosed(src, "'}' to close the '#{'", modes[-1][1])
    n = len(src)
    append((KEY_EOF, EOF, None, n, n))
    return toks


def _other(src: str, start: int, modes: list[list[int]], toks: list[Tok]) -> int:
    """Read the rare token at ``start`` (or report the error there); the position after it."""
    ch = src[start]
    if ch == "r":  # "re#": a regular expression
        m = _REGEXP.match(src, start)
        if m is None:
            raise _unclosed(src, "'#' to close the regular expression", start)
        body = m[1]
        if "\\#" in body:
            body = _regexp_body(body)
        toks.append((KEY_REGEXP, REGEXP, (body, m[2]), start, m.end()))
        return m.end()
    if ch == ".":  # "." and a digit
        m = _DOT_NUMBER.match(src, start)
        assert m is not None
        text = m[0]
        last = toks[-1] if toks else None
        if last is not None and (last[1] == SYMBOL or last[0] in _VALUE_END_KEYS):
            # a member access: "." and then the number after it
            toks.append((".", RAW, ".", start, start + 1))
            toks.append((KEY_NUMBER, NUMBER, _number(text[1:]), start + 1, m.end()))
            return m.end()
        # ".5" is a number (a second ".7" is read afresh)
        end = text.find(".", 1)
        if end == -1:
            end = len(text)
        toks.append((KEY_NUMBER, NUMBER, _number(text[:end]), start, start + end))
        return start + end
    if ch == "<":  # "<<"
        toks.append((KEY_CHEVRON_OPEN, CHEVRON_OPEN, "<<", start, start + 2))
        modes.append([True, start, 0])
        return start + 2
    if ch == '"':
        raise _unclosed(src, "'\"' to close the string", start)
    if ch == "/":  # "/*" (a closed comment is a blank)
        raise _unclosed(src, "'*/' to close the comment", start)
    shown = repr(ch) if ch.isprintable() else f"U+{ord(ch):04X}"
    raise _fail(src, f"unexpected character {shown}", start)


def _chevron_text(src: str, pos: int, modes: list[list[int]], toks: list[Tok]) -> int:
    """Read a chevron's text from ``pos`` up to ``>>`` or ``#{``; the position after it."""
    m = _CHEVRON_TEXT.match(src, pos)
    if m is None:
        raise _unclosed(src, "'>>' to close the chevron string", modes[-1][1])
    text = m[1]
    close = m.start(2)
    if text:
        if "\\" in text:
            text = _CHEVRON_ESCAPE.sub(r"\1", text)
        toks.append((KEY_CHEVRON_STRING, CHEVRON_STRING, text, pos, close))
    end = close + 2
    if m[2] == ">>":
        modes.pop()
        toks.append((KEY_CHEVRON_CLOSE, CHEVRON_CLOSE, ">>", close, end))
    else:
        toks.append((KEY_BEESTING_OPEN, BEESTING_OPEN, "#{", close, end))
        modes.append([False, close, 0])
    return end


def tokenize(source: str) -> list[Token]:
    """All tokens of ``source``, ending with an ``EOF`` token; raises KrlSyntaxError."""
    return [
        Token(kind, source[start:end], value, start, end)
        for _, kind, value, start, end in scan(source)
    ]
