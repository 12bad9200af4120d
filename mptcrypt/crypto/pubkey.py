"""Public-key ciphers of the handshake (docs/protocol.md §Public-key ciphers).

X25519 and P-256 are ephemeral Diffie-Hellman: K_C is the client's public key, the server answers with its own
public key K_S and a fresh nonce n_s, and N_S = HMAC(shared, TAG_DH_NS | K_C | K_S | n_s).
RSA-2048 with e=3 follows the seed: the server encrypts a fresh N_S to K_C (OAEP-SHA256, cheap with e=3) and the
client does the costly decryption. Keys live in memory only and are regenerated on the engine's schedule.
"""

from __future__ import annotations

from dataclasses import dataclass

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa, x25519

from mptcrypt.constants import NONCE_LEN, PubCipher
from mptcrypt.crypto.keyschedule import dh_n_s
from mptcrypt.errors import HandshakeError

_OAEP = padding.OAEP(mgf=padding.MGF1(hashes.SHA256()), algorithm=hashes.SHA256(), label=None)
RSA_MODULUS_LEN = 256
RSA_EXPONENT = 3


@dataclass(slots=True)
class KeyPair:
    cipher: PubCipher
    private: object
    public: bytes  # wire encoding of the public key (K_C or K_S)


def generate(cipher: PubCipher) -> KeyPair:
    if cipher == PubCipher.X25519:
        priv = x25519.X25519PrivateKey.generate()
        return KeyPair(cipher, priv, priv.public_key().public_bytes_raw())
    if cipher == PubCipher.P256:
        priv = ec.generate_private_key(ec.SECP256R1())
        pub = priv.public_key().public_bytes(serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint)
        return KeyPair(cipher, priv, pub)
    if cipher == PubCipher.RSA2048_E3:
        priv = rsa.generate_private_key(public_exponent=RSA_EXPONENT, key_size=2048)
        return KeyPair(cipher, priv, priv.public_key().public_numbers().n.to_bytes(RSA_MODULUS_LEN, "big"))
    raise HandshakeError(f"unknown public-key cipher {cipher}")


def _dh(priv, peer_public: bytes, cipher: PubCipher) -> bytes:
    try:
        if cipher == PubCipher.X25519:
            return priv.exchange(x25519.X25519PublicKey.from_public_bytes(peer_public))
        peer = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), peer_public)
        return priv.exchange(ec.ECDH(), peer)
    except ValueError as exc:
        raise HandshakeError(f"invalid {cipher.name} public key: {exc}") from None


def server_respond(cipher: PubCipher, k_c: bytes, server_key: KeyPair | None, random) -> tuple[bytes, bytes]:
    """Server side of INIT2: returns (server part of INIT2, N_S). One public-key operation."""
    if cipher in (PubCipher.X25519, PubCipher.P256):
        if server_key is None or server_key.cipher != cipher:
            raise HandshakeError("no server key for the chosen Diffie-Hellman cipher")
        n_s_server = random(NONCE_LEN)
        shared = _dh(server_key.private, k_c, cipher)
        return server_key.public + n_s_server, dh_n_s(shared, k_c, server_key.public, n_s_server)
    if cipher == PubCipher.RSA2048_E3:
        if len(k_c) != RSA_MODULUS_LEN:
            raise HandshakeError(f"RSA K_C must be {RSA_MODULUS_LEN} bytes, got {len(k_c)}")
        try:
            pub = rsa.RSAPublicNumbers(RSA_EXPONENT, int.from_bytes(k_c, "big")).public_key()
        except ValueError as exc:
            raise HandshakeError(f"invalid RSA K_C: {exc}") from None
        n_s = random(NONCE_LEN)
        return pub.encrypt(n_s, _OAEP), n_s
    raise HandshakeError(f"unknown public-key cipher {cipher}")


def client_finish(client_key: KeyPair, server_part: bytes) -> bytes:
    """Client side: N_S from the server part of INIT2. One public-key operation."""
    cipher = client_key.cipher
    if cipher in (PubCipher.X25519, PubCipher.P256):
        klen = len(client_key.public)
        if len(server_part) != klen + NONCE_LEN:
            raise HandshakeError(f"INIT2 server part must be {klen + NONCE_LEN} bytes for {cipher.name}")
        k_s, n_s_server = server_part[:klen], server_part[klen:]
        shared = _dh(client_key.private, k_s, cipher)
        return dh_n_s(shared, client_key.public, k_s, n_s_server)
    if cipher == PubCipher.RSA2048_E3:
        try:
            n_s = client_key.private.decrypt(server_part, _OAEP)
        except ValueError:
            raise HandshakeError("INIT2 does not decrypt under K_C") from None
        if len(n_s) != NONCE_LEN:
            raise HandshakeError("INIT2 N_S has the wrong length")
        return n_s
    raise HandshakeError(f"unknown public-key cipher {cipher}")
