"""The node's HTTP API: pico-engine's routes plus p2pico's management routes.

Neighbours: p2pico.mesh (every request goes through it, so any pico of the
mesh is reachable from any node), p2pico.node (serves this app with hypercorn).

pico-engine routes (shared/research/krl-catalog.md §4), where ``:eci`` may also
be a pico's DID:

    /sky/event/:eci/:eid/:domain/:type     event, waits  → {"eid", "directives"}
                                           (_cookie → Set-Cookie, _redirect → 302,
                                           _html/_txt → the page)
    /sky/cloud/:eci/:rid/:function         query         → JSON result (f.html, f.txt: text)
    /c/:eci/event/:domain/:type            event, queued → "eid"
    /c/:eci/event-wait/:domain/:type       event, waits  → {"eid", "directives"}
    /c/:eci/event/:d/:t/query/:rid/:name   event, then query → JSON result
    /c/:eci/query/:rid/:name               query, as /sky/cloud
    GET /api/ui-context                    {"version", "eci"} of the root pico (p2pico.root)

Attributes and arguments are the query string, overlaid by a JSON or urlencoded body,
plus ``_headers`` (the request's headers).  Errors a pico raises come back as HTTP 200
``{"error": "..."}`` as on pico-engine; a malformed request (bad JSON, a body that is
not a map, an unknown route or method) is a 4xx ``{"error": reason}``.  OPTIONS is a
200 everywhere; pico-engine's routes carry CORS headers, the management routes do not.

Management routes (JSON; used by the ``p2pico`` CLI):

    GET  /api/node                  {"peer_id", "multiaddrs", "http"}
    GET  /api/stats                 {"rejected": {kind: n}, "retries", "duplicates", "outbox"}
    GET  /api/picos                 picos hosted here (the root pico with "root": true, and any
                                    that failed to load, with the error)
    POST /api/picos                 {"rulesets": [KRL source, ...], "wrangler"?, "name"?} → {"did", "eci"}
    GET  /api/resolve/:did          {"did", "host", "seq", "state"}, asking peers if need be
    GET  /api/records               every location record this node holds
    GET  /api/records/:did          the one it holds; ?after=N&wait=S waits for a newer one
    GET  /api/handled               {"handled": N} events handled here; ?after=N&wait=S waits
    POST /api/move                  {"did", "to"} → {"did", "host", "seq", "head"}
    GET  /api/picos/:did/car        a CAR of the pico's whole history (p2pico.history)
    POST /api/import                a CAR body → {"root", "did", "seq", "blocks", "new"[, "fork"]}
                                    (?accept_truncated=1: a history not from genesis, "truncated")
    GET  /api/picos/:did/log        the chain verified newest first, with causes (and a fork)
    GET  /api/picos/:did/schedule   the pico's scheduled events, on its host (p2pico.scheduler)
    GET  /api/picos/:did/channels   the pico's channels as ctx:channels shows them, on its host
    POST /api/gc                    {"keep_history": N|null} → {"kept", "deleted", "bytes_freed", ...}
    GET  /api/bitswap               the Bitswap grants: {"shares": {peer: {did: root}}}
    POST /api/bitswap/allow         {"peer", "did"} → {"peer", "did", "root", "seq", "blocks"}
    POST /api/bitswap/revoke        {"peer"} → {"peer", "revoked"}
    POST /api/bitswap/fetch         {"peer", "root"[, "addr"]} → {"root", "complete", "blocks", …}

The mesh explorer (p2pico.explorer) adds the page at ``/`` and its routes: /api/mesh,
/api/mesh/events, /api/mesh/move, /api/picos/:did/about|history|rulesets|children,
/api/krl/check.
"""

from __future__ import annotations

import json
import logging
import time
import urllib.parse
from collections.abc import AsyncIterator, Awaitable, Callable

import trio
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import BaseRoute, Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

import krl
from dag.car import CarError
from dag.cid import CID, CIDError
from p2pico import builtin, root
from p2pico import history as hist
from p2pico.bitswap import Bitswap, is_peer_id
from p2pico.drain import drain as drain_picos
from p2pico.engine import NotHosted, PicoError, Work
from p2pico.explorer import Explorer
from p2pico.mesh import Mesh, clean_event_names
from p2pico.net import NetError
from protocols.location import LocationRecord
from protocols.messages import Target

log = logging.getLogger("p2pico.http")

ALL_METHODS = ["GET", "POST", "PUT", "DELETE", "PATCH"]
# Attributes and query arguments larger than this are refused with a 413.
MAX_BODY = 1024 * 1024
# The longest a client may ask /api/records/:did to wait for a newer record.
MAX_WAIT = 60.0
# A CAR posted to /api/import is held in memory while it is verified: a counter pico
# with 2,000 heads is 1.6 MB, so this allows about 150,000 heads of a small pico.
MAX_IMPORT = 128 * 1024 * 1024
CAR_MEDIA_TYPE = "application/vnd.ipld.car; version=1"


class BadRequest(Exception):
    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


def _multi(items: list[tuple[str, str]]) -> dict[str, object]:
    """Keys given once map to their string; repeated keys to the list of them (as Express)."""
    out: dict[str, object] = {}
    for key, value in items:
        if key not in out:
            out[key] = value
            continue
        held = out[key]
        out[key] = [*held, value] if isinstance(held, list) else [held, value]
    return out


# The bodies read as JSON (pico-engine's express.json types), and any "+json" type.  A
# body without a content type is read as JSON too.  On pico-engine's routes a body of
# another type is ignored, as there; the management routes refuse it (415).
JSON_MEDIA = frozenset(
    ("application/json", "application/octet-stream", "application/ssi-agent-wire")
)


async def _attrs(request: Request, *, pico_route: bool = False) -> dict[str, object]:
    """Query string, overlaid by a JSON or form body (the body wins), as on pico-engine."""
    attrs: dict[str, object] = _multi(request.query_params.multi_items())
    body = await request.body()
    if len(body) > MAX_BODY:
        raise BadRequest(f"request body is {len(body)} bytes; the limit is {MAX_BODY}", 413)
    if not body:
        return attrs
    ctype = request.headers.get("content-type", "")
    if ctype.startswith("application/x-www-form-urlencoded"):
        try:
            fields = urllib.parse.parse_qsl(body.decode("utf-8"), keep_blank_values=True)
        except UnicodeDecodeError as e:
            raise BadRequest(f"form body is not UTF-8: {e}") from e
        attrs.update(_multi(fields))
        return attrs
    media = ctype.split(";")[0].strip().lower()
    if media and media not in JSON_MEDIA and not media.endswith("+json"):
        if pico_route and not media.startswith("multipart/"):
            return attrs
        raise BadRequest(f"{media} bodies are not taken; send JSON or a form", 415)
    try:
        parsed = json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise BadRequest(f"body is not valid JSON: {e}") from e
    if isinstance(parsed, list):
        parsed = {str(i): v for i, v in enumerate(parsed)}
    if not isinstance(parsed, dict):
        raise BadRequest("body must be a JSON object")
    attrs.update(parsed)
    return attrs


async def _pico_attrs(request: Request) -> dict[str, object]:
    """Event attributes and query arguments: ``_attrs`` plus ``_headers``, the request's
    headers (names lower-cased, repeated ones joined by ", "), as pico-engine merges them."""
    attrs = await _attrs(request, pico_route=True)
    headers: dict[str, str] = {}
    for name, value in request.headers.items():
        headers[name] = f"{headers[name]}, {value}" if name in headers else value
    attrs["_headers"] = headers
    return attrs


def _text_response(result: object, media_type: str) -> Response:
    """A query's result as text (the ``.html``/``.txt`` suffixes): a string as it is,
    null as an empty body, anything else as its JSON text."""
    if result is None:
        body = ""
    elif isinstance(result, str):
        body = result
    else:
        body = json.dumps(result, ensure_ascii=False)
    return Response(body, media_type=media_type)


def _header_safe(value: object) -> str | None:
    """A directive's header value, or None when it could not be one (not text, or a line break)."""
    if not isinstance(value, str) or not value or any(c in value for c in "\r\n\0"):
        return None
    try:
        value.encode("latin-1")
    except UnicodeEncodeError:
        return None
    return value


def _sky_event_response(result: object) -> Response:
    """``/sky/event``'s reply: ``_cookie`` directives add a Set-Cookie header each, and the
    first ``_redirect`` makes it a 302 to its ``url`` (without the JSON body), as pico-engine.

    The first ``_html`` (or else ``_txt``) directive's ``content`` becomes the whole body as
    text/html (text/plain), masking the other directives: pico-engine 0.x did this, and
    1.x rulesets written for it (the seed's OpenWest game) rely on it."""
    directives = result.get("directives", []) if isinstance(result, dict) else []
    cookies: list[str] = []
    location: str | None = None
    page: tuple[str, str] | None = None  # (media type, content)
    for d in directives if isinstance(directives, list) else []:
        options = d.get("options") if isinstance(d, dict) else None
        if not isinstance(options, dict):
            continue
        if d.get("name") == "_cookie":
            cookie = _header_safe(options.get("cookie"))
            if cookie is None:
                log.warning("_cookie directive without a usable cookie: %r", options.get("cookie"))
            else:
                cookies.append(cookie)
        elif d.get("name") == "_redirect" and location is None:
            location = _header_safe(options.get("url"))
            if location is None:
                log.warning("_redirect directive without a usable url: %r", options.get("url"))
        elif d.get("name") in ("_html", "_txt"):
            content = options.get("content")
            media = "text/html" if d.get("name") == "_html" else "text/plain"
            if not isinstance(content, str):
                log.warning("%s directive without a string content: %r", d.get("name"), content)
            elif page is None or (page[0] == "text/plain" and media == "text/html"):
                page = (media, content)
    response: Response
    if location:
        response = Response(status_code=302, headers={"location": location})
    elif page is not None:
        response = Response(page[1], media_type=page[0])
    else:
        response = _json(result)
    for cookie in cookies:
        response.headers.append("set-cookie", cookie)
    return response


def _json(value: object) -> Response:
    if value is None:
        return Response(b"", media_type="application/json")
    return JSONResponse(value)


# pico-engine's routes answer browsers from any origin (CORS), as pico-engine does; the
# management routes do not, so a page from elsewhere cannot drive the node's operator API.
PICO_ENGINE_PATHS = ("/sky/", "/c/", "/api/ui-context")
CORS_HEADERS = [
    (b"access-control-allow-origin", b"*"),
    (b"access-control-allow-headers", b"Origin, X-Requested-With, Content-Type, Accept"),
]
ALLOWED = b"POST, GET, OPTIONS"


class PicoEngineCors:
    """OPTIONS on any path is a 200 with ``Allow: POST, GET, OPTIONS``; pico-engine's
    routes also carry ``Access-Control-Allow-*`` headers on every response (catalog §4)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        cors = CORS_HEADERS if str(scope["path"]).startswith(PICO_ENGINE_PATHS) else []
        if scope["method"] == "OPTIONS":
            headers = [(b"allow", ALLOWED), (b"content-length", b"0"), *cors]
            if cors:
                headers.append((b"access-control-allow-methods", ALLOWED))
            await send({"type": "http.response.start", "status": 200, "headers": headers})
            await send({"type": "http.response.body", "body": b""})
            return
        if not cors:
            await self.app(scope, receive, send)
            return

        async def send_with_cors(message: Message) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", []), *cors]}
            await send(message)

        await self.app(scope, receive, send_with_cors)


async def _no_route(request: Request, exc: Exception) -> Response:
    """404 and 405 as JSON that says what was wrong."""
    assert isinstance(exc, HTTPException)
    if exc.status_code == 405:
        given = next((v for k, v in (exc.headers or {}).items() if k.lower() == "allow"), "")
        allowed = ", ".join(sorted(m.strip() for m in given.split(",") if m.strip()))
        return JSONResponse(
            {"error": f"{request.url.path} does not take {request.method}; it takes {allowed}"},
            405,
            headers={"allow": allowed} if allowed else None,
        )
    return JSONResponse({"error": f"no route {request.method} {request.url.path}"}, exc.status_code)


Handler = Callable[[Request], Awaitable[Response]]


def _guarded(fn: Handler) -> Handler:
    async def run(request: Request) -> Response:
        try:
            return await fn(request)
        except BadRequest as e:
            return JSONResponse({"error": str(e)}, status_code=e.status)
        except (PicoError, krl.KrlError) as e:
            return JSONResponse({"error": str(e)})

    return run


def _follow_grants(bitswap: Bitswap, mesh: Mesh) -> None:
    """Operator grants follow each pico's current head and survive restarts (home.grants)."""

    def head(did: str) -> CID | None:
        current = hist.current_head(mesh.engine, did)
        return None if current is None else current.cid

    def persist(peer: str, did: str | None) -> None:
        if did is None:
            mesh.home.delete_grants(peer)
        else:
            mesh.home.save_grant(peer, did)

    bitswap.follow_heads(head)
    bitswap.load_grants(mesh.home.grants())
    bitswap.on_grants = persist


def build_app(
    mesh: Mesh,
    node_info: Callable[[], dict[str, object]],
    bitswap: Bitswap | None = None,
    explorer: Explorer | None = None,
) -> Starlette:
    if bitswap is not None:
        _follow_grants(bitswap, mesh)

    async def sky_event(request: Request) -> Response:
        p = request.path_params
        attrs = await _pico_attrs(request)
        if p["eid"] != "none":
            attrs.setdefault("__eid", p["eid"])
        target = await mesh.target(p["eci"])
        # Server-Timing: how long the event took from here, and whether it ran here
        # ("local") or went to its host over the mesh ("routed": the DID-routed leg,
        # out and back), then the CPU this node's trio thread spent meanwhile ("cpu", in
        # ms; other requests' work too, if any ran concurrently).  scripts/bench/mesh.py
        # reads both per request.
        leg = "local" if mesh.engine.hosts(target.did) else "routed"
        t0, c0 = time.perf_counter(), time.thread_time()
        result = await mesh.event(target, p["domain"], p["type"], attrs)
        wall, cpu = time.perf_counter() - t0, time.thread_time() - c0
        response = _sky_event_response(result)
        response.headers["Server-Timing"] = f"{leg};dur={wall * 1000:.3f}, cpu;dur={cpu * 1000:.3f}"
        return response

    async def c_event_wait(request: Request) -> Response:
        p = request.path_params
        attrs = await _pico_attrs(request)
        return _json(await mesh.event(await mesh.target(p["eci"]), p["domain"], p["type"], attrs))

    async def c_event(request: Request) -> Response:
        """Queue the event and answer its eid, a JSON string, without waiting for it.

        On the pico's host the answer comes once the event is queued (its channel and
        policy checked).  Through another node it comes once the host ran the event:
        the mesh's request answers when the work is done, and not waiting would let a
        later request from the same client overtake this event.
        """
        p = request.path_params
        attrs = await _pico_attrs(request)
        target = await mesh.target(p["eci"])
        if mesh.engine.hosts(target.did):
            event = krl.Event(*clean_event_names(p["domain"], p["type"]), attrs)
            work = Work("event", event=event, eci=target.eci or "")
            try:
                return JSONResponse(mesh.engine.queue_event(target.did, work))
            except NotHosted:
                pass  # it left meanwhile: through the mesh, like any other pico
        result = await mesh.event(target, p["domain"], p["type"], attrs)
        return JSONResponse(result.get("eid") if isinstance(result, dict) else None)

    async def c_event_query(request: Request) -> Response:
        """The event, then the query on the same channel with the same map as arguments."""
        p = request.path_params
        attrs = await _pico_attrs(request)
        target = await mesh.target(p["eci"])
        await mesh.event(target, p["domain"], p["type"], attrs)
        return _json(await mesh.query(target, p["rid"], p["qname"], attrs))

    async def sky_cloud(request: Request) -> Response:
        p = request.path_params
        # "f.html" and "f.txt" answer the result as text; what follows a "." is never
        # part of the name (pico-engine splits it off too).
        name, _, suffix = p["function"].partition(".")
        result = await mesh.query(
            await mesh.target(p["eci"]), p["rid"], name, await _pico_attrs(request)
        )
        if suffix == "html":
            return _text_response(result, "text/html")
        if suffix == "txt":
            return _text_response(result, "text/plain")
        return _json(result)

    async def ui_context(request: Request) -> Response:
        """pico-engine's ``GET /api/ui-context``: ``{"version", "eci"}`` of the root pico."""
        try:
            return JSONResponse(root.ui_context(mesh.engine))
        except PicoError as e:
            raise BadRequest(str(e), 503) from e

    async def node(request: Request) -> Response:
        return JSONResponse(node_info())

    async def stats(request: Request) -> Response:
        return JSONResponse(mesh.stats())

    async def picos(request: Request) -> Response:
        if request.method == "GET":
            hosted: list[dict[str, object]] = [
                {"did": p.did, "eci": p.eci, "seq": p.seq, "head": str(p.head)}
                | ({"root": True} if p.did == mesh.engine.root_did else {})
                for p in mesh.engine.picos.values()
            ]
            hosted += [{"did": d, "error": e} for d, e in mesh.engine.unloadable.items()]
            return JSONResponse(hosted)
        body = await _attrs(request)
        sources = body.get("rulesets", [])
        if not isinstance(sources, list) or not all(isinstance(s, str) for s in sources):
            raise BadRequest("'rulesets' must be a list of KRL sources")
        wrangler, name = body.get("wrangler", False), body.get("name")
        if not isinstance(wrangler, bool):
            raise BadRequest("'wrangler' must be true or false")
        if name is not None and (not wrangler or not isinstance(name, str) or not name.strip()):
            raise BadRequest("'name' must be a non-blank string, and needs 'wrangler': true")
        if not wrangler:
            pico = await mesh.create_pico(sources)
            return JSONResponse({"did": pico.did, "eci": pico.eci})
        # wrangler first; its wrangler:pico_created installs pds and subscription, as
        # for a child (README "wrangler and subscriptions")
        pico = await mesh.create_pico(sources, urls=(builtin.url("io.picolabs.wrangler"),))
        await mesh.event(Target(pico.did), "wrangler", "pico_created", {"name": name or "Pico"})
        return JSONResponse({"did": pico.did, "eci": pico.eci})

    async def resolve(request: Request) -> Response:
        did = request.path_params["did"]
        record = await mesh.resolve(did)
        if record is None:
            return JSONResponse({"error": f"no engine is known to host {did}"}, status_code=404)
        return JSONResponse(
            {"did": did, "host": record.host, "seq": record.seq, "state": record.state}
        )

    def record_summary(record: LocationRecord) -> dict[str, object]:
        return {
            "did": record.did,
            "host": record.host,
            "seq": record.seq,
            "state": record.state,
            "from": record.from_host,
        }

    async def records(request: Request) -> Response:
        return JSONResponse([record_summary(r) for r in mesh.records.values()])

    async def one_record(request: Request) -> Response:
        """The record this node holds, without look-ups; ``?after=N&wait=S`` waits for a newer one."""
        did = request.path_params["did"]
        try:
            after = int(request.query_params.get("after", "-1"))
            wait = min(float(request.query_params.get("wait", "0")), MAX_WAIT)
        except ValueError as e:
            raise BadRequest(f"'after' must be an integer and 'wait' a number: {e}") from e
        with trio.move_on_after(wait):
            await mesh.wait_for_record(did, after_seq=after)
        record = mesh.records.get(did)
        if record is None or record.seq <= after:
            return JSONResponse({"error": f"no record for {did} newer than seq {after}"}, 404)
        return JSONResponse(record_summary(record))

    async def handled(request: Request) -> Response:
        """How many events (and jobs) this node has handled; ``?after=N&wait=S`` waits (at
        most S seconds) until that count passes N.  A client waiting for a fire-and-forget
        ``event:send`` to land reads the count, checks with queries (not counted), and if the
        check fails waits here for the next event: no polling."""
        try:
            after = int(request.query_params.get("after", "-1"))
            wait = min(float(request.query_params.get("wait", "0")), MAX_WAIT)
        except ValueError as e:
            raise BadRequest(f"'after' must be an integer and 'wait' a number: {e}") from e
        with trio.move_on_after(wait):
            await mesh.engine.wait_handled(after)
        return JSONResponse({"handled": mesh.engine.handled})

    async def move(request: Request) -> Response:
        body = await _attrs(request)
        did, to = body.get("did"), body.get("to")
        if not isinstance(did, str) or not isinstance(to, str):
            raise BadRequest("'did' and 'to' (a peer id) are required")
        return JSONResponse(await mesh.move(did, to))

    def current(did: str) -> hist.Current:
        head = hist.current_head(mesh.engine, did)
        if head is None:
            raise BadRequest(f"no history of {did} here: not hosted, not imported", 404)
        return head

    async def replicas(request: Request) -> Response:
        """``GET``: a hosted pico's replicas; ``POST {"add" | "remove": PEER_ID}`` changes them
        (an add returns once the replica holds the pico's head)."""
        did = request.path_params["did"]
        if mesh.replicas is None:
            raise BadRequest("this node runs without replicas", 501)
        if request.method == "GET":
            return JSONResponse({"did": did, "replicas": mesh.replicas.replicas_of(did)})
        body = await _attrs(request)
        add, remove = body.get("add"), body.get("remove")
        if isinstance(add, str) and add:
            return JSONResponse(await mesh.replicas.add(did, add))
        if isinstance(remove, str) and remove:
            return JSONResponse(await mesh.replicas.remove(did, remove))
        raise BadRequest("'add' or 'remove' (a peer id) is required")

    async def moves(request: Request) -> Response:
        """Moves out of this node under way: blocks the target fetched / the manifest's."""
        return JSONResponse(
            {did: {"blocks": p[0], "total": p[1]} for did, p in mesh.move_progress.items()}
        )

    async def drain(request: Request) -> Response:
        """Move every pico of this node away and refuse new ones; one JSON line per step."""

        async def lines() -> AsyncIterator[bytes]:
            async for step in drain_picos(mesh):
                yield json.dumps(step).encode() + b"\n"

        return StreamingResponse(lines(), media_type="application/x-ndjson")

    async def export_car(request: Request) -> Response:
        head = current(request.path_params["did"]).cid

        async def chunks() -> AsyncIterator[bytes]:
            # An async generator, so the walk runs on the trio thread that owns the store.
            for chunk in hist.car_chunks(mesh.engine, head):
                yield chunk

        return StreamingResponse(
            chunks(), media_type=CAR_MEDIA_TYPE, headers={"x-p2pico-root": str(head)}
        )

    async def import_car(request: Request) -> Response:
        body = bytearray()
        async for chunk in request.stream():
            body += chunk
            if len(body) > MAX_IMPORT:
                raise BadRequest(f"the CAR is over the {MAX_IMPORT}-byte import limit", 413)
        try:
            # Hashing and decoding every block is the bulk of the work: off the trio thread.
            roots, blocks = await trio.to_thread.run_sync(hist.parse_car, bytes(body))
            truncated = request.query_params.get("accept_truncated", "") in ("1", "true")
            return JSONResponse(
                hist.import_blocks(mesh.engine, roots, blocks, accept_truncated=truncated)
            )
        except (CarError, hist.ImportRefused) as e:
            raise BadRequest(f"import refused: {e}") from e

    async def log(request: Request) -> Response:
        did = request.path_params["did"]
        return JSONResponse(hist.log(mesh.engine, did, current(did)))

    async def schedule(request: Request) -> Response:
        did = request.path_params["did"]
        if not mesh.engine.hosts(did):
            record = mesh.records.get(did)
            where = f"; it is hosted by {record.host}" if record is not None else ""
            raise BadRequest(f"pico {did} is not hosted here{where}", 404)
        return JSONResponse(mesh.engine.schedule_of(did))

    async def channels(request: Request) -> Response:
        did = request.path_params["did"]
        if not mesh.engine.hosts(did):
            record = mesh.records.get(did)
            where = f"; it is hosted by {record.host}" if record is not None else ""
            raise BadRequest(f"pico {did} is not hosted here{where}", 404)
        return JSONResponse(mesh.engine.channels_of(did))

    def route(path: str, fn: Handler, methods: list[str] | None = None) -> Route:
        return Route(path, _guarded(fn), methods=methods or ALL_METHODS)

    async def c_query(request: Request) -> Response:
        request.path_params["function"] = request.path_params.pop("name")
        return await sky_cloud(request)

    async def gc(request: Request) -> Response:
        """Collect garbage blocks; keep_history N keeps each head and its N previous heads."""
        keep = (await _attrs(request)).get("keep_history")
        if keep is not None and (type(keep) is not int or keep < 0):
            raise BadRequest("'keep_history' must be a non-negative integer or null")
        if mesh.moves_open():  # blocks fetched for a move are not reachable from a root yet
            raise BadRequest("a move is under way; run gc once it is done", 409)
        if bitswap is not None and bitswap.dag_fetches_open:  # the same for a Bitswap fetch
            raise BadRequest("a Bitswap fetch is under way; run gc once it is done", 409)
        report = mesh.engine.gc(keep)  # synchronous: no move can start while it runs
        return JSONResponse(
            {
                "kept": report.kept,
                "deleted": report.deleted,
                "bytes_freed": report.bytes_freed,
                "truncated": {str(cid): seq for cid, seq in report.truncated.items()},
                "missing": report.missing,
            }
        )

    def swap() -> Bitswap:
        if bitswap is None:
            raise BadRequest("Bitswap is not running on this node", 503)
        return bitswap

    def peer_arg(body: dict[str, object]) -> str:
        peer = body.get("peer")
        if not isinstance(peer, str) or not is_peer_id(peer):
            raise BadRequest("'peer' must be a libp2p peer id (12D3Koo… or Qm…)")
        return peer

    async def bitswap_shares(request: Request) -> Response:
        return JSONResponse({"shares": swap().shares()})

    async def bitswap_allow(request: Request) -> Response:
        """Let a peer fetch, over Bitswap, every block the pico's current head reaches."""
        body = await _attrs(request)
        peer, did = peer_arg(body), body.get("did")
        if not isinstance(did, str):
            raise BadRequest("'did' (the pico to share) is required")
        head = current(did)
        blocks = swap().grant(peer, did)  # follows later commits; kept in the node's home
        return JSONResponse(
            {"peer": peer, "did": did, "root": str(head.cid), "seq": head.seq, "blocks": blocks}
        )

    async def bitswap_revoke(request: Request) -> Response:
        peer = peer_arg(await _attrs(request))
        had = peer in swap().shares()
        swap().revoke(peer)
        return JSONResponse({"peer": peer, "revoked": had})

    async def bitswap_fetch(request: Request) -> Response:
        """Fetch a whole DAG from a peer; a complete pico history is also recorded as imported."""
        body = await _attrs(request)
        peer, root, addr = peer_arg(body), body.get("root"), body.get("addr")
        try:
            root_cid = CID.parse(root) if isinstance(root, str) else None
        except CIDError as e:
            raise BadRequest(f"'root' is not a CID: {e}") from e
        if root_cid is None:
            raise BadRequest("'root' (a CID) is required")
        try:
            if isinstance(addr, str):
                await swap().net.connect(addr)
            result = await swap().fetch_dag(peer, root_cid)
        except (NetError, ValueError) as e:
            raise BadRequest(f"fetch from {peer} failed: {e}", 502) from e
        reply = result.to_json()
        if result.complete:
            try:  # a pico's history: verify its chain and remember its head, as an import does
                reply["history"] = hist.import_blocks(mesh.engine, [root_cid], {})
            except hist.ImportRefused as e:
                reply["history"] = None
                reply["note"] = f"not recorded as a pico history: {e}"
        return JSONResponse(reply)

    routes = [
        route("/sky/event/{eci}/{eid}/{domain}/{type}", sky_event),
        route("/sky/cloud/{eci}/{rid}/{function}", sky_cloud),
        route("/c/{eci}/event/{domain}/{type}", c_event),
        route("/c/{eci}/event-wait/{domain}/{type}", c_event_wait),
        route("/c/{eci}/event/{domain}/{type}/query/{rid}/{qname}", c_event_query),
        route("/c/{eci}/query/{rid}/{name}", c_query),
        route("/api/ui-context", ui_context, ["GET"]),
        route("/api/node", node, ["GET"]),
        route("/api/stats", stats, ["GET"]),
        route("/api/picos", picos, ["GET", "POST"]),
        route("/api/resolve/{did}", resolve, ["GET"]),
        route("/api/records", records, ["GET"]),
        route("/api/records/{did}", one_record, ["GET"]),
        route("/api/move", move, ["POST"]),
        route("/api/handled", handled, ["GET"]),
        route("/api/picos/{did}/replicas", replicas, ["GET", "POST"]),
        route("/api/drain", drain, ["POST"]),
        route("/api/moves", moves, ["GET"]),
        route("/api/picos/{did}/car", export_car, ["GET"]),
        route("/api/import", import_car, ["POST"]),
        route("/api/picos/{did}/log", log, ["GET"]),
        route("/api/picos/{did}/schedule", schedule, ["GET"]),
        route("/api/picos/{did}/channels", channels, ["GET"]),
        route("/api/gc", gc, ["POST"]),
        route("/api/bitswap", bitswap_shares, ["GET"]),
        route("/api/bitswap/allow", bitswap_allow, ["POST"]),
        route("/api/bitswap/revoke", bitswap_revoke, ["POST"]),
        route("/api/bitswap/fetch", bitswap_fetch, ["POST"]),
    ]
    served: list[BaseRoute] = list(routes)
    if explorer is not None:  # the mesh explorer: the page at / and its /api routes
        served += explorer.routes()
    return Starlette(
        routes=served,
        middleware=[Middleware(PicoEngineCors)],
        exception_handlers={404: _no_route, 405: _no_route},
    )
