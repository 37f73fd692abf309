"""The OpenWest 2018 connections game, played on a mesh of three p2pico engines.

    .venv/bin/python scripts/demo/openwest.py [--players 69] [--workdir DIR] [--screenshot PNG]

Engines (real ``p2pico node`` processes on loopback): **game** (its root pico, the game
pico "OpenWest 2018", its child "Attendees", and every owner pico, children of the root),
**kiosk** (the booth's kiosk pico) and **home** (one player's own engine).  Every player
is a phone: an ``httpx.Client`` with its own cookie jar that follows redirects.  Scanning
a QR code is a GET of the URL the code holds; the kiosk's codes are made with ``segno``.

The script signs the players up over two days, makes connections (one of them pending
until its scanner signs up, one made after a lost-cookie recovery), rolls the collection
over to the second day, prints the leaderboard, then moves several owner picos to the
home engine and shows their connections still count and still carry events.  It prints
a JSON summary last.  ``tests/test_openwest.py`` runs the same game and checks it.
"""

from __future__ import annotations

import argparse
import html
import json
import random
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import segno

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from p2pico import testing  # noqa: E402
from p2pico.testing import NodeProcess, start_node  # noqa: E402

RULESETS = ROOT / "rulesets" / "openwest2018"
INITIALS = [
    "AB", "BC", "CD", "DE", "EF", "FG", "GH", "HI", "IJ", "JK", "KL", "LM", "MN", "NO", "OP",
    "PQ", "QR", "RS", "ST", "TU", "UV", "VW", "WX", "XY", "YZ", "ZA",
]  # fmt: skip
TAGLINES = [
    "picos forever", "scan me", "own your data", "actors all the way down", "hello, mesh",
    "KRL or bust", "did:key fan", "see you at the booth",
]  # fmt: skip


# A new connection per request: a kept-alive connection that sat idle longer than the
# server's keep-alive timeout can be closed by the server just as a request goes out on it
# ("Server disconnected without sending a response"), and an event must not be re-sent.
FRESH_CONNECTIONS = httpx.Limits(max_keepalive_connections=0)


def url_of(rid: str) -> str:
    return (RULESETS / f"{rid}.krl").as_uri()


# The nodes a demo started: eventually() waits on them.
NODES: list[NodeProcess] = []


def eventually(check: Callable[[], Any], what: str, timeout: float = 120.0) -> Any:
    """``check()`` until it returns something truthy; fail after ``timeout`` seconds.

    Between checks it waits until one of the demo's nodes handles another event
    (``GET /api/handled``, p2pico.testing.eventually): no polling."""
    return testing.eventually(check, what, [n.url for n in NODES], timeout)


class Api:
    """The operator's requests to one node (JSON in, JSON out; a pico error fails)."""

    def __init__(self, node: NodeProcess) -> None:
        self.node = node
        self.http = httpx.Client(base_url=node.url, timeout=120, limits=FRESH_CONNECTIONS)

    def event(self, target: str, kind: str, **attrs: Any) -> dict[str, Any]:
        domain, type_ = kind.split(":")
        r = self.http.post(f"/c/{target}/event-wait/{domain}/{type_}", json=attrs)
        r.raise_for_status()
        body: dict[str, Any] = r.json()
        if "error" in body:
            raise RuntimeError(f"{kind} on {target}: {body['error']}")
        return body

    def query(self, target: str, rid: str, name: str, **args: Any) -> Any:
        r = self.http.post(f"/sky/cloud/{target}/{rid}/{name}", json=args)
        r.raise_for_status()
        body = r.json() if r.content else None
        if isinstance(body, dict) and set(body) == {"error"}:
            raise RuntimeError(f"{rid}/{name} on {target}: {body['error']}")
        return body

    def close(self) -> None:
        self.http.close()


@dataclass
class Phone:
    """A player's phone: a browser with its own cookie jar, on the game engine's host."""

    name: str
    base: str
    http: httpx.Client = field(init=False)
    pin: str | None = None
    intro_url: str | None = None  # what the player's own QR code holds

    def __post_init__(self) -> None:
        self.http = httpx.Client(
            base_url=self.base, follow_redirects=True, timeout=120, limits=FRESH_CONNECTIONS
        )

    def scan(self, url: str) -> str:
        """Scan a QR code: GET its URL, following redirects; the page's HTML."""
        r = self.http.get(url)
        r.raise_for_status()
        if "text/html" not in r.headers.get("content-type", ""):
            raise AssertionError(f"{self.name}: {url} gave no page: {r.text[:300]}")
        return r.text

    def submit(self, page: str, **fields: str) -> str:
        """Fill in the page's form and send it, as the browser does (a GET form)."""
        form = re.search(r'<form method="get" action="([^"]+)">(.*?)</form>', page, re.S)
        assert form, f"{self.name}: no form on the page:\n{page}"
        values = dict(re.findall(r'<input type="hidden" name="(\w+)" value="([^"]*)"', form[2]))
        values.update(fields)
        r = self.http.get(html.unescape(form[1]), params=values)
        r.raise_for_status()
        return r.text

    def lose_cookies(self) -> None:
        self.http.cookies.clear()

    def close(self) -> None:
        self.http.close()


def title_of(page: str) -> str:
    found = re.search(r"<h1>(.*?)</h1>", page, re.S)
    return html.unescape(found[1]) if found else ""


@dataclass
class Game:
    game: NodeProcess
    kiosk: NodeProcess
    home: NodeProcess
    log: Callable[[str], None] = print
    g: Api = field(init=False)
    k: Api = field(init=False)
    h: Api = field(init=False)
    game_did: str = ""
    signup_eci: str = ""
    kiosk_did: str = ""
    collection_did: str = ""
    leaderboard_eci: str = ""
    phones: dict[str, Phone] = field(default_factory=dict)  # pin -> the player's phone
    pairs: set[frozenset[str]] = field(default_factory=set)  # connections made, by pins
    day_one_counts: dict[str, int] = field(default_factory=dict)
    last_qr: segno.QRCode | None = None
    requests: int = 0

    def __post_init__(self) -> None:
        self.g, self.k, self.h = Api(self.game), Api(self.kiosk), Api(self.home)

    # -- setting the game up, as the operator would in pico-engine's UI ----------------

    def setup(self, starting_pin: int = 2600) -> None:
        root_ui = self.g.http.get("/api/ui-context").json()["eci"]
        self.g.event(root_ui, "engine_ui:install", url=url_of("OpenWest2018.owners"))
        self.g.event(root_ui, "engine_ui:new", name="OpenWest 2018", backgroundColor="#7a1f5c")
        game_ui = next(
            c
            for c in self.g.query(root_ui, "io.picolabs.pico-engine-ui", "box")["children"]
            if self.g.query(c, "io.picolabs.pico-engine-ui", "box")["name"] == "OpenWest 2018"
        )
        for rid in ("io.picolabs.cookies", "OpenWest2018.keys", "OpenWest2018.tags"):
            self.g.event(game_ui, "engine_ui:install", url=url_of(rid))
        self.g.event(game_ui, "engine_ui:install", url=url_of("OpenWest2018.ui"))
        channels = self.g.query(game_ui, "io.picolabs.pico-engine-ui", "pico")["channels"]
        tagged = {frozenset(c["tags"]): c["id"] for c in channels}
        self.game_did = tagged[frozenset(("system", "self"))]
        self.signup_eci = tagged[frozenset(("sign-up",))]
        kiosk_eci = tagged[frozenset(("kiosk",))]
        attendees = eventually(
            lambda: (
                self.g.query(self.game_did, "OpenWest2018.tags", "attendees").get("leaderboard")
                and self.g.query(self.game_did, "OpenWest2018.tags", "attendees")
            ),
            "the Attendees pico",
        )
        self.collection_did = attendees["did"]
        self.leaderboard_eci = attendees["leaderboard"]
        self.g.event(self.game_did, "ids:starting_pin", ord=str(starting_pin))
        # The kiosk pico, on its own engine, gets the game's kiosk channel.
        r = self.k.http.post(
            "/api/picos",
            json={
                "wrangler": True,
                "name": "Kiosk",
                "rulesets": [(RULESETS / "OpenWest2018.kiosk.krl").read_text()],
            },
        )
        r.raise_for_status()
        self.kiosk_did = r.json()["did"]
        self.k.event(self.kiosk_did, "kiosk:game_channel", eci=kiosk_eci)
        self.log(
            f"game pico {self.game_did[:24]}… on the game engine, kiosk pico on the kiosk engine"
        )

    # -- the booth ----------------------------------------------------------------------

    def kiosk_code(self) -> str:
        """Touch the kiosk: it asks the game pico for the next tag; its QR code's URL."""
        body = self.k.event(self.kiosk_did, "kiosk:next_tag")
        [tag] = [d["options"] for d in body["directives"] if d["name"] == "sign-up tag"]
        url = self.game.url + tag["url"]
        self.last_qr = segno.make(url, error="m")
        return url

    def sign_up(self, phone: Phone, initials: str, tagline: str, *, twice: bool = False) -> str:
        """The phone scans the kiosk's code, enters initials, and lands on its welcome page
        (``twice``: it scans the code again before giving its initials)."""
        code = self.kiosk_code()
        page = phone.scan(code)
        assert title_of(page) == "Enter initials", page
        if twice:
            page = phone.scan(code)
            assert title_of(page) == "Enter initials", page
        pin = re.search(r'<span class="pin" id="pin">(\d{4})</span>', page)
        assert pin
        phone.pin = pin[1]
        page = phone.submit(page, initials=initials, tagline=tagline)
        page = eventually(
            lambda: (p := self.reload(phone, page)) and 'id="intro"' in p and p,
            f"{phone.name}'s welcome page",
        )
        intro = re.search(r'<a id="intro" href="([^"]+)"', page)
        assert intro
        phone.intro_url = html.unescape(intro[1])
        self.phones[phone.pin] = phone
        return phone.pin

    def reload(self, phone: Phone, page: str) -> str:
        again = re.search(r'<a href="([^"]+)">Reload</a>', page)
        return phone.scan(html.unescape(again[1])) if again else page

    def connect(self, scanner: Phone, scanned: Phone) -> str:
        """``scanner`` scans ``scanned``'s code: the page says what happened."""
        assert scanned.intro_url
        page = scanner.scan(scanned.intro_url)
        if title_of(page) == "Connected":
            assert scanner.pin
            assert scanned.pin
            self.pairs.add(frozenset((scanner.pin, scanned.pin)))
        return title_of(page)

    # -- what the collection pico knows ----------------------------------------------

    def collection(self, name: str, **args: Any) -> Any:
        return self.g.query(self.collection_did, "OpenWest2018.collection", name, **args)

    def expected_counts(self) -> dict[str, int]:
        counts = dict.fromkeys(self.phones, 0)
        for pair in self.pairs:
            for pin in pair:
                counts[pin] += 1
        return counts

    def wait_for_counts(self) -> dict[str, int]:
        """Until the collection's verified counts equal the connections made."""
        want = {pin: n for pin, n in self.expected_counts().items() if n}
        try:
            return eventually(
                lambda: (got := self.collection("counts")) == want and got,
                "the collection's counts to match the connections made",
                timeout=120,
            )
        except AssertionError as e:
            raise AssertionError(
                f"{e}: want {want}, got {self.collection('counts')}, "
                f"attacks {self.collection('attacks')}"
            ) from None

    def owner_did(self, pin: str) -> str:
        return str(self.collection("member", pin=pin)["did"])

    def about(self, pin: str) -> dict[str, Any]:
        return self.g.query(self.owner_did(pin), "OpenWest2018.attendee", "about")  # type: ignore[no-any-return]

    def leaderboard_url(self) -> str:
        return (
            f"{self.game.url}/sky/cloud/{self.leaderboard_eci}"
            "/OpenWest2018.collection.ui/high_scores_page.html"
        )

    def close(self) -> None:
        for phone in self.phones.values():
            phone.close()
        for api in (self.g, self.k, self.h):
            api.close()


# -- the scripted game --------------------------------------------------------------------


def connect_randomly(game: Game, rng: random.Random, pins: list[str], n: int) -> int:
    """``n`` scans between random players; returns how many made a new connection."""
    made = 0
    for _ in range(n):
        a, b = rng.sample(pins, 2)
        outcome = game.connect(game.phones[a], game.phones[b])
        assert outcome in ("Connected", "Already connected"), outcome
        made += outcome == "Connected"
    return made


def play(game: Game, players: int = 69, day_one: int = 40, seed: int = 2018) -> dict[str, Any]:
    """The whole game; returns what it measured (and asserts what must hold)."""
    rng = random.Random(seed)
    report: dict[str, Any] = {"players": players}
    started = time.monotonic()
    game.setup()
    names = iter(f"phone{i}" for i in range(1, 1000))

    def new_phone() -> Phone:
        return Phone(next(names), game.game.url)

    def sign_up(phone: Phone) -> str:
        i = len(game.phones)
        return game.sign_up(phone, INITIALS[i % 26] + str(i // 26 or ""), rng.choice(TAGLINES))

    # Day one: the first players sign up (the first QR code goes to the terminal).
    first = new_phone()
    sign_up(first)
    game.log(f"player {first.pin} signed up with this kiosk code:")
    if game.last_qr is not None:
        game.log(_qr_text(game.last_qr))
    for _ in range(day_one - 3):
        sign_up(new_phone())
    pins = sorted(game.phones)

    # The booth's odd cases: a made-up tag, a sign-up code scanned twice before the
    # initials, and a player scanning someone else's sign-up code.
    guessed = f"{game.game.url}/sky/event/{game.signup_eci}/none/tag/scanned?id=123456789012600"
    assert title_of(first.scan(guessed)) == "Not a game tag"
    twice = new_phone()
    i = len(game.phones)
    game.sign_up(twice, INITIALS[i % 26], rng.choice(TAGLINES), twice=True)
    tag = _tag_of(game, twice.pin or "")
    taken = first.scan(f"{game.game.url}/sky/event/{game.signup_eci}/none/tag/scanned?id={tag}")
    assert title_of(taken) == "Already taken", taken
    pins = sorted(game.phones)
    game.log(f"day 1: {len(pins)} players signed up in {time.monotonic() - started:.0f} s")

    # A pending connection: a phone not yet in the game scans a player's code...
    newcomer = new_phone()
    target = game.phones[pins[3]]
    page = newcomer.scan(target.intro_url or "")
    assert title_of(page) == "Almost connected", page
    # ...and signs up at the booth afterwards: the connection vests.
    sign_up(newcomer)
    assert newcomer.pin
    game.pairs.add(frozenset((newcomer.pin, target.pin or "")))
    report["pending"] = {"scanner": newcomer.pin, "scanned": target.pin}
    pins = sorted(game.phones)

    made = connect_randomly(game, rng, pins, 3 * len(pins))
    # A player's own code and a repeat scan make nothing.
    me = game.phones[pins[0]]
    assert game.connect(me, me) == "That's you"
    game.log(f"day 1: {made} connections from {3 * len(pins)} scans")

    # Lost cookies: the phone scans its sign-up code again and proves who it is.
    lost = game.phones[pins[5]]
    lost.lose_cookies()
    assert lost.intro_url
    tag = _tag_of(game, lost.pin or "")
    page = lost.scan(f"{game.game.url}/sky/event/{game.signup_eci}/none/tag/scanned?id={tag}")
    assert title_of(page) == "Connection recovery", page
    about = game.about(lost.pin or "")
    page = lost.submit(page, initials="wrong", tagline="guess")
    assert title_of(page) == "Not accepted", page
    page = lost.submit(
        lost.scan(page_link(page, "Try again")),
        initials=about["initials"],
        tagline=about["tagline"],
    )
    assert title_of(page) == "Welcome", page
    others = [p for p in pins if frozenset((p, lost.pin)) not in game.pairs and p != lost.pin]
    assert game.connect(lost, game.phones[others[0]]) == "Connected"
    report["recovered"] = lost.pin

    counts = game.wait_for_counts()
    game.day_one_counts = dict(counts)
    day_one_best = max(counts.values())
    game.log(f"day 1 over: top score {day_one_best}")

    # Roll over to day two, as the operator did: new_day, then need_sync.
    game.g.event(game.collection_did, "attendees:new_day")
    game.g.event(game.collection_did, "attendees:need_sync")
    assert game.collection("day") == 2
    assert not any(game.collection("scores").values()), "scores start again on day two"

    # Day two: the rest sign up, more connections.
    for _ in range(players - len(game.phones)):
        sign_up(new_phone())
    pins = sorted(game.phones)
    made = connect_randomly(game, rng, pins, 3 * len(pins))
    game.log(f"day 2: {len(pins)} players, {made} more connections")
    counts = game.wait_for_counts()
    scores = {pin: n for pin, n in game.collection("scores").items() if n}
    day_two = {
        pin: n - game.day_one_counts.get(pin, 0)
        for pin, n in counts.items()
        if n - game.day_one_counts.get(pin, 0)
    }
    assert scores == day_two, (scores, day_two)
    report["connections"] = len(game.pairs)
    report["scores_match"] = True
    report["counts"] = counts

    # A forged score: a player sends the collection a high count of their own.
    forger = pins[1]
    before = dict(game.collection("counts"))
    forged = _forge_score(game, forger, 999)
    assert game.collection("counts") == before, "a forged count changed the scores"
    attacks = game.collection("attacks")
    assert attacks, "the forged count was not recorded"
    assert attacks[-1]["count"] == 999, attacks
    report["forged_rejected"] = {"pin": forger, "eid": forged}

    # The leaderboard.
    top = _top_five(game.collection("scores"))
    report["top_five"] = top
    game.log("Top Five Scores (day 2):")
    for rank, (pin, score) in enumerate(top, 1):
        game.log(f"  {rank}. {pin}  {game.collection('member', pin=pin)['initials']:<6} {score}")
    report["leaderboard_url"] = game.leaderboard_url()

    # Players take their owner picos home: move several to the home engine.
    by_count = sorted(pins, key=lambda p: (-counts.get(p, 0), p))
    movers = [by_count[0], by_count[1], pins[3], newcomer.pin, lost.pin]
    movers = list(dict.fromkeys(movers))
    for pin in movers:
        did = game.owner_did(pin)
        r = game.g.http.post("/api/move", json={"did": did, "to": game.home.peer_id})
        r.raise_for_status()
        assert r.json().get("host") == game.home.peer_id, r.text
    hosted = {p["did"] for p in game.h.http.get("/api/picos").json()}
    assert all(game.owner_did(pin) in hosted for pin in movers)
    game.log(f"moved {len(movers)} owner picos to the home engine: {', '.join(movers)}")
    assert game.collection("counts") == counts, "connections still count after the moves"

    # Their subscriptions still carry events, both ways, to and from the home engine.
    report["messaged"] = {}
    for pin in movers:
        did = game.owner_did(pin)
        contacts = sorted(game.h.query(did, "OpenWest2018.attendee", "contacts"))
        report["messaged"][pin] = contacts
        text = f"hello from {pin} at home"
        game.h.event(did, "attendee:say", text=text)
        for other in contacts:
            other_did = game.owner_did(other)
            eventually(
                lambda od=other_did, t=text, me=pin: any(
                    m["text"] == t and m["from"] == me
                    for m in game.g.query(od, "OpenWest2018.attendee", "inbox")
                ),
                f"{pin}'s message to {other}",
            )
            game.g.event(other_did, "attendee:say", text=f"hi {pin}, from {other}")
        for other in contacts:
            eventually(
                lambda o=other, me=pin, d=did: any(
                    m["from"] == o and m["text"] == f"hi {me}, from {o}"
                    for m in game.h.query(d, "OpenWest2018.attendee", "inbox")
                ),
                f"{other}'s reply to {pin}",
            )
    # And new connections with moved picos still count.
    for pin in movers[:3]:
        fresh = [p for p in pins if p not in movers and frozenset((p, pin)) not in game.pairs]
        assert game.connect(game.phones[fresh[0]], game.phones[pin]) == "Connected"
    final = game.wait_for_counts()
    report["connections"] = len(game.pairs)
    report["moved"] = movers
    report["after_moves"] = {pin: final[pin] for pin in movers}
    report["seconds"] = round(time.monotonic() - started, 1)
    return report


def page_link(page: str, text: str) -> str:
    found = re.search(r'<a href="([^"]+)">' + re.escape(text) + "</a>", page)
    assert found, page
    return html.unescape(found[1])


def _qr_text(qr: segno.QRCode) -> str:
    """The QR code as text for a terminal (two modules a character)."""
    rows = [[bool(m) for m in row] for row in qr.matrix_iter(scale=1, border=2)]
    if len(rows) % 2:
        rows.append([False] * len(rows[0]))
    chars = {(False, False): " ", (True, False): "▀", (False, True): "▄", (True, True): "█"}
    return "\n".join(
        "".join(chars[(top, bottom)] for top, bottom in zip(rows[i], rows[i + 1], strict=True))
        for i in range(0, len(rows), 2)
    )


def _tag_of(game: Game, pin: str) -> str:
    """The sign-up tag a player was given (the game pico remembers it by tag)."""
    owners = game.g.query(game.game_did, "OpenWest2018.tags", "owners")
    [tag] = [t for t, o in owners.items() if o["pin"] == pin]
    return str(tag)


def _forge_score(game: Game, pin: str, count: int) -> str:
    """Send the collection a count for ``pin`` on that member's own channel, with a made-up
    signature (the player knows their subscription's channel; not the key)."""
    did = game.owner_did(pin)
    [bus] = game.g.query(
        did, "io.picolabs.subscription", "established", key="Tx_role", value="collection"
    )
    signed = {"pin": pin, "count": count, "signature": "00" * 32}
    body = game.g.event(bus["Tx"], "attendee:new_connection", count=count, signed=signed)
    return str(body["eid"])


def _top_five(scores: dict[str, int]) -> list[tuple[str, int]]:
    return sorted(((p, s) for p, s in scores.items() if s > 0), key=lambda x: (-x[1], x[0]))[:5]


# -- headless Chromium -----------------------------------------------------------------


def chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


def _chromium_run(args: list[str], timeout: float = 90) -> subprocess.CompletedProcess[str]:
    browser = chromium()
    assert browser, "chromium is not installed"
    with tempfile.TemporaryDirectory(prefix="p2pico-chromium-") as profile:
        return subprocess.run(
            [
                browser,
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--no-first-run",
                "--disable-component-update",
                "--disable-sync",
                "--hide-scrollbars",
                f"--user-data-dir={profile}",
                *args,
            ],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=True,
        )


def screenshot(url: str, out: Path, size: tuple[int, int] = (1000, 800)) -> Path:
    _chromium_run([f"--screenshot={out}", f"--window-size={size[0]},{size[1]}", url])
    return out


def rendered_dom(url: str) -> str:
    return _chromium_run(["--dump-dom", url]).stdout


# -- running it ---------------------------------------------------------------------------


@contextmanager
def three_engines(workdir: Path) -> Iterator[tuple[NodeProcess, NodeProcess, NodeProcess]]:
    started: list[NodeProcess] = []
    try:
        game = start_node(workdir / "game", log_dir=workdir)
        started.append(game)
        kiosk = start_node(workdir / "kiosk", bootstrap=[game.multiaddr], log_dir=workdir)
        started.append(kiosk)
        home = start_node(
            workdir / "home", bootstrap=[game.multiaddr, kiosk.multiaddr], log_dir=workdir
        )
        started.append(home)
        NODES[:] = started
        yield game, kiosk, home
    finally:
        NODES.clear()
        for node in reversed(started):
            node.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--players", type=int, default=69)
    parser.add_argument("--workdir", type=Path, help="engine homes and logs (default: a temp dir)")
    parser.add_argument("--screenshot", type=Path, help="save the leaderboard as this PNG")
    args = parser.parse_args()
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="openwest-"))
    workdir.mkdir(parents=True, exist_ok=True)
    with three_engines(workdir) as (g, k, h):
        game = Game(g, k, h)
        try:
            report = play(game, players=args.players, day_one=min(40, args.players - 5))
            if args.screenshot and chromium():
                screenshot(game.leaderboard_url(), args.screenshot)
                report["screenshot"] = str(args.screenshot)
            if game.last_qr is not None:
                game.last_qr.save(str(workdir / "kiosk-qr.svg"), scale=4)
        finally:
            game.close()
    report.pop("counts", None)
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
