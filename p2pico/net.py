"""The libp2p boundary of p2pico: a host, request/response streams and gossipsub behind one API.

This is the only module in the project that imports libp2p (tests/test_boundaries.py checks).
Everything above it talks in peer-id strings, multiaddr strings and bytes, so a py-libp2p
upgrade, or a swap to another implementation, touches this file alone.

Theory of operation
-------------------
``serve_net`` owns the whole stack and is started with ``nursery.start``. It builds, in this
order (shared/research/libp2p-probe.md §3-4 has the measurements behind each choice):

1. The host: TCP + Noise + yamux and nothing else. Noise is the only security transport we
   offer, because py-libp2p otherwise also offers plaintext (P10).
   ``max_connections_per_peer=1`` avoids a 250 ms happy-eyeballs wait on every dial (P1).
2. Gossipsub with spam protection off (its default drops anything over 10 msg/s, our own
   publishes included: P2). Pubsub and its router run *before* the host listens or dials:
   a connection that arrives between ``Pubsub(...)`` and the start of its service deadlocks
   ``connect()`` (P4).
3. The host listens, the bootstrap peers are dialled (with retries, never fatal), and only
   then ``task_status.started(net)``.

Request/response on persistent streams (``/p2pico/rpc/1.0.0``, codec in protocols.rpc):
each engine keeps up to ``RPC_STREAMS_PER_PEER`` long-lived streams to each peer it asks
things, opened on first use. A request is one frame tagged with an id and the protocol it
belongs to (``/p2pico/msg/1.0.0``…); answers come back tagged with the same id, in the
order the handlers finish. Each answer goes to its waiting caller as yamux decodes it
(see "Rpc bytes from the yamux reader" below). Bounds: at most ``MAX_IN_FLIGHT``
requests outstanding per stream (callers past that wait for a slot: the backpressure),
a new stream only when every open one is busy.
The responder reads its inbound streams without pause and runs each request's handler in
a task of its own, so neither side ever leaves bytes unread for yamux's 5-second
flow-control timeout (P8); a frame that starts must be complete within
``REQUEST_READ_TIMEOUT``; a handler that raises or times out gives an error answer. A
stream or connection that dies fails the requests written on it (``StreamFailed``: they
may have run) and is dropped; the next request opens a fresh one, redialling if needed.
Frames are written whole even when the caller is cancelled (a cut frame would break the
stream for everyone on it). A peer that does not speak ``/p2pico/rpc/1.0.0`` gets the
one-shot path, which is also what ``P2PICO_RPC=0`` selects:

One stream per request: the requester writes one length-prefixed frame
(protocols.framing), half-closes, and reads one frame back. The responder reads one frame
(within ``REQUEST_READ_TIMEOUT``, so a peer that stalls cannot pin a task), calls the
handler, writes one frame and closes. Any failure on the responder side resets the stream,
which the requester sees as ``StreamFailed``. Handlers never run while bytes are waiting
unread: the request is read in full first, so yamux's 5-second flow-control timeout (P8)
cannot fire on a request. It costs a stream open and a multistream negotiation per request
(about 3 ms of CPU for both ends together, against 0.6 ms on a persistent stream:
scripts/bench/mesh.py).

Yamux flow control: py-libp2p 0.8.1 credits a stream's receive window after nearly every
read, one more frame per message; ``_batched_window_update`` replaces that with go-yamux's
rule (credit once half the window has been read), a third fewer frames on request streams.

Reading the TCP connection: py-libp2p 0.8.1 reads each Noise message with two recv()
calls (its 2-byte length, then its body), each through a lock and trio's socket
wrapper; ``_buffered_tcp_read`` receives up to 64 KiB at once and serves both from
what it got, one recv() per message (or fewer). And yamux reads its data-frame timeout
(``PY_YAMUX_DATA_READ_TIMEOUT``) from the environment on every frame: here it is read
once, on the first frame.

Scheduling rounds and layers per frame: every ``async with trio.Lock()`` is a round of
trio's run loop even when the lock is free, and py-libp2p takes seven per frame (stream
state, yamux window, stream write, connection write, stream table, socket read and write
locks), then adds a checkpoint after each frame written and one inside trio's send: a
request/response round trip on a persistent stream took 32 task steps (22 epoll waits).
``_fewer_scheduling_rounds`` makes those locks take a free lock at once (``_QuickLock``;
a held one is waited for as before), drops yamux's extra checkpoint and its per-frame
debug formatting, sends straight on the non-blocking socket (trio's ``send_all`` only for
what the kernel did not take), and serves a DATA frame's body from the Noise session's
buffer without a timeout scope: 6 task steps (6 epoll waits) per round trip, the fewest
with one reader task per connection and per stream. A stream's read (``Yamux.read_stream``)
and a Noise message's read no longer format debug lines nobody logs, and a Noise message
already in the TCP read buffer is taken from it in one step. Our own frames (``_write_shielded``)
go through ``_write_frame_direct``: the same bytes as py-libp2p's yamux over Noise, built
and sent in one call; when the write locks are free they are offered to the kernel at once
with no checkpoint, so no shielded cancel scope is needed for them either
(``_send_frame_now``; a tail the kernel did not take follows under the locks and the
shield). Gossipsub gets one round back before each RPC it reads
(``_pubsub_messages_in_turn``), so its per-message tasks still deliver in order.

Rpc bytes from the yamux reader: on a ``/p2pico/rpc/1.0.0`` stream (both ends) the bytes of
each yamux DATA frame go from py-libp2p's ``Yamux.handle_incoming`` straight into the rpc
state machine (``_install_sink``: a ``_SinkBuffer`` in place of the stream's receive
buffer), so a request's handler task is started, or an answer's caller woken, while the
yamux task decodes the frame: no wake-up of a stream reader task in a later scheduling
round, no ``NetStream``/``YamuxStream`` read. py-libp2p still handles every frame type and
flag; the stream's end-state flags (FIN, RST, the connection closing) wake its owner task
(``_SinkedYamuxStream``), which then reads the stream as before to get the same EOF or
reset. Bytes that bypass the reads are credited to the peer's window by a task of the
sink's, once half of the window is used (so the yamux reader never waits on a write).

Frame streams (``set_stream_handler`` / ``open_stream``) are for message protocols that are
not one request and one response, such as Bitswap: a ``FrameStream`` sends and receives any
number of length-prefixed frames, and its owner decides when to close it. Inbound streams
go to the handler in their own task; the handler must read promptly (P8).

Connection events come from a libp2p network notifee. It never awaits user code: each
``on_peer_connected`` callback runs in its own task in the Net's nursery.

Failed dials put a peer in libp2p's 60-second negative dial cache (P7); every dial made here
calls ``unblock_peer`` first, so a peer that comes back is reachable at once. A dead peer's
connection stays registered for a while (P13); when a stream on an existing connection fails,
``request`` drops that connection and tries once more through a fresh dial (only opening the
stream is retried, never a request that was already sent).

Shutdown: py-libp2p runs its TCP listeners in trio system tasks, outside any nursery of ours,
so ``serve_net`` closes them itself on the way out (``_close_listeners``).

py-libp2p's logging is routed through the ``p2pico.libp2p`` logger at WARNING and above;
see ``_route_libp2p_logging``.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import math
import os
import struct
import types
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Final

import nacl.signing
import trio
from libp2p import new_host
from libp2p.abc import INotifee
from libp2p.crypto.ed25519 import Ed25519PrivateKey
from libp2p.crypto.keys import KeyPair
from libp2p.crypto.x25519 import create_new_key_pair as create_new_x25519_key_pair
from libp2p.custom_types import TProtocol
from libp2p.host.exceptions import StreamFailure
from libp2p.io import utils as _libp2p_io_utils
from libp2p.io.exceptions import ConnectionClosedError
from libp2p.io.trio import TrioTCPStream
from libp2p.io.utils import read_exactly as _read_exactly
from libp2p.network.config import ConnectionConfig
from libp2p.network.connection import swarm_connection as _libp2p_swarm_connection
from libp2p.network.stream.net_stream import NetStream
from libp2p.network.stream.net_stream import StreamState as _NetStreamState
from libp2p.peer.id import ID
from libp2p.peer.peerinfo import PeerInfo, info_from_p2p_addr
from libp2p.peer.peerstore import PeerStoreError
from libp2p.pubsub import pubsub as _libp2p_pubsub
from libp2p.pubsub.gossipsub import PROTOCOL_ID, PROTOCOL_ID_V11, PROTOCOL_ID_V12, GossipSub
from libp2p.pubsub.pubsub import Pubsub
from libp2p.security.noise import io as _libp2p_noise_io
from libp2p.security.noise.transport import PROTOCOL_ID as NOISE_PROTOCOL_ID
from libp2p.security.noise.transport import Transport as NoiseTransport
from libp2p.security.secure_session import SecureSession
from libp2p.stream_muxer import rw_lock as _libp2p_rw_lock
from libp2p.stream_muxer.exceptions import MuxedStreamEOF, MuxedStreamReset
from libp2p.stream_muxer.yamux import yamux as _libp2p_yamux
from libp2p.stream_muxer.yamux.yamux import PROTOCOL_ID as YAMUX_PROTOCOL_ID
from libp2p.stream_muxer.yamux.yamux import Yamux, YamuxStream
from libp2p.tools.anyio_service import background_trio_service
from multiaddr import Multiaddr

from protocols.framing import (
    MAX_FRAME_SIZE,
    FrameDecoder,
    FramingError,
    decode_uvarint,
    encode_frame,
)
from protocols.rpc import (
    RPC_PROTOCOL,
    Failure,
    RpcClient,
    RpcProtocolError,
    RpcServer,
)

__all__ = [
    "FrameStream",
    "Net",
    "NetError",
    "PeerUnreachable",
    "ProtocolNotSupported",
    "RequestTimeout",
    "StreamFailed",
    "serve_net",
]

logger = logging.getLogger(__name__)

RequestHandler = Callable[[str, bytes], Awaitable[bytes]]
TopicHandler = Callable[[str, bytes], Awaitable[None]]
PeerCallback = Callable[[str], Awaitable[None]]
PeerGoneCallback = Callable[[str], None]
StreamHandler = Callable[[str, "FrameStream"], Awaitable[None]]

# A responder waits this long for the whole request frame. The requester writes it in one go
# right after opening the stream, so anything slower is a stalled or hostile peer.
REQUEST_READ_TIMEOUT: Final = 30.0
# Upper bound on handler + response write on the responder side. The requester's own default
# timeout is 30 s, so work past this point could never be delivered.
RESPONSE_TIMEOUT: Final = 60.0
# Stream reads ask for at most this much; the frame decoder bounds the total.
_READ_CHUNK: Final = 64 * 1024
# Bound on the shielded cleanup serve_net does when cancelled.
SHUTDOWN_TIMEOUT: Final = 2.0
# Bootstrap: attempts per address and the first back-off (doubled after each failure).
BOOTSTRAP_ATTEMPTS: Final = 3
BOOTSTRAP_BACKOFF: Final = 0.5
# Pubsub messages wait here between libp2p's 32-slot subscription buffer (P3) and the
# topic handlers, so a briefly slow handler does not make libp2p drop messages.
_TOPIC_QUEUE_SIZE: Final = 1024
# publish() waits until each peer's outbound RPC queue (32 slots, libp2p's
# pubsub/rpc_queue.py OutBoundQueueSize) holds at most this many RPCs, for at most
# PUBLISH_BACKPRESSURE_LIMIT seconds. One publish costs about 2 RPCs per peer (P3).
_OUTBOUND_QUEUE_HIGH: Final = 16
PUBLISH_BACKPRESSURE_LIMIT: Final = 2.0
_GOSSIPSUB_PROTOCOLS: Final = (PROTOCOL_ID_V12, PROTOCOL_ID_V11, PROTOCOL_ID)
# Persistent request streams (protocols.rpc): at most this many per peer and direction. A
# request goes on the least busy one; another is opened only when every open one already
# has RPC_SPILL requests in flight, so a long answer (a 2 MiB block batch) does not hold up
# the small ones behind it for long. Each carries at most protocols.rpc.MAX_IN_FLIGHT.
RPC_STREAMS_PER_PEER: Final = 4
RPC_SPILL: Final = 2
# A peer may keep this many inbound rpc streams open to us; one more is reset.
RPC_INBOUND_LIMIT: Final = 8
# A request whose stream died before it was written is sent again on a fresh stream, at
# most this many times (a request that was written is never resent: it may have run).
RPC_RESEND: Final = 2
# Bound on writing one frame. Writes are shielded from cancellation (a half-written frame
# would break the stream for every request on it), so this bounds what a timeout waits.
_RPC_WRITE_TIMEOUT: Final = 10.0
# P2PICO_RPC=0 turns persistent streams off: every request on a stream of its own, as
# before (scripts/bench/mesh.py compares the two in one run).
_RPC_ENV: Final = "P2PICO_RPC"


# --- errors -------------------------------------------------------------------------------


class NetError(Exception):
    """A network operation failed; the message says why."""


class PeerUnreachable(NetError):
    """No connection to the peer could be made: no known address, or every dial failed."""


class StreamFailed(NetError):
    """The stream broke before a full response frame arrived (reset, EOF, bad frame)."""


class ProtocolNotSupported(StreamFailed):
    """The peer is reachable but has no handler for the requested protocol."""


class RequestTimeout(NetError):
    """The request did not complete within its timeout."""


# --- logging ------------------------------------------------------------------------------

# Records libp2p logs at WARNING or above for situations this module turns into exceptions
# of its own (so logging them too would report each failure twice). They go out at DEBUG.
_DEMOTED_LIBP2P_MESSAGES: Final = (
    "Failed to open stream to peer",  # new_stream: we raise StreamFailed/ProtocolNotSupported
    "MultiselectClient handshake: ",  # stream negotiation on a dying connection: same
    "Failed to open TCP stream",  # a failed dial: connect/request raise PeerUnreachable
)


class _Libp2pLogBridge(logging.Handler):
    """Re-emit libp2p's log records through the ``p2pico.libp2p`` logger.

    On import, libp2p sets its ``libp2p`` logger to WARNING with no handlers and
    ``propagate = False`` (libp2p/utils/logging.py). Python then prints such records through
    ``logging.lastResort`` straight to stderr, bypassing the application's logging setup
    entirely (P12). This handler hands them to our logger tree instead, so the application's
    configuration decides where they go, and the record keeps its ``libp2p.*`` name.
    """

    def __init__(self) -> None:
        super().__init__(level=logging.WARNING)
        self._target = logging.getLogger("p2pico.libp2p")

    def emit(self, record: logging.LogRecord) -> None:
        if isinstance(record.msg, str) and record.msg.startswith(_DEMOTED_LIBP2P_MESSAGES):
            record = logging.makeLogRecord(
                record.__dict__
            )  # a copy: other handlers see the original
            record.levelno, record.levelname = logging.DEBUG, "DEBUG"
        if self._target.isEnabledFor(record.levelno):
            self._target.handle(record)


class _LoggingModuleShim:
    """Stands in for the ``logging`` module inside one libp2p module.

    libp2p/network/connection/swarm_connection.py logs through the module-level functions
    (``logging.debug(...)``), i.e. on the *root* logger. When the root logger has no
    handler yet, each such call runs ``logging.basicConfig()``, which installs a stderr
    handler on the application's root logger behind its back, and the records bypass the
    ``libp2p`` logger's level. This shim sends them to the module's own named logger.
    """

    _LEVEL_FUNCTIONS: Final = frozenset(
        {"debug", "info", "warning", "error", "exception", "critical", "log"}
    )

    def __init__(self, logger: logging.Logger) -> None:
        self._logger = logger

    def __getattr__(self, name: str) -> Any:
        if name in self._LEVEL_FUNCTIONS:
            return getattr(self._logger, name)
        return getattr(logging, name)


def _route_libp2p_logging() -> None:
    """Send libp2p's WARNING+ records through our loggers (idempotent).

    Left alone when ``LIBP2P_DEBUG`` is set: then libp2p installs its own handlers, and
    whoever set the variable wants that output.
    """
    module = _libp2p_swarm_connection
    if isinstance(getattr(module, "logging", None), types.ModuleType):
        setattr(module, "logging", _LoggingModuleShim(logging.getLogger(module.__name__)))  # noqa: B010
    if os.environ.get("LIBP2P_DEBUG"):
        return
    libp2p_logger = logging.getLogger("libp2p")
    if any(isinstance(h, _Libp2pLogBridge) for h in libp2p_logger.handlers):
        return
    libp2p_logger.setLevel(logging.WARNING)
    libp2p_logger.propagate = False
    libp2p_logger.addHandler(_Libp2pLogBridge())


_route_libp2p_logging()


# --- yamux flow control ---------------------------------------------------------------------


async def _batched_window_update(self: Any, *, bytes_read: int = 0) -> None:
    """Credit the peer's send window once half of our receive window has been read.

    py-libp2p 0.8.1's yamux (``YamuxStream._auto_tune_and_send_window_update``) also sends
    a WINDOW_UPDATE after nearly every read ("partial slack", and ``RELEASE_ON_READ``,
    on by default): one more Noise-encrypted frame, send() and wake-up on the peer for
    every request and every answer of a request/response stream, a third of the frames
    on the wire. go-yamux credits only once the bytes read reach half the window (its
    ``GrowTo`` hysteresis), which is what this does: the sender can still have a whole
    window (256 KiB, growing) in flight, so a bulk transfer never waits on it, and a
    reader that stops reading still stops the sender (P8 is unchanged).
    """
    total = 0
    async with self.window_lock:
        self._pending_recv_release += bytes_read
        buffered = len(self.conn.stream_buffers.get(self.stream_id, b""))
        threshold = self._grow_threshold()
        if self.target_recv_window - (self.recv_window + buffered) >= max(threshold, 1):
            total = self._grow_to_delta(buffered) + self._apply_autotune_epoch(buffered)
            self._pending_recv_release = 0
    if total > 0:
        await self.send_window_update(total, skip_lock=True)


def _batch_yamux_window_updates() -> None:
    """Install ``_batched_window_update`` on py-libp2p's yamux streams (idempotent).

    Only if the stream class still has every part it uses (a py-libp2p upgrade that
    changes them leaves the original in place, logged)."""
    needed = (
        "_auto_tune_and_send_window_update",
        "_grow_threshold",
        "_grow_to_delta",
        "_apply_autotune_epoch",
        "send_window_update",
    )
    if all(hasattr(YamuxStream, name) for name in needed):
        YamuxStream._auto_tune_and_send_window_update = _batched_window_update  # type: ignore[method-assign]
    else:
        logger.warning("yamux window updates left as py-libp2p sends them (unknown version)")


_batch_yamux_window_updates()


# --- reading the TCP connection --------------------------------------------------------------


async def _buffered_tcp_read(self: Any, n: int | None = None) -> bytes:
    """``TrioTCPStream.read``, receiving up to ``_READ_CHUNK`` bytes at once and keeping
    what the caller did not ask for, for its next read (same results and errors).

    Bytes left over are served without a checkpoint or the lock: no reader through
    ``read`` can be waiting in ``receive_some`` while any are (they were received by the
    last read under the lock, and every read takes from them first). The Noise reader's
    ``_tcp_receive_more`` waits with the start of its next message kept, as the
    connection's only reader once the handshake is done."""
    if n == 0:
        return b""
    kept: bytes = self.__dict__.get("_p2pico_kept", b"")
    if not kept:
        async with self.read_lock:
            kept = self.__dict__.get("_p2pico_kept", b"")  # another reader got some meanwhile
            if not kept:
                kept = await _tcp_receive(self, max(n or 0, _READ_CHUNK))
                if not kept:
                    return b""
    if n is None or n >= len(kept):
        self._p2pico_kept = b""
        return kept
    self._p2pico_kept = kept[n:]
    return kept[:n]


async def _tcp_receive(tcp: Any, n: int) -> bytes:
    """One ``receive_some`` on the TCP stream, failing as py-libp2p reads fail: b"" at EOF
    or on a connection closed here, ConnectionClosedError on a reset one."""
    try:
        data: bytes = await tcp.stream.receive_some(n)
    except trio.BrokenResourceError as error:
        raise ConnectionClosedError(
            f"TCP connection reset by remote peer: {error}", transport="tcp"
        ) from error
    except trio.ClosedResourceError:
        return b""  # closed here: EOF, as py-libp2p answers it
    return data


def _buffer_tcp_reads() -> None:
    """Install ``_buffered_tcp_read`` and read yamux's data-frame timeout once (idempotent;
    the timeout is left as py-libp2p reads it, logged, if yamux no longer has that function)."""
    TrioTCPStream.read = _buffered_tcp_read  # type: ignore[method-assign]
    timeout = getattr(_libp2p_yamux, "_yamux_data_read_timeout", None)
    if callable(timeout) and not isinstance(timeout, functools._lru_cache_wrapper):
        _libp2p_yamux._yamux_data_read_timeout = functools.cache(timeout)
    elif timeout is None:
        logger.warning("yamux's data-frame timeout left as py-libp2p reads it (unknown version)")


_buffer_tcp_reads()


# --- scheduling rounds per frame ------------------------------------------------------------


class _QuickLock:
    """A ``trio.Lock`` that is taken without a scheduling round when it is free.

    ``async with trio.Lock()`` always yields to the scheduler (a checkpoint), even when
    nobody holds the lock. py-libp2p's stream, yamux and TCP layers take seven such locks
    per frame (the stream's state, window and write locks, the connection's stream-table
    and write locks, the socket's read and write locks), each one more round of trio's run
    loop (an epoll_wait and a task switch): most of the 32 task steps of a request/response
    round trip on a persistent stream. Here a free lock is taken at once; a held one is
    waited for as before (``trio.Lock.acquire``: fair, cancellable). Every loop that takes
    one still reaches a real checkpoint (a wait for data, for room in the socket, or for an
    event), so none runs unchecked for longer than the bytes already buffered.
    """

    __slots__ = ("_lock",)

    def __init__(self) -> None:
        self._lock = trio.Lock()

    async def __aenter__(self) -> None:
        try:
            self._lock.acquire_nowait()
        except trio.WouldBlock:
            await self._lock.acquire()

    async def __aexit__(self, *exc: object) -> None:
        self._lock.release()

    async def acquire(self) -> None:
        await self.__aenter__()

    def acquire_nowait(self) -> None:
        self._lock.acquire_nowait()

    def release(self) -> None:
        self._lock.release()

    def locked(self) -> bool:
        return self._lock.locked()

    def statistics(self) -> Any:
        return self._lock.statistics()


class _QuickReadWriteLock(_libp2p_rw_lock.ReadWriteLock):
    """py-libp2p's ``ReadWriteLock`` whose free write side is taken without a scheduling
    round (yamux takes it around every frame it writes)."""

    def __init__(self) -> None:
        super().__init__()
        self._readers_lock = _QuickLock()  # type: ignore[assignment]

    async def acquire_write(self) -> None:
        try:
            self._writer_lock.acquire_nowait()
        except trio.WouldBlock:
            await self._writer_lock.acquire()


async def _lean_write_frame(self: Any, data: bytes) -> None:
    """``Yamux._write_frame`` without its trailing extra checkpoint (the socket's send
    already is one) and without formatting a debug line for every frame unless debug
    logging is on: same bytes, same write lock."""
    if _libp2p_yamux_logger.isEnabledFor(logging.DEBUG):
        _libp2p_yamux_logger.debug("YAMUX TX: %d bytes", len(data))
    async with self._write_lock:
        await self.secured_conn.write(data)


async def _buffered_data_body(self: Any, length: int) -> bytes:
    """``Yamux._read_data_body``, served straight from the Noise session's decrypted
    buffer when the whole body is there (py-libp2p writes a frame's header and body as
    one Noise message, so it nearly always is); otherwise read as py-libp2p does, under
    its data-frame timeout."""
    conn = self.secured_conn
    if (
        type(conn) is SecureSession
        and conn.high_watermark - conn.low_watermark >= length
        and length > 0
    ):
        return conn._drain(length)
    # as py-libp2p's _read_data_body, with the read_exactly of libp2p.io (not the name in
    # yamux's module, which _yamux_read_header may stand in for: a header read only)
    with trio.fail_after(_libp2p_yamux._yamux_data_read_timeout()):
        return await _read_exactly(conn, length)


async def _direct_tcp_write(self: Any, data: bytes) -> None:
    """``TrioTCPStream.write``: one send() straight on the non-blocking socket, under the
    stream's write lock; only what the kernel did not take goes through trio's
    ``send_all`` (which waits for room). Saves trio's socket wrapper and the scheduling
    round it ends every send with, once per frame. Errors as py-libp2p raises them: a
    broken connection is ``ConnectionClosedError``, a socket closed here returns quietly."""
    async with self.write_lock:
        stream = self.stream
        sent = 0
        sock = getattr(getattr(stream, "socket", None), "_sock", None)
        if sock is not None and not getattr(stream.socket, "did_shutdown_SHUT_WR", True):
            try:
                sent = sock.send(data)
            except OSError:  # no room (BlockingIOError) or broken: send_all decides
                sent = 0
        if sent >= len(data):
            return
        await _send_rest(stream, memoryview(data)[sent:])


async def _send_rest(stream: Any, data: bytes | memoryview) -> None:
    """trio's ``send_all`` on a TCP stream, its errors as py-libp2p raises them: a broken
    connection is ``ConnectionClosedError``, a socket closed here returns quietly."""
    try:
        await stream.send_all(data)
    except trio.BrokenResourceError as error:
        raise ConnectionClosedError(
            f"TCP connection reset by remote peer: {error}", transport="tcp"
        ) from error
    except trio.ClosedResourceError:
        logger.debug("write on a TCP connection closed here")


async def _lean_read_stream(self: Any, stream_id: int, n: int | None = -1) -> bytes:
    """``Yamux.read_stream`` (a stream's read of at most ``n`` bytes): the same checks in
    the same order, results and errors, without the four debug lines it formats on every
    call whether or not debug logging is on."""
    if n is None:
        n = -1
    while True:
        async with self.streams_lock:
            stream = self.streams.get(stream_id)
            if stream is None:
                raise MuxedStreamEOF("Stream closed")
            if self.event_shutting_down.is_set():
                raise MuxedStreamEOF("Connection shut down")
            buffer = self.stream_buffers.get(stream_id)
            if buffer is None:
                if stream.reset_received:
                    raise MuxedStreamReset("Stream was reset")
                raise MuxedStreamEOF("Stream buffer closed")
            # buffered data is returned before a reset only once the peer closed its side
            if buffer and (stream.recv_closed or not stream.reset_received):
                if n == -1 or n >= len(buffer):
                    data = bytes(buffer)
                    buffer.clear()
                else:
                    data = bytes(buffer[:n])
                    del buffer[:n]
                if stream.closed:
                    self._finalize_stream_locked(stream, fully_closed=True)
                return data
            if stream.reset_received:
                raise MuxedStreamReset("Stream was reset")
            if stream.recv_closed:
                raise MuxedStreamEOF("Stream is closed for receiving")
            if stream.closed:
                raise MuxedStreamReset("Stream is reset or closed")
        try:
            await self.stream_events[stream_id].wait()
            self.stream_events[stream_id] = trio.Event()
        except KeyError:
            raise MuxedStreamEOF("Stream was removed") from None


async def _lean_noise_read_msg(self: Any, prefix_encoded: bool = False) -> bytes:
    """``NoiseTransportReadWriter.read_msg``: one Noise message, decrypted.

    On a TCP stream with our read buffer (``_buffered_tcp_read``) the message's 2-byte
    length and body are cut from that buffer, which is filled straight from the socket
    (``_tcp_receive_more``) until it holds the whole message: no msgio, raw-connection
    or buffered-read calls per length and body. At EOF or an error it reads as py-libp2p
    does, which then fails as py-libp2p fails (its three debug lines are formatted only
    when debug logging is on)."""
    tcp = getattr(getattr(self.read_writer, "read_write_closer", None), "stream", None)
    if not prefix_encoded and type(tcp) is TrioTCPStream:
        while True:
            kept: bytes = tcp.__dict__.get("_p2pico_kept", b"")
            if len(kept) >= 2:
                end = 2 + int.from_bytes(kept[:2], "big")
                if len(kept) >= end:
                    tcp._p2pico_kept = kept[end:]  # type: ignore[attr-defined]
                    return self.decrypt(kept[2:end])  # type: ignore[no-any-return]
            if not await _tcp_receive_more(tcp):
                break
    encrypted = await self.read_writer.read_msg()
    if _libp2p_noise_logger.isEnabledFor(logging.DEBUG):
        _libp2p_noise_logger.debug("Noise read_msg: read %d encrypted bytes", len(encrypted))
    if prefix_encoded:
        encrypted = encrypted[len(self.prefix) :]
    return self.decrypt(encrypted)  # type: ignore[no-any-return]


async def _tcp_receive_more(tcp: Any) -> bool:
    """Receive more bytes onto the end of the TCP stream's read buffer; False (nothing
    changed) at EOF or on a connection closed here, ConnectionClosedError on a reset one
    (``_tcp_receive``). The Noise reader is the stream's only reader once the
    handshake is done, so the buffer holds the start of its next message while it waits."""
    async with tcp.read_lock:
        kept: bytes = tcp.__dict__.get("_p2pico_kept", b"")
        data = await _tcp_receive(tcp, _READ_CHUNK)
        if not data:
            return False
        if tcp.__dict__.get("_p2pico_kept", b"") is not kept:  # pragma: no cover - one reader
            raise RuntimeError("the TCP read buffer changed while its reader waited")
        tcp._p2pico_kept = kept + data if kept else data
        return True


_YAMUX_DATA_HEADER: Final = struct.Struct(_libp2p_yamux.YAMUX_HEADER_FORMAT)
# A frame up to this size goes out as one yamux DATA frame in one Noise message.
_DIRECT_MAX: Final = (
    min(_libp2p_yamux.MAX_MESSAGE_SIZE, _libp2p_noise_io.MAX_PLAINTEXT_LENGTH)
    - _libp2p_yamux.HEADER_SIZE
)


async def _write_frame_direct(stream: Any, data: bytes) -> None:
    """``stream.write(data)`` for one of our frames, the layers folded into one call.

    On the usual stack (a ``NetStream`` open both ways, over a yamux stream with room in
    its send window and nobody else writing it, over Noise, over TCP) this builds what
    py-libp2p would put on the wire for it, byte for byte: one yamux DATA frame (the
    12-byte header, then ``data``) encrypted as one Noise message with its 2-byte length,
    and sends it with one send() under the connection's write lock (Noise nonces go out
    in the order they are used). That skips seven layers of async calls and their state
    checks per frame (NetStream, YamuxStream, Yamux, SecureSession, Noise, msgio, raw
    connection). Anything else (a bigger frame, an empty window, a stream closing, a
    writer already on it, another muxer or security) goes through ``stream.write``.
    """
    parts = _direct_parts(stream, data)
    if parts is None:
        await stream.write(data)
        return
    muxed, conn, noise, tcp = parts
    muxed.send_window -= len(data)
    frame = _YAMUX_DATA_HEADER.pack(0, _libp2p_yamux.TYPE_DATA, 0, muxed.stream_id, len(data))
    async with conn._write_lock:
        sealed = noise.encrypt(frame + data)
        await tcp.write(len(sealed).to_bytes(2, "big") + sealed)


def _direct_parts(stream: Any, data: bytes) -> tuple[Any, Any, Any, Any] | None:
    """(yamux stream, yamux connection, Noise, TCP) under ``stream`` when ``data`` can be
    written as one DATA frame in one Noise message (``_write_frame_direct``), else None."""
    muxed = getattr(stream, "muxed_stream", None)
    conn = getattr(muxed, "conn", None)
    secured = getattr(conn, "secured_conn", None)
    noise = getattr(secured, "conn", None)
    raw = getattr(getattr(noise, "read_writer", None), "read_write_closer", None)
    tcp = getattr(raw, "stream", None)
    if (
        len(data) > _DIRECT_MAX
        or not data
        or type(stream) is not NetStream
        or stream._state is not _NetStreamState.OPEN
        or muxed is None
        or type(muxed) not in _YAMUX_STREAM_TYPES
        or type(secured) is not SecureSession
        or type(noise) is not _libp2p_noise_io.NoiseTransportReadWriter
        or type(noise.read_writer) is not _libp2p_noise_io.NoisePacketReadWriter
        or type(tcp) is not TrioTCPStream
        or muxed.send_closed
        or muxed.closed
        or muxed.send_window < len(data)
        or muxed.window_lock.locked()
        or not isinstance(muxed.rw_lock, _QuickReadWriteLock)
        or muxed.rw_lock._writer_lock.value == 0
    ):
        return None
    return muxed, conn, noise, tcp


def _send_frame_now(stream: Any, data: bytes) -> tuple[bytes, Any, Any] | None:
    """Start ``_write_frame_direct``'s write without a checkpoint, when nothing stands in
    its way: the layers' checks pass, the connection's and the socket's write locks are
    free, and the socket is ours to send() on. None if not (nothing was done: write it the
    usual way). Otherwise the frame is encrypted and offered to the kernel at once, and
    this returns what the kernel did not take (nearly always nothing), the connection and
    the TCP stream: with a tail, both write locks are held and ``_finish_frame`` must send
    the tail and free them (the Noise nonce is spent, so the bytes must go out)."""
    parts = _direct_parts(stream, data)
    if parts is None:
        return None
    muxed, conn, noise, tcp = parts
    write_lock = getattr(tcp, "write_lock", None)
    socket = getattr(tcp.stream, "socket", None)
    sock = getattr(socket, "_sock", None)
    if (
        TrioTCPStream.write is not _direct_tcp_write
        or type(conn._write_lock) is not _QuickLock
        or type(write_lock) is not _QuickLock
        or conn._write_lock.locked()
        or write_lock.locked()
        or sock is None
        or getattr(socket, "did_shutdown_SHUT_WR", True)
    ):
        return None
    muxed.send_window -= len(data)
    header = _YAMUX_DATA_HEADER.pack(0, _libp2p_yamux.TYPE_DATA, 0, muxed.stream_id, len(data))
    sealed = noise.encrypt(header + data)
    message = len(sealed).to_bytes(2, "big") + sealed
    try:
        sent = sock.send(message)
    except OSError:  # no room (BlockingIOError) or broken: _finish_frame's send_all decides
        sent = 0
    if sent >= len(message):
        return b"", conn, tcp
    conn._write_lock.acquire_nowait()
    write_lock.acquire_nowait()
    return message[sent:], conn, tcp


async def _finish_frame(conn: Any, tcp: Any, tail: bytes) -> None:
    """Send the tail ``_send_frame_now`` left, as ``_direct_tcp_write`` would, and free the
    write locks it took."""
    try:
        await _send_rest(tcp.stream, tail)
    finally:
        tcp.write_lock.release()
        conn._write_lock.release()


def _quick_locks(cls: type, *names: str, rw: str | None = None) -> None:
    """Wrap ``cls.__init__`` so the named ``trio.Lock`` attributes are ``_QuickLock``s (and
    ``rw`` a ``_QuickReadWriteLock``) on every new instance (idempotent)."""
    original: Any = vars(cls)["__init__"]
    if getattr(original, "_p2pico_quick", False):
        return

    @functools.wraps(original)
    def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
        original(self, *args, **kwargs)
        for name in names:
            setattr(self, name, _QuickLock())
        if rw is not None:
            setattr(self, rw, _QuickReadWriteLock())

    __init__._p2pico_quick = True  # type: ignore[attr-defined]
    cls.__init__ = __init__  # type: ignore[misc]


_libp2p_noise_logger = logging.getLogger(_libp2p_noise_io.__name__)
_libp2p_yamux_logger = logging.getLogger(_libp2p_yamux.__name__)


def _fewer_scheduling_rounds() -> None:
    """Install the above on py-libp2p's yamux and TCP classes (idempotent), only if they
    still have the attributes replaced (a py-libp2p upgrade that changes them leaves the
    originals in place, logged)."""

    def sets(cls: type, *names: str) -> bool:  # does cls.__init__ still set these?
        init: Any = vars(cls)["__init__"]
        return bool(getattr(init, "_p2pico_quick", False)) or all(
            n in init.__code__.co_names for n in names
        )

    known = (
        hasattr(Yamux, "_write_frame")
        and hasattr(Yamux, "_read_data_body")
        and hasattr(TrioTCPStream, "write")
        and sets(TrioTCPStream, "read_lock", "write_lock")
        and sets(Yamux, "streams_lock", "_write_lock", "secured_conn")
        and sets(YamuxStream, "window_lock", "rw_lock")
        and sets(NetStream, "_state_lock")
    )
    if not known:
        logger.warning("yamux locks left as py-libp2p makes them (unknown version)")
        return
    _quick_locks(TrioTCPStream, "read_lock", "write_lock")
    _quick_locks(Yamux, "streams_lock", "_write_lock")
    _quick_locks(YamuxStream, "window_lock", rw="rw_lock")
    _quick_locks(NetStream, "_state_lock")
    Yamux._write_frame = _lean_write_frame  # type: ignore[method-assign]
    TrioTCPStream.write = _direct_tcp_write  # type: ignore[method-assign]
    Yamux._read_data_body = _buffered_data_body  # type: ignore[method-assign]
    if hasattr(Yamux, "read_stream"):
        Yamux.read_stream = _lean_read_stream  # type: ignore[method-assign]
    transport = _libp2p_noise_io.NoiseTransportReadWriter
    if "read_msg" not in vars(transport) and hasattr(transport, "decrypt"):
        transport.read_msg = _lean_noise_read_msg  # type: ignore[method-assign]


_fewer_scheduling_rounds()


def _pubsub_messages_in_turn() -> None:
    """One scheduling round before gossipsub reads each RPC from a peer (idempotent).

    py-libp2p's pubsub starts a task per message it reads (``push_msg``), and trio runs
    the tasks woken in one round in no fixed order; with the quick locks above, several
    RPCs already buffered are read in one go, so their messages could reach the topic
    handlers out of order. Yielding before each read lets the last message's task run
    first, as the locks' rounds used to (``Net.subscribe``: handlers see messages in
    arrival order). Pubsub carries no records any more, so the round costs nothing hot.
    """
    original: Any = getattr(_libp2p_pubsub, "read_varint_prefixed_bytes_limited", None)
    if original is None:
        logger.warning("gossipsub reads left as py-libp2p makes them (unknown version)")
        return
    if getattr(original, "_p2pico_in_turn", False):
        return

    @functools.wraps(original)
    async def read_in_turn(*args: Any, **kwargs: Any) -> Any:
        await trio.lowlevel.checkpoint()
        return await original(*args, **kwargs)

    read_in_turn._p2pico_in_turn = True  # type: ignore[attr-defined]
    setattr(_libp2p_pubsub, "read_varint_prefixed_bytes_limited", read_in_turn)  # noqa: B010


_pubsub_messages_in_turn()


# --- rpc bytes from the yamux reader --------------------------------------------------------


class _SinkBuffer(bytearray):
    """A yamux stream's receive buffer (``Yamux.stream_buffers[id]``) that hands what
    ``Yamux.handle_incoming`` appends to a sink instead of keeping it, while one is set."""

    __slots__ = ("sink",)

    def __init__(self) -> None:
        super().__init__()
        self.sink: _RpcSink | None = None

    def extend(self, data: Any) -> None:
        sink = self.sink
        if sink is None:
            super().extend(data)
        else:
            sink.deliver(data)


def _wakes_sink(name: str) -> Any:
    """A property for one of a yamux stream's end-state flags that wakes the stream's sink
    when the flag is set (whoever sets it: a FIN or RST frame, the connection going
    down, our own reset)."""

    def get(self: Any) -> Any:
        return self.__dict__[name]

    def set_(self: Any, value: Any) -> None:
        self.__dict__[name] = value
        if value:
            sink = self.__dict__.get("_p2pico_sink")
            if sink is not None:
                sink.wake.set()

    return property(get, set_)


class _SinkedYamuxStream(YamuxStream):
    """What an rpc stream's ``YamuxStream`` becomes while a sink reads it: the same
    stream, whose end-state flags also wake the sink's owner (``_wakes_sink``)."""

    closed = _wakes_sink("closed")
    recv_closed = _wakes_sink("recv_closed")
    reset_received = _wakes_sink("reset_received")


class _RpcSink:
    """Delivers one rpc stream's bytes to ``on_bytes`` from inside yamux's reader task.

    py-libp2p's ``Yamux.handle_incoming`` appends each DATA frame's body to the stream's
    buffer and sets its event; the stream's reader task then wakes in a later scheduling
    round and copies the bytes out through ``NetStream.read``/``YamuxStream.read``.
    With a sink, the ``_SinkBuffer`` in place of that buffer hands the body straight to
    ``on_bytes`` (the rpc state machine: protocols.rpc) in the yamux task, so a complete
    request's handler is started, or an answer's caller woken, in the same step as the
    frame is decoded. Everything else stays with py-libp2p (SYN, ACK, FIN, RST, window
    updates, ping, go-away).

    The owner task waits on ``wake``: set when the stream reaches an end state (FIN,
    RST, the connection going down; ``_SinkedYamuxStream``), or when ``on_bytes`` raised
    (``error``; the bytes after it are dropped). It then ``detach``es the sink and reads
    the stream as before, which gives the same EOF or reset as without the sink.

    ``on_bytes`` must not await and should not raise; it never raises into py-libp2p.
    Flow control: bytes that bypass ``YamuxStream.read`` are credited here, by a task
    started once half of the receive window is used (go-yamux's rule, as
    ``_batched_window_update``), so the yamux reader never waits on a write.
    """

    __slots__ = ("_buffer", "_crediting", "_nursery", "error", "muxed", "on_bytes", "wake")

    def __init__(self, muxed: Any, on_bytes: Callable[[bytes], None], nursery: trio.Nursery):
        self.muxed = muxed
        self.on_bytes = on_bytes
        self._nursery = nursery
        self.wake = trio.Event()
        self.error: Exception | None = None
        self._crediting = False
        self._buffer = _SinkBuffer()

    def deliver(self, data: Any) -> None:
        """Called by the yamux reader with one DATA frame's body."""
        if self.error is not None:
            return  # the owner is giving the stream up
        try:
            self.on_bytes(bytes(data))
        except Exception as error:
            if not isinstance(error, RpcProtocolError):
                logger.exception("%s: handling received bytes failed", RPC_PROTOCOL)
            self.error = error
            self.wake.set()
            return
        muxed = self.muxed
        # py-libp2p takes len(data) off recv_window right after this returns
        target = muxed.target_recv_window
        if not self._crediting and target - muxed.recv_window + len(data) >= target // 2:
            self._crediting = True
            try:
                self._nursery.start_soon(self._credit)
            except RuntimeError:  # the Net is shutting down
                self._crediting = False

    async def _credit(self) -> None:
        """Give the peer back the window the delivered bytes used, while half is used."""
        muxed = self.muxed
        try:
            while not (muxed.closed or muxed.recv_closed or muxed.reset_received):
                async with muxed.window_lock:
                    target = muxed.target_recv_window
                    if target - muxed.recv_window < max(target // 2, 1):
                        break
                    total = muxed._grow_to_delta(0) + muxed._apply_autotune_epoch(0)
                if total > 0:
                    await muxed.send_window_update(total, skip_lock=True)
        except Exception:
            logger.debug("%s: window update failed", RPC_PROTOCOL, exc_info=True)
        finally:
            self._crediting = False

    def detach(self) -> None:
        """Stop delivering: later bytes stay in the stream's buffer for its reads."""
        self._buffer.sink = None
        self.muxed.__dict__["_p2pico_sink"] = None


def _sinks_supported() -> bool:
    """Does py-libp2p's yamux still look the way ``_install_sink`` relies on?"""
    incoming: Any = getattr(Yamux, "handle_incoming", None)
    names = getattr(getattr(incoming, "__code__", None), "co_names", ())
    init: Any = vars(YamuxStream)["__init__"]
    init = getattr(init, "__wrapped__", init)  # _quick_locks wraps it
    return (
        all(n in names for n in ("stream_buffers", "extend", "recv_window", "stream_events"))
        and YamuxStream.__dictoffset__ != 0  # instances have a __dict__: __class__ can change
        and "closed" not in vars(YamuxStream)
        and all(
            hasattr(YamuxStream, n)
            for n in ("_grow_to_delta", "_apply_autotune_epoch", "send_window_update")
        )
        and {"closed", "recv_closed", "reset_received", "window_lock", "recv_window"}
        <= set(init.__code__.co_names)
    )


_SINKS: Final = _sinks_supported()
if not _SINKS:
    logger.warning("rpc streams read through py-libp2p's stream reads (unknown yamux version)")
_YAMUX_STREAM_TYPES: Final = (YamuxStream, _SinkedYamuxStream)


def _install_sink(
    stream: Any, on_bytes: Callable[[bytes], None], nursery: trio.Nursery
) -> _RpcSink | None:
    """Feed ``stream``'s bytes to ``on_bytes`` from the yamux reader (``_RpcSink``).

    Bytes already buffered are handed over first, in order. None (the stream is left to
    its reads) when the stack is not NetStream over yamux, or the stream is no longer
    open for reading: reading it then gives the EOF or reset as usual.
    """
    muxed = getattr(stream, "muxed_stream", None)
    conn = getattr(muxed, "conn", None)
    if (
        not _SINKS
        or type(stream) is not NetStream
        or type(muxed) is not YamuxStream
        or type(conn) is not Yamux
        or stream._state is not _NetStreamState.OPEN
        or muxed.closed
        or muxed.recv_closed
        or muxed.reset_received
        or conn.event_shutting_down.is_set()
    ):
        return None
    assert muxed is not None
    assert conn is not None
    buffered = conn.stream_buffers.get(muxed.stream_id)
    if buffered is None:
        return None
    sink = _RpcSink(muxed, on_bytes, nursery)
    conn.stream_buffers[muxed.stream_id] = sink._buffer
    conn.secured_conn.__dict__["_p2pico_yamux"] = conn  # _yamux_read_header's fast path
    muxed.__dict__["_p2pico_sink"] = sink
    muxed.__class__ = _SinkedYamuxStream
    if buffered:
        pending = bytes(buffered)
        buffered.clear()
        sink.deliver(pending)
    sink._buffer.sink = sink
    return sink


# A yamux frame header: version, type, flags, stream id, length.
_YAMUX_HEADER_SIZE: Final = _libp2p_yamux.HEADER_SIZE
_YAMUX_MAX_DATA: Final = _libp2p_yamux.MAX_WINDOW_SIZE
# DATA frames _yamux_read_header handed straight to a sink (tests read it).
FAST_FRAMES = [0]


def _sink_frame(mux: Any, msg: bytes) -> bool:
    """If the Noise message ``msg`` is exactly one flagless DATA frame for a stream with a
    sink, do what ``Yamux.handle_incoming`` does with it (the body to the stream's buffer,
    i.e. its sink; the receive window; the stream's event) and say True; else change
    nothing and say False."""
    if len(msg) <= _YAMUX_HEADER_SIZE:
        return False
    _, typ, flags, stream_id, length = _YAMUX_DATA_HEADER.unpack_from(msg)
    if (
        typ != _libp2p_yamux.TYPE_DATA
        or flags
        or length > _YAMUX_MAX_DATA
        or len(msg) != _YAMUX_HEADER_SIZE + length
        or mux.streams_lock.locked()
        or mux.event_shutting_down.is_set()
    ):
        return False
    buffer = mux.stream_buffers.get(stream_id)
    stream = mux.streams.get(stream_id)
    event = mux.stream_events.get(stream_id)
    if type(buffer) is not _SinkBuffer or buffer.sink is None or stream is None or event is None:
        return False
    if stream.closed:
        return False
    buffer.extend(msg[_YAMUX_HEADER_SIZE:])  # the sink's callback; it never raises
    stream.recv_window -= length
    if stream.recv_window < 0:
        logger.warning(
            "yamux stream %d: peer exceeded the receive window by %d bytes",
            stream_id,
            -stream.recv_window,
        )
        stream.recv_window = 0
    event.set()
    FAST_FRAMES[0] += 1
    return True


async def _yamux_read_header(
    reader: Any, n: int, retry_count: int = _libp2p_io_utils.DEFAULT_RETRY_READ_COUNT
) -> bytes:
    """``read_exactly`` as ``Yamux.handle_incoming`` calls it, for each frame's header.

    On a connection with rpc sinks (``_install_sink``) whose Noise session has nothing
    buffered, the next Noise message is read here; if it is one DATA frame for a sinked
    stream (py-libp2p and ``_send_frame_now`` send a frame as one message), it is handed
    over (``_sink_frame``) and the next message read, without going back through
    py-libp2p's frame loop, the session's buffer and its debug lines; anything else is
    put in the session's buffer and its header returned, for py-libp2p to handle as
    usual. The reader then waits on the socket at once, so the task the frame started
    (a request's handler, an answer's caller) runs next."""
    if (
        n != _YAMUX_HEADER_SIZE
        or type(reader) is not SecureSession
        or reader.low_watermark != reader.high_watermark
        or type(reader.conn) is not _libp2p_noise_io.NoiseTransportReadWriter
    ):
        return await _read_exactly(reader, n, retry_count)
    mux = reader.__dict__.get("_p2pico_yamux")
    if mux is None:
        return await _read_exactly(reader, n, retry_count)
    noise = reader.conn
    while True:
        msg = await noise.read_msg()
        if len(msg) < n:  # a header split across messages, or the end: as py-libp2p reads it
            if msg:
                reader._fill(msg)
            return await _read_exactly(reader, n, retry_count)
        if not _sink_frame(mux, msg):
            reader._fill(msg)
            return reader._drain(n)


def _fast_sink_frames() -> None:
    """Let ``_yamux_read_header`` read yamux's frame headers, when py-libp2p still reads
    them with its module's ``read_exactly`` and nothing else uses that name (our
    ``_buffered_data_body`` stands in for its ``_read_data_body``)."""
    incoming: Any = getattr(Yamux, "handle_incoming", None)
    names = getattr(getattr(incoming, "__code__", None), "co_names", ())
    if (
        _SINKS
        and getattr(_libp2p_yamux, "read_exactly", None) is _read_exactly
        and "read_exactly" in names
        and Yamux._read_data_body is _buffered_data_body
        and all(
            "read_exactly" not in getattr(getattr(f, "__code__", None), "co_names", ())
            for name, f in vars(Yamux).items()
            if name != "handle_incoming" and callable(f)
        )
    ):
        setattr(_libp2p_yamux, "read_exactly", _yamux_read_header)  # noqa: B010
    elif getattr(_libp2p_yamux, "read_exactly", None) is not _yamux_read_header:
        logger.warning("rpc frames go through py-libp2p's yamux frame loop (unknown version)")


_fast_sink_frames()


# --- identity -----------------------------------------------------------------------------


def _key_pair_from_seed(seed: bytes) -> KeyPair:
    """The libp2p key pair for a 32-byte Ed25519 seed.

    libp2p's Ed25519PrivateKey wraps a pynacl SigningKey, so the peer id is exactly the one
    derived from ``nacl.signing.SigningKey(seed)`` elsewhere in p2pico (did:key and peer id
    are two encodings of the same public key; libp2p-probe.md §3 "Identity").
    """
    if len(seed) != 32:
        raise ValueError(f"Ed25519 seed must be 32 bytes, got {len(seed)}")
    private = Ed25519PrivateKey(nacl.signing.SigningKey(seed))
    return KeyPair(private, private.get_public_key())


@functools.lru_cache(maxsize=4096)  # every request parses its peer's id; IDs are immutable
def _parse_peer_id(peer_id: str) -> ID:
    """Parse a base58 peer id; the bytes must be an identity or sha2-256 multihash."""
    try:
        raw = ID.from_base58(peer_id).to_bytes()
        header = decode_uvarint(raw)
        length = decode_uvarint(raw, header[1]) if header else None
    except Exception as error:  # base58 and varint errors
        raise ValueError(f"not a peer id: {peer_id!r}") from error
    if header is None or length is None or header[0] not in (0x00, 0x12):
        raise ValueError(f"not a peer id: {peer_id!r}")
    if length[1] + length[0] != len(raw):
        raise ValueError(f"not a peer id: {peer_id!r}")
    return ID(raw)


def _describe(error: BaseException) -> str:
    """A one-line reason for an error from libp2p, looking inside exception groups."""
    if isinstance(error, BaseExceptionGroup):
        return "; ".join(_describe(e) for e in error.exceptions)
    text = str(error).splitlines()[0] if str(error) else ""
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


# --- stream helpers -----------------------------------------------------------------------


class _EndOfStream(Exception):
    """The stream ended before a whole frame arrived."""


async def _read_frame(stream: Any, max_frame_size: int = MAX_FRAME_SIZE) -> bytes:
    """Read exactly one frame; bytes after it are ignored.

    Raises:
        _EndOfStream: EOF before the frame was complete.
        FramingError: bad length prefix or oversized frame.
        StreamError (libp2p): reset or otherwise broken stream.
    """
    decoder = FrameDecoder(max_frame_size)
    while (frame := decoder.next_frame()) is None:
        try:
            chunk = await stream.read(_READ_CHUNK)
        except EOFError:  # libp2p's StreamEOF is an EOFError
            chunk = b""
        if not chunk:
            got = f"{decoder.buffered} byte(s)" if decoder.buffered else "nothing"
            raise _EndOfStream(f"stream ended after {got}, before a complete frame")
        decoder.feed(chunk)
    return frame


async def _reset_quietly(stream: Any) -> None:
    """Reset a stream, even while being cancelled, without waiting long or raising."""
    with trio.CancelScope(shield=True), trio.move_on_after(1.0):
        try:
            await stream.reset()
        except Exception:
            logger.debug("stream reset failed", exc_info=True)


# How often a frame waiting for the peer's yamux window looks again (py-libp2p's own wait
# polls as often).
_WINDOW_POLL: Final = 0.01


async def _write_within_window(stream: Any, data: bytes) -> None:
    """``stream.write(data)``, waiting for the peer's yamux send window for as long as the
    caller's deadline allows.

    py-libp2p 0.8.1's ``YamuxStream.write`` fails when the window stays shut for 5 s, so a
    peer that stops reading for that long (Helia busy with a large message, a paused
    process) would lose the frame and the stream with it. Here each write takes at most
    what the window has room for, and the wait for more happens here, where only the
    caller's cancel scope ends it; py-libp2p's capped wait never starts. A stream closed or
    reset meanwhile fails on its next write, as before."""
    muxed: Any = getattr(stream, "muxed_stream", None)
    if type(muxed) not in _YAMUX_STREAM_TYPES or len(data) <= muxed.send_window:
        await stream.write(data)
        return
    at = 0
    while at < len(data):
        room = muxed.send_window
        if room <= 0 and not (muxed.closed or muxed.send_closed):
            await trio.sleep(_WINDOW_POLL)
            continue
        n = len(data) - at if room <= 0 else min(room, len(data) - at)  # shut: write raises
        await stream.write(data[at : at + n])
        at += n


class FrameStream:
    """One libp2p stream carrying length-prefixed frames in both directions (protocols.framing).

    For message protocols such as Bitswap, where a stream carries any number of frames and
    replies may travel on a different stream. Get one from ``Net.open_stream`` or as the
    argument of a ``Net.set_stream_handler`` handler. Not safe for two tasks sending (or two
    receiving) at once; one sender plus one receiver is fine.
    """

    def __init__(self, stream: Any, protocol: str, max_frame_size: int) -> None:
        self._stream = stream
        self.protocol = protocol
        self.remote_peer = str(stream.muxed_conn.peer_id)
        self._decoder = FrameDecoder(max_frame_size)
        self._eof = False

    async def send_frame(self, payload: bytes) -> None:
        """Write one frame. A peer that reads nothing is waited for without limit (its
        yamux window shut): the caller's cancel scope sets the deadline.

        Raises:
            ValueError: ``payload`` exceeds this stream's maximum frame size.
            StreamFailed: the stream is closed or broken.
        """
        try:
            frame = encode_frame(payload, max_frame_size=self._decoder.max_frame_size)
        except FramingError as error:
            raise ValueError(str(error)) from None
        try:
            await _write_within_window(self._stream, frame)
        except Exception as error:  # StreamClosed, StreamReset, yamux connection errors
            raise StreamFailed(f"{self.protocol} send failed: {_describe(error)}") from error

    async def receive_frame(self) -> bytes | None:
        """Read the next frame; ``None`` once the peer has closed its side cleanly.

        Raises:
            StreamFailed: the stream broke, ended inside a frame, or carried a bad frame
                (bad length prefix, or a frame above the maximum size).
        """
        while True:
            try:
                frame = self._decoder.next_frame()
            except FramingError as error:
                raise StreamFailed(f"{self.protocol} malformed frame: {error}") from error
            if frame is not None:
                return frame
            if self._eof:
                if self._decoder.buffered:
                    raise StreamFailed(
                        f"{self.protocol} stream ended inside a frame "
                        f"({self._decoder.buffered} byte(s) buffered)"
                    )
                return None
            try:
                chunk = await self._stream.read(_READ_CHUNK)
            except EOFError:  # libp2p's StreamEOF
                chunk = b""
            except Exception as error:  # StreamReset and friends
                raise StreamFailed(f"{self.protocol} receive failed: {_describe(error)}") from error
            if chunk:
                self._decoder.feed(chunk)
            else:
                self._eof = True

    async def close(self) -> None:
        """Close our sending side (a half-close: the peer may still send). Never raises."""
        try:
            await self._stream.close()
        except Exception:
            logger.debug("closing a %s stream failed", self.protocol, exc_info=True)

    async def reset(self) -> None:
        """Abort the stream in both directions. Never raises."""
        await _reset_quietly(self._stream)


# --- persistent request streams (protocols.rpc) ---------------------------------------------


class _NotSent(Exception):
    """The stream died before the request was written: it may go out on another stream."""


class _Waiter:
    __slots__ = ("answer", "error", "event", "protocol")

    def __init__(self, protocol: str) -> None:
        self.protocol = protocol
        self.event = trio.Event()
        self.answer: bytes | None = None
        self.error: NetError | None = None


def _stream_gone(stream: Any) -> bool:
    """Can no answer come on ``stream`` any more, as far as yamux knows already?

    True once the connection under it closed or started to, or the peer closed or reset
    its sending side: a request written now could not be answered.
    """
    conn = getattr(stream, "muxed_conn", None)
    shutting = getattr(conn, "event_shutting_down", None)
    muxed = getattr(stream, "muxed_stream", None)
    return (
        bool(getattr(conn, "is_closed", False))
        or bool(shutting is not None and shutting.is_set())
        or bool(getattr(muxed, "recv_closed", False))
        or bool(getattr(muxed, "reset_received", False))
    )


async def _write_shielded(stream: Any, frame: bytes) -> str | None:
    """Write one whole frame, even while being cancelled; the reason it failed, or None.

    A frame cut short by a cancellation would leave the stream's byte sequence without
    frame boundaries for every other request on it, so writes are never cancelled; the
    time limit bounds how long a cancelled caller can be held up.
    """
    started = _send_frame_now(stream, frame)  # no checkpoint, so nothing to shield
    if started is not None and not started[0]:
        return None
    # one scope, shielded and with the deadline (a shield around fail_after costs twice)
    with trio.CancelScope(shield=True, deadline=trio.current_time() + _RPC_WRITE_TIMEOUT) as scope:
        try:
            if started is None:
                await _write_frame_direct(stream, frame)
            else:
                await _finish_frame(started[1], started[2], started[0])
        except Exception as error:  # StreamClosed, StreamReset, yamux connection errors
            return f"write failed: {_describe(error)}"
    if scope.cancelled_caught:
        return f"writing a frame took more than {_RPC_WRITE_TIMEOUT} s"
    return None


class _RpcOut:
    """One outbound persistent stream: id-tagged requests, answers in any order.

    Callers take one of ``MAX_IN_FLIGHT`` slots (waiting when all are taken: the
    backpressure), write their frame under a lock, and wait for the reader task to hand
    them the answer. A slot is given back when the answer arrives, also for a caller that
    gave up (its id stays outstanding until then, so the responder never sees more than
    ``MAX_IN_FLIGHT``), or when the stream dies, which fails every outstanding caller.
    """

    def __init__(self, net: Net, peer: ID, stream: Any) -> None:
        self.net = net
        self.peer = peer
        self.stream = stream
        self.client = RpcClient()
        self._slots = trio.Semaphore(self.client.max_in_flight)
        self._write_lock = _QuickLock()  # free: taken without a scheduling round
        self._waiters: dict[int, _Waiter] = {}
        self.dead: str | None = None
        self._reader_scope = trio.CancelScope()
        self._callers = 0

    @property
    def load(self) -> int:
        """Callers using this stream: sending, waiting for an answer or for a slot."""
        return self._callers

    async def call(self, protocol: str, body: bytes) -> bytes:
        """Send one request and wait for its answer.

        Raises:
            _NotSent: the stream died before the request was written.
            ProtocolNotSupported: the peer has no handler for ``protocol``.
            StreamFailed: the stream died after the request was written, or the peer's
                handler failed.
        """
        self._callers += 1
        try:
            return await self._call(protocol, body)
        finally:
            self._callers -= 1

    async def _call(self, protocol: str, body: bytes) -> bytes:
        try:  # a free slot is taken without a scheduling round (the write checkpoints)
            self._slots.acquire_nowait()
        except trio.WouldBlock:
            await self._slots.acquire()
        try:
            async with self._write_lock:  # cancellable until the frame exists
                if self.dead is None and _stream_gone(self.stream):
                    self._die("the connection closed")
                if self.dead is not None:
                    raise _NotSent(self.dead)
                rid, frame = self.client.start_request(protocol, body)
                waiter = self._waiters[rid] = _Waiter(protocol)
                reason = await _write_shielded(self.stream, frame)
        except BaseException:
            self._slots.release()  # no frame went out for this slot
            raise
        if reason is not None:
            self._die(reason)
            await _reset_quietly(self.stream)
        try:
            await waiter.event.wait()
        except BaseException:
            if self._waiters.pop(rid, None) is not None:
                self.client.abandon(rid)  # its slot comes back with its answer
            raise
        if waiter.error is not None:
            raise waiter.error
        assert waiter.answer is not None
        return waiter.answer

    async def run_reader(self) -> None:
        """Read answers until the stream ends; then fail whatever is still outstanding."""
        reason = "the stream was given up"
        try:
            with self._reader_scope:
                sink = _install_sink(self.stream, self._take_answers, self.net._nursery)
                if sink is not None:  # answers come in from the yamux reader
                    try:
                        await sink.wake.wait()
                    finally:
                        sink.detach()
                    if sink.error is not None:
                        raise sink.error
                await self._read_answers()  # the end of the stream (or no sink)
                return
        except RpcProtocolError as error:
            reason = f"protocol error: {error}"
        except Exception as error:  # StreamReset and friends
            reason = f"stream failed: {_describe(error)}"
        self._die(reason)
        await _reset_quietly(self.stream)

    async def _read_answers(self) -> None:
        while True:
            try:
                chunk = await self.stream.read(_READ_CHUNK)
            except EOFError:  # libp2p's StreamEOF
                chunk = b""
            if not chunk:
                self._die("the peer closed the stream")
                await _reset_quietly(self.stream)
                return
            self._take_answers(chunk)

    def _take_answers(self, chunk: bytes) -> None:
        """Feed received bytes to the client: free the answered slots, wake the callers.

        Raises:
            RpcProtocolError: the bytes break the protocol.
        """
        before = self.client.in_flight
        answers = self.client.receive(chunk)
        for _ in range(before - self.client.in_flight):
            self._slots.release()
        for answer in answers:
            waiter = self._waiters.pop(answer.id, None)
            if waiter is None:
                continue
            if isinstance(answer, Failure):
                waiter.error = self._failure(answer, waiter.protocol)
            else:
                waiter.answer = answer.body
            waiter.event.set()

    def _failure(self, failure: Failure, protocol: str) -> NetError:
        if failure.code == "unsupported":
            return ProtocolNotSupported(f"{self.peer} does not support {protocol}")
        return StreamFailed(
            f"{protocol} request failed at {self.peer}: {failure.code}: {failure.reason}"
        )

    def _die(self, reason: str) -> None:
        if self.dead is None:
            self.dead = reason
            logger.debug("%s stream to %s ended: %s", RPC_PROTOCOL, self.peer, reason)
        before = self.client.in_flight
        for rid in self.client.fail_all():
            waiter = self._waiters.pop(rid, None)
            if waiter is not None:
                waiter.error = StreamFailed(
                    f"{RPC_PROTOCOL} stream to {self.peer} ended before the answer: {reason}"
                )
                waiter.event.set()
        for _ in range(before):
            self._slots.release()
        self.net._rpc_dropped(self)
        self._reader_scope.cancel()  # a stream we reset ourselves may never wake its reader


class _RpcIn:
    """One inbound persistent stream: requests in, each handled in its own task, answers out."""

    def __init__(self, stream: Any) -> None:
        self.stream = stream
        self.remote = str(stream.muxed_conn.peer_id)
        self.server = RpcServer()
        self.write_lock = _QuickLock()
        self.broken = False
        self.idle = trio.Event()  # set once every request read so far has been answered

    async def send(self, frame: bytes) -> None:
        if not self.broken:
            async with self.write_lock:
                reason = await _write_shielded(self.stream, frame)
            if reason is not None and not self.broken:
                self.broken = True
                logger.info("%s answers to %s not delivered: %s", RPC_PROTOCOL, self.remote, reason)
                await _reset_quietly(self.stream)
        if self.server.in_flight == 0:
            self.idle.set()


# --- Net ----------------------------------------------------------------------------------


class _ConnectionNotifee(INotifee):
    """Forwards libp2p connection events to the Net without ever blocking libp2p."""

    def __init__(self, net: Net) -> None:
        self._net = net

    async def connected(self, network: Any, conn: Any) -> None:
        self._net._connection_opened(conn)

    async def disconnected(self, network: Any, conn: Any) -> None:
        self._net._connection_closed(conn)

    async def opened_stream(self, network: Any, stream: Any) -> None:
        pass

    async def closed_stream(self, network: Any, stream: Any) -> None:
        pass

    async def listen(self, network: Any, multiaddr: Any) -> None:
        pass

    async def listen_close(self, network: Any, multiaddr: Any) -> None:
        pass


class Net:
    """A running libp2p node. Obtain one from ``serve_net``; do not construct it directly.

    All methods must be called from the trio run that runs ``serve_net``, while it runs.
    Peer ids are base58 strings (``12D3KooW…``) and addresses are multiaddr strings.
    """

    peer_id: str

    def __init__(self, host: Any, pubsub: Any, nursery: trio.Nursery) -> None:
        self._host = host
        self._pubsub = pubsub
        self._nursery = nursery
        self.peer_id = str(host.get_id())
        # Per-responder limits; tests lower them.
        self.request_read_timeout = REQUEST_READ_TIMEOUT
        self.response_timeout = RESPONSE_TIMEOUT
        self._handlers: dict[str, RequestHandler] = {}
        self._stream_handlers: dict[str, tuple[StreamHandler, int]] = {}
        self._peer_callbacks: list[PeerCallback] = []
        self._gone_callbacks: list[PeerGoneCallback] = []
        # Open connections per peer, as reported by the notifee (libp2p SwarmConn objects).
        self._connections: dict[ID, list[Any]] = {}
        # Addresses we were told about through connect() or bootstrap. The peerstore
        # forgets addresses after a TTL (120 s for dialled peers), this does not.
        self._known_addrs: dict[ID, list[Multiaddr]] = {}
        self._topic_handlers: dict[str, list[TopicHandler]] = {}
        self._topic_ready: dict[str, trio.Event] = {}
        self._closed = False
        # Persistent request streams (protocols.rpc): ours per peer, and how many each peer
        # has open to us. Peers that do not speak rpc get one stream per request.
        self.persistent_streams = os.environ.get(_RPC_ENV, "1") != "0"
        self._rpc_out: dict[ID, list[_RpcOut]] = {}
        self._rpc_opening: dict[ID, trio.Lock] = {}
        self._rpc_inbound: dict[ID, int] = {}
        self._no_rpc: set[ID] = set()
        host.set_stream_handler(TProtocol(RPC_PROTOCOL), self._serve_rpc)

    # --- addresses and peers ---

    def multiaddrs(self) -> list[str]:
        """Our listen addresses, each ending in ``/p2p/<peer id>``, with real port numbers."""
        return [str(addr) for addr in self._host.get_addrs()]

    def connected_peers(self) -> list[str]:
        """Peers with at least one open connection right now.

        libp2p notices a dead peer only after a moment (P13), so a stream error, not this
        list, is the reliable sign that a peer is gone.
        """
        connections = self._host.get_network().connections
        return [
            str(peer) for peer, conns in connections.items() if any(not c.is_closed for c in conns)
        ]

    async def connect(self, multiaddr: str, *, timeout: float = 30.0) -> str:
        """Connect to the peer at a ``…/p2p/<peer id>`` address and return its peer id.

        A no-op if already connected. The address is remembered for later redials by
        ``request``.

        Raises:
            ValueError: the address is malformed, lacks ``/p2p/<id>``, or is our own.
            PeerUnreachable: the dial failed or took longer than ``timeout``.
        """
        try:
            info = info_from_p2p_addr(Multiaddr(multiaddr))
        except Exception as error:
            raise ValueError(f"not a dialable p2p multiaddr: {multiaddr!r}") from error
        if info.peer_id == self._host.get_id():
            raise ValueError(f"refusing to connect to ourselves: {multiaddr!r}")
        self._remember_addrs(info.peer_id, info.addrs)
        with trio.move_on_after(timeout) as scope:
            await self._dial(info)
        if scope.cancelled_caught:
            raise PeerUnreachable(f"dial to {info.peer_id} timed out after {timeout} s")
        return str(info.peer_id)

    def on_peer_connected(self, callback: PeerCallback) -> None:
        """Call ``callback(peer_id)`` whenever a peer becomes connected, in either direction.

        It fires once per peer each time the peer goes from no connection to a connection
        (so again after a disconnect and reconnect). Peers already connected when the
        callback is registered, such as the bootstrap peers dialled before ``serve_net``
        handed out this Net, are not reported: use ``connected_peers()`` for those. Each
        call runs in its own task in the Net's nursery; an exception is logged and does not
        affect the node.
        """
        self._peer_callbacks.append(callback)

    def on_peer_disconnected(self, callback: PeerGoneCallback) -> None:
        """Call ``callback(peer_id)`` when a peer's last connection has closed.

        It runs in libp2p's notification, so it must not block: drop what is kept for the
        peer (its streams are dead with the connection). Callbacks run in the order they were
        registered; an exception is logged and does not affect the node or later callbacks.
        """
        self._gone_callbacks.append(callback)

    def _connection_opened(self, conn: Any) -> None:
        peer = conn.muxed_conn.peer_id
        # Drop connections that closed without (yet) telling us: libp2p notifies
        # "disconnected" only after a 100 ms pause (SwarmConn._cleanup), and a reconnect
        # inside that window must still count as a new connection.
        live = [c for c in self._connections.get(peer, ()) if not c.is_closed]
        is_new = not live
        self._connections[peer] = [*live, conn]
        if is_new and not self._closed:
            for callback in self._peer_callbacks:
                self._spawn_peer_callback(callback, peer)

    def _connection_closed(self, conn: Any) -> None:
        peer = conn.muxed_conn.peer_id
        live = [c for c in self._connections.get(peer, ()) if c is not conn and not c.is_closed]
        if live:
            self._connections[peer] = live
        else:
            self._connections.pop(peer, None)
            self._no_rpc.discard(peer)  # it may come back with a newer version
            for gone in self._gone_callbacks:
                try:
                    gone(str(peer))
                except Exception:
                    logger.exception("on_peer_disconnected callback %r failed for %s", gone, peer)

    def _spawn_peer_callback(self, callback: PeerCallback, peer: ID) -> None:
        if not self._closed:
            self._nursery.start_soon(self._run_peer_callback, callback, str(peer))

    async def _run_peer_callback(self, callback: PeerCallback, peer: str) -> None:
        try:
            await callback(peer)
        except Exception:
            logger.exception("on_peer_connected callback %r failed for %s", callback, peer)

    def add_addrs(self, peer_id: str, multiaddrs: Sequence[str]) -> None:
        """Addresses of ``peer_id`` learned elsewhere (location records), tried on the next dial.

        Each address may end in ``/p2p/<peer_id>``; one naming another peer, or one that
        does not parse, is ignored (they come from the network).
        """
        peer = _parse_peer_id(peer_id)
        parsed = []
        for text in multiaddrs:
            try:
                info = info_from_p2p_addr(Multiaddr(text))
            except Exception:  # py-libp2p raises several unrelated types for bad input
                logger.debug("ignoring address %r for %s", text, peer_id)
                continue
            if info.peer_id == peer:
                parsed.extend(info.addrs)
        self._remember_addrs(peer, parsed)

    def _remember_addrs(self, peer: ID, addrs: Sequence[Multiaddr]) -> None:
        known = self._known_addrs.setdefault(peer, [])
        known.extend(addr for addr in addrs if addr not in known)

    async def _dial(self, info: PeerInfo) -> None:
        # Lift the 60-second negative dial cache first (P7): we only dial when we want to.
        self._host.get_network().unblock_peer(info.peer_id)
        try:
            await self._host.connect(info)
        except Exception as error:  # SwarmException, OSError, exception groups of them
            raise PeerUnreachable(f"dial to {info.peer_id} failed: {_describe(error)}") from error

    async def _ensure_connected(self, peer: ID) -> None:
        if self._host.get_network().connections.get(peer):
            return
        addrs = list(self._known_addrs.get(peer, ()))
        with contextlib.suppress(PeerStoreError):  # the peerstore has no (unexpired) addrs
            addrs.extend(a for a in self._host.get_peerstore().addrs(peer) if a not in addrs)
        if not addrs:
            raise PeerUnreachable(f"no known address for peer {peer}")
        await self._dial(PeerInfo(peer, addrs))

    # --- request / response ---

    def set_handler(self, protocol: str, handler: RequestHandler) -> None:
        """Answer requests on ``protocol`` (e.g. ``/p2pico/sync/1.0.0``) with ``handler``.

        ``handler(remote_peer_id, request) -> response`` runs once per request, in its own
        task. If it raises, the error is logged and the stream reset, so the requester gets
        ``StreamFailed``; the node carries on. Setting a handler again replaces it.
        """
        if protocol not in self._handlers:

            async def stream_handler(stream: Any) -> None:
                await self._serve_stream(protocol, stream)

            self._host.set_stream_handler(TProtocol(protocol), stream_handler)
        self._handlers[protocol] = handler

    async def _serve_stream(self, protocol: str, stream: Any) -> None:
        remote = str(stream.muxed_conn.peer_id)
        handler = self._handlers[protocol]
        try:
            with trio.fail_after(self.request_read_timeout):
                request = await _read_frame(stream)
        except trio.TooSlowError:
            logger.info(
                "%s request from %s: not received within %s s, resetting stream",
                protocol,
                remote,
                self.request_read_timeout,
            )
            await _reset_quietly(stream)
            return
        except Exception as error:
            logger.info(
                "%s request from %s: unreadable (%s), resetting stream",
                protocol,
                remote,
                _describe(error),
            )
            await _reset_quietly(stream)
            return
        try:
            with trio.fail_after(self.response_timeout):
                try:
                    response = await handler(remote, request)
                except Exception:
                    logger.exception("%s handler failed on a request from %s", protocol, remote)
                    await _reset_quietly(stream)
                    return
                await stream.write(encode_frame(response))
                await stream.close()
        except trio.TooSlowError:
            logger.warning(
                "%s request from %s: no response within %s s, resetting stream",
                protocol,
                remote,
                self.response_timeout,
            )
            await _reset_quietly(stream)
        except Exception as error:
            # FramingError here means the handler returned more than MAX_FRAME_SIZE bytes.
            logger.info("%s response to %s not delivered: %s", protocol, remote, _describe(error))
            await _reset_quietly(stream)

    async def request(
        self, peer_id: str, protocol: str, payload: bytes, *, timeout: float = 30.0
    ) -> bytes:
        """Send one request and return the one response.

        Requests travel on persistent streams to the peer (protocols.rpc: framed, id-tagged,
        many at once; opened on first use, reopened when one dies), or, for a peer that does
        not speak ``/p2pico/rpc/1.0.0``, on a new stream each. Connects first if needed,
        using addresses from ``connect``/bootstrap and from the peerstore (identify fills it
        in for peers that connected to us). At most ``MAX_IN_FLIGHT`` requests per stream
        and ``RPC_STREAMS_PER_PEER`` streams per peer are outstanding; past that, callers
        wait. A request is sent once: if its stream dies after it was written, it fails
        (it may have run); only one that was never written goes out on another stream.

        Raises:
            ValueError: ``peer_id`` is not a peer id, or ``payload`` exceeds MAX_FRAME_SIZE.
            PeerUnreachable: no known address, or every dial failed (also for our own id).
            ProtocolNotSupported: the peer has no handler for ``protocol``.
            StreamFailed: the stream broke before the answer, or the peer's handler failed.
            RequestTimeout: the whole exchange took longer than ``timeout`` seconds.
        """
        peer = _parse_peer_id(peer_id)
        if len(payload) > MAX_FRAME_SIZE:  # what encode_frame checks on the one-shot path
            raise ValueError(f"payload of {len(payload)} bytes exceeds {MAX_FRAME_SIZE}")
        if peer == self._host.get_id():
            raise PeerUnreachable("cannot send a request to ourselves")
        # a bare deadline scope: what fail_after does, without its two context managers
        with trio.CancelScope(deadline=trio.current_time() + timeout) as scope:
            if self.persistent_streams and peer not in self._no_rpc:
                for _ in range(RPC_RESEND + 1):
                    conn = await self._rpc_stream(peer)
                    if conn is None:
                        break  # the peer has no rpc handler: one stream per request
                    try:
                        return await conn.call(protocol, payload)
                    except _NotSent:
                        continue
                else:
                    raise StreamFailed(
                        f"{protocol} request to {peer_id}: every stream died before it was sent"
                    )
            return await self._request_once(peer, protocol, encode_frame(payload))
        assert scope.cancelled_caught
        raise RequestTimeout(f"{protocol} request to {peer_id} timed out after {timeout} s")

    async def _request_once(self, peer: ID, protocol: str, frame: bytes) -> bytes:
        """The one-shot path: a new stream, one frame each way."""
        stream = await self._open_stream_redialling(peer, protocol)
        try:
            return await self._exchange(stream, frame)
        except BaseException:
            await _reset_quietly(stream)
            raise

    async def _rpc_stream(self, peer: ID) -> _RpcOut | None:
        """The least busy persistent stream to ``peer``, opening one if needed and allowed.

        None if the peer does not speak rpc.
        """

        def pick() -> tuple[_RpcOut | None, bool]:
            live = [c for c in self._rpc_out.get(peer, ()) if c.dead is None]
            best = min(live, key=lambda c: c.load, default=None)
            enough = best is not None and (
                best.load < RPC_SPILL or len(live) >= RPC_STREAMS_PER_PEER
            )
            return best, enough

        best, enough = pick()
        if enough:
            return best
        lock = self._rpc_opening.setdefault(peer, trio.Lock())
        if best is not None and lock.locked() and best.load < best.client.max_in_flight:
            return best  # another request is opening one: do not queue behind its dial
        async with lock:
            best, enough = pick()
            if enough:
                return best
            try:
                stream = await self._open_stream_redialling(peer, RPC_PROTOCOL)
            except ProtocolNotSupported:
                logger.info("%s does not speak %s: one stream per request", peer, RPC_PROTOCOL)
                self._no_rpc.add(peer)
                return None
            except NetError:
                if best is not None:
                    return best
                raise
            conn = _RpcOut(self, peer, stream)
            self._rpc_out.setdefault(peer, []).append(conn)
            self._nursery.start_soon(conn.run_reader)
            return conn

    def _rpc_dropped(self, conn: _RpcOut) -> None:
        pool = self._rpc_out.get(conn.peer)
        if pool is not None and conn in pool:
            pool.remove(conn)
            if not pool:
                del self._rpc_out[conn.peer]

    async def _serve_rpc(self, stream: Any) -> None:
        """Answer the requests on one inbound persistent stream until it ends.

        The stream is read without pause (each request is handled in its own task), so
        the peer's writes never wait on our handlers (P8). A frame that starts must be
        complete within ``request_read_timeout``; a broken frame, an answer frame or more
        than ``MAX_IN_FLIGHT`` outstanding requests reset the stream.
        """
        peer = stream.muxed_conn.peer_id
        conn = _RpcIn(stream)
        if self._rpc_inbound.get(peer, 0) >= RPC_INBOUND_LIMIT:
            logger.info(
                "%s: %s already has %d streams open, resetting one more",
                RPC_PROTOCOL,
                peer,
                RPC_INBOUND_LIMIT,
            )
            await _reset_quietly(stream)
            return
        self._rpc_inbound[peer] = self._rpc_inbound.get(peer, 0) + 1
        try:
            await self._serve_rpc_from_sink(conn)
            while True:  # the end of the stream (or no sink): read it as it comes
                try:
                    if conn.server.buffered:
                        with trio.fail_after(self.request_read_timeout):
                            chunk = await stream.read(_READ_CHUNK)
                    else:
                        chunk = await stream.read(_READ_CHUNK)
                except EOFError:
                    chunk = b""
                if not chunk:
                    # The peer is done sending: answer what it asked, then close our side.
                    if conn.server.in_flight:
                        with trio.move_on_after(self.response_timeout + _RPC_WRITE_TIMEOUT):
                            await conn.idle.wait()
                    async with conn.write_lock:
                        with contextlib.suppress(Exception):
                            await stream.close()
                    return
                requests = conn.server.receive(chunk)
                if requests:
                    conn.idle = trio.Event()
                for request in requests:
                    self._nursery.start_soon(
                        self._answer_rpc, conn, request.id, request.protocol, request.body
                    )
        except trio.TooSlowError:
            logger.info(
                "%s from %s: a frame was not completed within %s s, resetting stream",
                RPC_PROTOCOL,
                conn.remote,
                self.request_read_timeout,
            )
        except RpcProtocolError as error:
            logger.info("%s from %s: %s, resetting stream", RPC_PROTOCOL, conn.remote, error)
        except Exception as error:  # StreamReset and friends
            logger.debug("%s from %s ended: %s", RPC_PROTOCOL, conn.remote, _describe(error))
        finally:
            left = self._rpc_inbound.get(peer, 1) - 1
            if left:
                self._rpc_inbound[peer] = left
            else:
                self._rpc_inbound.pop(peer, None)
        conn.broken = True
        await _reset_quietly(stream)

    async def _serve_rpc_from_sink(self, conn: _RpcIn) -> None:
        """Take ``conn``'s requests from the yamux reader (``_RpcSink``) until its stream
        ends; the caller then reads the end (EOF or reset) from the stream.

        Raises:
            trio.TooSlowError: a frame was started and not continued within
                ``request_read_timeout`` (counted from the last bytes, as a read's).
            RpcProtocolError: the peer broke the protocol.
        """
        timer = trio.CancelScope()  # its deadline is set while a frame is incomplete
        server = conn.server
        nursery = self._nursery
        answer = self._answer_rpc

        def on_bytes(data: bytes) -> None:
            requests = server.receive(data)
            if requests:
                conn.idle = trio.Event()
                for request in requests:
                    nursery.start_soon(answer, conn, request.id, request.protocol, request.body)
            if server.buffered:
                timer.deadline = trio.current_time() + self.request_read_timeout
            elif timer.deadline != math.inf:
                timer.deadline = math.inf

        sink = _install_sink(conn.stream, on_bytes, nursery)
        if sink is None:
            return
        try:
            with timer:
                await sink.wake.wait()
        finally:
            sink.detach()
        if timer.cancelled_caught:
            raise trio.TooSlowError
        if sink.error is not None:
            raise sink.error

    async def _answer_rpc(self, conn: _RpcIn, rid: int, protocol: str, body: bytes) -> None:
        handler = self._handlers.get(protocol)
        if handler is None:
            await conn.send(conn.server.fail(rid, "unsupported", f"no handler for {protocol}"))
            return
        response: bytes | None = None
        try:
            # a bare deadline scope: what fail_after does, without its two context managers
            with trio.CancelScope(deadline=trio.current_time() + self.response_timeout) as scope:
                response = await handler(conn.remote, body)
            if scope.cancelled_caught:
                raise trio.TooSlowError
        except trio.TooSlowError:
            logger.warning(
                "%s request from %s: no response within %s s",
                protocol,
                conn.remote,
                self.response_timeout,
            )
            frame = conn.server.fail(
                rid, "timeout", f"no response within {self.response_timeout} s"
            )
        except Exception as error:
            logger.exception("%s handler failed on a request from %s", protocol, conn.remote)
            frame = conn.server.fail(
                rid, "handler-failed", f"{protocol}: {type(error).__name__}: {error}"
            )
        else:
            assert response is not None
            try:
                frame = conn.server.respond(rid, response)
            except ValueError as error:
                logger.info("%s response to %s not delivered: %s", protocol, conn.remote, error)
                frame = conn.server.fail(rid, "too-large", str(error))
        await conn.send(frame)

    async def _open_stream_redialling(self, peer: ID, protocol: str) -> Any:
        """Open a stream, connecting first if needed.

        libp2p keeps a dead connection registered for a while after the peer went away
        (P13), so a stream on an existing connection can fail although a fresh dial would
        succeed. In that case drop the connection and try once more through a new dial.
        """
        had_connection = bool(self._host.get_network().connections.get(peer))
        await self._ensure_connected(peer)
        try:
            return await self._open_stream(peer, protocol)
        except ProtocolNotSupported:
            raise
        except NetError as error:
            if not had_connection:
                raise
            logger.debug(
                "stream to %s on an existing connection failed (%s); redialling", peer, error
            )
        try:
            await self._host.disconnect(peer)
        except Exception:
            logger.debug("closing the stale connection to %s failed", peer, exc_info=True)
        await self._ensure_connected(peer)
        return await self._open_stream(peer, protocol)

    async def _open_stream(self, peer: ID, protocol: str) -> Any:
        try:
            return await self._host.new_stream(peer, [TProtocol(protocol)])
        except StreamFailure as error:
            cause = error.__cause__
            if cause is not None and "protocols not supported" in str(cause):
                raise ProtocolNotSupported(f"{peer} does not support {protocol}") from error
            reason = _describe(cause if cause is not None else error)
            raise StreamFailed(f"could not open a {protocol} stream to {peer}: {reason}") from error
        except Exception as error:  # SwarmException when the connection vanished meanwhile
            raise PeerUnreachable(
                f"could not open a {protocol} stream to {peer}: {_describe(error)}"
            ) from error

    async def _exchange(self, stream: Any, frame: bytes) -> bytes:
        try:
            await stream.write(frame)
            await stream.close_write()
            response = await _read_frame(stream)
        except _EndOfStream as error:
            # A reset by the responder usually surfaces here too: yamux drops the stream's
            # buffer on RST, and the next read reports end of stream rather than a reset.
            raise StreamFailed(f"no response: {error}") from error
        except FramingError as error:
            raise StreamFailed(f"malformed response: {error}") from error
        except Exception as error:  # StreamReset, StreamClosed, yamux connection errors
            raise StreamFailed(f"stream failed: {_describe(error)}") from error
        try:
            await stream.close()
        except Exception:
            logger.debug("closing a finished request stream failed", exc_info=True)
        return response

    # --- raw frame streams ---

    def set_stream_handler(
        self, protocol: str, handler: StreamHandler, *, max_frame_size: int = MAX_FRAME_SIZE
    ) -> None:
        """Hand every inbound ``protocol`` stream to ``handler(remote_peer_id, stream)``.

        For protocols that are not one request and one response (Bitswap). The handler runs
        in its own task per stream and should read promptly: yamux kills a stream whose
        reader stalls for 5 seconds while the writer is blocked (P8). When the handler
        returns, the stream is closed; if it raises, the error is logged and the stream is
        reset. Setting a handler again replaces it. Do not also ``set_handler`` the same
        protocol.
        """
        if protocol not in self._stream_handlers:

            async def stream_handler(stream: Any) -> None:
                await self._run_stream_handler(protocol, stream)

            self._host.set_stream_handler(TProtocol(protocol), stream_handler)
        self._stream_handlers[protocol] = (handler, max_frame_size)

    async def _run_stream_handler(self, protocol: str, stream: Any) -> None:
        handler, max_frame_size = self._stream_handlers[protocol]
        frames = FrameStream(stream, protocol, max_frame_size)
        try:
            await handler(frames.remote_peer, frames)
        except Exception:
            logger.exception("%s stream handler failed for %s", protocol, frames.remote_peer)
            await frames.reset()
            return
        await frames.close()

    async def open_stream(
        self,
        peer_id: str,
        protocol: str,
        *,
        timeout: float = 30.0,
        max_frame_size: int = MAX_FRAME_SIZE,
    ) -> FrameStream:
        """Open a ``protocol`` stream to ``peer_id`` (connecting first if needed).

        The caller owns the stream: ``close`` it when done sending, or ``reset`` it.

        Raises:
            ValueError: ``peer_id`` is not a peer id.
            PeerUnreachable: no known address, every dial failed, or it is our own id.
            ProtocolNotSupported: the peer does not speak ``protocol``.
            StreamFailed: the stream could not be opened.
            RequestTimeout: not open within ``timeout`` seconds.
        """
        peer = _parse_peer_id(peer_id)
        if peer == self._host.get_id():
            raise PeerUnreachable("cannot open a stream to ourselves")
        try:
            with trio.fail_after(timeout):
                stream = await self._open_stream_redialling(peer, protocol)
        except trio.TooSlowError:
            raise RequestTimeout(
                f"opening a {protocol} stream to {peer_id} timed out after {timeout} s"
            ) from None
        return FrameStream(stream, protocol, max_frame_size)

    # --- pubsub ---

    async def publish(self, topic: str, data: bytes) -> None:
        """Publish ``data`` on ``topic`` (gossipsub, signed).

        Fire-and-forget: libp2p queues are lossy and never report drops (P3, P15), so
        anything that must arrive needs an acknowledgement or anti-entropy path of its own.
        Keep the rate below ~100 messages/s per node.

        Applies backpressure: first waits (at most ``PUBLISH_BACKPRESSURE_LIMIT`` seconds)
        until every peer's outbound queue is at most half full, since libp2p silently drops
        RPCs once a 32-slot queue is full and a burst of publishes fills it at once (P3).
        """
        with trio.move_on_after(PUBLISH_BACKPRESSURE_LIMIT):
            # RpcQueue offers no "space available" event, so poll; each sender task drains
            # its queue in well under a millisecond per RPC on loopback.
            while any(len(q) > _OUTBOUND_QUEUE_HIGH for q in self._pubsub.peer_queues.values()):  # noqa: ASYNC110
                await trio.sleep(0.002)
        await self._pubsub.publish(topic, data)

    def subscribe(self, topic: str, handler: TopicHandler) -> None:
        """Call ``handler(from_peer_id, data)`` for each message on ``topic``, ours included.

        Works any time while the Net runs (the Net only exists once ``serve_net`` has
        started). The subscription becomes active shortly after this returns; use
        ``wait_for_topic_peer`` to know when a given peer's messages will reach us.
        Handlers for one topic run one message at a time, in arrival order; an exception
        is logged and the next message is handled. Several handlers per topic are allowed.
        """
        self._topic_handlers.setdefault(topic, []).append(handler)
        if topic not in self._topic_ready:
            self._topic_ready[topic] = trio.Event()
            self._nursery.start_soon(self._run_topic, topic)

    async def wait_for_topic_peer(self, peer_id: str, topic: str, *, timeout: float = 10.0) -> None:
        """Wait until ``peer_id`` is in our gossipsub mesh for ``topic`` (we must subscribe).

        After this, what either side publishes on ``topic`` reaches the other. Without a
        subscription of our own, waits only until we know the peer subscribes.

        Raises:
            RequestTimeout: not there within ``timeout`` seconds.
        """
        peer = _parse_peer_id(peer_id)
        try:
            with trio.fail_after(timeout):
                ready = self._topic_ready.get(topic)
                if ready is None:
                    await self._pubsub.wait_for_subscription(peer, topic, timeout=math.inf)
                else:
                    await ready.wait()
                    await self._pubsub.wait_for_mesh(peer, topic, timeout=math.inf)
        except trio.TooSlowError:
            raise RequestTimeout(f"{peer_id} not in the {topic!r} mesh after {timeout} s") from None

    async def _run_topic(self, topic: str) -> None:
        try:
            subscription = await self._pubsub.subscribe(topic)
        except Exception:
            logger.exception("subscribing to topic %r failed; its handlers will not run", topic)
            return
        self._topic_ready[topic].set()
        send, receive = trio.open_memory_channel[tuple[str, bytes]](_TOPIC_QUEUE_SIZE)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._dispatch_topic, topic, receive)
            async with send:
                async for message in subscription:
                    item = (str(ID(message.from_id)), bytes(message.data))
                    try:
                        send.send_nowait(item)
                    except trio.WouldBlock:
                        logger.warning(
                            "topic %r: handlers too slow, dropped a message from %s", topic, item[0]
                        )

    async def _dispatch_topic(
        self, topic: str, receive: trio.MemoryReceiveChannel[tuple[str, bytes]]
    ) -> None:
        async with receive:
            async for sender, data in receive:
                for handler in list(self._topic_handlers[topic]):
                    try:
                        await handler(sender, data)
                    except Exception:
                        logger.exception(
                            "topic %r handler %r failed on a message from %s",
                            topic,
                            handler,
                            sender,
                        )


# --- serve_net ----------------------------------------------------------------------------


def _new_host(key_pair: KeyPair, listen: Sequence[Multiaddr]) -> Any:
    noise = NoiseTransport(key_pair, noise_privkey=create_new_x25519_key_pair().private_key)
    return new_host(
        key_pair=key_pair,
        listen_addrs=listen,
        sec_opt={NOISE_PROTOCOL_ID: noise},  # Noise only: no plaintext fallback (P10)
        muxer_opt={TProtocol(YAMUX_PROTOCOL_ID): Yamux},
        connection_config=ConnectionConfig(max_connections_per_peer=1),  # P1
    )


async def _close_listeners(host: Any) -> None:
    """Close the host's listeners, even though we are being cancelled.

    py-libp2p runs each TCP listener, and the connections it accepts, in a trio *system
    task* (transport/tcp/tcp.py ``spawn_system_task(_run_server)``), outside our nursery.
    Only ``listener.close()`` stops it, and the swarm's own close path is cut short by the
    cancellation before it gets there. Without this the node lives on after serve_net
    returns: it keeps accepting and answering connections, and since the socket has
    SO_REUSEPORT a restarted node on the same port shares the port with the zombie.
    """
    with trio.CancelScope(shield=True), trio.move_on_after(SHUTDOWN_TIMEOUT):
        for listener in list(host.get_network().listeners.values()):
            try:
                await listener.close()
            except Exception:
                logger.warning("closing a libp2p listener failed", exc_info=True)


async def _bootstrap(net: Net, address: str) -> None:
    delay = BOOTSTRAP_BACKOFF
    for attempt in range(1, BOOTSTRAP_ATTEMPTS + 1):
        try:
            peer = await net.connect(address, timeout=10.0)
        except PeerUnreachable as error:
            if attempt == BOOTSTRAP_ATTEMPTS:
                logger.warning(
                    "bootstrap %s: giving up after %d attempt(s): %s", address, attempt, error
                )
                return
            logger.info(
                "bootstrap %s: attempt %d failed, retrying in %.1f s: %s",
                address,
                attempt,
                delay,
                error,
            )
            await trio.sleep(delay)
            delay *= 2
        else:
            logger.info("bootstrap: connected to %s", peer)
            return


async def serve_net(
    seed: bytes,
    listen: Sequence[str],
    bootstrap: Sequence[str] = (),
    *,
    # libp2p depends on trio-typing, whose outdated trio-stubs shadow trio's own annotations
    # for mypy and lack trio.TaskStatus; the ignore goes once those stubs are gone.
    task_status: trio.TaskStatus[Net] = trio.TASK_STATUS_IGNORED,  # type: ignore[name-defined]
) -> None:
    """Run a libp2p node until cancelled; ``nursery.start`` returns its ``Net``.

    ``seed`` is the node's 32-byte Ed25519 seed; the peer id derives from it. ``listen``
    holds multiaddrs such as ``/ip4/127.0.0.1/tcp/0`` (port 0 picks a free port;
    ``Net.multiaddrs()`` reports the real one). Each ``bootstrap`` address
    (``…/p2p/<peer id>``) is dialled before startup completes, with a few retries; a peer
    that stays unreachable is logged, not fatal. A malformed address raises ValueError.
    """
    key_pair = _key_pair_from_seed(seed)
    listen_addrs = [Multiaddr(addr) for addr in listen]
    for address in bootstrap:  # configuration errors fail now, not as dial failures later
        try:
            info_from_p2p_addr(Multiaddr(address))
        except Exception as error:
            raise ValueError(f"not a dialable p2p multiaddr: {address!r}") from error
    host = _new_host(key_pair, listen_addrs)
    router = GossipSub(
        list(_GOSSIPSUB_PROTOCOLS),
        degree=6,
        degree_low=4,
        degree_high=12,
        heartbeat_interval=1,
        spam_protection_enabled=False,  # P2
    )
    # Construct Pubsub and start it and its router before the host listens or dials (P4).
    pubsub = Pubsub(host, router)
    async with trio.open_nursery() as nursery:
        net = Net(host, pubsub, nursery)
        host.get_network().register_notifee(_ConnectionNotifee(net))
        try:
            async with background_trio_service(pubsub), background_trio_service(router):
                await pubsub.wait_until_ready()
                async with host.run(listen_addrs):
                    try:
                        logger.info("libp2p node %s listening on %s", net.peer_id, net.multiaddrs())
                        async with trio.open_nursery() as dials:
                            for address in bootstrap:
                                dials.start_soon(_bootstrap, net, address)
                        task_status.started(net)
                        await trio.sleep_forever()
                    finally:
                        await _close_listeners(host)
        finally:
            net._closed = True
            nursery.cancel_scope.cancel()
