"""The ``p2pico`` command: run a node, or talk to one over its HTTP API.

Neighbours: p2pico.node (``p2pico node``), p2pico.http (the API every other
sub-command calls).  Every sub-command except ``node`` prints JSON on stdout
and exits 1 with ``{"error": ...}`` when the node reports an error.

The node is chosen by ``--node URL``, else ``$P2PICO_NODE``, else the ``http``
field of ``<home>/node.json`` (home: ``--home``, ``$P2PICO_HOME``, ``~/.p2pico``).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
from pathlib import Path
from typing import Any
from urllib.parse import quote

from p2pico.home import DEFAULT_HOME


def _home(args: argparse.Namespace) -> Path:
    return Path(args.home or os.environ.get("P2PICO_HOME") or DEFAULT_HOME).expanduser()


def _node_url(args: argparse.Namespace) -> str:
    if args.node:
        return str(args.node).rstrip("/")
    if os.environ.get("P2PICO_NODE"):
        return os.environ["P2PICO_NODE"].rstrip("/")
    info_file = _home(args) / "node.json"
    try:
        return str(json.loads(info_file.read_text())["http"]).rstrip("/")
    except (OSError, ValueError, KeyError) as e:
        raise SystemExit(
            f"p2pico: no node to talk to ({info_file}: {e}); start one with `p2pico node` "
            "or pass --node URL"
        ) from e


def _kv(pairs: list[str]) -> dict[str, object]:
    """``k=v`` arguments; a value that parses as JSON (numbers, true, maps) is taken as such."""
    out: dict[str, object] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise SystemExit(f"p2pico: expected key=value, got {pair!r}")
        try:
            out[key] = json.loads(value)
        except ValueError:
            out[key] = value
    return out


def _call(
    args: argparse.Namespace,
    method: str,
    path: str,
    body: object = None,
    *,
    content: bytes | None = None,
    content_type: str = "application/json",
) -> Any:
    import httpx

    url = _node_url(args) + path
    try:
        if content is None:
            response = httpx.request(method, url, json=body, timeout=args.timeout)
        else:
            headers = {"content-type": content_type}
            response = httpx.request(
                method, url, content=content, headers=headers, timeout=args.timeout
            )
    except httpx.HTTPError as e:
        raise SystemExit(f"p2pico: cannot reach the node at {url}: {e}") from e
    failed = f"HTTP {response.status_code} {response.reason_phrase}".strip()
    if not response.content:
        return None if response.is_success else {"error": failed}
    try:
        result = response.json()
    except ValueError:  # a refusal the HTTP server made itself is plain text
        text = response.text.strip()
        return response.text if response.is_success else {"error": text or failed}
    if not response.is_success and not (isinstance(result, dict) and "error" in result):
        return {"error": failed, "reply": result}
    return result


def _emit(result: Any) -> int:
    print(json.dumps(result, indent=None if isinstance(result, (str, int, float)) else 2))
    return 1 if isinstance(result, dict) and "error" in result else 0


def cmd_node(args: argparse.Namespace) -> int:
    if args.action == "drain":
        return cmd_drain(args)
    import trio

    from p2pico.node import NodeConfig, run_until_signal

    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    for noisy in ("libp2p", "multiaddr", "hypercorn.error", "async_service"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    config = NodeConfig(
        home=_home(args),
        listen=args.listen or ["/ip4/127.0.0.1/tcp/0"],
        http=args.http,
        bootstrap=args.bootstrap or [],
        krl_http_allow_private=args.krl_http_allow_private,
        replica_lease=args.replica_lease,
        mdns=args.mdns,
    )
    from p2pico.home import HomeError

    failed: BaseException | None = None
    try:
        trio.run(run_until_signal, config)
    except* HomeError as group:  # raised before the node starts: no traceback for it
        failed = group
        while isinstance(failed, BaseExceptionGroup):  # the HomeError, however nested
            failed = failed.exceptions[0]
    if failed is not None:
        print(f"p2pico node: {failed}", file=sys.stderr)
        return 1
    return 0


def cmd_drain(args: argparse.Namespace) -> int:
    """`p2pico node drain`: progress on stderr, the summary as JSON on stdout."""
    import httpx

    url = _node_url(args) + "/api/drain"
    last: dict[str, Any] = {}
    try:
        with httpx.stream("POST", url, timeout=None) as response:
            for line in response.iter_lines():
                if not line.strip():
                    continue
                step = json.loads(line)
                if "done" in step:
                    what = (
                        f"moved to {step['to']}"
                        if "to" in step
                        else step.get("error") or step.get("skipped")
                    )
                    print(
                        f"[{step['done']}/{step['total']}] {step['did']}: {what}", file=sys.stderr
                    )
                elif "draining" in step:
                    print(f"draining: {step['total']} picos to move", file=sys.stderr)
                last = step
    except httpx.HTTPError as e:
        raise SystemExit(f"p2pico: cannot reach the node at {url}: {e}") from e
    return _emit(last)


def cmd_pico_new(args: argparse.Namespace) -> int:
    sources = [Path(f).read_text() for f in args.ruleset or []]
    body: dict[str, object] = {"rulesets": sources}
    if args.wrangler:
        body["wrangler"] = True
        if args.name is not None:
            body["name"] = args.name
    elif args.name is not None:
        raise SystemExit("p2pico: --name names a wrangler pico; add --wrangler")
    return _emit(_call(args, "POST", "/api/picos", body))


def cmd_picos(args: argparse.Namespace) -> int:
    return _emit(_call(args, "GET", "/api/picos"))


def cmd_event(args: argparse.Namespace) -> int:
    domain, sep, type_ = args.event.partition(":")
    if not sep or not domain or not type_:
        raise SystemExit(f"p2pico: expected DOMAIN:TYPE, got {args.event!r}")
    path = f"/sky/event/{quote(args.target, safe=':')}/none/{quote(domain)}/{quote(type_)}"
    return _emit(_call(args, "POST", path, _kv(args.attrs)))


def cmd_query(args: argparse.Namespace) -> int:
    path = f"/sky/cloud/{quote(args.target, safe=':')}/{quote(args.rid)}/{quote(args.function)}"
    return _emit(_call(args, "POST", path, _kv(args.args)))


def cmd_move(args: argparse.Namespace) -> int:
    body = {"did": args.did, "to": args.to}
    if not (args.progress or sys.stderr.isatty()):
        return _emit(_call(args, "POST", "/api/move", body))
    import threading

    import httpx

    result: list[Any] = []
    mover = threading.Thread(target=lambda: result.append(_call(args, "POST", "/api/move", body)))
    mover.start()
    shown = 0
    while mover.is_alive():
        mover.join(0.2)
        try:
            progress = httpx.get(_node_url(args) + "/api/moves", timeout=5).json().get(args.did)
        except (httpx.HTTPError, ValueError, AttributeError):
            progress = None
        if progress and progress["total"]:
            print("\r" + _bar(progress["blocks"], progress["total"]), end="", file=sys.stderr)
            shown = progress["total"]
    moved = result[0] if result and isinstance(result[0], dict) else {}
    total = moved.get("blocks") or shown
    if total and "error" not in moved:  # the target holds every block now
        print("\r" + _bar(total, total) + ", moved", file=sys.stderr)
    return _emit(result[0] if result else {"error": "the move request failed"})


def _bar(done: int, total: int, width: int = 30) -> str:
    filled = width * done // total
    return f"[{'#' * filled}{'.' * (width - filled)}] {done}/{total} blocks"


def cmd_replicas(args: argparse.Namespace) -> int:
    path = f"/api/picos/{args.did}/replicas"
    if args.add:
        return _emit(_call(args, "POST", path, {"add": args.add}))
    if args.remove:
        return _emit(_call(args, "POST", path, {"remove": args.remove}))
    return _emit(_call(args, "GET", path))


def cmd_resolve(args: argparse.Namespace) -> int:
    result = _call(args, "GET", f"/api/resolve/{quote(args.did, safe=':')}")
    if isinstance(result, dict) and "host" in result and not args.full:
        print(result["host"])
        return 0
    return _emit(result)


def cmd_export(args: argparse.Namespace) -> int:
    """Stream the pico's CAR to ``FILE.part``, check every block, then rename it to FILE."""
    import httpx

    from dag.car import CarError, read_car

    url = _node_url(args) + f"/api/picos/{quote(args.did, safe=':')}/car"
    out = Path(args.output)
    part = out.with_name(out.name + ".part")
    tty = sys.stderr.isatty()
    written = 0
    try:
        with httpx.stream("GET", url, timeout=args.timeout) as response:
            if response.status_code != 200:
                response.read()
                try:
                    return _emit(response.json())
                except ValueError:
                    return _emit({"error": f"HTTP {response.status_code}: {response.text}"})
            try:
                with part.open("wb") as f:
                    for chunk in response.iter_bytes():
                        written += f.write(chunk)
                        if tty:
                            print(
                                f"\rexport: {written:,} bytes", end="", file=sys.stderr, flush=True
                            )
            except OSError as e:  # no such folder, no space left: main names the file
                raise _part_failed(part, out, e) from e
    except httpx.HTTPError as e:
        part.unlink(missing_ok=True)
        raise SystemExit(f"p2pico: export from {url} failed: {e}") from e
    if tty:
        print(file=sys.stderr)
    try:
        with part.open("rb") as f:
            roots, blocks = read_car(f)
            if args.encrypt:
                return _seal_export(args, out, part, roots, list(blocks))
            count = sum(1 for _ in blocks)
    except CarError as e:  # e.g. the node stopped mid-stream
        part.unlink()
        return _emit({"error": f"the node sent an incomplete or bad CAR: {e}"})
    _move_part(part, out)
    root = str(roots[0]) if roots else None
    return _emit({"did": args.did, "root": root, "blocks": count, "bytes": written})


def _move_part(part: Path, out: Path) -> None:
    """Rename the finished FILE.part to FILE; if it cannot be (FILE is a folder, say), remove
    the part and fail naming FILE."""
    try:
        part.replace(out)
    except OSError as e:
        raise _part_failed(part, out, e) from e


def _part_failed(part: Path, out: Path, error: OSError) -> OSError:
    """`error` of writing or renaming FILE.part, as one about FILE (the path the user gave),
    with the part removed."""
    part.unlink(missing_ok=True)
    return OSError(error.errno, error.strerror, str(out))


def _seal_export(
    args: argparse.Namespace, out: Path, part: Path, roots: list[Any], blocks: list[Any]
) -> int:
    """--encrypt: seal the verified plain CAR (dag.sealed) with a new key, here, not on the node."""
    from dag.car import write_car
    from dag.sealed import new_key, seal

    key = new_key()
    sealed = seal(key, roots[0], blocks)
    key_file = Path(args.key_file) if args.key_file else out.with_name(out.name + ".key")
    made_key = False
    try:
        with part.open("wb") as f:  # the plain CAR is overwritten, then renamed
            size = write_car(f, [sealed.root], sealed.blocks)
        fd = os.open(key_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        made_key = True
        with os.fdopen(fd, "w") as f:
            f.write(key.hex() + "\n")
        _move_part(part, out)
    except OSError as e:
        # nothing is left behind: no plain CAR in FILE.part, no key of a CAR not written
        part.unlink(missing_ok=True)
        if made_key:
            key_file.unlink(missing_ok=True)
        if e.filename in (str(key_file), str(out)):  # (_move_part's error names FILE)
            raise
        raise _part_failed(part, out, e) from e
    return _emit(
        {
            "did": args.did,
            "root": str(sealed.root),
            "head": str(roots[0]),
            "blocks": len(sealed.blocks),
            "bytes": size,
            "encrypted": "xchacha20-poly1305",
            "key_file": str(key_file),
        }
    )


def _unseal(args: argparse.Namespace, data: bytes) -> bytes | str:
    """--key: open a sealed CAR (dag.sealed) into the plain CAR the node verifies and imports.

    Returns the plain CAR, or the reason it cannot be opened.
    """
    from dag.car import CarError, car_header, car_section, read_car
    from dag.sealed import SealedError, unseal

    text = Path(args.key).read_text(errors="replace")  # unreadable: main names the file
    try:
        key = bytes.fromhex(text.strip())
    except ValueError as e:
        return f"cannot read the key in {args.key}: {e}"
    try:
        roots, blocks = read_car(data)
        held = {block.cid: block for block in blocks}
        if len(roots) != 1:
            raise SealedError(f"a sealed CAR has one root; this one has {len(roots)}")
        root, plain = unseal(key, roots[0], held)
    except (CarError, SealedError) as e:
        return f"cannot decrypt {args.file}: {e}"
    return car_header([root]) + b"".join(car_section(block) for block in plain)


def cmd_import(args: argparse.Namespace) -> int:
    data = Path(args.file).read_bytes()
    if args.key:
        opened = _unseal(args, data)
        if isinstance(opened, str):
            return _emit({"error": f"import refused: {opened}"})
        data = opened
    car = "application/vnd.ipld.car"
    path = "/api/import?accept_truncated=1" if args.accept_truncated else "/api/import"
    return _emit(_call(args, "POST", path, content=data, content_type=car))


def cmd_log(args: argparse.Namespace) -> int:
    return _emit(_call(args, "GET", f"/api/picos/{quote(args.did, safe=':')}/log"))


def cmd_schedule(args: argparse.Namespace) -> int:
    return _emit(_call(args, "GET", f"/api/picos/{quote(args.did, safe=':')}/schedule"))


def cmd_gc(args: argparse.Namespace) -> int:
    return _emit(_call(args, "POST", "/api/gc", {"keep_history": args.keep_history}))


def cmd_share(args: argparse.Namespace) -> int:
    return _emit(_call(args, "POST", "/api/bitswap/allow", {"peer": args.peer, "did": args.did}))


def cmd_unshare(args: argparse.Namespace) -> int:
    return _emit(_call(args, "POST", "/api/bitswap/revoke", {"peer": args.peer}))


def check_krl_file(path: str) -> dict[str, object]:
    """Parse and compile one KRL file: ``{"file", "ok", "error", "line", "col"}``."""
    import krl  # here: the other commands talk to a node and need no compiler
    from krl.errors import KrlError

    out: dict[str, object] = {"file": path, "ok": False, "error": None, "line": None, "col": None}
    try:
        source = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        out["error"] = f"cannot read {path}: {e.strerror if isinstance(e, OSError) else e}"
        return out
    try:
        krl.compile_ruleset(source, filename=path)
    except KrlError as e:
        out["error"] = getattr(e, "message", None) or str(e)
        out["line"] = getattr(e, "line", None)
        out["col"] = getattr(e, "column", None)
        return out
    out["ok"] = True
    return out


def cmd_krl_check(args: argparse.Namespace) -> int:
    """``p2pico krl check FILE...``: one JSON object per line; exit 1 if any file fails."""
    failed = 0
    for path in args.files:
        result = check_krl_file(path)
        failed += not result["ok"]
        print(json.dumps(result, ensure_ascii=False), flush=True)
    return 1 if failed else 0


def cmd_fetch(args: argparse.Namespace) -> int:
    body: dict[str, object] = {"peer": args.peer, "root": args.root}
    if args.addr:
        body["addr"] = args.addr
    return _emit(_call(args, "POST", "/api/bitswap/fetch", body))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="p2pico", description=__doc__.split("\n")[0])
    parser.add_argument("--home", help="node home folder (default ~/.p2pico or $P2PICO_HOME)")
    parser.add_argument("--node", help="HTTP URL of the node to talk to")
    parser.add_argument("--timeout", type=float, default=150.0, help="seconds to wait for the node")
    sub = parser.add_subparsers(dest="command", required=True)

    node = sub.add_parser("node", help="run an engine as a peer of the mesh (or drain one)")
    node.add_argument(
        "action",
        nargs="?",
        choices=["drain"],
        help="drain: move every pico of the running node (--node) away; it takes no new ones",
    )
    node.add_argument(
        "--listen",
        action="append",
        metavar="MULTIADDR",
        help="libp2p listen address (default /ip4/127.0.0.1/tcp/0)",
    )
    node.add_argument(
        "--http",
        default="127.0.0.1:0",
        metavar="HOST:PORT",
        help="HTTP API address (default 127.0.0.1:0, a free port)",
    )
    node.add_argument(
        "--bootstrap",
        nargs="+",
        action="extend",
        metavar="MULTIADDR",
        help="peers to dial at start",
    )
    node.add_argument(
        "--krl-http-allow-private",
        action="store_true",
        help="let KRL's http: reach loopback, private and link-local addresses "
        "(default: public addresses only; never this node's own HTTP API)",
    )
    node.add_argument(
        "--replica-lease",
        type=float,
        default=float(os.environ.get("P2PICO_REPLICA_LEASE", "10")),
        metavar="SECONDS",
        help="a replica takes a pico over after this long without news from its host "
        "(default 10, or $P2PICO_REPLICA_LEASE)",
    )
    node.add_argument(
        "--mdns",
        action="store_true",
        help="find peers on the local network by mDNS (UDP 5353) and connect to them",
    )
    node.add_argument("-v", "--verbose", action="store_true")
    node.set_defaults(func=cmd_node)

    pico = sub.add_parser("pico", help="create and list picos")
    pico_sub = pico.add_subparsers(dest="pico_command", required=True)
    new = pico_sub.add_parser("new", help="create a pico on this node")
    new.add_argument("--ruleset", action="append", metavar="FILE", help="KRL file to install")
    new.add_argument(
        "--wrangler",
        action="store_true",
        help="also install wrangler, subscription and pds (as pico-engine gives a child)",
    )
    new.add_argument("--name", help="the wrangler pico's name (default Pico)")
    new.set_defaults(func=cmd_pico_new)
    ls = pico_sub.add_parser("list", help="picos hosted on this node")
    ls.set_defaults(func=cmd_picos)

    event = sub.add_parser("event", help="send an event to a pico (by DID or ECI)")
    event.add_argument("target")
    event.add_argument("event", metavar="DOMAIN:TYPE")
    event.add_argument("attrs", nargs="*", metavar="k=v")
    event.set_defaults(func=cmd_event)

    query = sub.add_parser("query", help="call a shared function of a pico")
    query.add_argument("target")
    query.add_argument("rid")
    query.add_argument("function")
    query.add_argument("args", nargs="*", metavar="k=v")
    query.set_defaults(func=cmd_query)

    move = sub.add_parser("move", help="move a pico to another engine")
    move.add_argument("did")
    move.add_argument("--to", required=True, metavar="PEER_ID")
    move.add_argument(
        "--progress",
        action="store_true",
        help="draw blocks fetched by the target / total on stderr (default: on a terminal); "
        "shown when the node asked is the pico's host",
    )
    move.set_defaults(func=cmd_move)

    replicas = sub.add_parser("replicas", help="list or change a pico's replicas (on its host)")
    replicas.add_argument("did")
    which = replicas.add_mutually_exclusive_group()
    which.add_argument("--add", metavar="PEER_ID", help="make this engine a replica")
    which.add_argument("--remove", metavar="PEER_ID", help="stop replicating to this engine")
    replicas.set_defaults(func=cmd_replicas)

    resolve = sub.add_parser("resolve", help="the peer id of the engine hosting a DID")
    resolve.add_argument("did")
    resolve.add_argument("--full", action="store_true", help="print the whole record summary")
    resolve.set_defaults(func=cmd_resolve)

    export = sub.add_parser("export", help="write a pico's whole signed history to a CAR file")
    export.add_argument("did")
    export.add_argument("-o", "--output", required=True, metavar="FILE.car")
    export.add_argument(
        "--encrypt",
        action="store_true",
        help="seal every block with a new random key (written to FILE.car.key) for public pinning",
    )
    export.add_argument("--key-file", metavar="KEYFILE", help="with --encrypt: where the key goes")
    export.set_defaults(func=cmd_export)

    import_ = sub.add_parser("import", help="verify a CAR of a pico's history and store it")
    import_.add_argument("file", metavar="FILE.car")
    import_.add_argument("--key", metavar="KEYFILE", help="open a CAR made by export --encrypt")
    import_.add_argument(
        "--accept-truncated",
        action="store_true",
        help="accept a history that starts after genesis (exported after gc --keep-history)",
    )
    import_.set_defaults(func=cmd_import)

    log = sub.add_parser("log", help="a pico's heads newest first, verified, with forks")
    log.add_argument("did")
    log.set_defaults(func=cmd_log)

    schedule = sub.add_parser("schedule", help="a pico's scheduled events (on its host)")
    schedule.add_argument("did")
    schedule.set_defaults(func=cmd_schedule)

    gc = sub.add_parser("gc", help="delete blocks no pico or imported head of this node needs")
    gc.add_argument(
        "--keep-history",
        type=int,
        metavar="N",
        help="keep only each head and its N previous heads (default: all history)",
    )
    gc.set_defaults(func=cmd_gc)

    share = sub.add_parser("share", help="let a peer fetch a pico's current state over Bitswap")
    share.add_argument("did")
    share.add_argument("--with", dest="peer", required=True, metavar="PEER_ID")
    share.set_defaults(func=cmd_share)

    unshare = sub.add_parser("unshare", help="take back every Bitswap grant of a peer")
    unshare.add_argument("--with", dest="peer", required=True, metavar="PEER_ID")
    unshare.set_defaults(func=cmd_unshare)

    fetch = sub.add_parser("fetch", help="fetch a whole DAG from a peer over Bitswap")
    fetch.add_argument("root", metavar="CID")
    fetch.add_argument("--from", dest="peer", required=True, metavar="PEER_ID")
    fetch.add_argument("--addr", metavar="MULTIADDR", help="dial the peer here first")
    fetch.set_defaults(func=cmd_fetch)

    krl_ = sub.add_parser("krl", help="KRL tools that need no node")
    krl_sub = krl_.add_subparsers(dest="krl_command", required=True)
    check = krl_sub.add_parser(
        "check", help="parse and compile KRL files: one JSON line each, exit 1 if any fails"
    )
    check.add_argument("files", nargs="+", metavar="FILE")
    check.set_defaults(func=cmd_krl_check)

    # --node may also follow the sub-command (SUPPRESS: do not overwrite one given before it).
    clients = (new, ls, event, query, move, replicas, resolve, export, import_, log, schedule, gc)
    for client in (*clients, share, unshare, fetch):
        client.add_argument("--node", default=argparse.SUPPRESS, help="HTTP URL of the node")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        code = int(args.func(args))
        sys.stdout.flush()  # here, so that a reader gone away is caught below, not at exit
    except BrokenPipeError:
        # `p2pico log DID | head`: the rest of the output has nowhere to go, which is no error
        # worth a traceback; what is still buffered goes to /dev/null at exit
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 128 + signal.SIGPIPE  # 141, what a shell reports for a command killed by it
    except OSError as e:
        if e.filename is None:
            raise
        # a file named on the command line (a CAR, a ruleset, an output) cannot be read or
        # written: one line, as cat or cp say it
        print(f"p2pico: {e.filename}: {e.strerror}", file=sys.stderr)
        return 1
    return code


if __name__ == "__main__":
    sys.exit(main())
