"""The OpenWest 2018 connections game on three real engines (issue 7, "Must show" 1).

``scripts/demo/openwest.py`` plays the whole scripted game once (69 phones, each with its
own cookie jar, signing up through the kiosk's QR codes; connections, a pending one, a
lost-cookie recovery, the new-day roll-over, a forged score, moves to the home engine);
``play`` asserts each step as it goes, and these tests check what it left behind.
Waiting is on conditions (the collection's counts, a contact's inbox), never on time.
"""

from __future__ import annotations

import os
import struct
import sys
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts" / "demo"))

import openwest

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def played(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[openwest.Game, dict[str, Any]]]:
    workdir = tmp_path_factory.mktemp("openwest")
    with openwest.three_engines(workdir) as (g, k, h):
        game = openwest.Game(g, k, h, log=lambda line: None)
        try:
            report = openwest.play(game, players=69, day_one=40)
            yield game, report
        finally:
            game.close()


def test_scores_equal_the_connections_made(played: tuple[openwest.Game, dict[str, Any]]) -> None:
    game, report = played
    assert len(game.phones) == 69
    assert report["connections"] == len(game.pairs) > 69
    # every player's verified count is the number of connections the phones made
    counts = game.collection("counts")
    expected = {pin: n for pin, n in game.expected_counts().items() if n}
    assert counts == expected
    # and each owner pico agrees about its own connections
    for pin in sorted(game.phones)[:10]:
        mine = {p for pair in game.pairs if pin in pair for p in pair} - {pin}
        did = game.owner_did(pin)
        host = game.h if pin in report["moved"] else game.g
        assert set(host.query(did, "OpenWest2018.attendee", "contacts")) == mine
    # today's scores are the counts less yesterday's
    scores = {p: s for p, s in game.collection("scores").items() if s}
    assert scores == {
        p: n - game.day_one_counts.get(p, 0)
        for p, n in counts.items()
        if n - game.day_one_counts.get(p, 0)
    }
    # the pending connection vested, and the recovered phone connects again
    pending = report["pending"]
    assert frozenset((pending["scanner"], pending["scanned"])) in game.pairs
    assert counts[report["recovered"]] >= 1
    assert game.collection("winners")[0]["day"] == 1


def test_a_forged_score_event_is_rejected(played: tuple[openwest.Game, dict[str, Any]]) -> None:
    game, _ = played
    pin = sorted(game.phones)[2]
    before = game.collection("counts")
    attacks = len(game.collection("attacks"))
    openwest._forge_score(game, pin, before[pin] + 50)
    # the forged count is recorded as an attack and changed nothing
    after = game.collection("attacks")
    assert len(after) == attacks + 1
    assert after[-1]["count"] == before[pin] + 50
    assert game.collection("counts") == before
    # the pico's own signed count, sent the same way, verifies
    did = game.owner_did(pin)
    signed = game.g.query(did, "OpenWest2018.attendee", "signed_count")
    assert signed["count"] == before[pin]
    [bus] = game.g.query(
        did, "io.picolabs.subscription", "established", key="Tx_role", value="collection"
    )
    game.g.event(bus["Tx"], "attendee:new_connection", count=signed["count"], signed=signed)
    assert len(game.collection("attacks")) == attacks + 1
    # a real signature replayed with another count does not
    game.g.event(bus["Tx"], "attendee:new_connection", count=before[pin] + 1, signed=signed)
    assert game.collection("counts") == before
    assert len(game.collection("attacks")) == attacks + 2


def test_moved_players_subscriptions_still_work(
    played: tuple[openwest.Game, dict[str, Any]],
) -> None:
    game, report = played
    moved = report["moved"]
    assert len(moved) >= 3
    hosted_home = {p["did"] for p in game.h.http.get("/api/picos").json()}
    hosted_game = {p["did"] for p in game.g.http.get("/api/picos").json()}
    counts = game.collection("counts")
    for pin in moved:
        did = game.owner_did(pin)
        assert did in hosted_home
        assert did not in hosted_game
        contacts = game.h.query(did, "OpenWest2018.attendee", "contacts")
        assert len(contacts) == counts[pin] == report["after_moves"][pin]
        # every subscription it had when it moved carried a message each way (play
        # waited for each); the connections made after the move are new contacts
        messaged = report["messaged"][pin]
        assert set(messaged) <= set(contacts)
        assert len(messaged) >= 1
        inbox = game.h.query(did, "OpenWest2018.attendee", "inbox")
        assert {m["from"] for m in inbox} >= set(messaged)
        for other in messaged:
            other_host = game.h if other in moved else game.g
            theirs = other_host.query(game.owner_did(other), "OpenWest2018.attendee", "inbox")
            assert any(
                m["from"] == pin and m["text"] == f"hello from {pin} at home" for m in theirs
            )


def _png_rows(path: Path) -> tuple[int, int, list[bytes]]:
    """Decode an 8-bit RGB/RGBA PNG (what Chromium writes): width, height, raw rows."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, idat, width = 8, b"", 0
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        kind, body = data[pos + 4 : pos + 8], data[pos + 8 : pos + 8 + length]
        if kind == b"IHDR":
            width, height, depth, color = struct.unpack(">IIBB", body[:10])
            assert depth == 8, depth
            assert color in (2, 6), color
            bpp = 3 if color == 2 else 4
        elif kind == b"IDAT":
            idat += body
        pos += 12 + length
    raw, stride, rows, prev = zlib.decompress(idat), width * bpp, [], bytes(width * bpp)
    for y in range(height):
        f, line = (
            raw[y * (stride + 1)],
            bytearray(raw[y * (stride + 1) + 1 : (y + 1) * (stride + 1)]),
        )
        for i in range(stride):
            a = line[i - bpp] if i >= bpp else 0
            b, c = prev[i], prev[i - bpp] if i >= bpp else 0
            if f == 1:
                line[i] = (line[i] + a) & 255
            elif f == 2:
                line[i] = (line[i] + b) & 255
            elif f == 3:
                line[i] = (line[i] + (a + b) // 2) & 255
            elif f == 4:
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                line[i] = (line[i] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 255
        prev = bytes(line)
        rows.append(prev if bpp == 3 else bytes(v for j, v in enumerate(prev) if j % 4 != 3))
    return width, height, rows


# The leaderboard's row colours (OpenWest2018.collection.ui), first place to fifth.
PLACES = [
    (0xFF, 0xD8, 0x4D),
    (0xC9, 0xD3, 0xDE),
    (0xE6, 0xA9, 0x74),
    (0xA9, 0xD8, 0xF5),
    (0xB5, 0xE6, 0xA5),
]


@pytest.mark.skipif(
    openwest.chromium() is None and not os.environ.get("CI"),
    reason="chromium is not installed (apt-get install chromium)",
)
def test_the_leaderboard_page_renders_the_top_five(
    played: tuple[openwest.Game, dict[str, Any]], tmp_path: Path
) -> None:
    game, _ = played
    url = game.leaderboard_url()
    assert httpx.get(url).headers["content-type"].startswith("text/html")
    top = openwest._top_five(game.collection("scores"))
    assert len(top) == 5
    # what Chromium rendered: the five rows, in order, with pins and scores
    dom = openwest.rendered_dom(url)
    assert "<h1>Top Five Scores</h1>" in dom
    for rank, (pin, score) in enumerate(top, 1):
        row = dom.split(f'<tr class="place{rank}">', 1)[1].split("</tr>", 1)[0]
        assert f'<td class="pin">{pin}</td>' in row
        assert f'<td class="score">{score}</td>' in row
    assert '<tr class="place6">' not in dom
    # the screenshot shows five rows, each in its place's colour, top to bottom
    shot = openwest.screenshot(url, tmp_path / "leaderboard.png")
    width, height, rows = _png_rows(shot)
    assert (width, height) == (1000, 800)
    first_row_of: dict[int, int] = {}
    for y, row in enumerate(rows):
        pixels = {tuple(row[i : i + 3]) for i in range(0, len(row), 3 * 7)}
        for place, colour in enumerate(PLACES):
            if colour in pixels:
                first_row_of.setdefault(place, y)
    assert sorted(first_row_of) == [0, 1, 2, 3, 4], first_row_of
    ys = [first_row_of[p] for p in range(5)]
    assert ys == sorted(ys)


def test_an_owner_pico_exports_json_and_csv(played: tuple[openwest.Game, dict[str, Any]]) -> None:
    game, report = played
    pin = report["recovered"]
    did = game.owner_did(pin)
    mine = sorted({p for pair in game.pairs if pin in pair for p in pair} - {pin})
    exported = game.g.query(did, "OpenWest2018.export", "json")
    assert exported["pin"] == pin
    assert exported["did"] == did
    assert sorted(exported["connections"]) == mine
    # the initials given at sign-up went to the owner's contact info (io.picolabs.pds)
    assert exported["contact_info"]["name"] == exported["initials"]
    r = game.g.http.get(f"/sky/cloud/{did}/OpenWest2018.export/csv.txt")
    assert r.headers["content-type"].startswith("text/plain")
    lines = r.text.split("\n")
    assert lines[0] == '"pin","connected_with","since"'
    assert [line.split(",")[1].strip('"') for line in lines[1:] if line] == mine
    assert lines[-1] == ""
    # the owner's own page, through its intro channel, shows the same count
    phone = game.phones[pin]
    assert phone.intro_url
    intro = phone.intro_url.split("/")[3]
    page = phone.scan(f"/sky/cloud/{intro}/OpenWest2018.attendee.ui/landing.html")
    assert f'<b id="count">{len(mine)}</b>' in page
    # and the intro channel lets nothing else through
    r = game.g.http.post(f"/sky/cloud/{intro}/OpenWest2018.export/json")
    assert "error" in r.json()
