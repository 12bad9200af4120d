"""Test vectors of the key schedule and segment protection, as published in docs/protocol.md.

`python -m mptcrypt.crypto.vectors` prints them; tests/unit/test_keyschedule.py pins the same values.
"""

from __future__ import annotations

from cryptography.hazmat.primitives.asymmetric import x25519

from mptcrypt.constants import PubCipher, SymCipher
from mptcrypt.crypto import keyschedule as ks
from mptcrypt.crypto.protect import MAC_HEADER, DirectionCipher
from mptcrypt.wire.mptcp import MptcpOption, encode_mptcp

# RFC 7748 §6.1 private keys (Alice as client, Bob as server)
CLIENT_X25519 = bytes.fromhex("77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a")
SERVER_X25519 = bytes.fromhex("5dab087e624a8a4b79e17f8b83800ee66f3bb1292618b6fd1c2f8b27ff88e0eb")
N_C = bytes(range(32))
N_S_SERVER = bytes(range(32, 64))
PUB_LIST = bytes((PubCipher.X25519, PubCipher.P256, PubCipher.RSA2048_E3))
SYM_LIST = bytes((SymCipher.AES128, SymCipher.CHACHA20))


def compute() -> dict[str, str]:
    c = x25519.X25519PrivateKey.from_private_bytes(CLIENT_X25519)
    s = x25519.X25519PrivateKey.from_private_bytes(SERVER_X25519)
    k_c, k_s = c.public_key().public_bytes_raw(), s.public_key().public_bytes_raw()
    shared = c.exchange(x25519.X25519PublicKey.from_public_bytes(k_s))
    n_s = ks.dh_n_s(shared, k_c, k_s, N_S_SERVER)
    tr = ks.transcript(PubCipher.X25519, k_c, N_C, PUB_LIST, SYM_LIST, SymCipher.AES128)
    chain = ks.KeyChain(ks.initial_ss(n_s, tr))
    a = ks.direction_secrets(chain.ss(0), True)
    cipher = DirectionCipher(SymCipher.AES128, a)
    payload = b"mptcrypt test vector payload"
    ext_seq, ext_ack = 0x1_0000_0001, 0x2_0000_0002
    ct = cipher.crypt(ext_seq, payload)
    hdr = MAC_HEADER.pack(40000, 5000, ext_seq & 0xFFFFFFFFFFFFFFFF, ext_ack, 0x018, 502, 0)
    tag = cipher.tag(hdr, b"", ct)
    # protocol v2: the NEXTK1 proof binds the ISN, the index and the whole MP_JOIN SYN option, no address or port
    mp_join = encode_mptcp(MptcpOption.mpj_syn(token=0x01020304, nonce=0x05060708, addr_id=2))
    context = ks.nextk1_join_context(333, 1, mp_join)
    return {
        "K_C": k_c.hex(), "K_S": k_s.hex(), "shared": shared.hex(), "N_S": n_s.hex(),
        "transcript": tr.hex(), "ss[0]": chain.ss(0).hex(), "ss[1]": chain.ss(1).hex(),
        "sid[0]": chain.sid(0).hex(), "sid[1]": chain.sid(1).hex(),
        "enc_a[0]": a.enc.hex(), "mac_a[0]": a.mac.hex(), "salt_a[0]": a.salt.hex(),
        "resume_id[1]": ks.resume_id(chain.ss(1)).hex(),
        "nextk1_proof[1]": ks.join_proof(chain.ss(1), False, context).hex(),
        "segment_ciphertext": ct.hex(), "segment_mac": tag.hex(),
    }


if __name__ == "__main__":
    for name, value in compute().items():
        print(f"{name:20s} {value}")
