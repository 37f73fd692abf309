"""p2pico.httpd in process: a real loopback socket, trio, a raw client (no sleeps)."""

from __future__ import annotations

import json
import socket
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest
import trio
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse
from starlette.routing import Route

from p2pico import httpd

GUARD = 60  # a hang guard for the real-clock tests, far above anything they need


@asynccontextmanager
async def server(app: Any, bind: str = "127.0.0.1:0", **kw: Any) -> AsyncIterator[str]:
    async with trio.open_nursery() as nursery:
        binds = await nursery.start(
            lambda task_status: httpd.serve(app, bind, task_status=task_status, **kw)
        )
        assert isinstance(binds, list)
        assert len(binds) == 1
        yield binds[0]
        nursery.cancel_scope.cancel()


async def connect(url: str) -> trio.SocketStream:
    host, port = url.removeprefix("http://").rsplit(":", 1)
    return await trio.open_tcp_stream(host, int(port))


async def read_response(
    stream: trio.SocketStream, buf: bytearray
) -> tuple[int, dict[str, str], bytes]:
    """One response (Content-Length, chunked, or up to EOF); what follows stays in ``buf``."""

    async def more() -> bool:
        data = await stream.receive_some(65536)
        buf.extend(data)
        return bool(data)

    while b"\r\n\r\n" not in buf:
        if not await more():
            raise EOFError(f"connection closed; got {bytes(buf)!r}")
    end = buf.index(b"\r\n\r\n")
    status_line, *lines = bytes(buf[:end]).decode("latin-1").split("\r\n")
    del buf[: end + 4]
    status = int(status_line.split(" ")[1])
    headers = {k.lower(): v for k, v in (line.split(": ", 1) for line in lines)}
    if status in (100, 204, 304):
        return status, headers, b""
    if "content-length" in headers:
        n = int(headers["content-length"])
        while len(buf) < n:
            assert await more(), "connection closed inside the body"
        body = bytes(buf[:n])
        del buf[:n]
        return status, headers, body
    if headers.get("transfer-encoding") == "chunked":
        body = b""
        while True:
            while b"\r\n" not in buf:
                assert await more()
            i = buf.index(b"\r\n")
            size = int(bytes(buf[:i]), 16)
            while len(buf) < i + 2 + size + 2:
                assert await more()
            body += bytes(buf[i + 2 : i + 2 + size])
            del buf[: i + 2 + size + 2]
            if size == 0:
                return status, headers, body
    while await more():
        pass
    body = bytes(buf)
    del buf[:]
    return status, headers, body


async def at_eof(stream: trio.SocketStream) -> bool:
    try:
        return await stream.receive_some(65536) == b""
    except trio.BrokenResourceError:  # a reset is a close too
        return True


def get(path: str, *extra: str) -> bytes:
    return ("\r\n".join([f"GET {path} HTTP/1.1", "Host: t", *extra]) + "\r\n\r\n").encode()


# -- an app that says what it saw -----------------------------------------------------------


class Recorder:
    def __init__(self) -> None:
        self.scopes: list[dict[str, Any]] = []

    async def __call__(
        self, scope: dict[str, Any], receive: Callable[..., Any], send: Callable[..., Any]
    ) -> None:
        self.scopes.append(scope)
        assert scope["type"] == "http"
        body = b""
        while True:
            message = await receive()
            assert message["type"] == "http.request"
            body += message["body"]
            if not message.get("more_body"):
                break
        reply = json.dumps(
            {
                "method": scope["method"],
                "path": scope["path"],
                "raw_path": scope["raw_path"].decode(),
                "query": scope["query_string"].decode(),
                "body": body.decode(),
                "port": scope["client"][1],
            }
        ).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-type", b"application/json")],
            }
        )
        await send({"type": "http.response.body", "body": reply})


async def test_scope_and_keep_alive_reuse() -> None:
    app = Recorder()
    with trio.fail_after(GUARD):
        async with server(app) as url:
            stream = await connect(url)
            buf = bytearray()
            await stream.send_all(get("/a%20b/%E2%9C%93?x=%20&y", "X-Custom: V"))
            status, headers, body = await read_response(stream, buf)
            first = json.loads(body)
            assert status == 200
            assert headers["content-length"] == str(len(body))
            assert headers["server"] == "p2pico"
            assert headers["date"].endswith("GMT")
            assert (first["path"], first["raw_path"], first["query"]) == (
                "/a b/✓",
                "/a%20b/%E2%9C%93",
                "x=%20&y",
            )
            await stream.send_all(
                b"POST /p HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n\r\nhello"
                b"POST /c HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2;e=1\r\nde\r\n0\r\n\r\n"
            )  # two pipelined
            second = json.loads((await read_response(stream, buf))[2])
            third = json.loads((await read_response(stream, buf))[2])
            assert (second["path"], second["body"]) == ("/p", "hello")
            assert (third["path"], third["body"]) == ("/c", "abcde")
            assert first["port"] == second["port"] == third["port"]  # one connection
            scope = app.scopes[0]
            assert scope["asgi"] == {"version": "3.0", "spec_version": "2.3"}
            assert scope["http_version"] == "1.1"
            assert scope["scheme"] == "http"
            assert scope["root_path"] == ""
            assert (b"x-custom", b"V") in scope["headers"]
            assert (b"host", b"t") in scope["headers"]
            assert scope["server"] == ("127.0.0.1", int(url.rsplit(":", 1)[1]))
            assert [s["type"] for s in app.scopes] == ["http"] * 3  # no lifespan scope
            await stream.aclose()


async def test_connection_close_and_http_1_0() -> None:
    with trio.fail_after(GUARD):
        async with server(Recorder()) as url:
            stream = await connect(url)
            buf = bytearray()
            await stream.send_all(get("/x", "Connection: close") + get("/never"))
            status, headers, _ = await read_response(stream, buf)
            assert (status, headers["connection"]) == (200, "close")
            assert await at_eof(stream)  # the pipelined /never is not answered
            stream = await connect(url)
            await stream.send_all(
                b"GET /a HTTP/1.0\r\nConnection: keep-alive\r\n\r\nGET /b HTTP/1.0\r\n\r\n"
            )
            buf = bytearray()
            assert (await read_response(stream, buf))[1]["connection"] == "keep-alive"
            status, headers, body = await read_response(stream, buf)
            assert headers["connection"] == "close"
            assert json.loads(body)["path"] == "/b"
            assert await at_eof(stream)


async def test_expect_100_continue() -> None:
    with trio.fail_after(GUARD):
        async with server(Recorder()) as url:
            stream = await connect(url)
            buf = bytearray()
            await stream.send_all(
                b"POST /up HTTP/1.1\r\nHost: t\r\nExpect: 100-continue\r\nContent-Length: 4\r\n\r\n"
            )
            status, _, _ = await read_response(stream, buf)
            assert status == 100  # sent when the app asked for the body
            await stream.send_all(b"data")
            status, _, body = await read_response(stream, buf)
            assert (status, json.loads(body)["body"]) == (200, "data")


async def test_head_and_starlette_through_httpx() -> None:
    async def hello(request: Request) -> Response:
        return JSONResponse(
            {"got": await request.json()} if request.method == "POST" else {"hi": 1}
        )

    app = Starlette(routes=[Route("/h", hello, methods=["GET", "POST"])])
    with trio.fail_after(GUARD):
        async with server(app) as url, httpx.AsyncClient(base_url=url) as client:
            r = await client.get("/h")
            assert (r.status_code, r.json()) == (200, {"hi": 1})
            r = await client.head("/h")
            assert r.status_code == 200
            assert r.content == b""
            assert r.headers["content-length"] == str(len(b'{"hi":1}'))
            r = await client.post("/h", json={"a": [1, 2]})
            assert r.json() == {"got": {"a": [1, 2]}}
            r = await client.get("/nope")
            assert r.status_code == 404


async def test_streaming_response_ends_when_the_client_goes_away() -> None:
    feed_send, feed_receive = trio.open_memory_channel[bytes](10)
    closed = trio.Event()

    async def events() -> AsyncIterator[bytes]:
        try:
            async for item in feed_receive:
                yield item
        finally:
            closed.set()

    async def stream_route(request: Request) -> Response:
        return StreamingResponse(events(), media_type="text/event-stream")

    app = Starlette(
        routes=[Route("/events", stream_route), Route("/ok", lambda r: PlainTextResponse("ok"))]
    )
    with trio.fail_after(GUARD):
        async with server(app) as url:
            stream = await connect(url)
            await stream.send_all(get("/events"))
            await feed_send.send(b"data: one\n\n")
            buf = bytearray()
            while b"data: one" not in buf:  # the head and the first chunk, before the end
                buf += await stream.receive_some(65536)
            head = bytes(buf).split(b"\r\n\r\n")[0].lower()
            assert b"transfer-encoding: chunked" in head
            assert b"content-type: text/event-stream" in head
            await feed_send.send(b"data: two\n\n")
            while b"data: two" not in buf:
                buf += await stream.receive_some(65536)
            assert not closed.is_set()
            await stream.aclose()  # the client leaves
            await closed.wait()  # ... and the app's generator is closed
            stream = await connect(url)  # the server goes on
            await stream.send_all(get("/ok"))
            assert (await read_response(stream, bytearray()))[2] == b"ok"


async def test_send_after_the_client_left_raises_an_oserror() -> None:
    gave_up = trio.Event()
    sent = 0

    async def forever(scope: dict[str, Any], receive: Any, send: Any) -> None:
        nonlocal sent
        await send({"type": "http.response.start", "status": 200, "headers": []})
        try:
            while True:  # never calls receive(): only send tells it the client left
                await send({"type": "http.response.body", "body": b"x" * 1000, "more_body": True})
                sent += 1
        except OSError:
            gave_up.set()
            raise

    with trio.fail_after(GUARD):
        async with server(forever) as url:
            stream = await connect(url)
            await stream.send_all(get("/"))
            assert await stream.receive_some(100)
            await stream.aclose()
            await gave_up.wait()
            assert sent > 0


async def test_app_exception_is_a_500_and_the_server_goes_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["path"] == "/boom":
            raise RuntimeError("boom")
        if scope["path"] == "/half":
            await send(
                {
                    "type": "http.response.start",
                    "status": 200,
                    "headers": [(b"content-length", b"10")],
                }
            )
            await send({"type": "http.response.body", "body": b"abc", "more_body": True})
            raise RuntimeError("half")
        if scope["path"] == "/silent":
            return
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"fine"})

    with trio.fail_after(GUARD):
        async with server(app) as url:
            stream = await connect(url)
            buf = bytearray()
            await stream.send_all(get("/boom"))
            status, headers, body = await read_response(stream, buf)
            assert (status, headers["connection"], body) == (
                500,
                "close",
                b"Internal Server Error\n",
            )
            assert await at_eof(stream)
            assert "the app failed on GET b'/boom'" in caplog.text
            assert "boom" in caplog.text
            stream = await connect(url)
            await stream.send_all(get("/silent"))
            assert (await read_response(stream, bytearray()))[0] == 500  # no response at all
            stream = await connect(url)
            await stream.send_all(get("/half"))
            buf = bytearray()
            while b"abc" not in buf:
                buf += await stream.receive_some(65536)
            assert await at_eof(stream)  # closed: the only way to say "incomplete"
            stream = await connect(url)
            await stream.send_all(get("/fine"))
            assert (await read_response(stream, bytearray()))[2] == b"fine"


@pytest.mark.parametrize(
    ("data", "status", "reason"),
    [
        (
            b"GET / HTTP/1.1\r\n\r\n",
            400,
            "a HTTP/1.1 request needs exactly one Host header (got 0) (at byte 0)",
        ),
        (b"BAD\r\n\r\n", 400, "malformed request line"),
        (b"GET / HTTP/3.0\r\nHost: t\r\n\r\n", 505, "HTTP/3.0 is not supported"),
        (
            b"POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: br, chunked\r\n\r\n",
            501,
            "unsupported transfer coding: br",
        ),
        (
            b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 2000\r\n\r\n",
            413,
            "request body of 2000 bytes; the limit is 1000",
        ),
    ],
)
async def test_malformed_request_is_refused_with_its_reason(
    data: bytes, status: int, reason: str
) -> None:
    app = Recorder()
    with trio.fail_after(GUARD):
        async with server(app, max_body=1000) as url:
            stream = await connect(url)
            await stream.send_all(data)
            got, headers, body = await read_response(stream, bytearray())
            assert got == status
            assert headers["content-type"].startswith("text/plain")
            assert headers["connection"] == "close"
            assert reason in body.decode()
            assert await at_eof(stream)
    assert app.scopes == []


async def test_a_client_gone_before_its_refusal_does_not_end_the_server(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    real = httpd._Connection.write

    async def gone_for_refusals(self: Any, data: bytes) -> None:
        if data.startswith(b"HTTP/1.1 400"):  # as a send() on a connection the client reset
            raise httpd.ClientDisconnected("the client closed the connection")
        await real(self, data)

    monkeypatch.setattr(httpd._Connection, "write", gone_for_refusals)
    app = Recorder()
    with trio.fail_after(GUARD):
        async with server(app) as url:
            bad = await connect(url)
            await bad.send_all(b"NOT HTTP\r\n\r\n")
            assert await at_eof(bad)
            good = await connect(url)
            await good.send_all(get("/after"))
            status, _, body = await read_response(good, bytearray())
            assert status == 200
            assert json.loads(body)["path"] == "/after"


async def test_a_bad_chunked_body_found_while_the_app_reads_is_a_400() -> None:
    app = Recorder()
    with trio.fail_after(GUARD):
        async with server(app, max_body=1000) as url:
            stream = await connect(url)
            await stream.send_all(
                b"POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nab\r\nxyz\r\n"
            )
            status, _, body = await read_response(stream, bytearray())
            assert (status, body) == (400, b"malformed chunk-size line: xyz (at byte 63)\n")


async def test_slow_headers_time_out(autojump_clock: trio.testing.MockClock) -> None:
    async with server(Recorder()) as url:
        stream = await connect(url)
        start = trio.current_time()
        await stream.send_all(b"GET / HTTP/1.1\r\nHo")
        status, _, body = await read_response(stream, bytearray())
        assert status == 408
        assert body == b"request head not complete within 10.0 s\n"
        assert trio.current_time() - start >= httpd.HEADER_TIMEOUT
        # A client that trickles bytes does not get more time: the clock runs from the first.
        stream = await connect(url)
        start = trio.current_time()
        await stream.send_all(b"GET / HTTP/1.1\r\n")
        for _ in range(9):
            await trio.sleep(1)  # the mock clock: no real time passes
            await stream.send_all(b"X-A: b\r\n")
        status, _, _ = await read_response(stream, bytearray())
        assert status == 408
        assert trio.current_time() - start == pytest.approx(httpd.HEADER_TIMEOUT)


async def test_a_stalled_body_is_a_408_and_the_app_sees_a_disconnect(
    autojump_clock: trio.testing.MockClock,
) -> None:
    seen: list[dict[str, Any]] = []

    async def app(scope: dict[str, Any], receive: Callable[..., Any], send: Any) -> None:
        while True:
            message = await receive()
            seen.append(message)
            if message["type"] == "http.disconnect" or not message.get("more_body"):
                return

    async with server(app) as url:
        stream = await connect(url)
        await stream.send_all(b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 100\r\n\r\n")
        start = trio.current_time()
        for _ in range(3):  # data that keeps coming keeps the body alive
            await trio.sleep(httpd.BODY_TIMEOUT / 2)
            await stream.send_all(b"0123456789")
        status, _, body = await read_response(stream, bytearray())
        assert status == 408
        assert body == b"request body stalled: nothing came for 30.0 s\n"
        assert trio.current_time() - start == pytest.approx(2.5 * httpd.BODY_TIMEOUT)
        assert [m["type"] for m in seen][-1] == "http.disconnect"
        assert b"".join(m.get("body", b"") for m in seen) == b"0123456789" * 3
        assert await at_eof(stream)
        # and the server goes on
        again = await connect(url)
        await again.send_all(b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 2\r\n\r\nok")
        status, _, _ = await read_response(again, bytearray())
        assert status == 500  # this app never responds
        assert seen[-1] == {"type": "http.request", "body": b"ok", "more_body": False}


async def test_idle_connections_close(autojump_clock: trio.testing.MockClock) -> None:
    async with server(Recorder()) as url:
        stream = await connect(url)
        start = trio.current_time()
        assert await at_eof(stream)  # nothing sent: closed after the idle timeout, no 408
        assert trio.current_time() - start == pytest.approx(httpd.IDLE_TIMEOUT)
        stream = await connect(url)
        await stream.send_all(get("/"))
        await read_response(stream, bytearray())
        start = trio.current_time()
        assert await at_eof(stream)
        assert trio.current_time() - start == pytest.approx(httpd.IDLE_TIMEOUT)


async def test_cancelling_the_server_closes_its_connections() -> None:
    entered = trio.Event()
    cancelled = trio.Event()

    async def stuck(scope: dict[str, Any], receive: Any, send: Any) -> None:
        entered.set()
        try:
            await trio.sleep_forever()
        finally:
            cancelled.set()

    with trio.fail_after(GUARD):
        async with trio.open_nursery() as nursery:
            url = (
                await nursery.start(
                    lambda task_status: httpd.serve(stuck, "127.0.0.1:0", task_status=task_status)
                )
            )[0]
            stream = await connect(url)
            await stream.send_all(get("/"))
            await entered.wait()
            nursery.cancel_scope.cancel()
        assert cancelled.is_set()
        assert await at_eof(stream)
        with pytest.raises(OSError, match="onnect"):
            await connect(url)  # the listener is closed


async def test_fd_bind_serves_a_listener_made_elsewhere() -> None:
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    port = listener.getsockname()[1]
    with trio.fail_after(GUARD):
        async with server(Recorder(), f"fd://{listener.detach()}") as url:
            assert url == f"http://127.0.0.1:{port}"
            stream = await connect(url)
            await stream.send_all(get("/fd"))
            assert json.loads((await read_response(stream, bytearray()))[2])["path"] == "/fd"


def test_bad_bind_says_what_was_expected() -> None:
    with pytest.raises(ValueError, match="expected HOST:PORT"):
        trio.run(httpd.serve, Recorder(), "localhost")


@pytest.mark.slow
@pytest.mark.parametrize(
    ("choice", "server_header"), [("", "p2pico"), ("hypercorn", "hypercorn-h11")]
)
def test_node_serves_with_ours_unless_told_hypercorn(
    tmp_path: Any, monkeypatch: pytest.MonkeyPatch, choice: str, server_header: str
) -> None:
    from p2pico.testing import start_node

    monkeypatch.setenv("P2PICO_HTTP", choice)
    node = start_node(tmp_path / "n")
    try:
        with node.client() as client:
            r = client.get("/api/node")
            assert r.status_code == 200
            assert r.json()["peer_id"] == node.peer_id
            assert r.headers["server"] == server_header
    finally:
        assert node.stop() == 0


def test_node_refuses_an_unknown_http_server(
    tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from p2pico.testing import start_node

    monkeypatch.setenv("P2PICO_HTTP", "nginx")
    with pytest.raises(
        RuntimeError, match=r"P2PICO_HTTP='nginx': expected 'p2pico' \(the default\) or 'hypercorn'"
    ):
        start_node(tmp_path / "n")
