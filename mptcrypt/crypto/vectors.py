"""Test vectors of the key schedule and segment protection, as published in docs/protocol.md.

`python -m mptcrypt.crypto.vectors` prints them; tests/unit/test_keyschedule.py pins the same values, and
tests/unit/test_segment_cipher.py recomputes the segment from the spec's text with bare primitives.
"""

from __future__ import annotations

import struct

from cryptography.hazmat.primitives.asymmetric import x25519

from mptcrypt.constants import PubCipher, SymCipher
from mptcrypt.crypto import keyschedule as ks
from mptcrypt.crypto.segment import PySegmentCipher, SegmentKeys, mac_input, py_assemble
from mptcrypt.wire.ip import build_ip_header

# RFC 7748 §6.1 private keys (Alice as client, Bob as server)
CLIENT_X25519 = bytes.fromhex("77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a")
SERVER_X25519 = bytes.fromhex("5dab087e624a8a4b79e17f8b83800ee66f3bb1292618b6fd1c2f8b27ff88e0eb")
N_C = bytes(range(32))
N_S_SERVER = bytes(range(32, 64))
PUB_LIST = bytes((PubCipher.X25519, PubCipher.P256, PubCipher.RSA2048_E3))
SYM_LIST = bytes((SymCipher.AES128, SymCipher.CHACHA20))

# The segment (docs/protocol.md §9): a Linux MPTCP data segment's shape, its option area full once the MAC is in.
SEGMENT_PAYLOAD = b"mptcrypt test vector payload"
SEGMENT_EXT_SEQ, SEGMENT_EXT_ACK = 0x1_0000_0001, 0x2_0000_0002
# DSS (RFC 8684 §3.3): flags A, a, M, m (64-bit data ack and DSN), no checksum; 26 bytes, then NOP NOP
SEGMENT_OPTIONS = bytes.fromhex("1e1a200f" "0000000100000011" "0000000200000022" "00000001" "001c" "0101")


def segment_kernel_packet() -> bytes:
    """The kernel's IPv4 packet 10.0.2.2:40000 -> 10.0.2.1:5000, seq 1, ack 2, ACK|PSH, window 502."""
    hlen = 20 + len(SEGMENT_OPTIONS)
    tcp = struct.pack("!HHIIHHHH", 40000, 5000, 1, 2, ((hlen >> 2) << 12) | 0x018, 502, 0, 0) + SEGMENT_OPTIONS
    packet = build_ip_header(bytes((10, 0, 2, 2)), bytes((10, 0, 2, 1)), len(tcp) + len(SEGMENT_PAYLOAD)) + tcp
    return py_assemble(packet, 20, SEGMENT_OPTIONS, SEGMENT_PAYLOAD)  # with its TCP checksum


def compute() -> dict[str, str]:
    c = x25519.X25519PrivateKey.from_private_bytes(CLIENT_X25519)
    s = x25519.X25519PrivateKey.from_private_bytes(SERVER_X25519)
    k_c, k_s = c.public_key().public_bytes_raw(), s.public_key().public_bytes_raw()
    shared = c.exchange(x25519.X25519PublicKey.from_public_bytes(k_s))
    n_s = ks.dh_n_s(shared, k_c, k_s, N_S_SERVER)
    tr = ks.transcript(PubCipher.X25519, k_c, N_C, PUB_LIST, SYM_LIST, SymCipher.AES128)
    chain = ks.KeyChain(ks.initial_ss(n_s, tr))
    a = ks.direction_secrets(chain.ss(0), True)
    keys = SegmentKeys(SymCipher.AES128, a)
    ct = keys.crypt(SEGMENT_EXT_SEQ, SEGMENT_PAYLOAD)
    off_flags = (((20 + len(SEGMENT_OPTIONS)) >> 2) << 12) | 0x018
    tag = keys.tag(mac_input(SEGMENT_EXT_SEQ, SEGMENT_EXT_ACK, off_flags, 502, 0, SEGMENT_OPTIONS, ct))
    wire = PySegmentCipher(SymCipher.AES128, a).seal(segment_kernel_packet(), 20, SEGMENT_EXT_SEQ, SEGMENT_EXT_ACK)
    context = bytes((10, 0, 2, 2)) + (41000).to_bytes(2, "big") + bytes((10, 0, 2, 1)) + (5000).to_bytes(2, "big") \
        + (333).to_bytes(4, "big")
    return {
        "K_C": k_c.hex(), "K_S": k_s.hex(), "shared": shared.hex(), "N_S": n_s.hex(),
        "transcript": tr.hex(), "ss[0]": chain.ss(0).hex(), "ss[1]": chain.ss(1).hex(),
        "sid[0]": chain.sid(0).hex(), "sid[1]": chain.sid(1).hex(),
        "enc_a[0]": a.enc.hex(), "mac_a[0]": a.mac.hex(), "salt_a[0]": a.salt.hex(),
        "resume_id[1]": ks.resume_id(chain.ss(1)).hex(),
        "nextk1_proof[1]": ks.join_proof(chain.ss(1), False, context).hex(),
        "segment_ciphertext": ct.hex(), "segment_mac": tag.hex(), "segment_wire": wire.hex(),
    }


if __name__ == "__main__":
    for name, value in compute().items():
        print(f"{name:20s} {value}")
