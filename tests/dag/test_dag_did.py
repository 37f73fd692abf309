import contextlib
import json
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dag.did import (
    InvalidDid,
    InvalidPeerId,
    Keypair,
    did_from_peer_id,
    did_from_public_key,
    peer_id_from_did,
    peer_id_from_public_key,
    public_key_from_did,
    public_key_from_peer_id,
    verify,
)

DID_FIXTURES = Path(__file__).resolve().parents[2].parent / "shared" / "fixtures" / "did"
DERIVED = json.loads((DID_FIXTURES / "did-key-ed25519-derived.json").read_text())
OFFICIAL = json.loads((DID_FIXTURES / "w3c-ccg-did-key-ed25519-x25519.json").read_text())
VECTORS = DERIVED["vectors"]
# Computed once with libp2p 0.8.1: ID.from_pubkey(create_new_key_pair(seed).public_key).to_base58()
LIBP2P_PEER_IDS = {
    "00" * 32: "12D3KooWDpJ7As7BWAwRMfu1VU2WCqNjvq387JEYKDBj4kx6nXTN",
    "00" * 31 + "01": "12D3KooWEyoppNCUx8Yx66oV9fJnriXwCcXwDDUA2kj6vnc6iDEp",
}


def test_fixture_files_agree() -> None:
    assert len(VECTORS) == 5
    assert {v["did"] for v in VECTORS} == set(OFFICIAL)


@pytest.mark.parametrize("vec", VECTORS, ids=[v["seed_hex"][-4:] for v in VECTORS])
def test_official_vectors(vec: dict[str, str]) -> None:
    kp = Keypair.from_seed(bytes.fromhex(vec["seed_hex"]))
    pub = bytes.fromhex(vec["ed25519_public_key_hex"])
    assert kp.seed.hex() == vec["seed_hex"]
    assert kp.public_key == pub
    assert kp.did == vec["did"] == did_from_public_key(pub)
    assert public_key_from_did(vec["did"]) == pub
    msg = vec["sample_message_utf8"].encode()
    assert kp.sign(msg).hex() == vec["sample_ed25519_signature_hex"]
    assert verify(pub, msg, kp.sign(msg))
    assert kp.peer_id == peer_id_from_did(kp.did)
    assert did_from_peer_id(kp.peer_id) == kp.did


def test_decode_only_vector() -> None:
    (vec,) = DERIVED["decode_only"]
    assert public_key_from_did(vec["did"]).hex() == vec["ed25519_public_key_hex"]


@pytest.mark.parametrize(
    "neg", DERIVED["negative"], ids=[n["input"][-8:] for n in DERIVED["negative"]]
)
def test_negative_vectors(neg: dict[str, str]) -> None:
    expect = neg["expect"] if not neg["expect"].startswith("reject") else "unsupportedPublicKeyType"
    with pytest.raises(InvalidDid, match=f"^{expect}: "):
        public_key_from_did(neg["input"])


@pytest.mark.parametrize(
    ("did", "name"),
    [
        ("", "invalidDid"),
        ("did:key:", "invalidDid"),
        ("did:key:z6Mk:extra", "invalidDid"),
        ("did:key:z0OIl", "invalidDid"),
        ("did:key:z6LShs9GGnqk85isEBzzshkuVWrVKsRp24GnDuHk8QWkARMW", "unsupportedPublicKeyType"),
    ],
)
def test_more_bad_dids(did: str, name: str) -> None:
    with pytest.raises(InvalidDid, match=f"^{name}: "):
        public_key_from_did(did)


@pytest.mark.parametrize(("seed_hex", "peer_id"), LIBP2P_PEER_IDS.items())
def test_peer_id_matches_libp2p(seed_hex: str, peer_id: str) -> None:
    kp = Keypair.from_seed(bytes.fromhex(seed_hex))
    assert kp.peer_id == peer_id == peer_id_from_public_key(kp.public_key)
    assert public_key_from_peer_id(peer_id) == kp.public_key


def test_peer_id_as_libp2p_key_cid() -> None:
    from dag.cid import CID

    kp = Keypair.from_seed(bytes(32))
    raw = bytes.fromhex("00240801 1220".replace(" ", "")) + kp.public_key
    assert public_key_from_peer_id(str(CID.v1(0x72, raw))) == kp.public_key


@pytest.mark.parametrize(
    "pid",
    [
        "QmNLei78zWmzUdbeRB3CiUfAizWUrbeeZh5K1rhAQKCh51",  # sha2-256 (RSA-style) peer id
        "12D3KooW",
        "1OOO",
        "bafyreiaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",  # CID, but not libp2p-key
        "",
    ],
)
def test_bad_peer_ids(pid: str) -> None:
    with pytest.raises(InvalidPeerId):
        public_key_from_peer_id(pid)


def test_keypair() -> None:
    a, b = Keypair.generate(), Keypair.generate()
    assert a != b
    assert a.did.startswith("did:key:z6Mk")
    assert a.peer_id.startswith("12D3KooW")
    assert Keypair.from_seed(a.seed) == a
    assert a.seed.hex() not in repr(a)
    with pytest.raises(ValueError, match="32 bytes"):
        Keypair.from_seed(b"short")
    with pytest.raises(AttributeError):
        a.did = "x"


def test_verify_never_raises() -> None:
    kp = Keypair.from_seed(bytes(32))
    sig = kp.sign(b"m")
    assert verify(kp.public_key, b"m", sig)
    assert not verify(kp.public_key, b"n", sig)
    assert not verify(kp.public_key, b"m", sig[:-1] + bytes([sig[-1] ^ 1]))
    assert not verify(kp.public_key[:31], b"m", sig)
    assert not verify(kp.public_key, b"m", sig[:63])
    assert not verify(b"\xff" * 32, b"m", sig)  # not a curve point


@given(st.text(max_size=60) | st.text(max_size=50).map(lambda s: "did:key:z" + s))
def test_public_key_from_did_only_raises_invalid_did(s: str) -> None:
    with contextlib.suppress(InvalidDid):
        public_key_from_did(s)


@given(st.text(max_size=60) | st.text(max_size=50).map(lambda s: "12D3KooW" + s))
def test_public_key_from_peer_id_only_raises_invalid_peer_id(s: str) -> None:
    with contextlib.suppress(InvalidPeerId):
        public_key_from_peer_id(s)
