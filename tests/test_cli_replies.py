"""What the ``p2pico`` CLI makes of a node's replies: a refusal is ``{"error": ...}`` and exit
1, whatever form the node (or the HTTP server in front of it) gave it."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

DID = "did:key:z6MkhaXgBZDvotDkL5257faiztiGiC2QtKLGpbnnEGta2doK"
# path -> (status, content type, body)
REPLIES = {
    "plain-413": (413, "text/plain", b"request body of 135266304 bytes; the limit is 134217728\n"),
    "empty-502": (502, "text/plain", b""),
    "json-500": (500, "application/json", b'{"oops": 1}'),
    "json-error-400": (400, "application/json", b'{"error": "no such pico"}'),
    "plain-200": (200, "text/plain", b"fine\n"),
    "json-200": (200, "application/json", b'{"did": "x"}'),
}


class _Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        # /<case>/api/picos/<did>/log: the case is the first path segment
        status, kind, body = REPLIES[self.path.split("/")[1]]
        self.send_response(status)
        self.send_header("content-type", kind)
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    thread.join()


def log(url: str) -> tuple[int, object]:
    cmd = [sys.executable, "-m", "p2pico", "--node", url, "log", DID]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    assert done.stderr == ""
    return done.returncode, json.loads(done.stdout)


@pytest.mark.parametrize(
    ("case", "expected"),
    [
        ("plain-413", (1, {"error": "request body of 135266304 bytes; the limit is 134217728"})),
        ("empty-502", (1, {"error": "HTTP 502 Bad Gateway"})),
        ("json-500", (1, {"error": "HTTP 500 Internal Server Error", "reply": {"oops": 1}})),
        ("json-error-400", (1, {"error": "no such pico"})),
        ("plain-200", (0, "fine\n")),
        ("json-200", (0, {"did": "x"})),
    ],
)
def test_refusals_exit_1_with_an_error(server: str, case: str, expected: object) -> None:
    assert log(f"{server}/{case}") == expected
