"""The node's HTTP/1.1 server: an ASGI 3 server for ``http`` scopes, on trio sockets.

Neighbours: p2pico.http1 (the sans-I/O codec this drives), p2pico.node (serves the
app of p2pico.http with it; ``P2PICO_HTTP=hypercorn`` keeps hypercorn instead).

``serve(app, "host:port")`` (port 0 picks one; also ``fd://N``, a listening socket
handed over) reports ``["http://host:port"]`` to ``task_status.started`` as
``hypercorn.trio.serve`` does, and serves each connection in a task: requests one
at a time (pipelined ones wait in the codec's buffer), keep-alive as HTTP/1.x says.

- ``receive()`` gives the body as it arrives (``http.request`` with ``more_body``;
  ``100 Continue`` goes out on the first call when the client asked for it), then
  ``http.disconnect`` once the client closed or the response is complete. While the
  app waits for that, the socket is read, so a streaming response (SSE, ndjson) ends
  when the client goes away.
- ``send()`` writes the status line, headers and a body that comes in one message as
  one ``send()`` on the socket, straight on the non-blocking socket (trio's
  ``send_all`` only for what the kernel did not take). A streaming response is
  chunked (HTTP/1.1) and takes a scheduling round per chunk, so a generator that never
  awaits does not hold the event loop. ``send()`` after the client went away raises
  ``ClientDisconnected`` (an OSError, as ASGI 2.4 asks).
- An app exception before anything was sent is a 500 (the connection then closes);
  after a partial response the connection closes; after a complete one it goes on.
  A malformed request gets its 4xx/5xx with a plain-text reason, then the close.
- Timeouts: IDLE_TIMEOUT between requests (as hypercorn's keep-alive timeout),
  HEADER_TIMEOUT for a request's head once its first byte came (slowloris), and
  BODY_TIMEOUT between two reads of a body the app is reading (nginx's
  client_body_timeout): then the app gets ``http.disconnect`` and the client a 408.
- No lifespan scope: p2pico.http's app has no startup or shutdown handlers.
"""

from __future__ import annotations

import errno
import logging
import math
import re
import socket
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any
from urllib.parse import unquote_to_bytes

import trio

from p2pico import http1

log = logging.getLogger("p2pico.httpd")

IDLE_TIMEOUT = 5.0  # seconds a kept-alive connection may sit between requests
HEADER_TIMEOUT = 10.0  # seconds from a request's first byte to the end of its head
BODY_TIMEOUT = 30.0  # seconds a body being read may send nothing
CLOSE_LINGER = 1.0  # seconds a closing connection reads what the client still sends
READ_SIZE = 65536
BACKLOG = 1024

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

_ASGI = {"version": "3.0", "spec_version": "2.3"}
_ABSOLUTE_FORM = re.compile(rb"[A-Za-z][A-Za-z0-9+.\-]*://[^/?]*")
_ACCEPT_RETRY = {errno.EMFILE, errno.ENFILE, errno.ENOMEM, errno.ENOBUFS}
_CONNECTION_GONE = (trio.BrokenResourceError, trio.ClosedResourceError, OSError)


class ClientDisconnected(OSError):
    """``send()`` on a connection the client has closed."""


def _listen(bind: str) -> socket.socket:
    if bind.startswith("fd://"):
        sock = socket.socket(fileno=int(bind[5:]))
        if sock.type != socket.SOCK_STREAM:
            raise ValueError(f"{bind} is not a stream socket")
    else:
        host, sep, port = bind.rpartition(":")
        if not sep or not port.isdigit():
            raise ValueError(
                f"HTTP address {bind!r}: expected HOST:PORT (port 0 picks one) or fd://N"
            )
        host = host.strip("[]") or "127.0.0.1"
        sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((host, int(port)))
        except OSError:
            sock.close()
            raise
    sock.listen(BACKLOG)
    sock.setblocking(False)
    return sock


def _url(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


async def serve(
    app: ASGIApp,
    bind: str,
    *,
    task_status: Any = trio.TASK_STATUS_IGNORED,
    idle_timeout: float = IDLE_TIMEOUT,
    header_timeout: float = HEADER_TIMEOUT,
    body_timeout: float = BODY_TIMEOUT,
    max_body: int = http1.MAX_BODY,
) -> None:
    """Serve ``app`` on ``bind`` until cancelled; ``task_status.started([url])``."""
    sock = _listen(bind)
    listener = trio.socket.from_stdlib_socket(sock)
    server = _Server(app, idle_timeout, header_timeout, body_timeout, max_body)
    try:
        async with trio.open_nursery() as nursery:
            task_status.started([_url(sock)])
            while True:
                try:
                    conn, _ = await listener.accept()
                except OSError as e:
                    if e.errno in _ACCEPT_RETRY:  # out of descriptors or memory: wait a little
                        log.error("accept failed (%s); retrying in 0.1 s", e)
                        await trio.sleep(0.1)
                        continue
                    if e.errno == errno.ECONNABORTED:
                        continue
                    raise
                nursery.start_soon(server.connection, trio.SocketStream(conn))
    finally:
        listener.close()


class _Server:
    def __init__(
        self, app: ASGIApp, idle: float, header: float, body: float, max_body: int
    ) -> None:
        self.app = app
        self.idle_timeout = idle
        self.header_timeout = header
        self.body_timeout = body
        self.max_body = max_body

    async def connection(self, stream: trio.SocketStream) -> None:
        conn = _Connection(self, stream)
        try:
            await conn.run()
        except Exception:  # a bug on one connection must not end the server's nursery
            log.exception("HTTP connection from %s failed", conn.client)
        finally:
            stream.socket.close()


_DISCONNECT: dict[str, Any] = {"type": "http.disconnect"}


class _Connection:
    def __init__(self, server: _Server, stream: trio.SocketStream) -> None:
        self.server = server
        self.stream = stream
        # The stdlib socket under trio's: one send() on it needs no scheduling round.
        self.raw: socket.socket | None = getattr(stream.socket, "_sock", None)
        self.h = http1.Connection(max_body=server.max_body)
        self.disconnected = False
        try:
            self.client: tuple[str, int] | None = tuple(stream.socket.getpeername()[:2])
            self.local: tuple[str, int] | None = tuple(stream.socket.getsockname()[:2])
        except OSError:
            self.client = self.local = None

    async def run(self) -> None:
        h = self.h
        linger = False
        try:
            while True:
                request = await self._next_request()
                if request is None:
                    return
                cycle = _Cycle(self, request)
                await cycle.run()
                if not (h.response_done and not self.disconnected and h.keep_alive):
                    linger = not self.disconnected
                    return
                if not h.body_done and not cycle.drain():
                    linger = True  # the body the app left unread may still be coming
                    return
                h.start_next_cycle()
        except http1.ProtocolError as e:
            if not self.disconnected:
                try:
                    await self.write(http1.error_response(e))
                except _CONNECTION_GONE:  # the client sent garbage and left
                    self.disconnected = True
                else:
                    linger = True
        except _CONNECTION_GONE:
            self.disconnected = True
        finally:
            if linger and not self.disconnected:
                await self._linger()

    async def _next_request(self) -> http1.Request | None:
        """The next request's head, or None when the client closed or stayed idle too long."""
        h = self.h
        deadline = math.inf
        head_started = False
        while True:
            event = h.next_event()
            if event is http1.NEED_DATA:
                if h.buffered and not head_started:
                    head_started = True
                    deadline = trio.current_time() + self.server.header_timeout
                elif deadline == math.inf:
                    deadline = trio.current_time() + self.server.idle_timeout
                with trio.CancelScope(deadline=deadline) as timer:
                    data = await self.stream.receive_some(READ_SIZE)
                if timer.cancelled_caught:
                    if head_started:
                        raise http1.ProtocolError(
                            408, f"request head not complete within {self.server.header_timeout} s"
                        )
                    return None
                h.receive_data(data)
                continue
            if event is http1.CLOSED:
                self.disconnected = True
                return None
            assert isinstance(event, http1.Request)
            return event

    async def write(self, data: bytes) -> None:
        raw = self.raw
        sent = 0
        if raw is not None:
            try:
                sent = raw.send(data)
            except BlockingIOError:
                sent = 0
            except OSError as e:
                self.disconnected = True
                raise ClientDisconnected(f"the client closed the connection: {e}") from e
            if sent >= len(data):
                return
        try:
            await self.stream.send_all(memoryview(data)[sent:])
        except (trio.BrokenResourceError, trio.ClosedResourceError) as e:
            self.disconnected = True
            raise ClientDisconnected(f"the client closed the connection: {e}") from e

    async def _linger(self) -> None:
        """Close our side first and read what the client still sends, briefly: closing
        with unread input makes the kernel send a reset that can destroy our last response."""
        with trio.move_on_after(CLOSE_LINGER):
            try:
                await self.stream.send_eof()
                while await self.stream.receive_some(READ_SIZE):
                    pass
            except _CONNECTION_GONE:
                pass


class _Cycle:
    """One request and its response: the ASGI ``receive`` and ``send`` of one call."""

    def __init__(self, conn: _Connection, request: http1.Request) -> None:
        self.conn = conn
        self.request = request
        self.body_complete = False
        self.response_complete = False
        self.start: Message | None = None
        self.error: http1.ProtocolError | None = None  # a bad body, found by receive()
        self.waiter: trio.CancelScope | None = None
        self.over = False

    def scope(self) -> dict[str, Any]:
        request = self.request
        target = request.target
        path_b, _, query = target.partition(b"?")
        if path_b[:1] != b"/":
            m = _ABSOLUTE_FORM.match(path_b)  # absolute-form, as sent to a proxy
            if m is not None:
                path_b = path_b[m.end() :] or b"/"
        if b"%" in path_b:
            path = unquote_to_bytes(path_b).decode("utf-8", "replace")
        else:
            path = path_b.decode("utf-8", "replace")
        return {
            "type": "http",
            "asgi": _ASGI,
            "http_version": request.http_version,
            "method": request.method,
            "scheme": "http",
            "path": path,
            "raw_path": path_b,
            "query_string": query,
            "root_path": "",
            "headers": request.headers,
            "client": self.conn.client,
            "server": self.conn.local,
        }

    async def run(self) -> None:
        conn = self.conn
        h = conn.h
        try:
            await conn.server.app(self.scope(), self.receive, self.send)
        except ClientDisconnected:
            pass
        except Exception:
            if self.error is None and not conn.disconnected:
                log.exception(
                    "the app failed on %s %s", self.request.method, self.request.target[:200]
                )
        finally:
            self.over = True
        if conn.disconnected or self.response_complete:
            return
        if h.response_started:
            h.keep_alive = False  # a partial response: only closing tells the client
            return
        if self.error is not None:
            raise self.error
        h.keep_alive = False
        await conn.write(
            h.response(
                500,
                [(b"content-type", b"text/plain; charset=utf-8")],
                b"Internal Server Error\n",
                final=True,
            )
        )

    def drain(self) -> bool:
        """Skip the rest of a body the app did not read, if it is already here."""
        h = self.conn.h
        if h.expects_continue:
            return False
        try:
            while True:
                event = h.next_event()
                if isinstance(event, http1.EndOfMessage):
                    return True
                if not isinstance(event, http1.Data):
                    return False
        except http1.ProtocolError:
            return False

    async def receive(self) -> Message:
        conn = self.conn
        h = conn.h
        if self.over:
            return _DISCONNECT
        if not self.body_complete:
            if conn.disconnected or self.error is not None:
                return _DISCONNECT
            if h.expects_continue and not h.response_started:
                await conn.write(h.continue_response())
            chunks: list[bytes] = []
            while True:
                try:
                    event = h.next_event()
                except http1.ProtocolError as e:
                    self.error = e
                    conn.disconnected = h.eof
                    return _DISCONNECT
                if isinstance(event, http1.Data):
                    chunks.append(event.data)
                    continue
                if isinstance(event, http1.EndOfMessage):
                    self.body_complete = True
                    body = chunks[0] if len(chunks) == 1 else b"".join(chunks)
                    return {"type": "http.request", "body": body, "more_body": False}
                if chunks:
                    return {"type": "http.request", "body": b"".join(chunks), "more_body": True}
                timeout = conn.server.body_timeout
                try:
                    with trio.move_on_after(timeout) as timer:
                        data = await conn.stream.receive_some(READ_SIZE)
                except _CONNECTION_GONE:
                    conn.disconnected = True
                    return _DISCONNECT
                if timer.cancelled_caught:
                    self.error = http1.ProtocolError(
                        408, f"request body stalled: nothing came for {timeout} s"
                    )
                    return _DISCONNECT
                h.receive_data(data)
        # The body is read: wait for the end of the response, or for the client to leave.
        if self.response_complete or conn.disconnected:
            return _DISCONNECT
        with trio.CancelScope() as waiter:
            self.waiter = waiter
            try:
                while h.buffered <= h.max_head:  # past that, a flood: stop reading
                    data = await conn.stream.receive_some(READ_SIZE)
                    if not data:
                        conn.disconnected = True
                        h.receive_data(b"")
                        break
                    h.receive_data(data)  # a pipelined request: it waits its turn
                else:
                    await trio.sleep_forever()
            except _CONNECTION_GONE:
                conn.disconnected = True
            finally:
                self.waiter = None
        return _DISCONNECT

    async def send(self, message: Message) -> None:
        kind = message["type"]
        conn = self.conn
        h = conn.h
        if kind == "http.response.body":
            if self.start is None:
                raise RuntimeError("ASGI: http.response.body before http.response.start")
            if self.response_complete or self.over:
                raise RuntimeError("ASGI: http.response.body after the response ended")
            if conn.disconnected:
                raise ClientDisconnected("the client closed the connection")
            body = message.get("body", b"")
            if type(body) is not bytes:
                body = bytes(body)
            more = message.get("more_body", False)
            if not h.response_started:
                data = h.response(
                    self.start["status"], self.start.get("headers") or [], body, final=not more
                )
            else:
                data = h.body(body)
                if not more:
                    data += h.end()
            if data:
                await conn.write(data)
            if more:
                await trio.lowlevel.checkpoint()
            else:
                self.response_complete = True
                if self.waiter is not None:
                    self.waiter.cancel()
        elif kind == "http.response.start":
            if self.start is not None:
                raise RuntimeError("ASGI: a second http.response.start")
            if self.over:
                raise RuntimeError("ASGI: http.response.start after the app returned")
            self.start = message
        else:
            raise RuntimeError(f"ASGI: unexpected message {kind!r} for an http scope")
