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
