"""pico-engine's HTTP API in detail: ``_headers``, the ``_cookie``/``_redirect`` directives,
``.html``/``.txt``, the async ``/c/:eci/event`` and ``event/…/query/…`` routes, OPTIONS and
CORS, and malformed requests (catalog §3.7, §4).  In process, through the ASGI app."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from dag.head import verify_head
from p2pico.testing import new_pico

COUNTER = (Path(__file__).resolve().parents[1] / "rulesets" / "counter.krl").read_text()
COUNTER_RID = "io.p2pico.counter"

WEB = """ruleset web {
  meta { shares page, note, seen, nothing, numbers }
  global {
    page = function(who) { <<<p>#{who}</p>\n>> }
    note = function() { "just text" }
    nothing = function() { null }
    numbers = function() { {"a": [1, 2.5], "b": "c"} }
    seen = function() { ent:seen }
  }
  rule login {
    select when web login
    every {
      send_directive("_cookie", {"cookie": "session=abc; Path=/; HttpOnly"})
      send_directive("_cookie", {"cookie": "theme=dark"})
      send_directive("hello", {"who": event:attrs{"who"}})
    }
  }
  rule go {
    select when web go
    every {
      send_directive("_cookie", {"cookie": "visited=1"})
      send_directive("_redirect", {"url": "https://example.org/next?a=1"})
      send_directive("_redirect", {"url": "https://example.org/second"})
    }
  }
  rule bad_cookie {
    select when web bad
    every {
      send_directive("_cookie", {"cookie": "a=1" + 13.chr() + 10.chr() + "X-Injected: yes"})
      send_directive("_cookie", {"cookie": 42})
      send_directive("_redirect", {"url": "https://example.org/" + 10.chr() + "x"})
    }
  }
  rule remember {
    select when web remember
    fired { ent:seen := event:attrs }
  }
  rule show {
    select when web show
    every {
      send_directive("before", {})
      send_directive("_txt", {"content": "plain"})
      send_directive("_html", {"content": page(event:attrs{"who"})})
      send_directive("_cookie", {"cookie": "seen=1"})
      send_directive("_html", {"content": "second"})
    }
  }
  rule text {
    select when web text
    send_directive("_txt", {"content": "just text"})
  }
}
"""

# Installed beside the counter: an inc with a "fail" attribute fails the whole transaction.
FAILING = """ruleset failing {
  rule fail {
    select when counter inc fail re#.+#
    pre { x = "boom".as("Nope") }
  }
}
"""

ARGS = """ruleset args {
  meta { shares echo }
  global {
    echo = function(_headers, a, b) {
      {"ua": _headers{"user-agent"}, "x": _headers{"x-probe"}, "a": a, "b": b}
    }
  }
}
"""


async def test_headers_are_merged_into_event_attrs_and_query_args(api: Any) -> None:
    client, _ = api
    made = await new_pico(client, WEB, ARGS)
    r = await client.post(
        f"/sky/event/{made['eci']}/none/web/remember?q=1",
        json={"b": 2, "_headers": "overwritten"},
        headers=[("X-Probe", "one"), ("X-Probe", "two"), ("User-Agent", "probe/1")],
    )
    assert "error" not in r.json(), r.json()
    seen = (await client.get(f"/sky/cloud/{made['eci']}/web/seen")).json()
    assert seen["q"] == "1"  # from the query string, a string
    assert seen["b"] == 2  # from the JSON body
    headers = seen["_headers"]  # the request's own headers win over a body's "_headers"
    assert headers["x-probe"] == "one, two"  # lower-cased names, repeats joined
    assert headers["user-agent"] == "probe/1"
    assert headers["content-type"] == "application/json"
    r = await client.get(
        f"/c/{made['eci']}/query/args/echo", params={"a": "1"}, headers={"X-Probe": "q"}
    )
    assert r.json() == {"ua": r.request.headers["user-agent"], "x": "q", "a": "1", "b": None}


async def test_repeated_keys_become_lists(api: Any) -> None:
    client, _ = api
    made = await new_pico(client, WEB)
    r = await client.post(
        f"/sky/event/{made['eci']}/none/web/remember?k=1&k=2&one=x",
        data={"f": ["a", "b"], "g": "c"},
    )
    assert "error" not in r.json(), r.json()
    seen = (await client.get(f"/sky/cloud/{made['eci']}/web/seen")).json()
    assert (seen["k"], seen["one"], seen["f"], seen["g"]) == (["1", "2"], "x", ["a", "b"], "c")


async def test_html_and_txt_directives_answer_a_page(api: Any) -> None:
    client, _ = api
    made = await new_pico(client, WEB)
    r = await client.post(f"/sky/event/{made['eci']}/none/web/show", json={"who": "ada"})
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/html")
    assert r.text == "<p>ada</p>\n"  # the first _html wins over _txt and masks the rest
    assert r.headers.get_list("set-cookie") == ["seen=1"]
    r = await client.post(f"/sky/event/{made['eci']}/none/web/text")
    assert r.headers["content-type"].startswith("text/plain")
    assert r.text == "just text"
    # event-wait keeps answering the directives as JSON
    r = await client.post(f"/c/{made['eci']}/event-wait/web/text")
    assert [d["name"] for d in r.json()["directives"]] == ["_txt"]


async def test_cookie_directives_set_cookies_on_sky_event_only(api: Any) -> None:
    client, _ = api
    made = await new_pico(client, WEB)
    r = await client.post(f"/sky/event/{made['eci']}/none/web/login", json={"who": "ada"})
    assert r.status_code == 200
    assert r.headers.get_list("set-cookie") == ["session=abc; Path=/; HttpOnly", "theme=dark"]
    body = r.json()
    assert [d["name"] for d in body["directives"]] == ["_cookie", "_cookie", "hello"]
    assert body["directives"][2]["options"] == {"who": "ada"}
    # event-wait answers the same directives, without touching the HTTP response
    r = await client.post(f"/c/{made['eci']}/event-wait/web/login", json={"who": "bo"})
    assert "set-cookie" not in r.headers
    assert [d["name"] for d in r.json()["directives"]] == ["_cookie", "_cookie", "hello"]


async def test_redirect_directive_is_a_302_with_its_cookies(api: Any) -> None:
    client, _ = api
    made = await new_pico(client, WEB)
    r = await client.get(f"/sky/event/{made['eci']}/none/web/go")
    assert r.status_code == 302
    assert r.headers["location"] == "https://example.org/next?a=1"  # the first one
    assert r.headers.get_list("set-cookie") == ["visited=1"]
    assert r.content == b""
    r = await client.get(f"/c/{made['eci']}/event-wait/web/go")
    assert r.status_code == 200
    assert r.json()["directives"][1]["options"] == {"url": "https://example.org/next?a=1"}


async def test_header_values_that_could_split_a_response_are_dropped(api: Any) -> None:
    client, _ = api
    made = await new_pico(client, WEB)
    r = await client.get(f"/sky/event/{made['eci']}/none/web/bad")
    assert r.status_code == 200  # no redirect: its url has a line break
    assert "set-cookie" not in r.headers
    assert "x-injected" not in r.headers
    assert len(r.json()["directives"]) == 3


async def test_html_and_txt_suffixes_give_text(api: Any) -> None:
    client, _ = api
    made = await new_pico(client, WEB)
    for route in (f"/sky/cloud/{made['eci']}/web", f"/c/{made['eci']}/query/web"):
        r = await client.get(f"{route}/page.html", params={"who": "ada"})
        assert (r.headers["content-type"], r.text) == ("text/html; charset=utf-8", "<p>ada</p>\n")
        r = await client.get(f"{route}/note.txt")
        assert (r.headers["content-type"], r.text) == ("text/plain; charset=utf-8", "just text")
        r = await client.get(f"{route}/nothing.txt")
        assert (r.status_code, r.text) == (200, "")
        r = await client.get(f"{route}/numbers.txt")  # not text: its JSON
        assert r.text == '{"a": [1, 2.5], "b": "c"}'
        r = await client.get(f"{route}/note.json")  # another suffix: JSON, as pico-engine
        assert (r.headers["content-type"], r.json()) == ("application/json", "just text")


async def test_c_event_queues_and_answers_the_eid(api: Any) -> None:
    client, mesh = api
    made = await new_pico(client, COUNTER)
    r = await client.post(f"/c/{made['eci']}/event/counter/inc", json={"by": 5})
    eid = r.json()
    assert isinstance(eid, str), eid
    assert eid.startswith("t"), eid
    # The event was queued before the answer, so a query sent now runs after it.
    assert (await client.get(f"/c/{made['eci']}/query/{COUNTER_RID}/count")).json() == 5
    # The eid is its transaction's: the id in the cause of the commit it made.
    pico = mesh.engine.picos[made["did"]]
    head = verify_head(mesh.engine.store.get_block(pico.head))
    assert head.cause is not None
    assert mesh.engine.store.get_block(head.cause).value["txn"] == eid
    # Through the DID as well; and event-wait still answers the directives.
    assert isinstance((await client.post(f"/c/{made['did']}/event/counter/inc")).json(), str)
    r = await client.post(f"/c/{made['eci']}/event-wait/counter/inc", json={"by": 2})
    assert r.json()["directives"][0]["options"] == {"count": 8}


async def test_c_event_reports_what_stops_it_being_queued(api: Any) -> None:
    client, _ = api
    made = await new_pico(client, COUNTER, FAILING)
    r = await client.post("/c/cnope/event/counter/inc")
    assert (r.status_code, r.json()) == (200, {"error": "ECI not found cnope"})
    # A rule error is not the caller's to see: the eid comes back and nothing changes.
    r = await client.post(f"/c/{made['eci']}/event/counter/inc", json={"fail": "yes"})
    assert isinstance(r.json(), str)
    assert (await client.get(f"/sky/cloud/{made['eci']}/{COUNTER_RID}/count")).json() == 0


async def test_event_then_query_in_one_request(api: Any) -> None:
    client, _ = api
    made = await new_pico(client, COUNTER, FAILING)
    route = f"/c/{made['eci']}/event/counter/inc/query/{COUNTER_RID}/count"
    assert (await client.post(route, json={"by": 3})).json() == 3
    assert (await client.get(route)).json() == 4
    # The event fails: its error, and the query does not run.
    r = await client.post(route, json={"fail": "yes"})
    assert r.status_code == 200
    assert "Nope" in r.json()["error"]
    assert (await client.get(f"/c/{made['eci']}/query/{COUNTER_RID}/count")).json() == 4
    r = await client.post(f"/c/{made['eci']}/event/counter/inc/query/{COUNTER_RID}/nope")
    assert r.json() == {"error": f'Ruleset {COUNTER_RID} does not have query function "nope"'}


async def test_options_and_cors(api: Any) -> None:
    client, _ = api
    made = await new_pico(client, COUNTER)
    for path in (f"/sky/event/{made['eci']}/none/counter/inc", "/c/x/query/y/z", "/api/ui-context"):
        r = await client.options(path)
        assert r.status_code == 200
        assert r.headers["allow"] == "POST, GET, OPTIONS"
        assert r.headers["access-control-allow-methods"] == "POST, GET, OPTIONS"
        assert r.headers["access-control-allow-origin"] == "*"
        assert r.content == b""
    r = await client.get(f"/sky/cloud/{made['eci']}/{COUNTER_RID}/count")
    assert r.headers["access-control-allow-origin"] == "*"
    assert r.headers["access-control-allow-headers"] == (
        "Origin, X-Requested-With, Content-Type, Accept"
    )
    assert (await client.get("/c/cnope/query/a/b")).headers["access-control-allow-origin"] == "*"
    # The operator's routes answer OPTIONS but allow no other origin.
    r = await client.options("/api/gc")
    assert (r.status_code, r.headers["allow"]) == (200, "POST, GET, OPTIONS")
    assert "access-control-allow-origin" not in r.headers
    assert "access-control-allow-origin" not in (await client.get("/api/picos")).headers
    # Nothing ran: the counter is where it was.
    assert (await client.get(f"/sky/cloud/{made['eci']}/{COUNTER_RID}/count")).json() == 0


async def test_malformed_requests_say_why(api: Any) -> None:
    client, _ = api
    made = await new_pico(client, COUNTER)
    r = await client.get("/nowhere/at/all")
    assert (r.status_code, r.json()) == (404, {"error": "no route GET /nowhere/at/all"})
    r = await client.post("/api/ui-context")
    assert r.status_code == 405
    assert r.json() == {"error": "/api/ui-context does not take POST; it takes GET, HEAD"}
    r = await client.get("/api/gc")
    assert (r.status_code, r.headers["allow"]) == (405, "POST")
    r = await client.post(
        f"/sky/event/{made['eci']}/none/counter/inc",
        files={"f": ("a.txt", b"x")},
    )
    assert r.status_code == 415
    assert r.json() == {"error": "multipart/form-data bodies are not taken; send JSON or a form"}
    # without a root pico (this node has none), ui-context says so
    r = await client.get("/api/ui-context")
    assert (r.status_code, r.json()) == (503, {"error": "this node has no root pico"})
