"""The Helia harness's reply reader (p2pico.testing.Helia.read_json), without Node: replies
split across reads at any point, several in one read, one larger than many reads."""

from __future__ import annotations

import json
from typing import Any, cast

import pytest
import trio

from p2pico.testing import Helia


class _Stdout:
    """A process's stdout that gives `chunks`, one per receive, then EOF."""

    def __init__(self, chunks: list[bytes]) -> None:
        self.chunks = list(chunks)
        self.receives = 0

    async def receive_some(self, max_bytes: int) -> bytes:
        self.receives += 1
        if not self.chunks:
            return b""
        chunk = self.chunks.pop(0)
        assert len(chunk) <= max_bytes
        return chunk


class _Process:
    def __init__(self, chunks: list[bytes]) -> None:
        self.stdout = _Stdout(chunks)


def _helia(chunks: list[bytes]) -> Helia:
    return Helia(cast(trio.Process, _Process(chunks)))


async def _read_all(helia: Helia, n: int) -> list[dict[str, Any]]:
    return [await helia.read_json() for _ in range(n)]


REPLIES = [{"id": 1, "ok": True}, {"id": 2, "hex": "ab" * 5000}, {"id": 3, "ok": False}]
WIRE = b"".join(json.dumps(r).encode() + b"\n" for r in REPLIES)


@pytest.mark.parametrize("size", [1, 2, 7, 64, 4096, len(WIRE)])
async def test_replies_split_anywhere_read_back_whole(size: int) -> None:
    chunks = [WIRE[i : i + size] for i in range(0, len(WIRE), size)]
    assert await _read_all(_helia(chunks), 3) == REPLIES


async def test_a_reply_ending_at_a_read_boundary() -> None:
    first = json.dumps(REPLIES[0]).encode() + b"\n"
    rest = WIRE[len(first) :]
    process = _Process([first, rest])
    assert await _read_all(Helia(cast(trio.Process, process)), 3) == REPLIES
    assert process.stdout.receives == 2


async def test_a_reply_larger_than_many_reads() -> None:
    big = {"id": 9, "hex": "cd" * (3 << 20)}  # 6 MiB of hex, as a CAR reply would be
    line = json.dumps(big).encode() + b"\n"
    chunks = [line[i : i + (1 << 20)] for i in range(0, len(line), 1 << 20)]
    assert await _read_all(_helia(chunks), 1) == [big]


async def test_eof_inside_a_reply_says_so() -> None:
    with pytest.raises(RuntimeError, match="Helia harness exited"):
        await _helia([b'{"id": 1, "ok"']).read_json()
