"""protocols.messages: the record push on /p2pico/loc/1.0.0."""

from __future__ import annotations

import pytest

from dag import cbor
from protocols import messages
from protocols.messages import MAX_PUSH, MessageError


def test_push_round_trips_and_is_told_apart_from_other_requests() -> None:
    data = messages.encode_loc_push([b"one", b"two"])
    assert messages.decode_loc_push(data) == [b"one", b"two"]
    assert messages.decode_loc_push(messages.encode_loc_request(None)) is None
    assert messages.decode_loc_push(messages.encode_loc_request("did:key:z6Mk")) is None


@pytest.mark.parametrize(
    ("msg", "error"),
    [
        ({"op": "push"}, "missing field 'records'"),
        ({"op": "push", "records": "x"}, "field 'records' must be list"),
        ({"op": "push", "records": [b"ok", "no"]}, "every entry of 'records' must be bytes"),
        (
            {"op": "push", "records": [b""] * (MAX_PUSH + 1)},
            f"a push carries at most {MAX_PUSH} records, got {MAX_PUSH + 1}",
        ),
    ],
)
def test_bad_pushes_are_refused_with_the_reason(msg: dict[str, object], error: str) -> None:
    with pytest.raises(MessageError, match=error):
        messages.decode_loc_push(cbor.encode(msg))


def test_a_push_must_be_a_map() -> None:
    with pytest.raises(MessageError, match="a message must be a map"):
        messages.decode_loc_push(cbor.encode([1]))
