"""libp2p mDNS discovery (libp2p/specs discovery/mdns.md), as a pure DNS codec.

p2pico.mdns is the trio driver (UDP 224.0.0.251:5353).  A peer asks

    question  _p2p._udp.local  PTR  IN

and every peer answers with

    answer      _p2p._udp.local       PTR  <label>._p2p._udp.local
    additional  <label>._p2p._udp.local  TXT  "dnsaddr=/ip4/…/tcp/…/p2p/<peer id>" …

(``label`` is random per start, as the spec asks, so it says nothing about the peer.)
The decoder takes any DNS message (RFC 1035, with name compression) and never trusts
it: a truncated or looping message raises MdnsError with the byte offset.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Final

SERVICE: Final = "_p2p._udp.local"
MDNS_GROUP: Final = "224.0.0.251"
MDNS_PORT: Final = 5353
TYPE_PTR: Final = 12
TYPE_TXT: Final = 16
CLASS_IN: Final = 1
TTL: Final = 120
# A TXT string is at most 255 bytes; a DNS label at most 63; a name at most 255.
MAX_TXT: Final = 255
MAX_LABEL: Final = 63
MAX_NAME: Final = 255
MAX_MESSAGE: Final = 9000  # RFC 6762 §17: an mDNS message fits a jumbo frame


class MdnsError(ValueError):
    """A DNS message that does not parse; the text names the byte offset."""


@dataclass(frozen=True, slots=True)
class Question:
    name: str
    type: int
    klass: int = CLASS_IN


@dataclass(frozen=True, slots=True)
class Record:
    name: str
    type: int
    klass: int
    ttl: int
    data: bytes  # the raw RDATA
    # PTR: the name pointed to; TXT: the strings (decoded from ``data``)
    target: str | None = None
    texts: tuple[bytes, ...] = ()


@dataclass(frozen=True, slots=True)
class Message:
    id: int
    flags: int
    questions: tuple[Question, ...]
    records: tuple[Record, ...]  # answers, authorities and additionals, in order

    @property
    def is_response(self) -> bool:
        return bool(self.flags & 0x8000)


def _encode_name(name: str) -> bytes:
    out = bytearray()
    for label in name.rstrip(".").split("."):
        raw = label.encode()
        if not raw or len(raw) > MAX_LABEL:
            raise MdnsError(f"label {label!r} of {name!r} must be 1 to {MAX_LABEL} bytes")
        out += bytes([len(raw)]) + raw
    out += b"\x00"
    if len(out) > MAX_NAME:
        raise MdnsError(f"name {name!r} is longer than {MAX_NAME} bytes")
    return bytes(out)


def _record(name: str, rtype: int, ttl: int, rdata: bytes) -> bytes:
    return _encode_name(name) + struct.pack("!HHIH", rtype, CLASS_IN, ttl, len(rdata)) + rdata


def encode_query(service: str = SERVICE) -> bytes:
    """One PTR question for ``service`` (id 0, as mDNS queries use)."""
    return (
        struct.pack("!HHHHHH", 0, 0, 1, 0, 0, 0)
        + _encode_name(service)
        + struct.pack("!HH", TYPE_PTR, CLASS_IN)
    )


def encode_response(label: str, multiaddrs: list[str], service: str = SERVICE) -> bytes:
    """The answer a peer gives: a PTR to ``label``.service and one TXT per address."""
    instance = f"{label}.{service}"
    texts = []
    for addr in multiaddrs:
        text = f"dnsaddr={addr}".encode()
        if len(text) > MAX_TXT:
            raise MdnsError(f"address {addr!r} is too long for a TXT string")
        texts.append(bytes([len(text)]) + text)
    answer = _record(service, TYPE_PTR, TTL, _encode_name(instance))
    additional = _record(instance, TYPE_TXT, TTL, b"".join(texts)) if texts else b""
    header = struct.pack("!HHHHHH", 0, 0x8400, 0, 1, 0, 1 if texts else 0)
    return header + answer + additional


def _read_name(data: bytes, offset: int) -> tuple[str, int]:
    """The name at ``offset`` and the offset after it (following compression pointers)."""
    labels: list[str] = []
    end: int | None = None
    jumps = 0
    total = 0
    while True:
        if offset >= len(data):
            raise MdnsError(f"byte {offset}: the message ends inside a name")
        length = data[offset]
        if length & 0xC0 == 0xC0:
            if offset + 1 >= len(data):
                raise MdnsError(f"byte {offset}: the message ends inside a name pointer")
            pointer = ((length & 0x3F) << 8) | data[offset + 1]
            if end is None:
                end = offset + 2
            jumps += 1
            if jumps > 32 or pointer >= len(data):
                raise MdnsError(f"byte {offset}: a name pointer loops or points outside")
            offset = pointer
            continue
        if length & 0xC0:
            raise MdnsError(f"byte {offset}: unknown label type {length >> 6}")
        offset += 1
        if length == 0:
            break
        if offset + length > len(data):
            raise MdnsError(f"byte {offset}: the message ends inside a label")
        total += length + 1
        if total > MAX_NAME:
            raise MdnsError(f"byte {offset}: a name longer than {MAX_NAME} bytes")
        labels.append(data[offset : offset + length].decode("utf-8", "replace"))
        offset += length
    return ".".join(labels), end if end is not None else offset


def _texts(rdata: bytes, at: int) -> tuple[bytes, ...]:
    out: list[bytes] = []
    i = 0
    while i < len(rdata):
        n = rdata[i]
        if i + 1 + n > len(rdata):
            raise MdnsError(f"byte {at + i}: a TXT string runs past its record")
        out.append(rdata[i + 1 : i + 1 + n])
        i += 1 + n
    return tuple(out)


def decode(data: bytes) -> Message:
    if len(data) < 12:
        raise MdnsError(f"byte 0: a DNS message has a 12-byte header, got {len(data)} bytes")
    if len(data) > MAX_MESSAGE:
        raise MdnsError(f"byte {MAX_MESSAGE}: a message longer than {MAX_MESSAGE} bytes")
    mid, flags, qd, an, ns, ar = struct.unpack_from("!HHHHHH", data)
    offset = 12
    questions = []
    for _ in range(qd):
        name, offset = _read_name(data, offset)
        if offset + 4 > len(data):
            raise MdnsError(f"byte {offset}: the message ends inside a question")
        qtype, qclass = struct.unpack_from("!HH", data, offset)
        offset += 4
        questions.append(Question(name.lower(), qtype, qclass & 0x7FFF))
    records = []
    for _ in range(an + ns + ar):
        name, offset = _read_name(data, offset)
        if offset + 10 > len(data):
            raise MdnsError(f"byte {offset}: the message ends inside a record header")
        rtype, rclass, ttl, length = struct.unpack_from("!HHIH", data, offset)
        offset += 10
        if offset + length > len(data):
            raise MdnsError(f"byte {offset}: record data of {length} bytes runs past the end")
        rdata = data[offset : offset + length]
        target = None
        texts: tuple[bytes, ...] = ()
        if rtype == TYPE_PTR:
            target, _ = _read_name(data, offset)
            target = target.lower()
        elif rtype == TYPE_TXT:
            texts = _texts(rdata, offset)
        records.append(Record(name.lower(), rtype, rclass & 0x7FFF, ttl, rdata, target, texts))
        offset += length
    return Message(mid, flags, tuple(questions), tuple(records))


def asks_for(message: Message, service: str = SERVICE) -> bool:
    """Is ``message`` a query with a PTR (or ANY) question for ``service``?"""
    return not message.is_response and any(
        q.name == service and q.type in (TYPE_PTR, 255) for q in message.questions
    )


def addresses(message: Message, service: str = SERVICE) -> list[str]:
    """The multiaddrs a response announces for ``service`` (TXT ``dnsaddr=`` of the
    instances its PTR records name)."""
    if not message.is_response:
        return []
    instances = {
        r.target for r in message.records if r.type == TYPE_PTR and r.name == service and r.target
    }
    out: list[str] = []
    for r in message.records:
        if r.type != TYPE_TXT or r.name not in instances:
            continue
        for text in r.texts:
            if text.startswith(b"dnsaddr="):
                addr = text[len(b"dnsaddr=") :].decode("utf-8", "replace")
                if addr.startswith("/") and addr not in out:
                    out.append(addr)
    return out
