"""Location records: valid ones verify from the DID alone; forged, stale or broken ones are refused."""

from __future__ import annotations

import datetime as dt

import pytest

from dag import cbor
from dag.did import Keypair
from protocols import location
from protocols.location import InvalidRecord, build_record, compare, parse_record

PICO = Keypair.from_seed(bytes(range(32)))
HOST = Keypair.from_seed(bytes(range(1, 33)))
OTHER = Keypair.from_seed(bytes(range(2, 34)))
NOW = dt.datetime(2026, 11, 22, 12, 0, tzinfo=dt.UTC)


def test_a_record_verifies_and_names_the_host() -> None:
    record = parse_record(build_record(PICO, HOST, seq=0, now=NOW), now=NOW)
    assert (record.did, record.host, record.seq, record.state) == (
        PICO.did,
        HOST.peer_id,
        0,
        "active",
    )
    assert record.prev is None
    assert record.from_host is None


def test_successor_links_to_its_predecessor() -> None:
    first = parse_record(build_record(PICO, HOST, seq=0, now=NOW), now=NOW)
    second = parse_record(build_record(PICO, OTHER, seq=1, prev=first, now=NOW), now=NOW)
    assert second.prev == first.hash
    assert second.from_host == HOST.peer_id
    assert compare(second, first) == "newer"
    assert compare(first, second) == "older"
    assert compare(first, first) == "same"


def _entry_parts(raw: bytes) -> tuple[bytes, dict[str, object]]:
    sig, data = location._parse_entry(raw)
    value = cbor.decode(data)
    assert isinstance(value, dict)
    return sig, value


def test_forged_record_signed_by_another_key_is_rejected() -> None:
    # An attacker points the pico's DID at its own engine, signing with its own key.
    raw = build_record(OTHER, OTHER, seq=99, now=NOW)
    _, data = _entry_parts(raw)
    data["_did"] = PICO.did
    data["_host_sig"] = OTHER.sign(
        b"p2pico-host:" + cbor.encode({k: v for k, v in data.items() if k != "_host_sig"})
    )
    encoded = cbor.encode(data)
    forged = location._entry(OTHER.sign(b"ipns-signature:" + encoded), encoded)
    with pytest.raises(InvalidRecord, match=r"^pico signature does not verify for did:key:z6Mk"):
        parse_record(forged, now=NOW)


def test_record_altered_after_signing_is_rejected() -> None:
    raw = build_record(PICO, HOST, seq=3, now=NOW)
    sig, data = _entry_parts(raw)
    data["Sequence"] = 4
    encoded = cbor.encode(data)
    with pytest.raises(InvalidRecord, match="pico signature does not verify"):
        parse_record(location._entry(sig, encoded), now=NOW)


def test_host_must_countersign() -> None:
    # The pico key alone points at HOST, without HOST's consent.
    _, data = _entry_parts(build_record(PICO, HOST, seq=0, now=NOW))
    unsigned = {k: v for k, v in data.items() if k != "_host_sig"}
    data["_host_sig"] = OTHER.sign(b"p2pico-host:" + cbor.encode(unsigned))
    encoded = cbor.encode(data)
    raw = location._entry(PICO.sign(b"ipns-signature:" + encoded), encoded)
    with pytest.raises(
        InvalidRecord, match=f"^host countersignature does not verify for {HOST.peer_id}$"
    ):
        parse_record(raw, now=NOW)


def test_expired_record_is_rejected() -> None:
    raw = build_record(PICO, HOST, seq=0, now=NOW, validity=dt.timedelta(minutes=1))
    parse_record(raw, now=NOW)
    with pytest.raises(InvalidRecord, match=r"^record expired at 2026-11-22T12:01:00"):
        parse_record(raw, now=NOW + dt.timedelta(minutes=2))


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (b"", "record lacks signatureV2 or data"),
        (b"\x42\x05abc", "field 8 runs past the end of the record"),
        (b"\x42\x01a\x4a\x01\x1f", "data is not strict DAG-CBOR"),
        (b"\x42\x01a\x4a\x01\x01", "data is not a map"),
        (b"\x0d", "unsupported protobuf wire type 5"),
        (b"\x42" * 20_000, "over the 10240-byte limit"),
    ],
)
def test_malformed_records_name_the_problem(raw: bytes, message: str) -> None:
    with pytest.raises(InvalidRecord, match=message):
        parse_record(raw, now=NOW)


def test_equivocation_is_detected_and_resolved_deterministically() -> None:
    first = parse_record(build_record(PICO, HOST, seq=5, now=NOW), now=NOW)
    rival = parse_record(build_record(PICO, OTHER, seq=5, now=NOW), now=NOW)
    assert compare(rival, first) == "equivocation"
    chosen = location.pick_equivocation(first, rival)
    assert chosen is location.pick_equivocation(rival, first)
    assert chosen.hash == min(first.hash, rival.hash)


def test_host_addresses_travel_in_the_record_and_are_checked() -> None:
    addrs = [f"/ip4/127.0.0.1/tcp/4001/p2p/{HOST.peer_id}"]
    record = parse_record(build_record(PICO, HOST, seq=0, now=NOW, addrs=addrs), now=NOW)
    assert record.addrs == tuple(addrs)
    too_many = build_record(PICO, HOST, seq=0, now=NOW, addrs=["/ip4/1.2.3.4/tcp/1"] * 17)
    with pytest.raises(
        InvalidRecord, match=r"^_addrs must be a list of at most 16 multiaddr strings$"
    ):
        parse_record(too_many, now=NOW)
