"""The HTTP API in process: pico-engine's routes, its error convention, and malformed requests."""

from __future__ import annotations

from pathlib import Path

import pytest

from p2pico.testing import new_pico

COUNTER = (Path(__file__).resolve().parents[1] / "rulesets" / "counter.krl").read_text()
RID = "io.p2pico.counter"
HELLO = """ruleset hello {
  meta { shares page, text, greeting }
  global {
    page = function(name) { <<<h1>Hello #{name}</h1>&>> }
    text = function() { "plain" }
    greeting = function(name) { {"hello": name, "n": ent:n.defaultsTo(0)} }
  }
  rule echo {
    select when echo hello name re#^(\\w+)$# setting(who)
    send_directive("say", {"who": who, "headers_seen": event:attrs.keys().length() > 0})
    fired { ent:n := ent:n.defaultsTo(0) + 1 }
  }
}
"""


async def test_sky_event_and_cloud_by_eci_and_by_did(api) -> None:  # type: ignore[no-untyped-def]
    client, _ = api
    made = await new_pico(client, HELLO)
    for target in (made["eci"], made["did"]):
        r = await client.get(f"/sky/event/{target}/none/echo/hello", params={"name": "ada"})
        body = r.json()
        assert body["eid"].startswith("t")
        [directive] = body["directives"]
        assert directive["name"] == "say"
        assert directive["options"] == {"who": "ada", "headers_seen": True}
        assert directive["meta"]["rid"] == "hello"
        assert directive["meta"]["rule_name"] == "echo"
    r = await client.post(f"/sky/cloud/{made['eci']}/hello/greeting", json={"name": "bob"})
    assert r.json() == {"hello": "bob", "n": 2}
    # A JSON body overlays the query string.
    r = await client.post(f"/c/{made['eci']}/query/hello/greeting?name=x", json={"name": "y"})
    assert r.json()["hello"] == "y"


async def test_html_and_txt_suffixes(api) -> None:  # type: ignore[no-untyped-def]
    client, _ = api
    made = await new_pico(client, HELLO)
    r = await client.get(f"/sky/cloud/{made['eci']}/hello/page.html", params={"name": "ada"})
    assert r.headers["content-type"].startswith("text/html")
    assert r.text == "<h1>Hello ada</h1>&"
    r = await client.get(f"/c/{made['eci']}/query/hello/text.txt")
    assert r.headers["content-type"].startswith("text/plain")
    assert r.text == "plain"


async def test_event_routes_of_c(api) -> None:  # type: ignore[no-untyped-def]
    client, _ = api
    made = await new_pico(client, COUNTER)
    r = await client.post(f"/c/{made['eci']}/event-wait/counter/inc", json={"by": 2})
    assert r.json()["directives"][0]["options"] == {"count": 2}
    r = await client.post(f"/c/{made['eci']}/event/counter/inc", json={"by": 2})
    assert r.json().startswith("t")  # queued, not waited for: only its eid
    r = await client.get(f"/sky/cloud/{made['did']}/{RID}/count")
    assert r.json() == 4


@pytest.mark.parametrize(
    ("path", "error"),
    [
        ("/sky/event/nope/none/a/b", "ECI not found nope"),
        ("/sky/cloud/{eci}/no.such.rid/f", "Pico doesn't have no.such.rid installed."),
        (
            "/sky/cloud/{eci}/io.p2pico.counter/secret",
            'Ruleset io.p2pico.counter does not have query function "secret"',
        ),
    ],
)
async def test_pico_errors_are_200_with_error(api, path: str, error: str) -> None:  # type: ignore[no-untyped-def]
    client, _ = api
    made = await new_pico(client, COUNTER)
    r = await client.get(path.format(eci=made["eci"]))
    assert r.status_code == 200
    assert r.json() == {"error": error}


async def test_malformed_requests_are_4xx_with_a_reason(api) -> None:  # type: ignore[no-untyped-def]
    client, _ = api
    made = await new_pico(client, COUNTER)
    url = f"/sky/event/{made['eci']}/none/counter/inc"
    r = await client.post(url, content=b"{not json", headers={"content-type": "application/json"})
    assert r.status_code == 400
    assert r.json()["error"].startswith("body is not valid JSON: Expecting property name")
    r = await client.post(url, json="a string")
    assert (r.status_code, r.json()) == (400, {"error": "body must be a JSON object"})
    r = await client.post(url, content=b"x" * (1024 * 1024 + 1))
    assert r.status_code == 413
    r = await client.post("/api/move", json={"did": 3})
    assert r.status_code == 400
    # The pico was not disturbed by any of this.
    r = await client.post(url, json={})
    assert r.json()["directives"][0]["options"] == {"count": 1}


async def test_event_and_query_names_are_trimmed_and_must_not_be_blank(api) -> None:  # type: ignore[no-untyped-def]
    """pico-engine's cleanEvent and cleanQuery: eci, domain, type, rid and name are
    trimmed, and a blank one is an error that reaches no pico."""
    client, _ = api
    made = await new_pico(client, COUNTER)
    r = await client.post(f"/sky/event/%20{made['eci']}%20/none/%20counter%09/inc%20", json={})
    assert r.json()["directives"][0]["options"] == {"count": 1}
    r = await client.get(f"/sky/cloud/{made['eci']}%20/%20{RID}%20/%20count")
    assert r.json() == 1
    for path, error in [
        (f"/sky/event/{made['eci']}/none/%20/inc", "missing event.domain"),
        (f"/sky/event/{made['eci']}/none/counter/%20%20", "missing event.name"),
        (f"/c/{made['eci']}/event-wait/%20/inc", "missing event.domain"),
        (f"/c/{made['eci']}/event/counter/%20", "missing event.name"),
        (f"/sky/cloud/{made['eci']}/%20/count", "missing query.rid"),
        (f"/sky/cloud/{made['eci']}/{RID}/%20", "missing query.name"),
        ("/sky/event/%20/none/counter/inc", "missing eci"),
    ]:
        r = await client.post(path)
        assert (r.status_code, r.json()) == (200, {"error": error}), path
    assert (await client.get(f"/sky/cloud/{made['did']}/{RID}/count")).json() == 1


async def test_a_body_of_another_type_is_ignored_on_pico_routes(api) -> None:  # type: ignore[no-untyped-def]
    """As pico-engine (express.json and urlencoded only): a text body on a pico route
    is ignored and the query string's attributes are used; JSON types and "+json" are
    read; the management routes refuse such a body (415) rather than ignore it."""
    client, _ = api
    made = await new_pico(client, COUNTER)
    url = f"/sky/event/{made['eci']}/none/counter/inc"
    text = {"content-type": "text/plain;charset=UTF-8"}
    r = await client.post(url + "?by=3", content=b'{"by": 100}', headers=text)
    assert r.json()["directives"][0]["options"] == {"count": 3}
    for media in ("application/octet-stream", "application/ld+json", "Application/JSON"):
        r = await client.post(url, content=b'{"by": 2}', headers={"content-type": media})
        assert "error" not in r.json(), (media, r.text)
    assert (await client.get(f"/sky/cloud/{made['did']}/{RID}/count")).json() == 9
    r = await client.post("/api/picos", content=b'{"rulesets": []}', headers=text)
    assert (r.status_code, r.json()) == (
        415,
        {"error": "text/plain bodies are not taken; send JSON or a form"},
    )


async def test_a_rule_error_leaves_no_partial_writes(api) -> None:  # type: ignore[no-untyped-def]
    client, _ = api
    src = """ruleset half {
      meta { shares n }
      global { n = function() { ent:n.defaultsTo(0) } }
      rule first { select when t go  fired { ent:n := n() + 1 } }
      rule second { select when t go  pre { x = event:attr("x").as("Nope") } }
    }"""
    made = await new_pico(client, src)
    r = await client.post(f"/sky/event/{made['eci']}/none/t/go", json={"x": 1})
    assert "error" in r.json()
    assert "Nope" in r.json()["error"]
    r = await client.get(f"/sky/cloud/{made['eci']}/half/n")
    assert r.json() == 0  # the first rule's write was rolled back


async def test_syntax_errors_in_new_rulesets_name_the_line(api) -> None:  # type: ignore[no-untyped-def]
    client, mesh = api
    r = await client.post("/api/picos", json={"rulesets": ["ruleset x {\n  rule r {\n"]})
    assert r.status_code == 200
    assert r.json()["error"] == (
        "line 2, column 11: expected 'select' at the start of the rule body, found end of input\n"
        "  rule r {\n"
        "          ^"
    )
    assert not mesh.engine.picos  # nothing was created


async def test_history_and_resolve(api) -> None:  # type: ignore[no-untyped-def]
    client, mesh = api
    made = await new_pico(client, COUNTER)
    for _ in range(3):
        await client.post(f"/sky/event/{made['eci']}/none/counter/inc")
    log = (await client.get(f"/api/picos/{made['did']}/log")).json()
    assert log["verified"] is True
    assert [h["seq"] for h in log["heads"]] == [3, 2, 1, 0]  # newest first
    assert log["heads"][-1]["cause"] is None  # genesis
    assert all(h["cause"]["domain"] == "counter" for h in log["heads"][:-1])
    resolved = (await client.get(f"/api/resolve/{made['did']}")).json()
    assert resolved == {"did": made["did"], "host": mesh.peer_id, "seq": 0, "state": "active"}
    r = await client.get("/api/resolve/did:key:z6MkhaXgBZDvotDkL5257faiztiGiC2QtKLGpbnnEGta2doK")
    assert r.status_code == 404
