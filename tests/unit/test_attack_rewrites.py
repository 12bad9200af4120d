"""The attack suite's packet rewrites, checked without a topology: what the boundary-shift middlebox (attack 13)
and the signal-replay attacker (attack 14) put on the wire is the forgery their docstrings describe."""

from __future__ import annotations

import os
import struct

from mptcrypt.attacks.boundary_shift import shift_boundary
from mptcrypt.attacks.signal_replay import refresh
from mptcrypt.constants import MAC_OPTION_LEN, SymCipher
from mptcrypt.crypto import keyschedule as ks
from mptcrypt.crypto.segment import PySegmentCipher
from mptcrypt.wire.checksum import verify_tcp_checksum
from mptcrypt.wire.ip import build_ip_header
from mptcrypt.wire.mptcp import MptcpOption, encode_mptcp
from mptcrypt.wire.segment import parse_segment

SRC, DST = bytes((10, 0, 1, 2)), bytes((10, 0, 1, 1))


def kernel_segment(options: bytes, payload: bytes, ts: bool = False) -> bytes:
    if ts:
        options = bytes((1, 1, 8, 10)) + struct.pack("!II", 5, 6) + options
    hlen = 20 + len(options)
    tcp = struct.pack("!HHIIHHHH", 40000, 5000, 1000, 2000, ((hlen >> 2) << 12) | 0x18, 502, 0, 0) + options + payload
    return build_ip_header(SRC, DST, len(tcp)) + tcp


EXT_SEQ, EXT_ACK = (1 << 32) + 1000, (1 << 32) + 2000  # the extended numbers of the header's seq/ack


def sealed(options: bytes, payload: bytes) -> tuple[bytes, PySegmentCipher]:
    secrets = ks.direction_secrets(bytes(range(32)), True)
    wire = PySegmentCipher(SymCipher.AES128, secrets).seal(kernel_segment(options, payload), 20, EXT_SEQ, EXT_ACK)
    return wire, PySegmentCipher(SymCipher.AES128, secrets)


def v1_mac_input(packet: bytes) -> bytes:
    """What protocol v1's MAC covered beside seq/ack/flags/window: options without the MAC option | ciphertext."""
    seg = parse_segment(packet)
    return seg.option_bytes()[:-MAC_OPTION_LEN] + seg.payload()


def test_a_full_option_area_gives_its_last_word_to_the_payload_and_v2_refuses_it():
    dss = encode_mptcp(MptcpOption.dss(data_ack=1, data_seq=2, subflow_seq=3, data_len=64))
    wire, rx = sealed(dss + b"\x01" * (-len(dss) % 4), os.urandom(64))
    assert parse_segment(wire).option_len == 40
    forged, how = shift_boundary(wire)
    seg = parse_segment(forged)
    assert how == "into payload" and seg.option_len == 36 and seg.payload_len == 68 and seg.has_mac()
    assert v1_mac_input(forged) == v1_mac_input(wire) and len(forged) == len(wire)  # v1 verified it
    assert verify_tcp_checksum(SRC, DST, forged[20:])
    assert rx.open(wire, 20, EXT_SEQ, EXT_ACK) is not None and rx.open(forged, 20, EXT_SEQ, EXT_ACK) is None  # v2 does not


def test_room_in_the_option_area_takes_the_first_payload_word():
    wire, rx = sealed(b"\x01\x01\x01\x01", os.urandom(32))
    forged, how = shift_boundary(wire)
    assert how == "into options" and parse_segment(forged).payload_len == 28
    assert v1_mac_input(forged) == v1_mac_input(wire) and rx.open(forged, 20, EXT_SEQ, EXT_ACK) is None


def test_segments_without_a_mac_or_payload_are_left_alone():
    assert shift_boundary(kernel_segment(b"", b"plain data")) is None
    assert shift_boundary(sealed(b"", b"")[0]) is None


def test_a_freshened_plain_signal_changes_only_its_timestamp_and_ack():
    rm = encode_mptcp(MptcpOption.remove_addr([1]))
    old = kernel_segment(rm, b"", ts=True)
    new = refresh(old, (77, 88), 0xA1B2C3D4)
    assert new[40 + 4:40 + 12] == struct.pack("!II", 77, 88) and new[28:32] == bytes.fromhex("a1b2c3d4")
    assert verify_tcp_checksum(SRC, DST, new[20:])
    assert new[:28] == old[:28] and new[32:36] == old[32:36] and new[38:44] == old[38:44] and new[52:] == old[52:]
