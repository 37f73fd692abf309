"""Ed25519 keys as did:key and libp2p peer ids (pynacl + base58); head.py signs with Keypair."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Final, NoReturn, final

import base58
import nacl.bindings
import nacl.exceptions
import nacl.signing

from dag.cid import CID, LIBP2P_KEY, CIDError, decode_varint

try:
    from dag import _native
except ImportError:  # built without the C extension (setup.py): PyNaCl's calls only
    _native = None  # type: ignore[assignment]

ED25519_PUB: Final = 0xED
_DID_KEY_PREFIX: Final = "did:key:"
_MULTICODEC_ED25519: Final = b"\xed\x01"
# Identity multihash (0x00, length 36) of the protobuf PublicKey{Type: Ed25519 (1), Data: 32 bytes}.
_PEER_ID_PREFIX: Final = b"\x00\x24\x08\x01\x12\x20"


class InvalidDid(ValueError):
    """Not a did:key for an Ed25519 key; the message starts with the did:key spec's error name."""


class InvalidPeerId(ValueError):
    """Not a libp2p peer id that inlines an Ed25519 public key."""


def _bad_did(name: str, detail: str) -> NoReturn:
    raise InvalidDid(f"{name}: {detail}")


def did_from_public_key(pub: bytes) -> str:
    if len(pub) != 32:
        _bad_did("invalidPublicKeyLength", f"Ed25519 public key must be 32 bytes, got {len(pub)}")
    return (
        _DID_KEY_PREFIX + "z" + base58.b58encode(_MULTICODEC_ED25519 + bytes(pub)).decode("ascii")
    )


def public_key_from_did(did: str) -> bytes:
    """The 32-byte Ed25519 public key inside `did:key:z6Mk…`; raise InvalidDid otherwise."""
    if not isinstance(did, str) or not did.startswith("did:"):
        _bad_did("invalidDid", f"not a DID: {did!r}")
    return _key_of_did(did)


# A pico's heads all carry its DID: verifying a history of 8,000 heads decoded its base58
# 8,000 times before this cache (0.6 s of a 9.6 s import under cProfile).
@functools.lru_cache(maxsize=4096)
def _key_of_did(did: str) -> bytes:
    parts = did.split(":")
    if len(parts) != 3 or not parts[1] or not parts[2]:
        _bad_did("invalidDid", f"expected did:key:<multibase>, got {did!r}")
    if parts[1] != "key":
        _bad_did("methodNotSupported", f"DID method {parts[1]!r} is not 'key' in {did!r}")
    mb = parts[2]
    if not mb.startswith("z"):
        _bad_did("invalidDid", f"multibase value must start with 'z' (base58btc) in {did!r}")
    try:
        raw = base58.b58decode(mb[1:])
        codec, pos = decode_varint(raw)
    except (ValueError, CIDError):
        _bad_did("invalidDid", f"bad base58btc or multicodec varint in {did!r}")
    if codec != ED25519_PUB:
        _bad_did(
            "unsupportedPublicKeyType",
            f"multicodec 0x{codec:x} is not ed25519-pub (0xed) in {did!r}",
        )
    key = raw[pos:]
    if len(key) != 32:
        _bad_did("invalidPublicKeyLength", f"Ed25519 key is {len(key)} bytes, not 32, in {did!r}")
    return key


def peer_id_from_public_key(pub: bytes) -> str:
    if len(pub) != 32:
        raise InvalidPeerId(f"Ed25519 public key must be 32 bytes, got {len(pub)}")
    return base58.b58encode(_PEER_ID_PREFIX + bytes(pub)).decode("ascii")


def public_key_from_peer_id(pid: str) -> bytes:
    """Accepts base58 `12D3KooW…` and CIDv1 libp2p-key forms (`bafz…`, `k51…`)."""
    try:
        if pid.startswith("1"):
            mh = base58.b58decode(pid)
        else:
            cid = CID.parse(pid)
            if cid.codec != LIBP2P_KEY:
                raise InvalidPeerId(f"CID {pid!r} is not a libp2p-key (0x72) CID")
            mh = cid.multihash
    except (ValueError, CIDError) as exc:
        if isinstance(exc, InvalidPeerId):
            raise
        raise InvalidPeerId(f"cannot decode peer id {pid!r}: {exc}") from None
    if len(mh) != 38 or mh[:6] != _PEER_ID_PREFIX:
        raise InvalidPeerId(f"{pid!r} is not an identity-multihash Ed25519 peer id (12D3KooW…)")
    return mh[6:]


def did_from_peer_id(pid: str) -> str:
    return did_from_public_key(public_key_from_peer_id(pid))


def peer_id_from_did(did: str) -> str:
    return peer_id_from_public_key(public_key_from_did(did))


def verify(public_key: bytes, message: bytes, signature: bytes) -> bool:
    """Ed25519 detached-signature check; False (never an exception) for any bad input."""
    if len(public_key) != 32 or len(signature) != 64:
        return False
    try:
        nacl.signing.VerifyKey(bytes(public_key)).verify(bytes(message), bytes(signature))
    except (nacl.exceptions.BadSignatureError, nacl.exceptions.CryptoError, ValueError, TypeError):
        return False
    return True


@final
class Keypair:
    """An Ed25519 signing key; repr never shows the seed."""

    __slots__ = ("_secret", "_signing", "did", "peer_id", "public_key")

    _signing: nacl.signing.SigningKey
    _secret: bytes  # libsodium's 64-byte secret key (seed || public key), for sign()
    public_key: bytes
    did: str
    peer_id: str

    def __init__(self, signing: nacl.signing.SigningKey) -> None:
        object.__setattr__(self, "_signing", signing)
        pub = bytes(signing.verify_key)
        object.__setattr__(self, "public_key", pub)
        object.__setattr__(self, "_secret", bytes(signing) + pub)
        object.__setattr__(self, "did", did_from_public_key(pub))
        object.__setattr__(self, "peer_id", peer_id_from_public_key(pub))

    @classmethod
    def generate(cls) -> Keypair:
        return cls(nacl.signing.SigningKey.generate())

    @classmethod
    def from_seed(cls, seed: bytes) -> Keypair:
        if len(seed) != 32:
            raise ValueError(f"Ed25519 seed must be 32 bytes, got {len(seed)}")
        return cls(nacl.signing.SigningKey(bytes(seed)))

    @property
    def seed(self) -> bytes:
        return bytes(self._signing)

    def sign(self, msg: bytes) -> bytes:
        """64-byte detached Ed25519 signature."""
        # libsodium directly: SigningKey.sign wraps the same call in a SignedMessage.
        return nacl.bindings.crypto_sign(bytes(msg), self._secret)[:64]

    def sign_spliced(self, prefix: bytes, msg: bytes) -> bytes:
        """``prefix + self.sign(msg) + msg``, made in one piece where dag/_native.c is built
        (a head block's envelope: head.py)."""
        if _SIGN_SPLICED is not None:
            return _SIGN_SPLICED(prefix, msg, self._secret)
        return prefix + self.sign(msg) + msg

    def __repr__(self) -> str:
        return f"Keypair({self.did})"

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Keypair):
            return self.public_key == other.public_key
        return NotImplemented

    def __hash__(self) -> int:
        return hash(self.public_key)

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError("Keypair is immutable")


def _native_signer() -> Callable[[bytes, bytes, bytes], bytes] | None:
    """``_native.sign_spliced`` bound to the crypto_sign_ed25519_detached of the libsodium
    PyNaCl loaded, if that library exports it and the bound call signs as PyNaCl does; None
    (PyNaCl's calls, through Python) otherwise."""
    if _native is None:
        return None
    try:
        import ctypes

        import nacl._sodium

        lib = ctypes.CDLL(nacl._sodium.__file__)
        address = ctypes.cast(lib.crypto_sign_ed25519_detached, ctypes.c_void_p).value
    except (ImportError, OSError, AttributeError):
        return None
    if not address:
        return None
    _native.bind_signer(address)
    _, secret = nacl.bindings.crypto_sign_seed_keypair(bytes(range(32)))
    for msg in (b"", b"p2pico signer check"):
        want = nacl.bindings.crypto_sign(msg, secret)[:64]
        if _native.sign_spliced(b"<", msg, secret) != b"<" + want + msg:
            _native.bind_signer(0)
            return None
    return _native.sign_spliced


_SIGN_SPLICED: Final = _native_signer()
