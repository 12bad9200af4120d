"""Hand-built kernel segments for driving engines in memory (what a Linux kernel would put on the wire)."""

from __future__ import annotations

import hashlib
import ipaddress
import struct

from mptcrypt.wire.ip import build_ip_header, parse_ip
from mptcrypt.wire.tcp import TCPHeader, TCPOption, encode_options, mss_option, pad_options, parse_tcp, \
    timestamp_option, wscale_option

C_ADDR = ipaddress.ip_address("10.0.1.2").packed
S_ADDR = ipaddress.ip_address("10.0.1.1").packed
C2_ADDR = ipaddress.ip_address("10.0.2.2").packed
S2_ADDR = ipaddress.ip_address("10.0.2.1").packed


def mpc(subtype_len: int, key_a: bytes = b"", key_b: bytes = b"") -> TCPOption:
    """MP_CAPABLE v1 (RFC 8684 §3.1): SYN (4 bytes), SYN-ACK (12, sender key), ACK (20, both keys)."""
    return TCPOption(30, bytes((0x01, 0x81)) + key_a + key_b)


def mpj_syn(token: bytes, nonce: bytes, addr_id: int = 2) -> TCPOption:
    return TCPOption(30, bytes((0x10, addr_id)) + token + nonce)


def mpj_synack(hmac8: bytes, nonce: bytes, addr_id: int = 0) -> TCPOption:
    return TCPOption(30, bytes((0x10, addr_id)) + hmac8 + nonce)


def dss(data_ack: int, dsn: int, ssn: int, length: int) -> TCPOption:
    """DSS with 64-bit data ack and 64-bit mapping, no checksum (28 bytes with padding, as Linux sends it)."""
    return TCPOption(30, struct.pack("!BBQQIH", 0x20, 0x0F, data_ack, dsn, ssn, length) + b"\x00\x00")


def token(key: bytes) -> bytes:
    return hashlib.sha256(key).digest()[:4]


def segment(src, sport, dst, dport, seq, ack, flags, opts=(), payload=b"", window=502) -> bytes:
    raw = pad_options(encode_options(list(opts)))
    tcp = TCPHeader(sport, dport, seq & 0xFFFFFFFF, ack & 0xFFFFFFFF, flags, window, options=raw)
    body = tcp.encode(payload, src, dst)
    return build_ip_header(src, dst, len(body)) + body


def syn_options(mptcp: TCPOption | None = None, ts: bool = True):
    opts = [mss_option(1460)]
    if ts:
        opts += [TCPOption(4), timestamp_option(1000, 0)]
    opts += [TCPOption(1), wscale_option(7)]
    if mptcp is not None:
        opts.append(mptcp)
    return opts


def decode(packet: bytes):
    ip = parse_ip(packet)
    hdr, payload = parse_tcp(packet[ip.header_len:ip.total_len])
    return ip, hdr, payload


def at_ext(packet: bytes, l4: int, ext_seq: int, ext_ack: int) -> bytes:
    """`packet` with its header seq (and ack, when ACK is set) set to the low 32 bits of the extended numbers,
    checksums fresh: what the engine's extension guarantees (SegmentCipher refuses numbers that disagree)."""
    if len(packet) < l4 + 20 or not (0 <= ext_seq < 1 << 64 and 0 <= ext_ack < 1 << 64):
        return packet  # let the cipher report the bad input itself
    p = bytearray(packet)
    struct.pack_into("!I", p, l4 + 4, ext_seq & 0xFFFFFFFF)
    if p[l4 + 13] & 0x10:
        struct.pack_into("!I", p, l4 + 8, ext_ack & 0xFFFFFFFF)
    hlen = (p[l4 + 12] >> 4) * 4
    if hlen < 20 or l4 + hlen > len(p):
        return packet
    from mptcrypt.crypto.segment import py_assemble
    return py_assemble(bytes(p), l4, bytes(p[l4 + 20:l4 + hlen]), bytes(p[l4 + hlen:]))


class AtExt:
    """A SegmentCipher whose seal/open first set the packet's header seq/ack from the extended numbers given
    (at_ext): for tests about the MAC input, which pass extended numbers without building a matching header."""

    def __init__(self, cipher):
        self.cipher = cipher

    def seal(self, packet, l4, ext_seq, ext_ack):
        return self.cipher.seal(at_ext(packet, l4, ext_seq, ext_ack), l4, ext_seq, ext_ack)

    def open(self, packet, l4, ext_seq, ext_ack):
        return self.cipher.open(at_ext(packet, l4, ext_seq, ext_ack), l4, ext_seq, ext_ack)

    def __getattr__(self, name):
        return getattr(self.cipher, name)
