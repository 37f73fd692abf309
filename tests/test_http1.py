"""p2pico.http1: the sans-I/O HTTP/1.1 server codec, fed bytes (no sockets)."""

from __future__ import annotations

import pytest

from p2pico import http1
from p2pico.http1 import (
    CLOSED,
    NEED_DATA,
    PAUSED,
    Connection,
    Data,
    EndOfMessage,
    LocalProtocolError,
    ProtocolError,
    Request,
)

# (method, target, version, headers, body) of what the server should see.
Seen = tuple[str, bytes, str, list[tuple[bytes, bytes]], bytes]


def drive(pieces: list[bytes], conn: Connection | None = None) -> tuple[list[Seen], list[bytes]]:
    """Feed ``pieces`` one at a time; answer each request with a 200 as soon as it is
    complete (so pipelined requests are served in order); return what was seen and the
    responses written."""
    conn = conn or Connection()
    seen: list[Seen] = []
    out: list[bytes] = []
    request: Request | None = None
    body = b""
    for piece in [*pieces, b""]:
        conn.receive_data(piece)
        while True:
            event = conn.next_event()
            if isinstance(event, Request):
                request, body = event, b""
            elif isinstance(event, Data):
                body += event.data
            elif isinstance(event, EndOfMessage):
                assert request is not None
                seen.append(
                    (request.method, request.target, request.http_version, request.headers, body)
                )
                out.append(
                    conn.response(200, [(b"content-type", b"text/plain")], b"ok", final=True)
                )
                if not conn.keep_alive:
                    return seen, out
                conn.start_next_cycle()
            elif event is NEED_DATA or event is CLOSED:
                break
            else:
                raise AssertionError(f"unexpected {event!r}")
    return seen, out


GET = b"GET /sky/cloud/eci/rid/count?x=1 HTTP/1.1\r\nHost: a\r\nUser-Agent: t\r\n\r\n"
POST = (
    b"POST /sky/event/eci/none/counter/inc HTTP/1.1\r\nHost: a\r\n"
    b'Content-Type: application/json\r\nContent-Length: 8\r\n\r\n{"by":2}'
)
CHUNKED = (
    b"POST /api/import HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
    b"5;name=value\r\nhello\r\n"
    b"1\r\n \r\n"
    b"5\r\nworld\r\n"
    b"0\r\nX-Trailer: ignored\r\n\r\n"
)
PIPELINE = GET + POST + CHUNKED + GET

EXPECTED: list[Seen] = [
    ("GET", b"/sky/cloud/eci/rid/count?x=1", "1.1", [(b"host", b"a"), (b"user-agent", b"t")], b""),
    (
        "POST",
        b"/sky/event/eci/none/counter/inc",
        "1.1",
        [(b"host", b"a"), (b"content-type", b"application/json"), (b"content-length", b"8")],
        b'{"by":2}',
    ),
    (
        "POST",
        b"/api/import",
        "1.1",
        [(b"host", b"a"), (b"transfer-encoding", b"chunked")],
        b"hello world",
    ),
]


def test_pipelined_requests_in_one_piece_are_answered_in_order() -> None:
    seen, out = drive([PIPELINE])
    assert seen == [*EXPECTED, EXPECTED[0]]
    assert len(out) == 4
    assert all(o.startswith(b"HTTP/1.1 200 OK\r\n") and o.endswith(b"\r\n\r\nok") for o in out)


def test_split_at_every_byte_boundary() -> None:
    for i in range(len(PIPELINE) + 1):
        seen, _ = drive([PIPELINE[:i], PIPELINE[i:]])
        assert seen == [*EXPECTED, EXPECTED[0]], f"split at byte {i}"


def test_one_byte_at_a_time() -> None:
    seen, _ = drive([PIPELINE[i : i + 1] for i in range(len(PIPELINE))])
    assert seen == [*EXPECTED, EXPECTED[0]]


def test_a_request_waits_until_the_response_is_sent() -> None:
    conn = Connection()
    conn.receive_data(GET + GET)
    assert isinstance(conn.next_event(), Request)
    assert isinstance(conn.next_event(), EndOfMessage)
    assert conn.next_event() is PAUSED  # the second one waits for our response
    with pytest.raises(LocalProtocolError):
        conn.start_next_cycle()
    conn.response(204, [], final=True)
    conn.start_next_cycle()
    assert isinstance(conn.next_event(), Request)


def test_bare_lf_lines_and_leading_empty_lines() -> None:
    seen, _ = drive([b"\r\n\r\nGET / HTTP/1.1\nHost: a\n\n"])
    assert seen == [("GET", b"/", "1.1", [(b"host", b"a")], b"")]


def test_header_values_are_trimmed_and_names_lowercased() -> None:
    seen, _ = drive([b"GET / HTTP/1.1\r\nHOST:  a \t\r\nX-Empty:\r\n\r\n"])
    assert seen[0][3] == [(b"host", b"a"), (b"x-empty", b"")]


def test_identical_repeated_content_lengths_are_accepted() -> None:
    seen, _ = drive(
        [b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3, 3\r\nContent-Length: 3\r\n\r\nabc"]
    )
    assert seen[0][4] == b"abc"


def test_client_closing_between_requests_is_closed_and_inside_one_an_error() -> None:
    conn = Connection()
    conn.receive_data(b"")
    assert conn.next_event() is CLOSED
    conn = Connection()
    conn.receive_data(b"GET / HTTP/1.1\r\nHo")
    assert conn.next_event() is NEED_DATA
    conn.receive_data(b"")
    with pytest.raises(ProtocolError) as e:
        conn.next_event()
    assert (e.value.status, e.value.offset) == (400, 18)
    assert "closed inside a request head" in e.value.reason
    conn = Connection()
    conn.receive_data(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nab")
    assert isinstance(conn.next_event(), Request)
    assert conn.next_event() == Data(b"ab")
    conn.receive_data(b"")
    with pytest.raises(ProtocolError, match="3 body bytes to come"):
        conn.next_event()


BAD: list[tuple[bytes, int, str, int | None]] = [
    (b"GET /\r\n\r\n", 400, "malformed request line", 0),
    (b"GET  / HTTP/1.1\r\nHost: a\r\n\r\n", 400, "malformed request line", 0),
    (b"G(T / HTTP/1.1\r\nHost: a\r\n\r\n", 400, "malformed request line", 0),
    (b"GET / HTTP/2.0\r\nHost: a\r\n\r\n", 505, "HTTP/2.0 is not supported", 0),
    (b"GET / HTTP/1.1\r\n\r\n", 400, "exactly one Host header (got 0)", 0),
    (b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400, "exactly one Host header (got 2)", 0),
    (b"GET / HTTP/1.1\r\nHost: a\r\nBad Name: x\r\n\r\n", 400, "malformed header line", 25),
    (b"GET / HTTP/1.1\r\nHost : a\r\n\r\n", 400, "malformed header line", 16),
    (b"GET / HTTP/1.1\r\nHost: a\r\nX: 1\r\n  folded\r\n\r\n", 400, "obsolete line folding", 31),
    (b"GET / HTTP/1.1\r\nHost: a\r\nX: a\x00b\r\n\r\n", 400, "control character in header 'X'", 25),
    (
        b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: x1\r\n\r\n",
        400,
        "Content-Length is not a number",
        26,
    ),
    (
        b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: -1\r\n\r\n",
        400,
        "Content-Length is not a number",
        26,
    ),
    (
        b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
        400,
        "several differing Content-Length",
        45,
    ),
    (
        b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n",
        400,
        "both Transfer-Encoding and Content-Length",
        0,
    ),
    (
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip\r\n\r\n",
        400,
        "does not end with chunked",
        0,
    ),
    (
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
        501,
        "unsupported transfer coding: gzip",
        0,
    ),
    (
        b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n",
        400,
        "Transfer-Encoding in a HTTP/1.0 request",
        0,
    ),
    (
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
        400,
        "malformed chunk-size line",
        56,
    ),
    (
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nabX\r\n",
        400,
        "chunk data not followed by CRLF",
        61,
    ),
]


@pytest.mark.parametrize(("data", "status", "reason", "offset"), BAD)
def test_malformed_requests(data: bytes, status: int, reason: str, offset: int | None) -> None:
    for pieces in ([data], [data[i : i + 1] for i in range(len(data))]):
        conn = Connection()
        with pytest.raises(ProtocolError) as e:
            drive(pieces, conn)
        assert e.value.status == status
        assert reason in e.value.reason
        assert e.value.offset == offset
        response = http1.error_response(e.value)
        assert response.startswith(b"HTTP/1.1 %d " % status)
        assert b"\r\nconnection: close\r\n" in response
        assert b"content-type: text/plain" in response
        where = "" if offset is None else f" (at byte {offset})"
        assert response.endswith(f"{e.value.reason}{where}\n".encode())


def test_head_limit_is_431_whether_or_not_the_head_ended() -> None:
    big = b"GET / HTTP/1.1\r\nHost: a\r\nX: " + b"a" * 70_000
    for data in (big, big + b"\r\n\r\n"):
        conn = Connection()
        conn.receive_data(data)
        with pytest.raises(ProtocolError) as e:
            conn.next_event()
        assert e.value.status == 431
        assert "over 65536 bytes" in e.value.reason
    # Just under the limit is fine.
    ok = b"GET / HTTP/1.1\r\nHost: a\r\nX: "
    ok += b"a" * (http1.MAX_HEAD - len(ok) - 4) + b"\r\n\r\n"
    seen, _ = drive([ok])
    assert len(seen) == 1


def test_body_limit_is_413_by_content_length_or_by_chunks() -> None:
    conn = Connection(max_body=10)
    conn.receive_data(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 11\r\n\r\n")
    with pytest.raises(ProtocolError) as e:
        conn.next_event()
    assert (e.value.status, e.value.reason) == (413, "request body of 11 bytes; the limit is 10")
    conn = Connection(max_body=10)
    conn.receive_data(
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n6\r\nabcdef\r\n"
    )
    assert isinstance(conn.next_event(), Request)
    assert conn.next_event() == Data(b"abcdef")
    conn.receive_data(b"5\r\nabcde\r\n")
    with pytest.raises(ProtocolError) as e:
        conn.next_event()
    assert e.value.status == 413
    assert http1.MAX_BODY == 128 * 1024 * 1024
    conn = Connection()
    conn.receive_data(
        b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: %d\r\n\r\n" % (http1.MAX_BODY + 1)
    )
    with pytest.raises(ProtocolError, match="413"):
        conn.next_event()


def test_keep_alive_rules() -> None:
    cases = [
        (b"GET / HTTP/1.1\r\nHost: a\r\n\r\n", True, None),
        (b"GET / HTTP/1.1\r\nHost: a\r\nConnection: Close\r\n\r\n", False, b"connection: close"),
        (
            b"GET / HTTP/1.1\r\nHost: a\r\nConnection: te, close\r\n\r\n",
            False,
            b"connection: close",
        ),
        (b"GET / HTTP/1.0\r\n\r\n", False, b"connection: close"),
        (b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n", True, b"connection: keep-alive"),
    ]
    for data, keep, header in cases:
        conn = Connection()
        conn.receive_data(data)
        assert isinstance(conn.next_event(), Request)
        out = conn.response(200, [], b"x", final=True)
        assert conn.keep_alive is keep, data
        if header is None:
            assert b"connection:" not in out
        else:
            assert header + b"\r\n" in out
    # The app may close a 1.1 connection with its own header.
    conn = Connection()
    conn.receive_data(GET)
    conn.next_event()
    conn.response(200, [(b"Connection", b"close")], b"", final=True)
    assert not conn.keep_alive


def test_pipelining_stops_after_a_request_that_closes() -> None:
    close = b"GET /1 HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n"
    seen, out = drive([close + GET])
    assert [s[1] for s in seen] == [b"/1"]
    assert len(out) == 1


def head_of(out: bytes) -> tuple[bytes, dict[bytes, bytes], bytes]:
    head, _, body = out.partition(b"\r\n\r\n")
    status, *lines = head.split(b"\r\n")
    return status, dict(line.split(b": ", 1) for line in lines), body


def request(conn: Connection, data: bytes) -> None:
    conn.receive_data(data)
    assert isinstance(conn.next_event(), Request)


def test_response_with_known_body_has_content_length_date_and_server() -> None:
    conn = Connection()
    request(conn, GET)
    out = conn.response(404, [(b"content-type", b"application/json")], b'{"a":1}', final=True)
    status, headers, body = head_of(out)
    assert status == b"HTTP/1.1 404 Not Found"
    assert headers[b"content-length"] == b"7"
    assert headers[b"content-type"] == b"application/json"
    assert headers[b"server"] == b"p2pico"
    assert headers[b"date"].endswith(b" GMT")
    assert body == b'{"a":1}'
    assert conn.response_done


def test_head_response_keeps_the_length_and_drops_the_body() -> None:
    conn = Connection()
    request(conn, b"HEAD / HTTP/1.1\r\nHost: a\r\n\r\n")
    out = conn.response(200, [], b"hello", final=True)
    _, headers, body = head_of(out)
    assert headers[b"content-length"] == b"5"
    assert body == b""
    conn = Connection()
    request(conn, b"HEAD / HTTP/1.1\r\nHost: a\r\n\r\n")
    out = conn.response(200, [(b"content-length", b"12")], b"", final=False)
    assert conn.body(b"hello world!") == b""
    assert conn.end() == b""
    assert head_of(out)[1][b"content-length"] == b"12"
    assert conn.keep_alive


def test_streaming_response_is_chunked_on_1_1_and_close_delimited_on_1_0() -> None:
    conn = Connection()
    request(conn, GET)
    out = conn.response(200, [(b"transfer-encoding", b"identity")], b"ab", final=False)
    _, headers, body = head_of(out)
    assert headers[b"transfer-encoding"] == b"chunked"
    assert b"content-length" not in headers
    assert body == b"2\r\nab\r\n"
    assert conn.body(b"") == b""  # an empty chunk would end the body: none is sent
    assert conn.body(b"c" * 17) == b"11\r\n" + b"c" * 17 + b"\r\n"
    assert conn.end() == b"0\r\n\r\n"
    assert conn.keep_alive
    conn = Connection()
    request(conn, b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
    out = conn.response(200, [], b"ab", final=False)
    _, headers, body = head_of(out)
    assert headers[b"connection"] == b"close"
    assert b"transfer-encoding" not in headers
    assert body == b"ab"
    assert conn.body(b"cd") == b"cd"
    assert conn.end() == b""
    assert not conn.keep_alive


def test_response_content_length_is_held_to() -> None:
    conn = Connection()
    request(conn, GET)
    conn.response(200, [(b"content-length", b"4")], b"ab", final=False)
    with pytest.raises(LocalProtocolError, match="longer than its Content-Length"):
        conn.body(b"cde")
    conn = Connection()
    request(conn, GET)
    conn.response(200, [(b"content-length", b"4")], b"ab", final=False)
    conn.end()
    assert not conn.keep_alive  # short: the client cannot find the end otherwise


def test_204_and_304_carry_no_body_headers() -> None:
    for status in (204, 304):
        conn = Connection()
        request(conn, GET)
        out = conn.response(status, [], b"", final=True)
        assert b"content-length" not in out
        assert b"transfer-encoding" not in out
        assert out.endswith(b"\r\n\r\n")


def test_response_header_injection_is_refused_before_anything_is_started() -> None:
    conn = Connection()
    request(conn, GET)
    with pytest.raises(LocalProtocolError, match="forbidden character"):
        conn.response(200, [(b"x", b"a\r\nSet-Cookie: b")], b"", final=True)
    assert not conn.response_started
    out = conn.response(500, [], b"", final=True)
    assert out.startswith(b"HTTP/1.1 500 Internal Server Error\r\n")


def test_expect_100_continue() -> None:
    conn = Connection()
    request(
        conn, b"POST / HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 3\r\n\r\n"
    )
    assert conn.expects_continue
    assert conn.next_event() is NEED_DATA
    assert conn.continue_response() == b"HTTP/1.1 100 Continue\r\n\r\n"
    assert not conn.expects_continue
    conn.receive_data(b"abc")
    assert conn.next_event() == Data(b"abc")
    assert isinstance(conn.next_event(), EndOfMessage)
    # The client may send the body anyway: then it is not waiting any more.
    conn = Connection()
    request(
        conn, b"POST / HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 3\r\n\r\nab"
    )
    assert conn.expects_continue
    assert conn.next_event() == Data(b"ab")
    assert not conn.expects_continue
    # Not for a request without a body, nor for HTTP/1.0.
    for data in (
        b"GET / HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\n\r\n",
        b"POST / HTTP/1.0\r\nExpect: 100-continue\r\nContent-Length: 3\r\n\r\n",
    ):
        conn = Connection()
        request(conn, data)
        assert not conn.expects_continue


def test_a_body_of_many_tiny_chunks_comes_out_joined_from_one_buffer() -> None:
    # Each call takes every chunk the buffer holds and slices the buffer once, so a client
    # sending 1-byte chunks costs linear time (not a copy of the rest of the buffer per chunk).
    body = bytes(range(256)) * 40
    chunks = b"".join(b"1\r\n%s\r\n" % body[i : i + 1] for i in range(len(body)))
    conn = Connection()
    conn.receive_data(b"POST /x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n" + chunks)
    assert isinstance(conn.next_event(), Request)
    first = conn.next_event()
    assert isinstance(first, Data)
    assert first.data == body
    assert conn.next_event() is NEED_DATA  # the last chunk and the trailers are still to come
    conn.receive_data(b"0\r\n\r\n")
    assert isinstance(conn.next_event(), EndOfMessage)
    assert conn.next_event() is PAUSED
    assert conn.buffered == 0


def test_chunk_line_too_long_and_trailers_too_long() -> None:
    conn = Connection()
    request(conn, b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n")
    conn.receive_data(b"1;" + b"x" * 5000)
    with pytest.raises(ProtocolError, match="chunk-size line too long"):
        conn.next_event()
    conn = Connection()
    request(conn, b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n")
    conn.receive_data(b"X: " + b"y" * 70_000)
    with pytest.raises(ProtocolError) as e:
        conn.next_event()
    assert e.value.status == 431


def test_absolute_form_and_asterisk_targets_are_passed_through() -> None:
    seen, _ = drive(
        [b"OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\nGET http://a/x?y HTTP/1.1\r\nHost: a\r\n\r\n"]
    )
    assert [s[1] for s in seen] == [b"*", b"http://a/x?y"]
