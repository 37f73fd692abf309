"""A sans-I/O HTTP/1.1 server-side codec: bytes in, events out; responses out as bytes.

Neighbours: p2pico.httpd drives it on trio sockets and serves the ASGI app with it.
Nothing here does I/O or imports trio, so every rule can be tested by feeding bytes.

Model (h11's, but only what a server needs): ``Connection.receive_data`` appends what
the socket gave (``b""`` when the peer closed its side) and ``next_event`` returns, one
at a time, ``Request``, ``Data`` (body bytes, as they arrive), ``EndOfMessage``, or
``NEED_DATA`` / ``PAUSED`` (a request is complete and its response not yet sent:
pipelined requests wait in the buffer) / ``CLOSED``. Bad input raises ``ProtocolError``
with the status to answer (400, 413, 431, 501, 505), the reason, and the byte offset
in the connection's input where that is known; ``error_response`` writes it.

Responses: ``response(status, headers, body, final=...)`` gives the status line,
headers and the first body bytes in one string (``Content-Length`` when the body is
known or given, else ``Transfer-Encoding: chunked`` on 1.1, else close-delimited on
1.0); ``body`` and ``end`` frame the rest. HEAD, 1xx, 204 and 304 carry no body.

Framing rules are RFC 9112's: Transfer-Encoding and Content-Length together, several
differing Content-Lengths, or a Content-Length that is not digits are a 400; a
Transfer-Encoding whose last coding is not ``chunked`` a 400, one with any other coding
a 501; a HTTP/1.0 request with Transfer-Encoding a 400; a 1.1 request without exactly
one Host a 400. Chunk extensions and trailers are read and ignored.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from email.utils import formatdate
from http import HTTPStatus
from typing import Final

# The request line and headers (also a chunked body's trailers) may take this much.
MAX_HEAD: Final = 64 * 1024
# A request body may be this long (``POST /api/import`` takes a CAR of up to 128 MiB:
# p2pico.http.MAX_IMPORT; the app refuses larger ones itself, with its own reason).
MAX_BODY: Final = 128 * 1024 * 1024
# A chunk-size line (with its extensions) may be this long.
MAX_CHUNK_LINE: Final = 4096

Headers = list[tuple[bytes, bytes]]


@dataclass(frozen=True, slots=True)
class Request:
    method: str
    target: bytes
    http_version: str  # "1.1" or "1.0"
    headers: Headers  # names lowercased, values with surrounding whitespace removed


@dataclass(frozen=True, slots=True)
class Data:
    data: bytes


@dataclass(frozen=True, slots=True)
class EndOfMessage:
    pass


class _Sentinel:
    __slots__ = ("name",)

    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return self.name


NEED_DATA: Final = _Sentinel("NEED_DATA")  # read more from the socket
PAUSED: Final = _Sentinel("PAUSED")  # a request is done: answer it, then start_next_cycle
CLOSED: Final = _Sentinel("CLOSED")  # the client closed between requests

Event = Request | Data | EndOfMessage | _Sentinel
_END: Final = EndOfMessage()


class ProtocolError(Exception):
    """The client sent something we cannot serve: answer ``status`` and close."""

    def __init__(self, status: int, reason: str, offset: int | None = None) -> None:
        where = f" (at byte {offset})" if offset is not None else ""
        super().__init__(f"{status} {reason}{where}")
        self.status = status
        self.reason = reason
        self.offset = offset


class LocalProtocolError(Exception):
    """The application asked for a response HTTP/1.1 cannot carry (a bug on our side)."""


# RFC 9110 §5.6.2 token; a request target is visible ASCII (and obs-text, let through).
_TOKEN = rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+"
_REQUEST_LINE = re.compile(rb"(" + _TOKEN + rb") ([^\x00-\x20\x7f]+) HTTP/([0-9])\.([0-9])")
_HEADER = re.compile(rb"(" + _TOKEN + rb"):[ \t]*(.*?)[ \t]*")
_BAD_VALUE = re.compile(rb"[\x00-\x08\x0a-\x1f\x7f]")
_HEAD_END = re.compile(rb"\r?\n\r?\n")
_LINE = re.compile(rb"\r?\n")
_CHUNK_LINE = re.compile(rb"([0-9A-Fa-f]{1,16})[ \t]*(?:;[^\r\n]*)?")
_DIGITS = re.compile(rb"[0-9]{1,19}")

# Reader states.
_HEAD, _LENGTH, _CHUNK_SIZE, _CHUNK_DATA, _CHUNK_CRLF, _TRAILERS, _EOM, _DONE = range(8)

_REASONS: dict[int, bytes] = {s.value: s.phrase.encode() for s in HTTPStatus}
_NO_BODY_STATUS = frozenset({204, 304})


_FRAMING = frozenset({b"content-length", b"transfer-encoding", b"host", b"connection", b"expect"})
_HEADERS_OK = re.compile(rb"(?:\r?\n" + _TOKEN + rb":[^\x00-\x08\x0a-\x1f\x7f]*)*")
# Only on a head _HEADERS_OK accepted: values are then free of control characters.
_HEADER_ITEM = re.compile(rb"\r?\n(" + _TOKEN + rb"):[ \t]*([^\r\n]*)")


def _line_offset(head: bytes, start: int, index: int) -> int:
    """The input offset of header line ``index`` (0: the first after the request line)."""
    lines = _LINE.split(head)
    return start + sum(len(line) + 2 for line in lines[: index + 1])


def _header_error(head: bytes, start: int) -> None:
    """Raise the ProtocolError for the first bad header line of ``head``."""
    for index, raw in enumerate(_LINE.split(head)[1:]):
        offset = _line_offset(head, start, index)
        h = _HEADER.fullmatch(raw)
        if h is None:
            if raw[:1] in (b" ", b"\t"):
                reason = "obsolete line folding in headers is not accepted"
            else:
                reason = "malformed header line (expected name: value): " + repr(raw[:100])[2:-1]
            raise ProtocolError(400, reason, offset)
        if _BAD_VALUE.search(h.group(2)):
            raise ProtocolError(400, f"control character in header {h.group(1).decode()!r}", offset)
    raise ProtocolError(400, "malformed headers", start)


class _Date:
    """The Date header, formatted once a second."""

    second = -1
    value = b""

    @classmethod
    def now(cls) -> bytes:
        second = int(time.time())
        if second != cls.second:
            cls.second = second
            cls.value = formatdate(second, usegmt=True).encode()
        return cls.value


class Connection:
    """One server-side HTTP/1.x connection: parses requests, frames responses."""

    def __init__(
        self, *, max_head: int = MAX_HEAD, max_body: int = MAX_BODY, server: bytes = b"p2pico"
    ) -> None:
        self.max_head = max_head
        self.max_body = max_body
        self.server = server
        self._buf = b""
        self._consumed = 0  # bytes of input before _buf[0], for error offsets
        self._scanned = 0  # how far _buf was searched for the end of the head
        self._eof = False
        self._state = _HEAD
        self._remaining = 0  # body bytes (or chunk bytes) still to come
        self._body_seen = 0
        # The current request's, once its head is read:
        self.request: Request | None = None
        self.keep_alive = True
        self.expects_continue = False  # "Expect: 100-continue" and no body byte read yet
        self._head_request = False
        # The response's:
        self.response_started = False
        self.response_done = False
        self._chunked = False
        self._close_delimited = False
        self._no_body = False
        self._to_send: int | None = None  # Content-Length left to send, when given

    # -- input -------------------------------------------------------------------------

    def receive_data(self, data: bytes) -> None:
        """Append bytes from the socket; ``b""`` means the client closed its side."""
        if data:
            self._buf = self._buf + data if self._buf else data
        else:
            self._eof = True

    @property
    def eof(self) -> bool:
        return self._eof

    @property
    def buffered(self) -> int:
        """Bytes received and not yet parsed (a partial head, pipelined requests)."""
        return len(self._buf)

    @property
    def body_done(self) -> bool:
        """The current request's body was read to its end (its EndOfMessage returned)."""
        return self._state == _DONE

    def next_event(self) -> Event:
        """The next event from the buffered input; raises ProtocolError on bad input."""
        state = self._state
        if state == _HEAD:
            return self._read_head()
        if state == _LENGTH:
            return self._read_length()
        if state == _EOM:
            self._state = _DONE
            return _END
        if state == _DONE:
            return PAUSED
        return self._read_chunked()

    def _take(self, n: int) -> bytes:
        buf = self._buf
        out, self._buf = buf[:n], buf[n:]
        self._consumed += n
        return out

    def _read_head(self) -> Event:
        buf = self._buf
        if self._scanned == 0 and buf[:1] in (b"\r", b"\n"):
            # RFC 9112 §2.2: ignore empty lines before a request line.
            stripped = buf.lstrip(b"\r\n")
            self._consumed += len(buf) - len(stripped)
            self._buf = buf = stripped
        found = _HEAD_END.search(buf, max(0, self._scanned - 3))
        if found is None:
            if len(buf) > self.max_head:
                raise ProtocolError(
                    431, f"request line and headers are over {self.max_head} bytes", self._consumed
                )
            if self._eof:
                if buf:
                    raise ProtocolError(
                        400, "connection closed inside a request head", self._consumed + len(buf)
                    )
                return CLOSED
            self._scanned = len(buf)
            return NEED_DATA
        end = found.end()
        if end > self.max_head:
            raise ProtocolError(
                431, f"request line and headers are over {self.max_head} bytes", self._consumed
            )
        start = self._consumed
        head = self._take(end)
        self._scanned = 0
        self.request = request = self._parse_head(head[: found.start()], start)
        return request

    def _parse_head(self, head: bytes, start: int) -> Request:
        nl = head.find(b"\n")
        line = head if nl < 0 else head[: nl - 1] if head[nl - 1 : nl] == b"\r" else head[:nl]
        m = _REQUEST_LINE.fullmatch(line)
        if m is None:
            raise ProtocolError(
                400,
                "malformed request line (expected METHOD SP target SP HTTP/1.x): "
                + repr(line[:100])[2:-1],
                start,
            )
        method_b, target, major, minor = m.groups()
        if major != b"1":
            raise ProtocolError(
                505, f"HTTP/{major.decode()}.{minor.decode()} is not supported", start
            )
        version = "1.0" if minor == b"0" else "1.1"
        # One regex checks every header line, another takes them apart; only a bad head
        # goes line by line, to say which line is wrong.
        rest = head[len(line) :]
        if _HEADERS_OK.fullmatch(rest) is None:
            _header_error(head, start)
        headers: Headers = []
        content_length: bytes | None = None
        codings: list[bytes] = []
        hosts = 0
        connection = b""
        expect = False
        for index, (name, value) in enumerate(_HEADER_ITEM.findall(rest)):
            name = name.lower()
            value = value.rstrip(b" \t")
            headers.append((name, value))
            if name not in _FRAMING:
                continue
            if name == b"content-length":
                for part in value.split(b","):
                    part = part.strip(b" \t")
                    if _DIGITS.fullmatch(part) is None:
                        raise ProtocolError(
                            400,
                            f"Content-Length is not a number: {value.decode('latin-1')!r}",
                            _line_offset(head, start, index),
                        )
                    if content_length is not None and part != content_length:
                        raise ProtocolError(
                            400,
                            "several differing Content-Length values",
                            _line_offset(head, start, index),
                        )
                    content_length = part
            elif name == b"transfer-encoding":
                codings += [c.strip(b" \t").lower() for c in value.split(b",") if c.strip(b" \t")]
            elif name == b"host":
                hosts += 1
            elif name == b"connection":
                connection += b"," + value.lower()
            elif name == b"expect":
                expect = value.lower() == b"100-continue"
        if version == "1.1" and hosts != 1:
            raise ProtocolError(
                400, "a HTTP/1.1 request needs exactly one Host header" + f" (got {hosts})", start
            )
        if connection:
            tokens = {t.strip(b" \t") for t in connection.split(b",")}
        else:
            tokens = set()
        if version == "1.1":
            self.keep_alive = b"close" not in tokens
        else:
            self.keep_alive = b"keep-alive" in tokens and b"close" not in tokens
        if codings:
            if version == "1.0":
                raise ProtocolError(400, "Transfer-Encoding in a HTTP/1.0 request", start)
            if content_length is not None:
                raise ProtocolError(400, "both Transfer-Encoding and Content-Length", start)
            if codings[-1] != b"chunked":
                raise ProtocolError(
                    400,
                    "Transfer-Encoding does not end with chunked: the body's length is unknown",
                    start,
                )
            if len(codings) > 1:
                others = ", ".join(c.decode("latin-1") for c in codings[:-1])
                raise ProtocolError(501, f"unsupported transfer coding: {others}", start)
            self._state = _CHUNK_SIZE
            self._body_seen = 0
        elif content_length is not None:
            length = int(content_length)
            if length > self.max_body:
                raise ProtocolError(
                    413, f"request body of {length} bytes; the limit is {self.max_body}", start
                )
            self._remaining = length
            self._state = _LENGTH if length else _EOM
        else:
            self._state = _EOM
        self.expects_continue = expect and version == "1.1" and self._state != _EOM
        self._head_request = method_b == b"HEAD"
        return Request(method_b.decode("ascii"), target, version, headers)

    def _read_length(self) -> Event:
        buf = self._buf
        if not buf:
            if self._eof:
                raise ProtocolError(
                    400,
                    f"connection closed with {self._remaining} body bytes to come",
                    self._consumed,
                )
            return NEED_DATA
        self.expects_continue = False
        remaining = self._remaining
        if len(buf) <= remaining:
            self._consumed += len(buf)
            self._buf = b""
            self._remaining = remaining - len(buf)
            if self._remaining == 0:
                self._state = _EOM
            return Data(buf)
        self._remaining = 0
        self._state = _EOM
        return Data(self._take(remaining))

    def _read_chunked(self) -> Event:
        """Everything the buffer holds of a chunked body, as one Data (its chunks joined),
        or the EndOfMessage; the buffer is sliced once per call, so a body sent as many
        tiny chunks costs linear time, not a copy of the rest of the buffer per chunk."""
        buf = self._buf
        at = 0  # how much of buf this call has taken
        parts: list[bytes] = []
        base = self._consumed  # error offsets: base + at
        end = False
        while True:
            state = self._state
            left = len(buf) - at
            if state == _CHUNK_DATA:
                if not left:
                    break
                self.expects_continue = False
                n = min(left, self._remaining)
                parts.append(buf[at : at + n])
                at += n
                self._remaining -= n
                if self._remaining == 0:
                    self._state = _CHUNK_CRLF
                continue
            if state == _CHUNK_CRLF:
                if buf[at : at + 2] == b"\r\n":
                    at += 2
                elif buf[at : at + 1] == b"\n":
                    at += 1
                elif left >= 2 or (left and buf[at : at + 1] != b"\r"):
                    raise ProtocolError(400, "chunk data not followed by CRLF", base + at)
                else:
                    break
                self._state = _CHUNK_SIZE
                continue
            if state == _CHUNK_SIZE:
                line_end = buf.find(b"\n", at)
                if line_end < 0:
                    if left > MAX_CHUNK_LINE:
                        raise ProtocolError(400, "chunk-size line too long", base + at)
                    break
                line = buf[at:line_end].rstrip(b"\r")
                m = _CHUNK_LINE.fullmatch(line)
                if m is None:
                    raise ProtocolError(
                        400, "malformed chunk-size line: " + repr(line[:100])[2:-1], base + at
                    )
                size = int(m.group(1), 16)
                self._body_seen += size
                if self._body_seen > self.max_body:
                    raise ProtocolError(
                        413, f"chunked request body over the {self.max_body}-byte limit", base + at
                    )
                at = line_end + 1
                self.expects_continue = False
                if size:
                    self._remaining = size
                    self._state = _CHUNK_DATA
                else:
                    self._state = _TRAILERS
                continue
            # _TRAILERS: lines up to an empty one, ignored.
            if buf[at : at + 2] == b"\r\n" or buf[at : at + 1] == b"\n":
                at += 2 if buf[at : at + 1] == b"\r" else 1
                end = True
                break
            found = _HEAD_END.search(buf, at)
            if found is None:
                if left > self.max_head:
                    raise ProtocolError(431, f"trailers over {self.max_head} bytes", base + at)
                break
            if found.end() - at > self.max_head:
                raise ProtocolError(431, f"trailers over {self.max_head} bytes", base + at)
            at = found.end()
            end = True
            break
        if at:
            self._buf = buf[at:]
            self._consumed = base + at
        if end:
            self._state = _EOM  # the next call returns the EndOfMessage
            if not parts:
                self._state = _DONE
                return _END
        if parts:
            return Data(parts[0] if len(parts) == 1 else b"".join(parts))
        if self._eof:
            raise ProtocolError(400, "connection closed inside a chunked body", self._consumed)
        return NEED_DATA

    def start_next_cycle(self) -> None:
        """After a response has ended with the connection kept alive: read the next request."""
        if not (self.response_done and self._state == _DONE and self.keep_alive):
            raise LocalProtocolError("start_next_cycle before the request and response ended")
        self._state = _HEAD
        self.request = None
        self.expects_continue = False
        self.response_started = self.response_done = False
        self._chunked = self._close_delimited = self._no_body = False
        self._to_send = None

    # -- output ------------------------------------------------------------------------

    def continue_response(self) -> bytes:
        """``100 Continue``, for a client that waits for it before sending the body."""
        self.expects_continue = False
        return b"HTTP/1.1 100 Continue\r\n\r\n"

    def response(self, status: int, headers: Headers, body: bytes = b"", *, final: bool) -> bytes:
        """The status line, headers and the body's first bytes; ``final``: that is all of it."""
        if self.response_started:
            raise LocalProtocolError("a response was already started on this request")
        if not 200 <= status <= 999:
            raise LocalProtocolError(f"status {status} is not a final response status")
        request = self.request
        reason = _REASONS.get(status, b"")
        out = [b"HTTP/1.1 %d %s\r\n" % (status, reason)]
        length: bytes | None = None
        for name, value in headers:
            if _BAD_VALUE.search(value) or b"\r" in name or b"\n" in name or b":" in name:
                raise LocalProtocolError(f"response header {name!r} has a forbidden character")
            lname = name.lower()
            if lname == b"content-length":
                length = value.strip()
            elif lname == b"transfer-encoding":
                continue  # the framing is ours to choose
            elif lname == b"connection":
                if b"close" in value.lower():
                    self.keep_alive = False
                continue
            elif lname in (b"date", b"server"):
                continue
            out.append(b"%s: %s\r\n" % (name, value))
        out.append(b"date: %s\r\nserver: %s\r\n" % (_Date.now(), self.server))
        self.response_started = True
        no_body = self._head_request or status in _NO_BODY_STATUS
        self._no_body = no_body
        if length is not None:
            if _DIGITS.fullmatch(length) is None:
                raise LocalProtocolError(f"response Content-Length is not a number: {length!r}")
            out.append(b"content-length: %s\r\n" % length)
            self._to_send = int(length)
        elif status in _NO_BODY_STATUS:
            pass
        elif final:
            out.append(b"content-length: %d\r\n" % len(body))
            self._to_send = len(body)
        elif request is not None and request.http_version == "1.1":
            if not no_body:
                self._chunked = True
            out.append(b"transfer-encoding: chunked\r\n")
        else:
            self._close_delimited = not no_body
            self.keep_alive = False
        if not self.keep_alive:
            out.append(b"connection: close\r\n")
        elif request is not None and request.http_version == "1.0":
            out.append(b"connection: keep-alive\r\n")
        out.append(b"\r\n")
        if body:
            out.append(self.body(body))
        if final:
            out.append(self.end())
        return b"".join(out)

    def body(self, data: bytes) -> bytes:
        """More of the response body, framed."""
        if not self.response_started or self.response_done:
            raise LocalProtocolError("response body outside a response")
        if self._to_send is not None:
            if len(data) > self._to_send:
                raise LocalProtocolError(
                    f"response body longer than its Content-Length ({len(data)} bytes, {self._to_send} left)"
                )
            self._to_send -= len(data)
        if self._no_body or not data:
            return b""
        if self._chunked:
            return b"%x\r\n%s\r\n" % (len(data), data)
        return data

    def end(self) -> bytes:
        """The end of the response (the last chunk when chunked)."""
        if not self.response_started or self.response_done:
            raise LocalProtocolError("response end outside a response")
        self.response_done = True
        if self._to_send and not self._no_body:
            # Fewer bytes than the Content-Length promised: the client cannot find the end.
            self.keep_alive = False
        if self._close_delimited:
            self.keep_alive = False
        if self._chunked:
            return b"0\r\n\r\n"
        return b""


def error_response(error: ProtocolError) -> bytes:
    """A plain-text response for a request we refuse, closing the connection."""
    text = (error.reason + ("" if error.offset is None else f" (at byte {error.offset})")).encode(
        "utf-8", "replace"
    )
    return (
        b"HTTP/1.1 %d %s\r\ncontent-type: text/plain; charset=utf-8\r\ncontent-length: %d\r\ndate: %s\r\nconnection: close\r\n\r\n%s\n"
        % (
            error.status,
            _REASONS.get(error.status, b""),
            len(text) + 1,
            _Date.now(),
            text,
        )
    )
