"""mDNS discovery on the local network (``p2pico node --mdns``): libp2p's mDNS protocol
(protocols.mdns) over a trio UDP socket, so engines on one LAN find each other without
bootstrap addresses.

Neighbours: protocols.mdns (the codec), p2pico.net (``connect``, ``multiaddrs``),
p2pico.node (starts it).

Ours, not py-libp2p's: its mDNS (``new_host(enable_mDNS=True)``) reports discoveries
through a module-global singleton on zeroconf's thread and never connects
(libp2p-probe.md §5), and it would need p2pico.net to build the host differently.  This
one is ~150 lines, speaks the same wire format (``_p2p._udp.local`` PTR, TXT
``dnsaddr=``), so other libp2p implementations find us and we find them, and connects
to every peer it learns of: the mesh's catch-up then syncs the location records.

The socket binds 0.0.0.0:5353 with SO_REUSEADDR/SO_REUSEPORT (several engines on one host
all get each datagram) and joins 224.0.0.251 on the default interface, or on loopback
when there is no multicast route (a namespace with only ``lo``, as the tests use).
Queries go out at start and then after 1, 2, 4 … up to ``interval`` seconds, and every
engine answers a query with its addresses (and announces them once at start).
"""

from __future__ import annotations

import logging
import secrets
import socket
import struct
from typing import Any

import trio

from p2pico.net import Net, NetError
from protocols import mdns

log = logging.getLogger("p2pico.mdns")

QUERY_INTERVAL = 10.0


def _open_socket(interface: str) -> Any:
    sock = trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if hasattr(socket, "SO_REUSEPORT"):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, 255)
    sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_LOOP, 1)
    group = socket.inet_aton(mdns.MDNS_GROUP)
    try:
        sock.setsockopt(
            socket.IPPROTO_IP,
            socket.IP_ADD_MEMBERSHIP,
            struct.pack("4s4s", group, socket.inet_aton(interface)),
        )
    except OSError as e:  # no multicast route (e.g. a namespace with only lo): use loopback
        log.info("mDNS: cannot join %s on %s (%s); using loopback", mdns.MDNS_GROUP, interface, e)
        interface = "127.0.0.1"
        sock.setsockopt(
            socket.IPPROTO_IP,
            socket.IP_ADD_MEMBERSHIP,
            struct.pack("4s4s", group, socket.inet_aton(interface)),
        )
    if interface != "0.0.0.0":
        sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, socket.inet_aton(interface))
    return sock


async def serve_mdns(
    net: Net,
    *,
    interface: str = "0.0.0.0",
    interval: float = QUERY_INTERVAL,
    task_status: Any = trio.TASK_STATUS_IGNORED,
) -> None:
    """Answer mDNS queries with our addresses and connect to every peer announced."""
    sock = _open_socket(interface)
    await sock.bind(("0.0.0.0", mdns.MDNS_PORT))
    label = secrets.token_hex(16)  # random per start (the spec: no peer id in the name)
    target = (mdns.MDNS_GROUP, mdns.MDNS_PORT)
    dialling: set[str] = set()
    found = 0

    async def send(data: bytes) -> None:
        try:
            await sock.sendto(data, target)
        except OSError as e:
            log.warning("mDNS: cannot send to %s:%d: %s", *target, e)

    async def dial(addr: str, peer: str) -> None:
        nonlocal found
        try:
            await net.connect(addr)
            found += 1
            log.info("mDNS: connected to %s at %s", peer, addr)
        except (NetError, ValueError) as e:
            log.info("mDNS: could not connect to %s: %s", addr, e)
        finally:
            dialling.discard(peer)

    async def query() -> None:
        pause = 1.0
        while True:
            await send(mdns.encode_query())
            await trio.sleep(pause)
            pause = min(pause * 2, interval)

    with sock:
        async with trio.open_nursery() as nursery:
            await send(mdns.encode_response(label, net.multiaddrs()))  # announce once
            nursery.start_soon(query)
            task_status.started()
            log.info("mDNS: answering and asking for %s on %s", mdns.SERVICE, target)
            while True:
                data, sender = await sock.recvfrom(mdns.MAX_MESSAGE)
                try:
                    message = mdns.decode(data)
                except mdns.MdnsError as e:
                    log.debug("mDNS: ignored a message from %s: %s", sender, e)
                    continue
                if mdns.asks_for(message):
                    await send(mdns.encode_response(label, net.multiaddrs()))
                    continue
                connected = set(net.connected_peers())
                for addr in mdns.addresses(message):
                    peer = addr.rsplit("/p2p/", 1)[-1] if "/p2p/" in addr else ""
                    if not peer or peer == net.peer_id or peer in connected or peer in dialling:
                        continue
                    dialling.add(peer)
                    nursery.start_soon(dial, addr, peer)
