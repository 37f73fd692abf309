"""KRL's ``http:`` module, the engine side: send one request under the node's limits.

Neighbours: krl.stdlib builds the request from the KRL arguments (URL with ``qs``,
headers, body) and calls ``Context.http_request``; p2pico.engine's ``Transaction``
implements that with :meth:`KrlHttp.request`, in the transaction's worker thread;
p2pico.node tells :class:`KrlHttp` where the node's own HTTP API is.

Rulesets may come from peers, so what a ruleset can reach is the operator's choice:

- **Addresses.** By default only public (globally routable) unicast addresses are
  reached; loopback, private, link-local, shared (CGNAT), unspecified, reserved and
  multicast addresses are refused, unless the operator allows private addresses
  (``p2pico node --krl-http-allow-private``). The node's own HTTP API is refused
  always: its management routes act for the operator, and picos are reached with
  ``ctx:query``/``event:send`` (a pico calling itself over HTTP would wait on its own
  queue). The check is made on the address actually connected to, after DNS, for
  every connection (redirects included), so a name that resolves to a private address,
  or a redirect to one, is refused as well. Proxies from the environment are ignored.
- **Time.** One request (connect, send, every redirect, the whole body) has
  ``timeout`` seconds (10); the requests of one transaction have ``txn_seconds`` (30)
  between them, because the pico's queue waits meanwhile. DNS look-ups are bounded by
  the system resolver, not by these.
- **Size.** A response body (after content decoding) of more than ``max_bytes``
  (8 MiB) is refused, as is a redirect chain of more than ``max_redirects`` (5).
"""

from __future__ import annotations

import ipaddress
import socket
import threading
import time
import typing
import urllib.parse
from collections.abc import Iterable, Iterator, Sequence

import httpcore
import httpx

REQUEST_TIMEOUT = 10.0
TXN_HTTP_SECONDS = 30.0
MAX_REDIRECTS = 5
MAX_RESPONSE_BYTES = 8 * 1024 * 1024
ALLOW_PRIVATE_FLAG = "--krl-http-allow-private"

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


class HttpFailure(Exception):
    """A request that got no usable response; the text says why (for a KRL error)."""


class _Refused(Exception):
    """The address policy refused a connection (raised from inside httpcore)."""


def _plain_ip(address: IPAddress) -> IPAddress:
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def _kind(address: IPAddress) -> str | None:
    """What makes ``address`` non-public, or None for a public unicast address."""
    if address.is_unspecified:
        return "an unspecified address"
    if address.is_loopback:
        return "a loopback address"
    if address.is_link_local:
        return "a link-local address"
    if address.is_multicast:
        return "a multicast address"
    if address.is_private:
        return "a private address"
    if not address.is_global:
        return "a reserved or shared address"
    return None


class AddressPolicy:
    """Which (address, port) pairs KRL may connect to."""

    def __init__(self, allow_private: bool = False) -> None:
        self.allow_private = allow_private
        self._own: list[tuple[IPAddress, int]] = []  # the node's HTTP API

    def set_own_api(self, base_url: str) -> None:
        """Refuse ``base_url``'s host and port (the node's HTTP API, e.g. hypercorn's bind)."""
        parts = urllib.parse.urlsplit(base_url)
        if parts.hostname is None or parts.port is None:
            return
        try:
            infos = socket.getaddrinfo(parts.hostname, parts.port, type=socket.SOCK_STREAM)
        except OSError:
            return
        for *_, sockaddr in infos:
            own = (_plain_ip(ipaddress.ip_address(str(sockaddr[0]).split("%")[0])), parts.port)
            if own not in self._own:
                self._own.append(own)

    def _is_own_api(self, address: IPAddress, port: int) -> bool:
        for own, own_port in self._own:
            if port != own_port:
                continue
            if address == own:
                return True
            # 127.0.0.1, ::1 and 0.0.0.0 all reach a server bound to loopback or to every
            # interface; one bound to every interface answers on other local addresses too.
            if own.is_unspecified or own.is_loopback:
                if address.is_loopback or address.is_unspecified:
                    return True
                if own.is_unspecified and address in _local_addresses():
                    return True
        return False

    def refuses(self, address: IPAddress, port: int) -> str | None:
        """Why a connection to (address, port) is refused, or None when it is allowed."""
        address = _plain_ip(address)
        if self._is_own_api(address, port):
            return (
                f"{address} port {port} is this node's own HTTP API "
                "(reach picos with ctx:query or event:send)"
            )
        kind = _kind(address)
        if kind is None or (self.allow_private and not address.is_multicast):
            return None
        return (
            f"{address} is {kind}; this node lets KRL reach only public addresses "
            f"(its operator can allow private ones with {ALLOW_PRIVATE_FLAG})"
        )


def _local_addresses() -> set[IPAddress]:
    """This host's addresses that its name resolves to (best effort)."""
    found: set[IPAddress] = set()
    try:
        for *_, sockaddr in socket.getaddrinfo(socket.gethostname(), None):
            found.add(_plain_ip(ipaddress.ip_address(str(sockaddr[0]).split("%")[0])))
    except (OSError, ValueError):
        pass
    return found


class _GuardedBackend(httpcore.SyncBackend):
    """httpcore's socket backend, connecting only to addresses the policy allows."""

    def __init__(self, policy: AddressPolicy) -> None:
        self.policy = policy

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: typing.Iterable[typing.Any] | None = None,
    ) -> httpcore.NetworkStream:
        try:
            infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except socket.gaierror as e:
            raise httpcore.ConnectError(f"cannot resolve {host}: {e.strerror}") from None
        refused: list[str] = []
        failure: Exception | None = None
        for *_, sockaddr in infos:
            address = ipaddress.ip_address(str(sockaddr[0]).split("%")[0])
            reason = self.policy.refuses(address, port)
            if reason is not None:
                refused.append(reason)
                continue
            try:  # connect to the address just checked, never to the name again
                return super().connect_tcp(
                    str(address), port, timeout, local_address, socket_options
                )
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as e:
                failure = e
        if failure is not None:
            raise failure
        raise _Refused(refused[0] if refused else f"{host} has no address")


class _Stream(httpx.SyncByteStream):
    def __init__(self, stream: Iterable[bytes]) -> None:
        self._stream = stream

    def __iter__(self) -> Iterator[bytes]:
        yield from self._stream

    def close(self) -> None:
        close = getattr(self._stream, "close", None)
        if close is not None:
            close()


class _Transport(httpx.BaseTransport):
    """httpx over an httpcore pool whose connections pass the address policy."""

    def __init__(self, policy: AddressPolicy) -> None:
        self._pool = httpcore.ConnectionPool(
            ssl_context=httpx.create_ssl_context(),
            max_connections=32,
            keepalive_expiry=5.0,
            network_backend=_GuardedBackend(policy),
        )

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        assert isinstance(request.stream, httpx.SyncByteStream)
        response = self._pool.handle_request(
            httpcore.Request(
                method=request.method,
                url=httpcore.URL(
                    scheme=request.url.raw_scheme,
                    host=request.url.raw_host,
                    port=request.url.port,
                    target=request.url.raw_path,
                ),
                headers=request.headers.raw,
                content=request.stream,
                extensions=request.extensions,
            )
        )
        assert isinstance(response.stream, Iterable)
        return httpx.Response(
            status_code=response.status,
            headers=response.headers,
            stream=_Stream(response.stream),
            extensions=response.extensions,
        )

    def close(self) -> None:
        self._pool.close()


# Errors httpcore and httpx raise for a request that failed on the network.
_NETWORK_ERRORS = (
    httpx.HTTPError,
    httpx.InvalidURL,
    httpcore.TimeoutException,
    httpcore.NetworkError,
    httpcore.ProtocolError,
    httpcore.UnsupportedProtocol,
    httpcore.ProxyError,
)


def _describe(error: BaseException, url: str) -> str:
    text = str(error) or type(error).__name__
    if isinstance(error, httpcore.TimeoutException | httpx.TimeoutException):
        return f"no response from {url} in time"
    if "refused" in text.lower():
        return f"connection refused to {url}"
    if isinstance(error, httpcore.ConnectError | httpx.ConnectError):
        return f"cannot connect to {url}: {text}"
    return f"{url}: {text}"


class KrlHttp:
    """Sends KRL's requests; one per engine, shared by its worker threads."""

    def __init__(
        self,
        *,
        allow_private: bool = False,
        timeout: float = REQUEST_TIMEOUT,
        txn_seconds: float = TXN_HTTP_SECONDS,
        max_redirects: int = MAX_REDIRECTS,
        max_bytes: int = MAX_RESPONSE_BYTES,
    ) -> None:
        self.policy = AddressPolicy(allow_private)
        self.timeout = timeout
        self.txn_seconds = txn_seconds
        self.max_redirects = max_redirects
        self.max_bytes = max_bytes
        self._client: httpx.Client | None = None
        self._lock = threading.Lock()

    def _http(self) -> httpx.Client:
        with self._lock:
            if self._client is None:  # made on first use: most engines never need one
                self._client = httpx.Client(
                    transport=_Transport(self.policy), trust_env=False, follow_redirects=False
                )
            return self._client

    def close(self) -> None:
        with self._lock:
            if self._client is not None:
                self._client.close()
                self._client = None

    def request(
        self,
        method: str,
        url: str,
        headers: Sequence[tuple[str, str]],
        body: bytes | None,
        follow_redirects: bool,
        timeout: float | None = None,
    ) -> dict[str, object]:
        """One request, redirects followed (or not), as KRL's response map.

        ``timeout`` (default ``self.timeout``) bounds the whole of it; HttpFailure says
        why there is no response.
        """
        seconds = self.timeout if timeout is None else min(timeout, self.timeout)
        deadline = time.monotonic() + seconds
        client = self._http()
        current = url
        for hop in range(self.max_redirects + 1):
            target = self._check_url(current)
            left = deadline - time.monotonic()
            if left <= 0:
                raise HttpFailure(f"no response from {current} within {seconds:g} s")
            try:
                request = client.build_request(
                    method, target, headers=list(headers), content=body, timeout=left
                )
                response = client.send(request, stream=True)
            except _Refused as e:
                raise HttpFailure(f"refused to connect to {current}: {e}") from None
            except _NETWORK_ERRORS as e:
                raise HttpFailure(_describe(e, current)) from None
            try:
                location = response.headers.get("location")
                if follow_redirects and response.status_code in (301, 302, 303, 307, 308):
                    if location is None:
                        pass  # a redirect status without a place to go: the answer itself
                    elif hop == self.max_redirects:
                        raise HttpFailure(
                            f"{url}: more than {self.max_redirects} redirects (last to {location})"
                        )
                    else:
                        following = str(response.url.join(location))
                        method, body, headers = _redirected(
                            response.status_code, method, body, headers, response.url, following
                        )
                        current = following
                        continue
                content = self._read(response, current, deadline, seconds)
                return _response_map(response, content)
            finally:
                response.close()
        raise AssertionError("unreachable")  # pragma: no cover

    def _check_url(self, url: str) -> httpx.URL:
        try:
            parsed = httpx.URL(url)
        except (httpx.InvalidURL, TypeError, ValueError) as e:
            raise HttpFailure(f"invalid URL {url!r}: {e}") from None
        if parsed.scheme not in ("http", "https"):
            raise HttpFailure(f"only http and https URLs can be fetched, not {url!r}")
        if not parsed.host:
            raise HttpFailure(f"invalid URL {url!r}: no host")
        return parsed

    def _read(self, response: httpx.Response, url: str, deadline: float, seconds: float) -> bytes:
        if response.request.method == "HEAD":
            return b""
        chunks: list[bytes] = []
        size = 0
        try:
            for chunk in response.iter_bytes():
                size += len(chunk)
                if size > self.max_bytes:
                    raise HttpFailure(
                        f"the response from {url} is larger than {self.max_bytes} bytes"
                    )
                if time.monotonic() > deadline:
                    raise HttpFailure(f"no complete response from {url} within {seconds:g} s")
                chunks.append(chunk)
        except _NETWORK_ERRORS as e:
            raise HttpFailure(_describe(e, url)) from None
        return b"".join(chunks)


def _redirected(
    status: int,
    method: str,
    body: bytes | None,
    headers: Sequence[tuple[str, str]],
    origin: httpx.URL,
    location: str,
) -> tuple[str, bytes | None, Sequence[tuple[str, str]]]:
    """The next request after a redirect, as fetch makes it: 303 (and 301/302 after a
    POST) become a GET without a body; credentials are not sent to another origin."""
    kept = list(headers)
    if (status == 303 and method != "HEAD") or (status in (301, 302) and method == "POST"):
        method, body = "GET", None
        kept = [(k, v) for k, v in kept if k.lower() not in ("content-type", "content-length")]
    target = httpx.URL(location)
    if (target.scheme, target.host, target.port) != (origin.scheme, origin.host, origin.port):
        kept = [(k, v) for k, v in kept if k.lower() not in ("authorization", "cookie")]
    return method, body, kept


def _response_map(response: httpx.Response, content: bytes) -> dict[str, object]:
    """KRL's response: ``{content, content_type, content_length, headers, status_code,
    status_line}``; repeated headers are joined with ", " (as fetch's Headers do)."""
    headers: dict[str, str] = {}
    for name, value in response.headers.multi_items():
        key = name.lower()
        headers[key] = f"{headers[key]}, {value}" if key in headers else value
    try:
        length = int(response.headers.get("content-length", ""))
    except ValueError:
        length = 0
    encoding = response.charset_encoding or "utf-8"
    try:
        text = content.decode(encoding, errors="replace")
    except LookupError:  # a charset Python does not know
        text = content.decode("utf-8", errors="replace")
    return {
        "content": text,
        "content_type": response.headers.get("content-type"),
        "content_length": length,
        "headers": headers,
        "status_code": response.status_code,
        "status_line": response.reason_phrase,
    }
