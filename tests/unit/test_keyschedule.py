"""Key schedule and segment protection against the published vectors (docs/protocol.md), and the
public-key ciphers end to end. K_C, K_S and the shared secret are RFC 7748 §6.1's own values.

The vectors were produced by the code under test, so pinning them alone proves little: a change to the code that
also regenerates VECTORS would pass. `spec_key_schedule()` therefore recomputes the §4 values from the text of
docs/protocol.md §3.1/§4 with nothing but hmac, hashlib and X25519 (no mptcrypt.crypto import), and the §9 table
of the document is read and compared too."""

import hashlib
import hmac
import os
import re
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import x25519

from mptcrypt.constants import PubCipher
from mptcrypt.crypto import keyschedule as ks
from mptcrypt.crypto import pubkey
from mptcrypt.crypto.vectors import compute
from mptcrypt.errors import HandshakeError

VECTORS = {
    "K_C": "8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a",
    "K_S": "de9edb7d7b7dc1b4d35b61c2ece435373f8343c85b78674dadfc7e146f882b4f",
    "shared": "4a5d9d5ba4ce2de1728e3bf480350f25e07e21c947d19e3376f09b3c1e161742",
    "N_S": "ae251ff22b88548a8b8e330d90c67b79bd5cd80b2e3e19970d61e4161e9926d4",
    "transcript": "0100208520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f0301020302010201",
    "ss[0]": "7066158d9d554fbc58dfee69f334c638b8c15556839976bce2e86644672e9df8",
    "ss[1]": "27730764786f0faf1237d16406c70cc3838926f7bf3fee18396d2637ae40f654",
    "sid[0]": "7ce6ad94f51b9c92da9b1e8311951c18fc75d6e208a8cb11af523614eb1e515d",
    "sid[1]": "e82dddf1503b04b9f17637550a216bef8d1f2183623fae7f67b9cdf9b5b2710d",
    "enc_a[0]": "f46bbbd517f7c3db32b971322cd5a8e3f7b46d60c58393b693fd3dc3f7e3d25e",
    "mac_a[0]": "f53daf889705ad2e583d493bf5d0a037efbd17262807dbdce64da16727b8c387",
    "salt_a[0]": "495eae6b5d8e630459d4e3df",
    "resume_id[1]": "b66a68da6f71fc90",
    "nextk1_proof[1]": "a5b8e182d7737d56",
    "segment_ciphertext": "98239751e65533a87ec505cd285c9aa549d955f0d8e6a8a04fb88f82",
    "segment_mac": "6a07fcfe0382ba9f",
    "segment_wire": "4500006c000040004006228a0a0002020a0002019c4013880000000100000002"
                    "f01801f6052e00001e1a200f0000000100000011000000020000002200000001"
                    "001c0101fd0c4d506a07fcfe0382ba9f98239751e65533a87ec505cd285c9aa5"
                    "49d955f0d8e6a8a04fb88f82",
}


PROTOCOL_MD = Path(__file__).resolve().parents[2] / "docs" / "protocol.md"
# RFC 7748 §6.1, as printed there: the private keys, the public keys and the shared secret
RFC7748_ALICE_PRIVATE = "77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a"
RFC7748_BOB_PRIVATE = "5dab087e624a8a4b79e17f8b83800ee66f3bb1292618b6fd1c2f8b27ff88e0eb"
RFC7748_ALICE_PUBLIC = "8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a"
RFC7748_BOB_PUBLIC = "de9edb7d7b7dc1b4d35b61c2ece435373f8343c85b78674dadfc7e146f882b4f"
RFC7748_SHARED = "4a5d9d5ba4ce2de1728e3bf480350f25e07e21c947d19e3376f09b3c1e161742"
SPEC_NAMES = ("K_C", "K_S", "shared", "N_S", "transcript", "ss[0]", "ss[1]", "sid[0]", "sid[1]", "enc_a[0]",
              "mac_a[0]", "salt_a[0]", "resume_id[1]")


def H(key: bytes, msg: bytes) -> bytes:  # §4: "HMAC" is HMAC-SHA256, key first
    return hmac.new(key, msg, hashlib.sha256).digest()


def spec_key_schedule() -> dict[str, bytes]:
    """The §9 inputs run through §3.1 and §4 as the document writes them."""
    alice = x25519.X25519PrivateKey.from_private_bytes(bytes.fromhex(RFC7748_ALICE_PRIVATE))
    bob = x25519.X25519PrivateKey.from_private_bytes(bytes.fromhex(RFC7748_BOB_PRIVATE))
    k_c, k_s = alice.public_key().public_bytes_raw(), bob.public_key().public_bytes_raw()
    shared = alice.exchange(bob.public_key())
    n_c, n_s_server = bytes(range(0x00, 0x20)), bytes(range(0x20, 0x40))
    pub_list, sym_list, pub_cipher, sym_cipher = b"\x01\x02\x03", b"\x01\x02", 0x01, 0x01  # X25519, AES-128
    # §3.1: N_S = HMAC(shared, "mptcrypt dh n_s" | K_C | K_S | n_s)
    n_s = H(shared, b"mptcrypt dh n_s" + k_c + k_s + n_s_server)
    # §4: pub-cipher(1) | len(K_C)(2) | K_C | N_C | n(1) | pub-cipher list | m(1) | sym-cipher list | sym-cipher(1)
    transcript = (bytes([pub_cipher]) + len(k_c).to_bytes(2, "big") + k_c + n_c + bytes([len(pub_list)]) + pub_list
                  + bytes([len(sym_list)]) + sym_list + bytes([sym_cipher]))
    ss0 = H(n_s, transcript)
    ss1 = H(ss0, b"mptcrypt next key")
    return {
        "K_C": k_c, "K_S": k_s, "shared": shared, "N_S": n_s, "transcript": transcript,
        "ss[0]": ss0, "ss[1]": ss1,
        "sid[0]": H(ss0, b"mptcrypt session id"), "sid[1]": H(ss1, b"mptcrypt session id"),
        "enc_a[0]": H(ss0, b"mptcrypt enc a"), "mac_a[0]": H(ss0, b"mptcrypt mac a"),
        "salt_a[0]": H(ss0, b"mptcrypt nonce a")[:12],
        "enc_b[0]": H(ss0, b"mptcrypt enc b"), "mac_b[0]": H(ss0, b"mptcrypt mac b"),
        "salt_b[0]": H(ss0, b"mptcrypt nonce b")[:12],
        "resume_id[1]": H(ss1, b"mptcrypt resume id")[:8],
    }


def published_table() -> dict[str, str]:
    """The name/value lines of docs/protocol.md §9's code block."""
    text = PROTOCOL_MD.read_text()
    section = text[text.index("## 9. Test vectors"):text.index("## 10.")]
    block = section.split("```")[1]
    return dict(re.findall(r"^(\S+)\s+([0-9a-f]+)$", block, re.M))


def test_published_vectors():
    assert compute() == VECTORS


def test_key_schedule_recomputed_from_the_spec():
    spec = spec_key_schedule()
    code, doc = compute(), published_table()
    for name in SPEC_NAMES:
        assert spec[name].hex() == VECTORS[name] == code[name], name
        if name != "transcript":  # §9 does not print the transcript
            assert doc[name] == VECTORS[name], name
    b = ks.direction_secrets(spec["ss[0]"], False)  # direction B has no vector: check it against the spec too
    assert (b.enc, b.mac, b.salt) == (spec["enc_b[0]"], spec["mac_b[0]"], spec["salt_b[0]"])
    section4 = PROTOCOL_MD.read_text().split("## 4. Key schedule")[1].split("## 5.")[0]
    for tag in ("next key", "session id", "enc a", "enc b", "mac a", "mac b", "nonce a", "nonce b", "resume id"):
        assert f'"mptcrypt {tag}"' in section4, tag  # the labels above are the document's


def test_rfc7748_values_reproduced():
    """vectors.py uses RFC 7748 §6.1's private keys: X25519 gives the RFC's public keys and shared secret."""
    from mptcrypt.crypto import vectors

    assert (vectors.CLIENT_X25519.hex(), vectors.SERVER_X25519.hex()) == (RFC7748_ALICE_PRIVATE, RFC7748_BOB_PRIVATE)
    alice = x25519.X25519PrivateKey.from_private_bytes(vectors.CLIENT_X25519)
    bob = x25519.X25519PrivateKey.from_private_bytes(vectors.SERVER_X25519)
    assert alice.public_key().public_bytes_raw().hex() == RFC7748_ALICE_PUBLIC == VECTORS["K_C"]
    assert bob.public_key().public_bytes_raw().hex() == RFC7748_BOB_PUBLIC == VECTORS["K_S"]
    assert alice.exchange(bob.public_key()).hex() == RFC7748_SHARED == VECTORS["shared"]


def test_chain_is_forward_only_and_indices_differ():
    chain = ks.KeyChain(bytes.fromhex(VECTORS["ss[0]"]))
    assert chain.ss(1) == ks.next_ss(chain.ss(0))
    assert len({chain.sid(i) for i in range(50)}) == 50
    with pytest.raises(ValueError):
        chain.ss(ks.KeyChain.MAX_INDEX + 1)


def test_directions_have_distinct_keys():
    ss = os.urandom(32)
    a, b = ks.direction_secrets(ss, True), ks.direction_secrets(ss, False)
    assert len({a.enc, b.enc, a.mac, b.mac}) == 4 and a.salt != b.salt


@pytest.mark.parametrize("cipher", list(PubCipher))
def test_public_key_ciphers_agree_on_n_s(cipher):
    client = pubkey.generate(cipher)
    server = pubkey.generate(cipher) if cipher != PubCipher.RSA2048_E3 else None
    part, n_s = pubkey.server_respond(cipher, client.public, server, os.urandom)
    assert pubkey.client_finish(client, part) == n_s and len(n_s) == 32


def test_rsa_key_has_exponent_3_and_bad_init2_fails():
    client = pubkey.generate(PubCipher.RSA2048_E3)
    assert client.private.public_key().public_numbers().e == 3
    with pytest.raises(HandshakeError):
        pubkey.client_finish(client, os.urandom(256))


def test_invalid_dh_public_key_is_a_handshake_error():
    server = pubkey.generate(PubCipher.P256)
    with pytest.raises(HandshakeError):
        pubkey.server_respond(PubCipher.P256, b"\x04" + b"\x01" * 64, server, os.urandom)
