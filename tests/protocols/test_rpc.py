"""protocols.rpc: the sans-I/O codec of persistent, multiplexed request streams."""

from __future__ import annotations

import pytest

from protocols.framing import MAX_FRAME_SIZE, encode_frame, encode_uvarint
from protocols.rpc import (
    ERROR_CODES,
    MAX_PROTOCOL_LEN,
    RPC_MAX_FRAME,
    Failure,
    Request,
    Response,
    RpcBusy,
    RpcClient,
    RpcProtocolError,
    RpcServer,
)

MSG = "/p2pico/msg/1.0.0"


def test_requests_and_answers_round_trip_out_of_order() -> None:
    client, server = RpcClient(), RpcServer()
    frames = b""
    ids = []
    for i in range(3):
        rid, frame = client.start_request(MSG, f"body {i}".encode())
        ids.append(rid)
        frames += frame
    assert ids == [0, 1, 2]
    assert client.in_flight == 3
    requests = server.receive(frames)
    assert requests == [Request(i, MSG, f"body {i}".encode()) for i in range(3)]
    assert server.in_flight == 3
    # answered 2, 0, 1: each answer goes to its own id
    out = (
        server.respond(2, b"two")
        + server.fail(0, "handler-failed", "boom")
        + server.respond(1, b"")
    )
    assert server.in_flight == 0
    assert client.receive(out) == [
        Response(2, b"two"),
        Failure(0, "handler-failed", "boom"),
        Response(1, b""),
    ]
    assert client.in_flight == 0


def test_bytes_may_arrive_one_at_a_time() -> None:
    client, server = RpcClient(), RpcServer()
    _, frame = client.start_request(MSG, b"x" * 300)
    got: list[Request] = []
    for byte in frame:
        got += server.receive(bytes([byte]))
    assert got == [Request(0, MSG, b"x" * 300)]
    answer = server.respond(0, b"y" * 200)
    answers: list[Response | Failure] = []
    for byte in answer[:-1]:
        answers += client.receive(bytes([byte]))
    assert answers == []
    assert client.buffered == len(answer) - 1
    assert client.receive(answer[-1:]) == [Response(0, b"y" * 200)]


def test_every_error_code_round_trips() -> None:
    for code in ERROR_CODES.values():
        client, server = RpcClient(), RpcServer()
        _, frame = client.start_request(MSG, b"")
        server.receive(frame)
        assert client.receive(server.fail(0, code, "why ü")) == [Failure(0, code, "why ü")]


def test_a_long_reason_is_cut_at_a_character_boundary() -> None:
    client, server = RpcClient(), RpcServer()
    _, frame = client.start_request(MSG, b"")
    server.receive(frame)
    [failure] = client.receive(server.fail(0, "handler-failed", "é" * 2000))
    assert isinstance(failure, Failure)
    assert failure.reason == "é" * 512


def test_in_flight_is_bounded_on_both_sides() -> None:
    client = RpcClient(max_in_flight=2)
    client.start_request(MSG, b"")
    client.start_request(MSG, b"")
    with pytest.raises(RpcBusy, match="2 requests in flight"):
        client.start_request(MSG, b"")
    # a peer that ignores the bound is cut off
    server = RpcServer(max_in_flight=2)
    sender = RpcClient(max_in_flight=10)
    flood = b"".join(sender.start_request(MSG, b"")[1] for _ in range(3))
    with pytest.raises(RpcProtocolError, match=r"frame 3: more than 2 requests in flight"):
        server.receive(flood)


def test_an_answered_request_frees_its_slot() -> None:
    client, server = RpcClient(max_in_flight=1), RpcServer(max_in_flight=1)
    for i in range(5):
        rid, frame = client.start_request(MSG, b"")
        assert rid == i
        server.receive(frame)
        assert client.receive(server.respond(rid, b"ok")) == [Response(rid, b"ok")]


def test_an_abandoned_request_keeps_its_slot_until_its_answer_comes() -> None:
    client, server = RpcClient(max_in_flight=1), RpcServer()
    _, frame = client.start_request(MSG, b"")
    server.receive(frame)
    client.abandon(0)
    assert client.in_flight == 1  # the responder still counts it
    with pytest.raises(RpcBusy):
        client.start_request(MSG, b"")
    assert client.receive(server.respond(0, b"late")) == []
    assert client.late == 1
    assert client.in_flight == 0
    client.start_request(MSG, b"")


def test_fail_all_returns_what_was_outstanding() -> None:
    client = RpcClient()
    for _ in range(3):
        client.start_request(MSG, b"")
    client.abandon(1)
    assert client.fail_all() == [0, 2]
    assert client.in_flight == 0


def test_request_limits() -> None:
    client = RpcClient()
    with pytest.raises(ValueError, match="protocol name must be 1-256 bytes"):
        client.start_request("", b"")
    with pytest.raises(ValueError, match="protocol name must be 1-256 bytes"):
        client.start_request("/" + "x" * MAX_PROTOCOL_LEN, b"")
    with pytest.raises(ValueError, match=f"exceeds the maximum of {MAX_FRAME_SIZE}"):
        client.start_request(MSG, bytes(MAX_FRAME_SIZE + 1))
    rid, frame = client.start_request("/" + "x" * (MAX_PROTOCOL_LEN - 1), bytes(MAX_FRAME_SIZE))
    assert len(frame) <= RPC_MAX_FRAME + 9
    [request] = RpcServer().receive(frame)
    assert request.id == rid
    assert len(request.body) == MAX_FRAME_SIZE


def test_a_response_too_large_is_refused_before_it_is_sent() -> None:
    client, server = RpcClient(), RpcServer()
    _, frame = client.start_request(MSG, b"")
    server.receive(frame)
    with pytest.raises(ValueError, match="exceeds the maximum frame"):
        server.respond(0, bytes(RPC_MAX_FRAME))
    assert server.in_flight == 1  # still open: answer it with an error instead
    assert client.receive(server.fail(0, "too-large", "no")) == [Failure(0, "too-large", "no")]


def test_server_answers_only_open_ids() -> None:
    server = RpcServer()
    with pytest.raises(KeyError, match="request id 0 is not open"):
        server.respond(0, b"")
    server.receive(RpcClient().start_request(MSG, b"")[1])
    with pytest.raises(ValueError, match="unknown error code 'nope'"):
        server.fail(0, "nope", "")


def _frame(*parts: bytes) -> bytes:
    return encode_frame(b"".join(parts))


@pytest.mark.parametrize(
    ("data", "error"),
    [
        (_frame(b""), r"frame 1: empty"),
        (_frame(b"\x01"), r"frame 1: ends inside the id"),
        (_frame(b"\x01\x80\x00"), r"frame 1: bad id: non-minimal varint"),
        (_frame(b"\x02\x00ok"), r"frame 1: expected a request \(0x01\), got kind 0x02"),
        (_frame(b"\x01\x00"), r"frame 1: ends inside the protocol length"),
        (_frame(b"\x01\x00\x00"), r"frame 1: protocol name of 0 bytes"),
        (_frame(b"\x01\x00\x05/ab"), r"frame 1: protocol name of 5 bytes"),
        (_frame(b"\x01\x00\x02\xff\xfe"), r"frame 1: protocol name is not UTF-8"),
        (
            _frame(b"\x01\x01\x02/a") + _frame(b"\x01\x01\x02/a"),
            r"frame 2: request id 1 after 1 \(ids must increase\)",
        ),
        (encode_uvarint(RPC_MAX_FRAME + 1), r"after frame 0: frame of \d+ bytes exceeds"),
    ],
)
def test_server_refuses_malformed_frames(data: bytes, error: str) -> None:
    with pytest.raises(RpcProtocolError, match=error):
        RpcServer().receive(data)


@pytest.mark.parametrize(
    ("data", "error"),
    [
        (_frame(b"\x01\x00\x02/a"), r"frame 1: expected a response or error"),
        (_frame(b"\x02\x07ok"), r"frame 1: answer to unknown request id 7"),
        (_frame(b"\x03\x00"), r"frame 1: error without a code"),
        (_frame(b"\x03\x00\x02\xff"), r"frame 1: error reason is not UTF-8"),
    ],
)
def test_client_refuses_malformed_frames(data: bytes, error: str) -> None:
    client = RpcClient()
    client.start_request(MSG, b"")
    with pytest.raises(RpcProtocolError, match=error):
        client.receive(data)


def test_an_answer_comes_once() -> None:
    client, server = RpcClient(), RpcServer()
    _, frame = client.start_request(MSG, b"")
    server.receive(frame)
    answer = server.respond(0, b"a")
    client.receive(answer)
    with pytest.raises(RpcProtocolError, match="answer to unknown request id 0"):
        client.receive(answer)


def test_an_unknown_error_code_is_reported_by_number() -> None:
    client = RpcClient()
    client.start_request(MSG, b"")
    assert client.receive(_frame(b"\x03\x00\x63why")) == [Failure(0, "code 99", "why")]
