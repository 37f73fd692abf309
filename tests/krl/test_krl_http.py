"""KRL's http: module, the new ctx: and meta: members, end to end.

The krl side (how the KRL arguments become a request) is checked against the in-memory
FakeContext; the engine side (p2pico.krlhttp: limits, redirects, the address policy)
through a node in this process and a small HTTP server that each test starts on
127.0.0.1 (nothing reaches the internet). The last test runs a real `p2pico node`.
"""

from __future__ import annotations

import base64
import json
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.parse
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio
from krl_fakes import FakeContext, send_event

import krl
from p2pico.engine import Engine
from p2pico.krlhttp import AddressPolicy, KrlHttp
from p2pico.mesh import Mesh

# -- a local HTTP server ------------------------------------------------------------------


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:  # quiet
        pass

    def _send(self, status: int, body: bytes, headers: list[tuple[str, str]]) -> None:
        self.send_response(status)
        for name, value in headers:
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _serve(self) -> None:
        parts = urllib.parse.urlsplit(self.path)
        query = dict(urllib.parse.parse_qsl(parts.query))
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        self.server.seen.append((self.command, self.path))
        if parts.path == "/redirect":
            status = int(query.get("status", "302"))
            self._send(status, b"moved", [("Location", query["to"])])
        elif parts.path == "/loop":
            self._send(302, b"", [("Location", "/loop")])
        elif parts.path == "/big":
            self._send(200, b"x" * int(query["n"]), [("Content-Type", "text/plain")])
        elif parts.path == "/hang":
            self.server.release.wait(30)
            self._send(200, b"late", [])
        elif parts.path == "/latin1":
            self._send(
                200, "café".encode("latin-1"), [("Content-Type", "text/plain; charset=iso-8859-1")]
            )
        elif parts.path == "/teapot":
            self._send(418, b"short and stout", [("X-Multi", "a"), ("X-Multi", "b")])
        else:  # echo the request as JSON
            echo = {
                "method": self.command,
                "path": parts.path,
                "query": parts.query,
                "headers": {k.lower(): v for k, v in self.headers.items()},
                "body": body.decode("utf-8", errors="replace"),
            }
            self._send(200, json.dumps(echo).encode(), [("Content-Type", "application/json")])

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = _serve


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.seen: list[tuple[str, str]] = []
        self.release = threading.Event()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


@pytest.fixture
def server() -> Iterator[_Server]:
    srv = _Server()
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    yield srv
    srv.release.set()
    srv.shutdown()
    srv.server_close()


@pytest.fixture
def other_server() -> Iterator[_Server]:
    srv = _Server()
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    yield srv
    srv.shutdown()
    srv.server_close()


# -- the krl side: arguments to requests ----------------------------------------------------


def query(source: str, name: str, ctx: FakeContext, **args: Any) -> Any:
    return krl.compile_ruleset(source).query(name, args, ctx, krl.Budget())


def one_fn(body: str) -> str:
    return f"ruleset h {{ meta {{ shares f }} global {{ f = function() {{ {body} }} }} }}"


def test_get_builds_url_headers_and_no_body() -> None:
    ctx = FakeContext()
    result = query(
        one_fn(
            'http:get("http://h.example/p?x=1", qs = {"a": [1, "b c"], "m": {"k": null}, '
            '"e": []}, headers = {"X-One": 1, "User-Agent": "mine"})'
        ),
        "f",
        ctx,
    )
    assert result == ctx.http_response
    [(method, url, headers, body, follow)] = ctx.http_requests
    assert method == "GET"
    # qs: npm qs's default (indices, RFC 3986); appended with & to a URL with a query
    assert url == "http://h.example/p?x=1&a%5B0%5D=1&a%5B1%5D=b%20c&m%5Bk%5D="
    assert headers == [("User-Agent", "mine"), ("X-One", "1")]  # a given header replaces ours
    assert body is None
    assert follow is True


def test_body_wins_over_json_over_form() -> None:
    ctx = FakeContext()
    src = """ruleset h { rule r { select when h t every {
      http:post("http://h.example/a", body = "raw", json = {"j": 1}, form = {"f": 2});
      http:put("http://h.example/b", json = {"j": [1, true, null]}, form = {"f": 2});
      http:patch("http://h.example/c", form = {"f": [2, 3], "g": "x&y"});
      http:delete("http://h.example/d", json = {"j": 1}, headers = {"Content-Type": "text/x"});
    } } }"""
    send_event(krl.compile_ruleset(src), ctx, "h", "t")
    got = [(m, u, dict((k.lower(), v) for k, v in h), b) for m, u, h, b, _ in ctx.http_requests]
    assert [g[0] for g in got] == ["POST", "PUT", "PATCH", "DELETE"]
    assert got[0][3] == b"raw"
    assert "content-type" not in got[0][2]
    assert got[1][3] == b'{"j":[1,true,null]}'
    assert got[1][2]["content-type"] == "application/json"
    assert got[2][3] == b"f%5B0%5D=2&f%5B1%5D=3&g=x%26y"
    assert got[2][2]["content-type"] == "application/x-www-form-urlencoded"
    assert got[3][2]["content-type"] == "text/x"  # the rule's own content type stays
    assert all(g[2]["user-agent"] == "pico-engine-core-http" for g in got)


def test_auth_parse_json_and_redirect_flag() -> None:
    ctx = FakeContext()
    ctx.http_response = {**ctx.http_response, "content": '{"n": [1, 2.5]}'}
    src = one_fn(
        'a = http:get("http://h.example/", auth = {"username": "u", "password": "p:w"}, '
        "parseJSON = true, dontFollowRedirect = true); "
        'b = http:get("http://h.example/", parseJSON = "true"); '
        '[a{"content"}, b{"content"}]'
    )
    assert query(src, "f", ctx) == [{"n": [1, 2.5]}, '{"n": [1, 2.5]}']  # only true parses
    (_, _, headers, _, follow), _ = ctx.http_requests
    token = base64.b64encode(b"u:p:w").decode()
    assert ("Authorization", f"Basic {token}") in headers
    assert follow is False


def test_parse_json_leaves_what_is_not_json() -> None:
    ctx = FakeContext()
    ctx.http_response = {**ctx.http_response, "content": "<html>"}
    assert (
        query(one_fn('http:get("http://h.example/", parseJSON = true){"content"}'), "f", ctx)
        == "<html>"
    )


def test_autoraise_raises_into_the_transaction_and_autosend_returns_null() -> None:
    ctx = FakeContext()
    src = """ruleset h { rule r { select when h t every {
      http:post("http://h.example/a", autoraise = "lbl") setting(resp);
      http:get("http://h.example/b", autosend = {"eci": "e1", "domain": "d", "name": "n",
                                                 "attrs": {"k": 1}}) setting(none);
    } always { ent:status := resp{"status_code"}; ent:none := none.typeof() } } }"""
    send_event(krl.compile_ruleset(src), ctx, "h", "t")
    assert ctx.raised == [("http", "post", {**ctx.http_response, "label": "lbl"}, None)]
    assert [r[1] for r in ctx.http_requests] == ["http://h.example/a"]  # autosend: not now
    [(method, url, _headers, _body, follow, eci, domain, name, attrs)] = ctx.http_autosends
    assert follow is True
    assert (method, url, eci, domain, name, attrs) == (
        "GET",
        "http://h.example/b",
        "e1",
        "d",
        "n",
        {"k": 1},
    )
    assert ctx.ents[("h", "status")] == 200
    assert ctx.ents[("h", "none")] == "Null"


@pytest.mark.parametrize(
    ("call", "error"),
    [
        ("http:get()", "http:get needs a url string"),
        ('http:get("")', "http:get needs a url string"),
        ("http:head(5)", "http:head was given 5 instead of a url string"),
        ('http:get("http://h/", qs = "a=1")', "http:get qs must be a Map, not String"),
        ('http:get("http://h/", headers = [1])', "http:get headers must be a Map, not Array"),
        ('http:get("http://h/", json = {"a": 1})', "http:get cannot send a body"),
        ('http:get("http://h/", autosend = {"eci": "e"})', "http:get autosend needs a domain"),
    ],
)
def test_bad_arguments_are_clear_errors(call: str, error: str) -> None:
    with pytest.raises(krl.KrlRuntimeError, match=error):
        query(one_fn(call), "f", FakeContext())


def test_waiting_on_http_does_not_spend_the_time_budget(monkeypatch: pytest.MonkeyPatch) -> None:
    """The budget is for CPU: an HTTP wait moves the deadline on by the time it took."""
    now = [1000.0]
    monkeypatch.setattr(time, "monotonic", lambda: now[0])

    class SlowNetwork(FakeContext):
        def http_request(self, *args: Any) -> dict[str, object]:
            now[0] += 100.0  # a hundred "seconds" waiting on the server
            return super().http_request(*args)

    budget = krl.Budget(max_seconds=5)
    deadline = budget.deadline
    rs = krl.compile_ruleset(one_fn('http:get("http://h/"){"status_code"}'))
    assert rs.query("f", {}, SlowNetwork(), budget) == 200
    assert budget.deadline == deadline + 100.0


def test_meta_and_ctx_members_read_the_context() -> None:
    ctx = FakeContext()
    src = one_fn(
        "[meta:host, meta:txnId, meta:inEvent, meta:inQuery, event:eci, math:hashFunctions().length() > 3]"
    )
    assert query(src, "f", ctx) == ["http://127.0.0.1:8000", "txn-1", False, True, None, True]
    ctx.query_result = {"ok": 1}
    src = """ruleset h { rule r { select when h t every {
      ctx:eventQuery("e2", "d", "t", {"a": 1}, "r.id", "q", {"x": 2}) setting(res);
      ctx:flush("file:///x.krl");
    } always { ent:res := res; ent:in := [meta:inEvent, meta:txnId, event:eci] } } }"""
    send_event(krl.compile_ruleset(src), ctx, "h", "t")
    assert ctx.event_queries == [("e2", "d", "t", {"a": 1}, "r.id", "q", {"x": 2})]
    assert ctx.flushed == ["file:///x.krl"]
    assert ctx.ents[("h", "res")] == {"ok": 1}
    assert ctx.ents[("h", "in")] == [True, "none", "eci-1"]  # an event's txnId is its eid


# -- the engine side: a node in this process -------------------------------------------------


@pytest.fixture
def node(api: tuple[httpx.AsyncClient, Mesh]) -> tuple[httpx.AsyncClient, Engine]:
    client, mesh = api
    mesh.engine.krl_http = KrlHttp(allow_private=True)  # to reach the test's own server
    return client, mesh.engine


async def new_pico(client: httpx.AsyncClient, *sources: str) -> str:
    r = await client.post("/api/picos", json={"rulesets": list(sources)})
    assert r.status_code == 200, r.text
    eci: str = r.json()["eci"]
    return eci


async def ask(client: httpx.AsyncClient, eci: str, rid: str, name: str, **args: Any) -> Any:
    r = await client.post(f"/sky/cloud/{eci}/{rid}/{name}", json=args)
    assert r.status_code == 200, r.text
    return r.json() if r.content else None


async def signal(client: httpx.AsyncClient, to: str, domain: str, kind: str, **attrs: Any) -> Any:
    r = await client.post(f"/sky/event/{to}/none/{domain}/{kind}", json=attrs)
    assert r.status_code == 200, r.text
    return r.json()


FETCH = """ruleset fetch {
  meta { shares get, head, last }
  global {
    get = function(url, qs, follow) {
      http:get(url, qs = qs, parseJSON = true, dontFollowRedirect = follow == false)
    }
    head = function(url) { http:head(url) }
    last = function() { ent:last }
  }
  rule post {
    select when fetch post
    http:post(event:attrs{"url"}, json = {"n": event:attrs{"n"}}, parseJSON = true,
              autoraise = "mine")
  }
  rule got {
    select when http post
    always { ent:last := {"label": event:attrs{"label"}, "status": event:attrs{"status_code"},
                          "sent": event:attrs{"content"}{"body"}.decode(),
                          "method": event:attrs{"content"}{"method"}} }
  }
  rule sent {
    select when fetch send
    http:get(event:attrs{"url"}, autosend = {"eci": meta:eci, "domain": "fetch",
                                             "name": "back", "attrs": {"mine": 1}})
  }
  rule back {
    select when fetch back
    always { ent:last := {"mine": event:attrs{"mine"}, "status": event:attrs{"status_code"},
                          "type": event:attrs{"content_type"}} }
  }
}"""


async def test_get_as_a_function_returns_the_response_map(
    node: tuple[httpx.AsyncClient, Engine], server: _Server
) -> None:
    client, _ = node
    eci = await new_pico(client, FETCH)
    got = await ask(client, eci, "fetch", "get", url=f"{server.url}/echo", qs={"a": [1, 2]})
    content = got.pop("content")
    assert content["method"] == "GET"
    assert content["query"] == "a%5B0%5D=1&a%5B1%5D=2"
    assert content["headers"]["user-agent"] == "pico-engine-core-http"
    length = int(got["headers"]["content-length"])
    assert got == {
        "content_type": "application/json",
        "content_length": length,
        "headers": {**got["headers"], "content-type": "application/json"},
        "status_code": 200,
        "status_line": "OK",
    }
    teapot = await ask(client, eci, "fetch", "get", url=f"{server.url}/teapot")
    assert (teapot["status_code"], teapot["content"]) == (418, "short and stout")
    assert teapot["headers"]["x-multi"] == "a, b"  # repeated headers joined, as fetch does
    assert (await ask(client, eci, "fetch", "get", url=f"{server.url}/latin1"))["content"] == "café"
    head = await ask(client, eci, "fetch", "head", url=f"{server.url}/big?n=10")
    assert (head["status_code"], head["content"], head["content_length"]) == (200, "", 10)


async def test_post_action_with_autoraise(
    node: tuple[httpx.AsyncClient, Engine], server: _Server
) -> None:
    client, _ = node
    eci = await new_pico(client, FETCH)
    await signal(client, eci, "fetch", "post", url=f"{server.url}/echo", n=7)
    last = await ask(client, eci, "fetch", "last")
    assert last == {"label": "mine", "status": 200, "sent": {"n": 7}, "method": "POST"}


async def test_autosend_delivers_the_response_as_a_new_event(
    node: tuple[httpx.AsyncClient, Engine], server: _Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    client, engine = node
    eci = await new_pico(client, FETCH)
    delivered = trio.Event()
    dispatch = engine._dispatch_send

    def spy(target: str, domain: str, type: str, attrs: dict[str, object], sender: str) -> None:
        dispatch(target, domain, type, attrs, sender)  # queued on the pico...
        delivered.set()  # ...so a query sent after this sees its effect

    monkeypatch.setattr(engine, "_dispatch_send", spy)
    reply = await signal(client, eci, "fetch", "send", url=f"{server.url}/echo")
    assert reply["directives"] == []
    with trio.fail_after(20):
        await delivered.wait()
    assert await ask(client, eci, "fetch", "last") == {
        "mine": 1,
        "status": 200,
        "type": "application/json",
    }


async def test_redirects(node: tuple[httpx.AsyncClient, Engine], server: _Server) -> None:
    client, _ = node
    eci = await new_pico(client, FETCH)
    to = urllib.parse.quote(f"{server.url}/echo?b=2", safe="")
    followed = await ask(client, eci, "fetch", "get", url=f"{server.url}/redirect?to={to}")
    assert (followed["status_code"], followed["content"]["query"]) == (200, "b=2")
    kept = await ask(
        client, eci, "fetch", "get", url=f"{server.url}/redirect?to={to}", follow=False
    )
    assert (kept["status_code"], kept["headers"]["location"]) == (302, f"{server.url}/echo?b=2")
    looped = await ask(client, eci, "fetch", "get", url=f"{server.url}/loop")
    assert looped["error"].startswith("http:get: ")
    assert "more than 5 redirects" in looped["error"]
    assert server.seen.count(("GET", "/loop")) == 6  # the first request and 5 redirects


async def test_limits_size_time_and_connection_errors(
    node: tuple[httpx.AsyncClient, Engine], server: _Server
) -> None:
    client, engine = node
    engine.krl_http.max_bytes = 1000
    engine.krl_http.timeout = 0.5
    eci = await new_pico(client, FETCH)
    assert (await ask(client, eci, "fetch", "get", url=f"{server.url}/big?n=1000"))[
        "content"
    ] == "x" * 1000
    big = await ask(client, eci, "fetch", "get", url=f"{server.url}/big?n=1001")
    assert big["error"].startswith(
        f"http:get: the response from {server.url}/big?n=1001 is larger than 1000 bytes"
    )
    hang = await ask(client, eci, "fetch", "get", url=f"{server.url}/hang")
    assert f"http:get: no response from {server.url}/hang" in hang["error"]
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    closed = await ask(client, eci, "fetch", "get", url=f"http://127.0.0.1:{port}/x")
    assert f"http:get: connection refused to http://127.0.0.1:{port}/x" in closed["error"]
    bad = await ask(client, eci, "fetch", "get", url="ftp://127.0.0.1/x")
    assert "only http and https URLs can be fetched" in bad["error"]


async def test_private_addresses_are_refused_by_default(
    api: tuple[httpx.AsyncClient, Mesh], server: _Server
) -> None:
    client, mesh = api  # the engine's default KrlHttp: public addresses only
    assert mesh.engine.krl_http.policy.allow_private is False
    eci = await new_pico(client, FETCH)
    for url in (f"{server.url}/echo", f"http://localhost:{server.server_address[1]}/echo"):
        got = await ask(client, eci, "fetch", "get", url=url)
        assert "is a loopback address" in got["error"]
        assert "--krl-http-allow-private" in got["error"]
    assert server.seen == []  # not one byte reached it


async def test_the_nodes_own_api_is_refused_even_with_private_allowed(
    node: tuple[httpx.AsyncClient, Engine], server: _Server, other_server: _Server
) -> None:
    client, engine = node
    engine.set_http_url(other_server.url)  # as p2pico.node does with its bound address
    eci = await new_pico(client, FETCH)
    direct = await ask(client, eci, "fetch", "get", url=f"{other_server.url}/echo")
    assert "this node's own HTTP API" in direct["error"]
    to = urllib.parse.quote(f"{other_server.url}/echo", safe="")
    hop = await ask(client, eci, "fetch", "get", url=f"{server.url}/redirect?to={to}")
    assert "this node's own HTTP API" in hop["error"]  # checked again on every redirect
    assert other_server.seen == []
    assert await ask(client, eci, "fetch", "get", url=f"{server.url}/echo") != {}  # others work
    meta = await new_pico(client, one_fn("meta:host"))
    assert await ask(client, meta, "h", "f") == other_server.url


def test_address_policy() -> None:
    import ipaddress

    strict, lax = AddressPolicy(), AddressPolicy(allow_private=True)
    for text in (
        "127.0.0.1",
        "10.1.2.3",
        "192.168.0.1",
        "169.254.169.254",
        "::1",
        "fd00::1",
        "100.64.0.1",
        "0.0.0.0",
        "::ffff:127.0.0.1",
        "224.0.0.1",
    ):
        assert strict.refuses(ipaddress.ip_address(text), 80) is not None, text
    for text in ("93.184.216.34", "2606:4700::1111"):
        assert strict.refuses(ipaddress.ip_address(text), 80) is None, text
    assert lax.refuses(ipaddress.ip_address("10.1.2.3"), 80) is None
    assert lax.refuses(ipaddress.ip_address("224.0.0.1"), 80) is not None  # never multicast
    lax.set_own_api("http://127.0.0.1:8123")
    assert lax.refuses(ipaddress.ip_address("127.0.0.1"), 8123) is not None
    assert lax.refuses(ipaddress.ip_address("::ffff:127.0.0.1"), 8123) is not None
    assert lax.refuses(ipaddress.ip_address("127.0.0.1"), 8124) is None


# -- ctx:eventQuery, ctx:logs, ctx:flush, rid_url / rid_config, meta ---------------------------

TARGET = """ruleset target {
  meta { shares seen }
  global { seen = function(plus) { ent:n.defaultsTo(0) + plus } }
  rule inc { select when t inc  always { ent:n := ent:n.defaultsTo(0) + event:attrs{"by"} } }
  rule boom { select when t boom  pre { x = event:attrs{"nope"}() } }
}"""

ASKER = """ruleset asker {
  meta { shares result }
  global { result = function() { ent:result } }
  rule go {
    select when a go
    ctx:eventQuery(event:attrs{"eci"}, "t", event:attrs{"which"} || "inc", {"by": 5},
                   "target", "seen", {"plus": 100}) setting(r)
    always { ent:result := r }
  }
  rule self { select when a self  ctx:eventQuery(meta:eci, "a", "x", {}, "asker", "result", {}) }
}"""


async def test_event_query_runs_the_event_then_the_query(
    node: tuple[httpx.AsyncClient, Engine],
) -> None:
    client, _ = node
    target = await new_pico(client, TARGET)
    asker = await new_pico(client, ASKER)
    await signal(client, asker, "a", "go", eci=target)
    assert await ask(client, asker, "asker", "result") == 105  # saw its own event's write
    await signal(client, asker, "a", "go", eci=target)
    assert await ask(client, asker, "asker", "result") == 110
    failed = await signal(client, asker, "a", "go", eci=target, which="boom")
    assert "ctx:eventQuery t:boom then target/seen on" in failed["error"]
    own = await signal(client, asker, "a", "self")
    assert "cannot wait for its own event" in own["error"]


LOGGER = """ruleset logger {
  meta { shares logs }
  global { logs = function() { ctx:logs() } }
  rule hello { select when l hello  always { log info "hello " + event:attrs{"who"}; x = 1.klog("one") } }
  rule boom { select when l boom  pre { x = 1 / "a" + null() } }
}"""


async def test_ctx_logs_keeps_log_statements_klog_and_failures(
    node: tuple[httpx.AsyncClient, Engine],
) -> None:
    client, _ = node
    eci = await new_pico(client, LOGGER)
    done = await signal(client, eci, "l", "hello", who="you")
    await signal(client, eci, "l", "boom")
    logs = await ask(client, eci, "logger", "logs")
    assert [(e["level"], e["msg"]) for e in logs[:2]] == [("info", "hello you"), ("klog", "one 1")]
    assert all(e["txnId"] == done["eid"] and e["rid"] == "logger" for e in logs[:2])
    assert logs[2]["level"] == "error"
    assert logs[2]["msg"].startswith("event l:boom failed: ")
    assert all(e["time"].endswith("Z") and e["picoId"].startswith("did:key:") for e in logs)
    assert len(logs) == 3


INSTALLER = """ruleset installer {
  meta { shares installed }
  global { installed = function() { ent:info } }
  rule install {
    select when i install
    every { ctx:flush(event:attrs{"url"}); ctx:install(event:attrs{"url"}, {"color": "red"}) }
  }
  rule flush { select when i flush  ctx:flush(event:attrs{"url"}) }
}"""

INSTALLED = """ruleset installed.one {
  meta { shares info }
  global { info = function() { [ctx:rid_url, ctx:rid_config, meta:rid_url, meta:rulesetURI,
                               meta:rulesetConfig, meta:rid_config] } }
}"""


async def test_flush_rid_url_and_ruleset_config(
    node: tuple[httpx.AsyncClient, Engine],
) -> None:
    client, engine = node
    folder = engine.ruleset_dirs[0]
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "one.krl").write_text(INSTALLED)
    (folder / "broken.krl").write_text("ruleset broken { global { x = } }")
    url = (folder / "one.krl").as_uri()
    eci = await new_pico(client, INSTALLER)
    assert "error" not in await signal(client, eci, "i", "install", url=url)
    info = await ask(client, eci, "installed.one", "info")
    assert info == [url, {"color": "red"}, url, url, {"color": "red"}, {"color": "red"}]
    broken = await signal(client, eci, "i", "flush", url=(folder / "broken.krl").as_uri())
    assert "line 1" in broken["error"]
    missing = await signal(client, eci, "i", "flush", url=(folder / "none.krl").as_uri())
    assert "error" in missing
    # a pico made from source has no URL and an empty config
    plain = await new_pico(client, INSTALLED)
    assert await ask(client, plain, "installed.one", "info") == [None, {}, None, None, {}, {}]


async def test_meta_txn_id_in_a_query_is_the_querys_id(
    node: tuple[httpx.AsyncClient, Engine],
) -> None:
    client, _ = node
    eci = await new_pico(client, one_fn("[meta:txnId, meta:inEvent, meta:inQuery]"))
    first, second = await ask(client, eci, "h", "f"), await ask(client, eci, "h", "f")
    assert first[1:] == [False, True]
    assert isinstance(first[0], str)
    assert first[0]
    assert first[0] != second[0]


# -- a real node with --krl-http-allow-private ----------------------------------------------


@pytest.mark.slow
def test_node_flag_lets_krl_reach_a_local_server(tmp_path: Path, server: _Server) -> None:
    cmd = [
        sys.executable,
        "-m",
        "p2pico",
        "--home",
        str(tmp_path / "n"),
        "node",
        "--krl-http-allow-private",
    ]
    log = (tmp_path / "node.log").open("w")
    proc = subprocess.Popen(
        cmd,
        stdout=subprocess.PIPE,
        stderr=log,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        assert proc.stdout is not None
        info = json.loads(proc.stdout.readline())["ready"]
        with httpx.Client(base_url=info["http"], timeout=60) as http:
            src = one_fn('[meta:host, http:get(url){"content"}.decode(){"path"}]').replace(
                "function()", "function(url)"
            )
            eci = http.post("/api/picos", json={"rulesets": [src]}).json()["eci"]
            got = http.post(f"/sky/cloud/{eci}/h/f", json={"url": f"{server.url}/hi"}).json()
            assert got == [info["http"], "/hi"]
            own = http.post(f"/sky/cloud/{eci}/h/f", json={"url": f"{info['http']}/api/picos"})
            assert "this node's own HTTP API" in own.json()["error"]
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        log.close()
