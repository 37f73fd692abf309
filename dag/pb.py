"""Strict DAG-PB decoding (read-only) so block.py can verify IPFS blocks, e.g. CIDv0 ones in a CAR (car.py).

The data model form follows the DAG-PB spec (ipld.io/specs/codecs/dag-pb/spec):
``{"Links": [{"Hash": CID, "Name"?: str, "Tsize"?: int}, ...], "Data"?: bytes}``.
Strictness, per the spec: PBLink fields in field-number order, no duplicate fields,
no unknown fields or wire types, a Hash that parses as a CID. PBNode's Data may come
before or after its Links (IPFS data exists in both orders). We never encode DAG-PB.
"""

from __future__ import annotations

from typing import Final

from dag.cid import CID, CIDError, decode_varint

_LEN: Final = 2  # protobuf wire type "length-delimited"
_VARINT: Final = 0
_MAX_TSIZE: Final = 2**64 - 1


class DagPbError(ValueError):
    """Bytes that are not strict DAG-PB."""


def _field(data: bytes, pos: int, where: str) -> tuple[int, int, int]:
    """Read a field key at `pos`: return (field number, wire type, position after it)."""
    try:
        key, pos = decode_varint(data, pos)
    except CIDError as e:
        raise DagPbError(f"{where}: bad field key: {e}") from None
    return key >> 3, key & 7, pos


def _bytes(data: bytes, pos: int, where: str) -> tuple[bytes, int]:
    try:
        n, pos = decode_varint(data, pos)
    except CIDError as e:
        raise DagPbError(f"{where}: bad length: {e}") from None
    if pos + n > len(data):
        raise DagPbError(f"{where}: length {n} runs past the end ({len(data) - pos} bytes left)")
    return data[pos : pos + n], pos + n


def _link(data: bytes) -> dict[str, object]:
    link: dict[str, object] = {}
    pos, last = 0, 0
    while pos < len(data):
        num, wire, pos = _field(data, pos, "PBLink")
        if num <= last or num > 3:
            raise DagPbError(
                f"PBLink: field {num} after field {last} (want 1 Hash, 2 Name, 3 Tsize)"
            )
        last = num
        if num == 3:
            if wire != _VARINT:
                raise DagPbError(f"PBLink: Tsize has wire type {wire}, not varint")
            try:
                tsize, pos = decode_varint(data, pos)
            except CIDError as e:
                raise DagPbError(f"PBLink: bad Tsize: {e}") from None
            if tsize > _MAX_TSIZE:
                raise DagPbError(f"PBLink: Tsize {tsize} is not a uint64")
            link["Tsize"] = tsize
            continue
        if wire != _LEN:
            raise DagPbError(f"PBLink: field {num} has wire type {wire}, not length-delimited")
        value, pos = _bytes(data, pos, "PBLink")
        if num == 1:
            try:
                link["Hash"] = CID.parse(value)
            except CIDError as e:
                raise DagPbError(f"PBLink: Hash is not a CID: {e}") from None
        else:
            try:
                link["Name"] = value.decode("utf-8")
            except UnicodeDecodeError as e:
                raise DagPbError(f"PBLink: Name is not UTF-8: {e}") from None
    if "Hash" not in link:
        raise DagPbError("PBLink: no Hash")
    return link


def decode(data: bytes) -> dict[str, object]:
    """Decode one DAG-PB block into its data model form; raise DagPbError."""
    links: list[object] = []
    node: dict[str, object] = {"Links": links}
    pos = 0
    while pos < len(data):
        num, wire, pos = _field(data, pos, "PBNode")
        if num not in (1, 2) or wire != _LEN:
            raise DagPbError(f"PBNode: unexpected field {num} with wire type {wire}")
        value, pos = _bytes(data, pos, "PBNode")
        if num == 2:
            links.append(_link(value))
        elif "Data" in node:
            raise DagPbError("PBNode: Data appears twice")
        else:
            node["Data"] = value
    return node
