"""Key schedule and segment protection against the published vectors (docs/protocol.md), and the
public-key ciphers end to end. K_C, K_S and the shared secret are RFC 7748 §6.1's own values."""

import os

import pytest

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


def test_published_vectors():
    assert compute() == VECTORS


def test_rfc7748_values_reproduced():
    assert VECTORS["shared"] == "4a5d9d5ba4ce2de1728e3bf480350f25e07e21c947d19e3376f09b3c1e161742"


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
