"""The node's HTTP API: pico-engine's routes plus p2pico's management routes.

Neighbours: p2pico.mesh (every request goes through it, so any pico of the
mesh is reachable from any node), p2pico.node (serves this app with hypercorn).

pico-engine routes (shared/research/krl-catalog.md §4), where ``:eci`` may also
be a pico's DID:

    /sky/event/:eci/:eid/:domain/:type     event, waits  → {"eid", "directives"}
    /sky/cloud/:eci/:rid/:function         query         → JSON result
    /c/:eci/event/:domain/:type            event, waits  → {"eid", "directives"}
    /c/:eci/event-wait/:domain/:type       same
    /c/:eci/query/:rid/:name               query

Errors a pico raises come back as HTTP 200 ``{"error": "..."}`` as on
pico-engine; a malformed request (bad JSON, a body that is not a map) is a 400.

Management routes (JSON; used by the ``p2pico`` CLI):

    GET  /api/node                  {"peer_id", "multiaddrs", "http"}
    GET  /api/picos                 picos hosted here (and any that failed to load, with the error)
    POST /api/picos                 {"rulesets": [KRL source, ...]} → {"did", "eci"}
    GET  /api/resolve/:did          {"did", "host", "seq", "state"}, asking peers if need be
    GET  /api/records               every location record this node holds
    GET  /api/records/:did          the one it holds; ?after=N&wait=S waits for a newer one
    POST /api/move                  {"did", "to"} → {"did", "host", "seq", "head"}
    GET  /api/picos/:did/car        a CAR of the pico's whole history (p2pico.history)
    POST /api/import                a CAR body → {"root", "did", "seq", "blocks", "new"[, "fork"]}
    GET  /api/picos/:did/log        the chain verified newest first, with causes (and a fork)
    GET  /api/picos/:did/schedule   the pico's scheduled events, on its host (p2pico.scheduler)
    GET  /api/picos/:did/channels   the pico's channels as ctx:channels shows them, on its host
    POST /api/gc                    {"keep_history": N|null} → {"kept", "deleted", "bytes_freed", ...}
    GET  /api/bitswap               the Bitswap grants: {"shares": {peer: {did: root}}}
    POST /api/bitswap/allow         {"peer", "did"} → {"peer", "did", "root", "seq", "blocks"}
    POST /api/bitswap/revoke        {"peer"} → {"peer", "revoked"}
    POST /api/bitswap/fetch         {"peer", "root"[, "addr"]} → {"root", "complete", "blocks", …}
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Awaitable, Callable

import trio
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

import krl
from dag.car import CarError
from dag.cid import CID, CIDError
from p2pico import history as hist
from p2pico.bitswap import Bitswap, is_peer_id
from p2pico.engine import PicoError
from p2pico.mesh import Mesh
from p2pico.net import NetError
from protocols.location import LocationRecord

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


async def _attrs(request: Request) -> dict[str, object]:
    """Query string, overlaid by a JSON or form body (the body wins), as on pico-engine."""
    attrs: dict[str, object] = dict(request.query_params)
    body = await request.body()
    if len(body) > MAX_BODY:
        raise BadRequest(f"request body is {len(body)} bytes; the limit is {MAX_BODY}", 413)
    if not body:
        return attrs
    ctype = request.headers.get("content-type", "")
    if ctype.startswith("application/x-www-form-urlencoded"):
        form = await request.form()
        attrs.update({k: v for k, v in form.items() if isinstance(v, str)})
        return attrs
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


def _json(value: object) -> Response:
    if value is None:
        return Response(b"", media_type="application/json")
    return JSONResponse(value)


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


def build_app(
    mesh: Mesh, node_info: Callable[[], dict[str, object]], bitswap: Bitswap | None = None
) -> Starlette:
    async def sky_event(request: Request) -> Response:
        p = request.path_params
        attrs = await _attrs(request)
        if p.get("eid", "none") != "none":
            attrs.setdefault("__eid", p["eid"])
        return _json(await mesh.event(await mesh.target(p["eci"]), p["domain"], p["type"], attrs))

    async def sky_cloud(request: Request) -> Response:
        p = request.path_params
        name, kind = p["function"], "json"
        for suffix in (".html", ".txt"):
            if name.endswith(suffix):
                name, kind = name[: -len(suffix)], suffix[1:]
        result = await mesh.query(
            await mesh.target(p["eci"]), p["rid"], name, await _attrs(request)
        )
        if kind == "html":
            return Response(str(result if result is not None else ""), media_type="text/html")
        if kind == "txt":
            return Response(str(result if result is not None else ""), media_type="text/plain")
        return _json(result)

    async def node(request: Request) -> Response:
        return JSONResponse(node_info())

    async def picos(request: Request) -> Response:
        if request.method == "GET":
            hosted: list[dict[str, object]] = [
                {"did": p.did, "eci": p.eci, "seq": p.seq, "head": str(p.head)}
                for p in mesh.engine.picos.values()
            ]
            hosted += [{"did": d, "error": e} for d, e in mesh.engine.unloadable.items()]
            return JSONResponse(hosted)
        body = await _attrs(request)
        sources = body.get("rulesets", [])
        if not isinstance(sources, list) or not all(isinstance(s, str) for s in sources):
            raise BadRequest("'rulesets' must be a list of KRL sources")
        pico = await mesh.create_pico(sources)
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
            return JSONResponse(hist.import_blocks(mesh.engine, roots, blocks))
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
        blocks = swap().share(peer, did, head.cid)
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
        route("/c/{eci}/event/{domain}/{type}", sky_event),
        route("/c/{eci}/event-wait/{domain}/{type}", sky_event),
        route("/c/{eci}/query/{rid}/{name}", c_query),
        route("/api/node", node, ["GET"]),
        route("/api/picos", picos, ["GET", "POST"]),
        route("/api/resolve/{did}", resolve, ["GET"]),
        route("/api/records", records, ["GET"]),
        route("/api/records/{did}", one_record, ["GET"]),
        route("/api/move", move, ["POST"]),
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
    return Starlette(routes=routes)
