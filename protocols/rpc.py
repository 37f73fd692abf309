"""Multiplexed request/response over one long-lived stream (sans-I/O; /p2pico/rpc/1.0.0).

One stream per direction carries any number of requests, each tagged with an id, and their
responses in whatever order the responder finishes them. The side that opened the stream
sends requests, the other side answers: each engine opens its own stream(s) for its own
requests, so ids never collide. p2pico.net drives these state machines over libp2p.

Frames use protocols.framing (uvarint length prefix). A frame's payload is::

    request   = 0x01 || uvarint(id) || uvarint(len(protocol)) || protocol || body
    response  = 0x02 || uvarint(id) || body
    error     = 0x03 || uvarint(id) || code (1 byte) || utf-8 reason

``protocol`` names the request protocol the body belongs to (``/p2pico/msg/1.0.0``…), so one
stream serves every request protocol the responder has a handler for.

Flow control: a requester keeps at most ``MAX_IN_FLIGHT`` requests outstanding per stream
(``RpcClient.start_request`` raises ``RpcBusy`` past it; the driver waits for a slot, which is
the backpressure callers feel). A responder refuses a stream that exceeds it
(``RpcProtocolError``: the driver resets the stream), so what one stream can make a
responder hold is bounded. Ids increase by one per request and never repeat on a stream.

Every decoding error is an ``RpcProtocolError`` naming what was wrong and at which frame.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from protocols.framing import (
    MAX_FRAME_SIZE,
    FrameDecoder,
    FramingError,
    decode_uvarint,
    encode_frame,
    encode_uvarint,
)

__all__ = [
    "ERROR_CODES",
    "MAX_IN_FLIGHT",
    "MAX_PROTOCOL_LEN",
    "RPC_MAX_FRAME",
    "RPC_PROTOCOL",
    "Failure",
    "Request",
    "Response",
    "RpcBusy",
    "RpcClient",
    "RpcProtocolError",
    "RpcServer",
]

RPC_PROTOCOL: Final = "/p2pico/rpc/1.0.0"
MAX_IN_FLIGHT: Final = 64
MAX_PROTOCOL_LEN: Final = 256
# A body may be as large as a one-shot request's frame (MAX_FRAME_SIZE); the header
# (kind, id, protocol name) gets room on top.
RPC_MAX_FRAME: Final = MAX_FRAME_SIZE + 16 + MAX_PROTOCOL_LEN

_REQUEST: Final = 0x01
_RESPONSE: Final = 0x02
_ERROR: Final = 0x03

# Error codes a responder sends instead of a response.
ERROR_CODES: Final = {
    1: "unsupported",  # no handler for the protocol
    2: "handler-failed",  # the handler raised
    3: "timeout",  # the handler did not finish in the responder's time limit
    4: "too-large",  # the handler's response does not fit a frame
}
_CODE_OF: Final = {name: code for code, name in ERROR_CODES.items()}


class RpcProtocolError(ValueError):
    """The peer broke the rpc protocol; the stream cannot be trusted any more."""


class RpcBusy(Exception):
    """``MAX_IN_FLIGHT`` requests are outstanding on this stream; wait for one to finish."""


@dataclass(frozen=True, slots=True)
class Request:
    id: int
    protocol: str
    body: bytes


@dataclass(frozen=True, slots=True)
class Response:
    id: int
    body: bytes


@dataclass(frozen=True, slots=True)
class Failure:
    id: int
    code: str
    reason: str


def _header(kind: int, rid: int) -> bytes:
    return bytes([kind]) + encode_uvarint(rid)


def _split(payload: bytes, frame_no: int) -> tuple[int, int, int]:
    """(kind, id, offset after the id) of a frame's payload."""
    if not payload:
        raise RpcProtocolError(f"frame {frame_no}: empty")
    try:
        decoded = decode_uvarint(payload, 1)
    except FramingError as error:
        raise RpcProtocolError(f"frame {frame_no}: bad id: {error}") from None
    if decoded is None:
        raise RpcProtocolError(f"frame {frame_no}: ends inside the id")
    rid, offset = decoded
    return payload[0], rid, offset


class _Endpoint:
    def __init__(self, max_frame_size: int) -> None:
        self._decoder = FrameDecoder(max_frame_size)
        self.frames = 0

    @property
    def buffered(self) -> int:
        """Bytes received that do not yet make a whole frame."""
        return self._decoder.buffered

    def _frames(self, data: bytes) -> list[bytes]:
        try:
            self._decoder.feed(data)
            out = []
            while (frame := self._decoder.next_frame()) is not None:
                out.append(frame)
        except FramingError as error:
            raise RpcProtocolError(f"after frame {self.frames}: {error}") from None
        return out


class RpcClient(_Endpoint):
    """The requesting side of one rpc stream."""

    def __init__(
        self, *, max_in_flight: int = MAX_IN_FLIGHT, max_frame_size: int = RPC_MAX_FRAME
    ) -> None:
        super().__init__(max_frame_size)
        self.max_in_flight = max_in_flight
        self.max_frame_size = max_frame_size
        self._next_id = 0
        self._pending: set[int] = set()
        # Ids given up on (timeout, cancellation) whose answer may still come: it is dropped.
        self._abandoned: set[int] = set()
        self.late = 0

    @property
    def in_flight(self) -> int:
        """Requests the responder may still be working on, abandoned ones included."""
        return len(self._pending) + len(self._abandoned)

    def start_request(self, protocol: str, body: bytes) -> tuple[int, bytes]:
        """A new request's id and the bytes to write.

        Raises:
            RpcBusy: ``max_in_flight`` requests are outstanding.
            ValueError: the protocol name is empty or too long, or the body too large.
        """
        if self.in_flight >= self.max_in_flight:
            raise RpcBusy(f"{self.in_flight} requests in flight")
        name = protocol.encode()
        if not name or len(name) > MAX_PROTOCOL_LEN:
            raise ValueError(f"protocol name must be 1-{MAX_PROTOCOL_LEN} bytes: {protocol!r}")
        if len(body) > MAX_FRAME_SIZE:
            raise ValueError(
                f"request of {len(body)} bytes exceeds the maximum of {MAX_FRAME_SIZE}"
            )
        rid = self._next_id
        self._next_id += 1
        payload = _header(_REQUEST, rid) + encode_uvarint(len(name)) + name + body
        self._pending.add(rid)
        return rid, encode_frame(payload, max_frame_size=self.max_frame_size)

    def abandon(self, rid: int) -> None:
        """Stop waiting for ``rid`` (its answer, if it comes, is dropped and counted in ``late``)."""
        if rid in self._pending:
            self._pending.discard(rid)
            self._abandoned.add(rid)

    def fail_all(self) -> list[int]:
        """The stream died: every outstanding id (the driver fails their callers)."""
        pending = sorted(self._pending)
        self._pending.clear()
        self._abandoned.clear()
        return pending

    def receive(self, data: bytes) -> list[Response | Failure]:
        """Feed bytes read from the stream; the answers they complete, in order.

        Raises:
            RpcProtocolError: a malformed frame, a request frame, or an answer to an id
                that was never asked (or already answered).
        """
        answers: list[Response | Failure] = []
        for payload in self._frames(data):
            self.frames += 1
            kind, rid, offset = _split(payload, self.frames)
            if kind not in (_RESPONSE, _ERROR):
                raise RpcProtocolError(
                    f"frame {self.frames}: expected a response or error (0x02, 0x03), "
                    f"got kind 0x{kind:02x}"
                )
            if rid in self._abandoned:
                self._abandoned.discard(rid)
                self.late += 1
                continue
            if rid not in self._pending:
                raise RpcProtocolError(f"frame {self.frames}: answer to unknown request id {rid}")
            self._pending.discard(rid)
            if kind == _RESPONSE:
                answers.append(Response(rid, payload[offset:]))
                continue
            if offset >= len(payload):
                raise RpcProtocolError(f"frame {self.frames}: error without a code")
            code = ERROR_CODES.get(payload[offset], f"code {payload[offset]}")
            try:
                reason = payload[offset + 1 :].decode()
            except UnicodeDecodeError:
                raise RpcProtocolError(f"frame {self.frames}: error reason is not UTF-8") from None
            answers.append(Failure(rid, code, reason))
        return answers


class RpcServer(_Endpoint):
    """The answering side of one rpc stream."""

    def __init__(
        self, *, max_in_flight: int = MAX_IN_FLIGHT, max_frame_size: int = RPC_MAX_FRAME
    ) -> None:
        super().__init__(max_frame_size)
        self.max_in_flight = max_in_flight
        self.max_frame_size = max_frame_size
        self._open: set[int] = set()
        self._last_id = -1

    @property
    def in_flight(self) -> int:
        return len(self._open)

    def receive(self, data: bytes) -> list[Request]:
        """Feed bytes read from the stream; the requests they complete, in order.

        Raises:
            RpcProtocolError: a malformed frame, an answer frame, an id that does not
                increase, or more than ``max_in_flight`` requests outstanding.
        """
        requests = []
        for payload in self._frames(data):
            self.frames += 1
            kind, rid, offset = _split(payload, self.frames)
            if kind != _REQUEST:
                raise RpcProtocolError(
                    f"frame {self.frames}: expected a request (0x01), got kind 0x{kind:02x}"
                )
            if rid <= self._last_id:
                raise RpcProtocolError(
                    f"frame {self.frames}: request id {rid} after {self._last_id} (ids must increase)"
                )
            try:
                decoded = decode_uvarint(payload, offset)
            except FramingError as error:
                raise RpcProtocolError(
                    f"frame {self.frames}: bad protocol length: {error}"
                ) from None
            if decoded is None:
                raise RpcProtocolError(f"frame {self.frames}: ends inside the protocol length")
            length, start = decoded
            if not 0 < length <= MAX_PROTOCOL_LEN or start + length > len(payload):
                raise RpcProtocolError(
                    f"frame {self.frames}: protocol name of {length} bytes "
                    f"(1-{MAX_PROTOCOL_LEN}, within the frame)"
                )
            try:
                protocol = payload[start : start + length].decode()
            except UnicodeDecodeError:
                raise RpcProtocolError(f"frame {self.frames}: protocol name is not UTF-8") from None
            if len(self._open) >= self.max_in_flight:
                raise RpcProtocolError(
                    f"frame {self.frames}: more than {self.max_in_flight} requests in flight"
                )
            self._last_id = rid
            self._open.add(rid)
            requests.append(Request(rid, protocol, payload[start + length :]))
        return requests

    def respond(self, rid: int, body: bytes) -> bytes:
        """The bytes answering ``rid`` with ``body``.

        Raises:
            KeyError: ``rid`` is not an open request.
            ValueError: ``body`` does not fit a frame (answer with ``fail(rid, "too-large")``).
        """
        self._check_open(rid)
        payload = _header(_RESPONSE, rid) + body
        if len(payload) > self.max_frame_size:
            raise ValueError(
                f"response of {len(body)} bytes exceeds the maximum frame of {self.max_frame_size}"
            )
        self._open.discard(rid)
        return encode_frame(payload, max_frame_size=self.max_frame_size)

    def fail(self, rid: int, code: str, reason: str) -> bytes:
        """The bytes answering ``rid`` with an error (``code`` from ``ERROR_CODES``)."""
        self._check_open(rid)
        if code not in _CODE_OF:
            raise ValueError(f"unknown error code {code!r}; expected one of {sorted(_CODE_OF)}")
        self._open.discard(rid)
        text = reason.encode()[:1024].decode(errors="ignore").encode()  # whole characters
        return encode_frame(
            _header(_ERROR, rid) + bytes([_CODE_OF[code]]) + text,
            max_frame_size=self.max_frame_size,
        )

    def _check_open(self, rid: int) -> None:
        if rid not in self._open:
            raise KeyError(f"request id {rid} is not open")
