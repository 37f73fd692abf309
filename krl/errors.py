"""Errors raised by every KRL stage: the lexer, parser, compiler and runtime.

Neighbours: ``lexer``, ``parser`` and ``compiler`` raise the positioned errors;
``runtime`` and ``stdlib`` raise :class:`KrlRuntimeError`.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "KrlBudgetExceeded",
    "KrlCompileError",
    "KrlError",
    "KrlRuntimeError",
    "KrlSyntaxError",
    "line_column",
]


def line_column(source: str, offset: int) -> tuple[int, int, str]:
    """The 1-based line and column of ``offset`` in ``source``, and that line's text."""
    offset = max(0, min(offset, len(source)))
    line_start = source.rfind("\n", 0, offset) + 1
    line_end = source.find("\n", offset)
    if line_end == -1:
        line_end = len(source)
    line = source.count("\n", 0, offset) + 1
    text = source[line_start:line_end].rstrip("\r")
    return line, offset - line_start + 1, text


def _caret(text: str, column: int) -> str:
    # Keep tabs so the caret lines up under the same terminal columns as the source.
    pad = "".join("\t" if ch == "\t" else " " for ch in text[: column - 1])
    return pad + " " * max(0, column - 1 - len(text)) + "^"


class KrlError(Exception):
    """Base class of everything KRL raises; ``str(e)`` is meant for users."""


class _PositionedError(KrlError):
    """An error at a source offset; rendered with the source line and a caret."""

    def __init__(
        self,
        message: str,
        offset: int,
        line: int,
        column: int,
        source_line: str,
        filename: str = "<krl>",
    ) -> None:
        self.message = message
        self.offset = offset
        self.line = line
        self.column = column
        self.source_line = source_line
        self.filename = filename
        super().__init__(message)

    @classmethod
    def at(cls, message: str, source: str, offset: int, filename: str = "<krl>") -> Any:
        line, column, text = line_column(source, offset)
        return cls(message, offset, line, column, text, filename)

    def __str__(self) -> str:
        return (
            f"line {self.line}, column {self.column}: {self.message}\n"
            f"{self.source_line}\n{_caret(self.source_line, self.column)}"
        )

    def __reduce__(self) -> tuple[Any, ...]:
        return (
            type(self),
            (self.message, self.offset, self.line, self.column, self.source_line, self.filename),
        )


class KrlSyntaxError(_PositionedError):
    """The source text is not valid KRL (raised by the lexer and the parser)."""


class KrlCompileError(_PositionedError):
    """The source parses but cannot be compiled (undefined names, unsupported constructs)."""


class KrlRuntimeError(KrlError):
    """A KRL expression or statement failed while an event or query was being processed.

    ``span`` is the (start, end) offsets of the failing expression when known; the
    ruleset fills in ``line``/``column``, ``rid`` and ``rule`` before the error
    leaves :mod:`krl`.
    """

    def __init__(
        self,
        message: str,
        *,
        span: tuple[int, int] | None = None,
        line: int | None = None,
        column: int | None = None,
        rid: str | None = None,
        rule: str | None = None,
    ) -> None:
        self.message = message
        self.span = span
        self.line = line
        self.column = column
        self.rid = rid
        self.rule = rule
        super().__init__(message)

    def __str__(self) -> str:
        where = []
        if self.rid is not None:
            where.append(self.rid)
        if self.rule is not None:
            where.append(self.rule)
        if self.line is not None:
            where.append(f"line {self.line}, column {self.column}")
        if not where:
            return self.message
        return f"{self.message} (in {', '.join(where)})"

    def __reduce__(self) -> tuple[Any, ...]:
        return (_rebuild_runtime_error, (type(self), self.message, dict(self.__dict__)))


def _rebuild_runtime_error(
    cls: type[KrlRuntimeError], message: str, state: dict[str, Any]
) -> KrlRuntimeError:
    err = cls(message)
    err.__dict__.update(state)
    return err


class KrlBudgetExceeded(KrlRuntimeError):
    """A rule, function or query used more steps, time or call depth than its budget allows."""
