"""The sans-IO engine: IP packets in, verdicts, rewritten packets and packets to inject out.

`Engine.handle(packet, outbound, now)` is called once per TCP packet by the NFQUEUE edge; `outbound` is True
for packets the local kernel sends, False for packets arriving for it. Nothing in here reads a clock, a socket
or netlink: time comes in as `now`, packets to send go out in `Result.inject` / `handle_timer`.

Invariant (PROTOCOL.md §1): the kernels' sequence and acknowledgement numbers are never shifted. Handshake
payloads (INIT1, INIT2) ride in daemon-made segments that the peer daemon absorbs; kernel segments keep their
payload length, only the 12-byte MAC option is added on the wire and removed before the peer kernel sees it.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import os
import struct
from collections import OrderedDict

from mptcrypt.constants import (
    MAC_OPTION_LEN,
    MPTCP_TOKEN_LEN,
    MSS_CLAMP,
    NONCE_LEN,
    TCP_MAX_OPTION_SPACE,
    TCPOPT_EXP,
    TCPOPT_MPTCP,
    TCPOPT_MSS,
    TCPOPT_EOL,
    TCPOPT_NOP,
    TCPOPT_SACK,
    TCPOPT_SACK_PERM,
    TCPOPT_TIMESTAMP,
    Msg,
    PubCipher,
    SymCipher,
)
from mptcrypt.core.config import Config, Policy
from mptcrypt.core.events import ACCEPT, DROP, Event, Result, Verdict
from mptcrypt.core.session import Connection, Session, Subflow, extend, fmt_addr, fmt_flow
from mptcrypt.core.state import Ev, State, transition
from mptcrypt.crypto import keyschedule as ks
from mptcrypt.crypto import pubkey
from mptcrypt.crypto.protect import MAC_HEADER
from mptcrypt.errors import DecodeError, HandshakeError, ProtocolError
from mptcrypt.wire import messages as m
from mptcrypt.wire.checksum import tcp_checksum
from mptcrypt.wire.ip import build_ip_header, rebuild_ip_header
from mptcrypt.wire.mptcp import Subtype
from mptcrypt.wire.tcp import (ACK, FIN, PSH, RST, SYN, TCPOLEN_SACK_BLOCK, TCPOption, encode_options, pad_options,
                               parse_options)

_TCP = struct.Struct("!HHIIHHHH")
_CSUM = struct.Struct("!H")
TCP_HEADER_LEN = 20
MAC_PREFIX = m.EXP_PREFIX
RESUME_WINDOW = 4  # resumption ids registered ahead per cached session
SWEEP_INTERVAL = 1.0
MAX_EVENTS = 1024

# RFC 8684 §3: MPTCP option subtypes and the lengths the engine needs to tell messages apart
MPTCPOPT_MP_CAPABLE = 0
MPTCPOPT_MP_JOIN = 1
TCPOLEN_MPTCP_MPC_SYNACK = 12
TCPOLEN_MPTCP_MPC_ACK = 20
TCPOLEN_MPTCP_MPJ_SYN = 12
MPTCP_KEY_LEN = 8
# flows a SYN with a new ISN must not replace: everything but closed, failed, refused and plain flows
LIVE_STATES = (State.SYN_SENT_HELLO, State.SYN_SENT_NEXTK1, State.INIT1_SENT, State.HELLO_RCVD, State.PKCONF_SENT,
               State.NEXTK1_RCVD, State.ENCRYPTING)
# signals Linux may put beside a data DSS; moved to a pure ACK of their own when the MAC does not fit
SPLIT_SUBTYPES = (Subtype.REMOVE_ADDR, Subtype.MP_PRIO, Subtype.MP_FAIL)

COUNTERS = (
    "packets", "segments_protected", "segments_verified", "bytes_encrypted", "bytes_decrypted",
    "mac_failures", "unauthenticated_dropped", "unknown_flow_dropped", "malformed_dropped",
    "pk_keygen", "pk_ops", "pk_handshakes", "handshakes_completed", "resumptions", "resume_fallbacks",
    "joins_protected", "joins_refused", "joins_zero_pk", "held", "held_overflow", "released",
    "init_retransmits", "handshake_failures", "fallbacks_plain", "refused_policy", "option_overflow",
    "signals_split", "sack_trimmed", "syn_on_live_flow_dropped", "connections_reclaimed", "flows_tracked_max",
)


class Engine:
    def __init__(self, config: Config | None = None, *, random=os.urandom):
        self.config = config or Config()
        self._random = random
        self._flows: dict[tuple, Subflow] = {}
        self._tokens: dict[bytes, Connection] = {}
        self._peer_cache: OrderedDict[bytes, Session] = OrderedDict()
        self._resume: dict[bytes, tuple[Session, int]] = {}
        self._pending_joins: dict[bytes, Subflow] = {}  # token -> first subflow still waiting for INIT2
        self._keys: dict[PubCipher, tuple[pubkey.KeyPair, float]] = {}
        self._timed: set[Subflow] = set()
        self._events: list[Event] = []
        self._next_sweep = 0.0
        self._pub_list = bytes(self.config.pub_ciphers)
        self._sym_list = bytes(self.config.sym_ciphers)
        self.counters = dict.fromkeys(COUNTERS, 0)

    def reconfigure(self, config: Config) -> None:
        """Policy, rules, ciphers and limits for what comes next (the daemon's SIGHUP); live flows keep their keys."""
        self.config = config
        self._pub_list = bytes(config.pub_ciphers)
        self._sym_list = bytes(config.sym_ciphers)

    # ------------------------------------------------------------------ public surface
    def handle(self, packet: bytes, outbound: bool, now: float) -> Result:
        c = self.counters
        c["packets"] += 1
        b0 = packet[0]
        if b0 >> 4 == 4:
            ihl = (b0 & 0x0F) << 2
            if packet[9] != 6 or (packet[6] & 0x3F) or packet[7]:  # not TCP, or a fragment
                return ACCEPT
            total = (packet[2] << 8) | packet[3]
            if total < len(packet):
                packet = packet[:total]
            src, dst = packet[12:16], packet[16:20]
        elif b0 >> 4 == 6:
            if packet[6] != 6:  # extension headers before TCP: not ours to parse
                return ACCEPT
            ihl = 40
            src, dst = packet[8:24], packet[24:40]
        else:
            return ACCEPT
        try:
            sport, dport, seq, ack, off_flags, window, _csum, urg = _TCP.unpack_from(packet, ihl)
        except struct.error:
            c["malformed_dropped"] += 1
            return DROP
        hlen = (off_flags >> 12) << 2
        if hlen < TCP_HEADER_LEN or ihl + hlen > len(packet):
            c["malformed_dropped"] += 1
            return DROP
        flags = off_flags & 0x0FFF
        key = (src, sport, dst, dport) if outbound else (dst, dport, src, sport)
        sf = self._flows.get(key)
        try:
            if sf is not None and sf.state is State.ENCRYPTING and not flags & SYN:
                sf.last_seen = now
                if outbound:
                    return self._protect(sf, packet, ihl, hlen, sport, dport, seq, ack, flags, window, urg, now)
                return self._unprotect(sf, packet, ihl, hlen, sport, dport, seq, ack, flags, window, urg, now)
            return self._slow_path(sf, key, packet, ihl, hlen, outbound, seq, ack, flags, now)
        except ProtocolError as exc:
            c["malformed_dropped"] += 1
            self._event("malformed", key, str(exc))
            return DROP

    def handle_timer(self, now: float) -> list[bytes]:
        out: list[bytes] = []
        for sf in list(self._timed):
            if sf.timer is None:
                self._timed.discard(sf)
                continue
            if sf.timer > now:
                continue
            if sf.tries >= self.config.init_retries:
                self._fail(sf, "no answer to INIT" + ("1" if sf.initiator else "2"))
                continue
            sf.tries += 1
            sf.rto *= 2
            sf.timer = now + sf.rto
            self.counters["init_retransmits"] += 1
            out.append(sf.init_segment)
        if now >= self._next_sweep:
            self._sweep(now)
            self._next_sweep = now + SWEEP_INTERVAL
        return out

    def next_timer(self) -> float | None:
        deadlines = [sf.timer for sf in self._timed if sf.timer is not None]
        deadlines.append(self._next_sweep)
        return min(deadlines)

    def events(self) -> list[Event]:
        ev, self._events = self._events, []
        return ev

    def stats(self) -> dict[str, int]:
        s = dict(self.counters)
        s["flows"] = len(self._flows)
        s["sessions_cached"] = len(self._peer_cache)
        s["connections"] = len({id(sf.conn) for sf in self._flows.values() if sf.conn is not None})
        return s

    def sessions(self) -> list[dict]:
        rows, seen = [], set()
        for sf in self._flows.values():
            conn = sf.conn
            if conn is None:
                rows.append({**self._conn_row(sf, None), "subflows": [sf.row()]})
                continue
            if id(conn) in seen:
                continue
            seen.add(id(conn))
            first = conn.subflows[0] if conn.subflows else sf
            rows.append({**self._conn_row(first, conn), "subflows": [s.row() for s in conn.subflows]})
        return rows

    def flow_state(self, local: tuple[str, int], remote: tuple[str, int]) -> State | None:
        sf = self._flows.get(_flow_key(local, remote))
        return sf.state if sf is not None else None

    def session_id(self, local: tuple[str, int], remote: tuple[str, int]) -> bytes | None:
        sf = self._flows.get(_flow_key(local, remote))
        if sf is None or sf.conn is None or sf.tx is None:
            return None
        return sf.conn.sid

    # ------------------------------------------------------------------ hot path
    def _protect(self, sf, packet, ihl, hlen, sport, dport, seq, ack, flags, window, urg, now) -> Result:
        options = packet[ihl + TCP_HEADER_LEN:ihl + hlen]
        if len(options) + MAC_OPTION_LEN > TCP_MAX_OPTION_SPACE:
            options = _trim_sack(options, TCP_MAX_OPTION_SPACE - MAC_OPTION_LEN)
            if options is None:
                return self._no_room(sf, packet, ihl, hlen, sport, dport, seq, ack, flags, window, urg, now)
            self.counters["sack_trimmed"] += 1
        payload = packet[ihl + hlen:]
        ext_seq = extend(seq, sf.out_ref)
        ext_ack = extend(ack, sf.in_ref) if flags & ACK else 0
        tx = sf.tx
        ct = tx.crypt(ext_seq, payload) if payload else b""
        tag = tx.tag(MAC_HEADER.pack(sport, dport, ext_seq, ext_ack, flags, window, urg), options, ct)
        end = ext_seq + len(payload)
        if end > sf.out_ref:
            sf.out_ref = end
        if flags & (FIN | RST):
            self._note_close(sf, flags, outbound=True, now=now)
        sf.bytes_out += len(payload)
        sf.segments_out += 1
        c = self.counters
        c["segments_protected"] += 1
        c["bytes_encrypted"] += len(payload)
        return Result(Verdict.ACCEPT, self._assemble(packet, ihl, sport, dport, seq, ack, flags, window, urg,
                                                     options + MAC_PREFIX + tag, ct))

    def _unprotect(self, sf, packet, ihl, hlen, sport, dport, seq, ack, flags, window, urg, now) -> Result:
        c = self.counters
        end_opts = ihl + hlen
        if hlen - TCP_HEADER_LEN < MAC_OPTION_LEN or packet[end_opts - MAC_OPTION_LEN:end_opts - 8] != MAC_PREFIX:
            return self._unauthenticated(sf, packet, ihl, hlen, now)
        options = packet[ihl + TCP_HEADER_LEN:end_opts - MAC_OPTION_LEN]
        ct = packet[end_opts:]
        ext_seq = extend(seq, sf.in_ref)
        ext_ack = extend(ack, sf.out_ref) if flags & ACK else 0
        rx = sf.rx
        expect = rx.tag(MAC_HEADER.pack(sport, dport, ext_seq, ext_ack, flags, window, urg), options, ct)
        if not hmac.compare_digest(expect, packet[end_opts - 8:end_opts]):
            c["mac_failures"] += 1
            if c["mac_failures"] & (c["mac_failures"] - 1) == 0:  # log the 1st, 2nd, 4th, 8th...
                self._event("mac-failure", sf.key, f"{c['mac_failures']} so far; segment dropped")
            return DROP
        pt = rx.crypt(ext_seq, ct) if ct else b""
        end = ext_seq + len(ct)
        if end > sf.in_ref:
            sf.in_ref = end
        if not sf.confirmed:
            self._confirm(sf)
        if flags & (FIN | RST):
            self._note_close(sf, flags, outbound=False, now=now)
        conn = sf.conn
        if conn.mptcp and len(conn.keys) < 2 and not sf.join:
            self._learn_mptcp_keys(conn, sf, options, outbound=False)
        sf.bytes_in += len(ct)
        sf.segments_in += 1
        c["segments_verified"] += 1
        c["bytes_decrypted"] += len(ct)
        return Result(Verdict.ACCEPT, self._assemble(packet, ihl, sport, dport, seq, ack, flags, window, urg,
                                                     options, pt))

    @staticmethod
    def _assemble(packet, ihl, sport, dport, seq, ack, flags, window, urg, options, payload) -> bytes:
        """IP header of `packet` + a TCP header with `options` + `payload`, lengths and checksums fresh.

        Hot path: the TCP checksum is summed over the pieces (header and options are a multiple of 4 bytes, so
        the payload starts 16-bit aligned and the sums add up) and the packet is joined once."""
        hlen = TCP_HEADER_LEN + len(options)
        tcp_len = hlen + len(payload)
        off_flags = ((hlen >> 2) << 12) | flags
        head = _TCP.pack(sport, dport, seq, ack, off_flags, window, 0, urg) + options
        if ihl == 20:
            total = int.from_bytes(packet[12:20], "big")
        else:
            total = int.from_bytes(packet[8:40] if ihl == 40 else packet[12:20], "big")
        total += 6 + tcp_len + int.from_bytes(head, "big")
        if payload:
            n = int.from_bytes(payload, "big")
            total += n << 8 if len(payload) & 1 else n
        csum = 0xFFFF - total % 0xFFFF
        return b"".join((rebuild_ip_header(packet[:ihl], tcp_len), head[:16], _CSUM.pack(csum), head[18:], payload))

    # ------------------------------------------------------------------ slow path
    def _slow_path(self, sf, key, packet, ihl, hlen, outbound, seq, ack, flags, now) -> Result:
        if flags & SYN:
            if flags & ACK:
                return self._syn_ack(sf, key, packet, ihl, hlen, outbound, seq, ack, now)
            return self._syn(sf, key, packet, ihl, hlen, outbound, seq, now)
        if sf is None:
            if not outbound and self._has_mac(packet, ihl, hlen):
                # a protected segment of a flow we do not know (e.g. after a daemon restart): never hand the
                # kernel ciphertext as if it were data
                self.counters["unknown_flow_dropped"] += 1
                return DROP
            return ACCEPT
        sf.last_seen = now
        st = sf.state
        if st is State.PLAIN or st is State.CLOSED and sf.tx is None:
            if flags & (FIN | RST):
                self._note_close(sf, flags, outbound, now)
            return ACCEPT
        if st is State.CLOSED:  # keys kept for late segments (retransmitted FIN, last ACK)
            if outbound:
                return self._protect(sf, packet, ihl, hlen, *self._fields(packet, ihl), now)
            return self._unprotect(sf, packet, ihl, hlen, *self._fields(packet, ihl), now)
        if st in (State.REFUSED, State.FAILED):
            return DROP
        if outbound:
            if st in (State.INIT1_SENT, State.PKCONF_SENT, State.HELLO_RCVD, State.NEXTK1_RCVD,
                      State.SYN_SENT_HELLO, State.SYN_SENT_NEXTK1):
                return self._hold(sf, packet)
            return ACCEPT
        # inbound, before keys: only the peer daemon's INIT segments are expected, and a refusal of our SYN
        if flags & RST and st in (State.SYN_SENT_HELLO, State.SYN_SENT_NEXTK1) and flags & ACK \
                and ack == (sf.isn_local + 1) & 0xFFFFFFFF:
            sf.state = transition(st, Ev.REFUSE)
            sf.plain_reason = "refused by the peer (RST)"
            return ACCEPT  # "connection refused" for the application: an on-path attacker could drop the SYN anyway
        marker = self._marker(packet, ihl, hlen)
        if marker == Msg.INIT1 and st is State.PKCONF_SENT:
            return self._recv_init1(sf, packet[ihl + hlen:], now)
        if marker == Msg.INIT2 and st is State.INIT1_SENT:
            return self._recv_init2(sf, packet[ihl + hlen:], now)
        self.counters["unauthenticated_dropped"] += 1
        return DROP

    @staticmethod
    def _fields(packet, ihl):
        sport, dport, seq, ack, off_flags, window, _c, urg = _TCP.unpack_from(packet, ihl)
        return sport, dport, seq, ack, off_flags & 0x0FFF, window, urg

    def _unauthenticated(self, sf, packet, ihl, hlen, now) -> Result:
        """An inbound segment without a MAC on a protected flow: a duplicate INIT, or an injection."""
        marker = self._marker(packet, ihl, hlen)
        if marker == Msg.INIT1 and not sf.initiator:
            return self._recv_init1(sf, packet[ihl + hlen:], now)
        if marker == Msg.INIT2 and sf.initiator:
            return DROP  # duplicate INIT2: our keys are already in place
        self.counters["unauthenticated_dropped"] += 1
        return DROP

    @staticmethod
    def _has_mac(packet, ihl, hlen) -> bool:
        end = ihl + hlen
        return hlen - TCP_HEADER_LEN >= MAC_OPTION_LEN and packet[end - MAC_OPTION_LEN:end - 8] == MAC_PREFIX

    @staticmethod
    def _marker(packet, ihl, hlen) -> int | None:
        try:
            opts = parse_options(packet[ihl + TCP_HEADER_LEN:ihl + hlen])
        except DecodeError:
            return None
        for o in opts:
            if o.kind == TCPOPT_EXP and m.is_mptcrypt_option(o.kind, o.data) and len(o.data) == 3:
                return o.data[2]
        return None

    def _hold(self, sf, packet, join: bool = False) -> Result:
        if len(sf.held) + len(sf.held_joins) >= self.config.max_held_per_connection:
            self.counters["held_overflow"] += 1
            return DROP  # the kernel retransmits it; nothing leaks
        (sf.held_joins if join else sf.held).append(bytes(packet))
        self.counters["held"] += 1
        return Result(Verdict.HOLD)

    def _no_room(self, sf, packet, ihl, hlen, sport, dport, seq, ack, flags, window, urg, now) -> Result:
        """Kernel options leave no room for the MAC (docs/option-budget.md).

        Without timestamps this happens when Linux puts a pending REMOVE_ADDR, MP_PRIO or MP_FAIL beside a data
        segment's 28-byte DSS. Linux forgets the signal once written, so dropping the segment would lose it:
        the signal moves to a pure ACK of our own at the segment's end (in window, so the peer kernel processes
        its options), both protected. Anything else is dropped and counted, never sent in plain."""
        try:
            opts = parse_options(packet[ihl + TCP_HEADER_LEN:ihl + hlen])
        except DecodeError:
            opts = []
        signals = [o for o in opts if o.kind == TCPOPT_MPTCP and o.data and o.data[0] >> 4 in SPLIT_SUBTYPES]
        rest = pad_options(encode_options([o for o in opts if not any(o is x for x in signals)]))
        moved = pad_options(encode_options(signals))
        if not signals or MAC_OPTION_LEN + max(len(rest), len(moved)) > TCP_MAX_OPTION_SPACE:
            self.counters["option_overflow"] += 1
            self._event("option-overflow", sf.key, f"{hlen - TCP_HEADER_LEN} option bytes leave no room for the MAC")
            return DROP
        self.counters["signals_split"] += 1
        payload = packet[ihl + hlen:]
        main = self._assemble(packet, ihl, sport, dport, seq, ack, flags, window, urg, rest, payload)
        signal = self._assemble(packet, ihl, sport, dport, (seq + len(payload)) & 0xFFFFFFFF, ack, ACK, window, urg,
                                moved, b"")
        first = self._protect(sf, main, ihl, TCP_HEADER_LEN + len(rest), sport, dport, seq, ack, flags, window, urg,
                              now)
        second = self._protect(sf, signal, ihl, TCP_HEADER_LEN + len(moved), sport, dport,
                               (seq + len(payload)) & 0xFFFFFFFF, ack, ACK, window, urg, now)
        return Result(Verdict.ACCEPT, first.packet, inject=[second.packet])

    # ------------------------------------------------------------------ SYN
    def _syn(self, sf, key, packet, ihl, hlen, outbound, seq, now) -> Result:
        la, lp, ra, rp = key
        service_port = rp if outbound else lp
        policy = self.config.policy_for(str(_ip(ra)), service_port)
        opts = parse_options(packet[ihl + TCP_HEADER_LEN:ihl + hlen])
        mptcp = _mptcp_opt(opts)
        join = mptcp is not None and mptcp[0] >> 4 == MPTCPOPT_MP_JOIN
        if outbound:
            return self._send_syn(sf, key, packet, ihl, opts, mptcp if join else None, policy, seq, now)
        return self._recv_syn(sf, key, packet, ihl, opts, mptcp if join else None, policy, seq, now)

    def _send_syn(self, sf, key, packet, ihl, opts, join_opt, policy, seq, now) -> Result:
        if join_opt is not None:
            token = bytes(join_opt[2:6])
            conn = self._tokens.get(token)
            if conn is None:
                first = self._pending_joins.get(token)
                if first is not None and first.state is State.INIT1_SENT:
                    # Linux may open the join before our INIT2 arrived: hold it, it leaves with NEXTK1 once the
                    # session exists (sent now it would be refused by the peer daemon for lacking NEXTK1)
                    return self._hold(first, packet, join=True)
                return ACCEPT  # a join of a connection we do not protect
            return self._send_join_syn(sf, key, packet, ihl, opts, join_opt, conn, seq, now)
        if policy is Policy.OFF:
            return ACCEPT
        if sf is not None and sf.isn_local == seq and sf.state in (State.SYN_SENT_HELLO, State.SYN_SENT_NEXTK1):
            return self._rewrite_syn(packet, ihl, opts, sf)  # kernel SYN retransmission
        sf = self._new_flow(key, True, policy, now)
        if sf is None:
            return ACCEPT
        sf.isn_local = seq
        sf.out_ref = seq + 1
        sf.mptcp = _mptcp_opt(opts) is not None
        session = self._peer_cache.get(key[2]) if self.config.resume else None
        if session is not None:
            try:
                sf.index = session.allocate()
            except ValueError:
                session = None
        if session is not None:
            sf.resumed = True
            sf.conn = Connection(session, sf.index, resumed=True)
            sf.state = transition(sf.state, Ev.SEND_SYN_NEXTK1)
        else:
            sf.state = transition(sf.state, Ev.SEND_SYN_HELLO)
        return self._rewrite_syn(packet, ihl, opts, sf)

    def _rewrite_syn(self, packet, ihl, opts, sf) -> Result:
        if sf.state is State.SYN_SENT_HELLO:
            return self._with_options(packet, ihl, opts, add=m.Hello().encode())
        # resumption: our own SYN carries no timestamps (we know the peer speaks mptcrypt) to make room for NEXTK1
        ss = sf.conn.session.chain.ss(sf.index)
        proof = ks.join_proof(ss, False, _context(sf.key, sf.isn_local))
        add = m.NextK1Resume(ks.resume_id(ss), proof).encode()
        return self._with_options(packet, ihl, opts, add=add, strip=(TCPOPT_TIMESTAMP,))

    def _send_join_syn(self, sf, key, packet, ihl, opts, join_opt, conn, seq, now) -> Result:
        if sf is None or sf.isn_local != seq:
            sf = self._new_flow(key, True, Policy.OPPORTUNISTIC, now)
            if sf is None:
                return DROP  # never let a join of a protected connection go out unkeyed
            sf.isn_local = seq
            sf.out_ref = seq + 1
            sf.mptcp = sf.join = True
            sf.addr_id = join_opt[1]
            sf.backup = bool(join_opt[0] & 0x01)
            try:
                sf.index = conn.session.allocate()
            except ValueError:
                self._fail(sf, "key chain exhausted")
                return DROP
            conn.session.claim(sf.index, key)
            sf.conn = conn
            sf.state = transition(None, Ev.SEND_SYN_NEXTK1)
        ss = conn.session.chain.ss(sf.index)
        proof = ks.join_proof(ss, False, _context(key, seq) + bytes(join_opt[2:10]))
        return self._with_options(packet, ihl, opts, add=m.NextK1Join(sf.index, proof).encode(),
                                  strip=(TCPOPT_TIMESTAMP, TCPOPT_SACK_PERM))

    def _recv_syn(self, sf, key, packet, ihl, opts, join_opt, policy, seq, now) -> Result:
        msg = _mptcrypt_msg(opts)
        if join_opt is not None:
            return self._recv_join_syn(sf, key, packet, ihl, opts, join_opt, msg, seq, now)
        if sf is not None and sf.state in LIVE_STATES and sf.isn_remote != seq:
            # A new SYN on the 4-tuple of a flow we protect (or are keying): no peer does that while the connection
            # lives; an attacker does, to switch the subflow to plain text or desynchronise it. Never replace it.
            self.counters["syn_on_live_flow_dropped"] += 1
            self._event("syn-on-live-flow", key, "SYN with a new ISN on a protected flow dropped")
            return DROP
        if policy is Policy.OFF:
            return ACCEPT
        if msg is None:
            if policy is Policy.REQUIRED:
                self.counters["refused_policy"] += 1
                self._event("refused", key, "peer did not offer mptcrypt and policy is required")
                return Result(Verdict.DROP, inject=[_rst_for(key, ack=seq + 1, seq=0)])
            sf = self._new_flow(key, False, policy, now)
            if sf is not None:
                sf.state, sf.plain_reason = State.PLAIN, "peer without mptcrypt"
                self.counters["fallbacks_plain"] += 1
            return ACCEPT
        if sf is not None and sf.isn_remote == seq and sf.state in (State.HELLO_RCVD, State.PKCONF_SENT,
                                                                     State.NEXTK1_RCVD):
            sf.state = transition(sf.state, Ev.RECV_SYN_NEXTK1 if sf.state is State.NEXTK1_RCVD
                                  else Ev.RECV_SYN_HELLO)
            return self._clean_syn(packet, ihl, opts)
        sf = self._new_flow(key, False, policy, now)
        if sf is None:
            return ACCEPT if policy is not Policy.REQUIRED else DROP
        sf.isn_remote = seq
        sf.in_ref = seq + 1
        sf.mptcp = _mptcp_opt(opts) is not None
        if isinstance(msg, m.NextK1Resume):
            found = self._resume.get(msg.resume_id)
            if found is not None:
                session, index = found
                ss = session.chain.ss(index)
                if hmac.compare_digest(msg.proof, ks.join_proof(ss, False, _context(_peer_view(key), seq))) \
                        and session.claim(index, key):
                    sf.conn = Connection(session, index, resumed=True)
                    sf.index, sf.resumed = index, True
                    sf.state = transition(None, Ev.RECV_SYN_NEXTK1)
                    self._register_resume(session)
                    return self._clean_syn(packet, ihl, opts)
            self.counters["resume_fallbacks"] += 1  # unknown or stale: run the full handshake instead
        sf.state = transition(None, Ev.RECV_SYN_HELLO)
        return self._clean_syn(packet, ihl, opts)

    def _clean_syn(self, packet, ihl, opts, keep_sack: bool = True) -> Result:
        """Inbound SYN or SYN-ACK for our kernel: no timestamps (their 12 bytes go to the MAC), no mptcrypt
        option, MSS clamped. SACK-permitted stays (loss recovery; `_protect` trims SACK blocks to fit the MAC)
        except on joins, whose SYN-ACK has no room for it beside MP_JOIN and NEXTK2 (docs/option-budget.md)."""
        strip = (TCPOPT_TIMESTAMP, TCPOPT_EXP) if keep_sack else (TCPOPT_TIMESTAMP, TCPOPT_EXP, TCPOPT_SACK_PERM)
        return self._with_options(packet, ihl, opts, strip=strip, clamp=True)

    def _recv_join_syn(self, sf, key, packet, ihl, opts, join_opt, msg, seq, now) -> Result:
        token = bytes(join_opt[2:6])
        conn = self._tokens.get(token)
        if conn is None:
            return ACCEPT  # a join of a connection we do not protect
        # RFC 8684 §3.2 lets anyone who read the keys compute MPTCP's join HMAC; NEXTK1 is what they cannot forge
        if sf is not None and sf.isn_remote == seq and sf.state is State.NEXTK1_RCVD:
            return self._clean_syn(packet, ihl, opts, keep_sack=False)
        if not isinstance(msg, m.NextK1Join) or msg.index == 0 or conn.session.own_parity(msg.index):
            return self._refuse_join(key, "join SYN without a valid NEXTK1")
        ss = conn.session.chain.ss(msg.index)
        expect = ks.join_proof(ss, False, _context(_peer_view(key), seq) + bytes(join_opt[2:10]))
        if not hmac.compare_digest(msg.proof, expect):
            return self._refuse_join(key, "join SYN whose NEXTK1 proof does not verify")
        if not conn.session.claim(msg.index, key):
            return self._refuse_join(key, f"join SYN reusing key index {msg.index}")
        sf = self._new_flow(key, False, Policy.OPPORTUNISTIC, now)
        if sf is None:
            return self._refuse_join(key, "flow table full")
        sf.isn_remote = seq
        sf.in_ref = seq + 1
        sf.mptcp = sf.join = True
        sf.addr_id = join_opt[1]
        sf.backup = bool(join_opt[0] & 0x01)
        sf.index = msg.index
        sf.conn = conn
        sf.state = transition(None, Ev.RECV_SYN_NEXTK1)
        self._register_resume(conn.session)
        return self._clean_syn(packet, ihl, opts, keep_sack=False)

    def _refuse_join(self, key, why) -> Result:
        c = self.counters
        c["joins_refused"] += 1
        if c["joins_refused"] & (c["joins_refused"] - 1) == 0:
            self._event("join-refused", key, why)
        return DROP

    # ------------------------------------------------------------------ SYN-ACK
    def _syn_ack(self, sf, key, packet, ihl, hlen, outbound, seq, ack, now) -> Result:
        if sf is None:
            return ACCEPT
        opts = parse_options(packet[ihl + TCP_HEADER_LEN:ihl + hlen])
        if outbound:
            return self._send_syn_ack(sf, packet, ihl, opts, seq, now)
        return self._recv_syn_ack(sf, packet, ihl, opts, seq, ack, now)

    def _send_syn_ack(self, sf, packet, ihl, opts, seq, now) -> Result:
        st = sf.state
        if st is State.PLAIN or sf.initiator:
            return ACCEPT
        sf.isn_local = seq
        sf.out_ref = max(sf.out_ref, seq + 1)
        mp = _mptcp_opt(opts)
        if st in (State.HELLO_RCVD, State.PKCONF_SENT) or (st is State.ENCRYPTING and not sf.resumed
                                                          and not sf.join):
            if mp is not None and mp[0] >> 4 == MPTCPOPT_MP_CAPABLE:
                sf.mptcp = True
            sf.state = transition(st, Ev.SEND_SYNACK_PKCONF)
            sf.pub_list = self._pub_list
            self._remember_mptcp_syn_key(sf, mp, local=True)
            return self._with_options(packet, ihl, opts, add=m.PkConf(tuple(self._pub_list)).encode())
        if st in (State.NEXTK1_RCVD, State.ENCRYPTING):
            ss = sf.conn.session.chain.ss(sf.index)
            extra = bytes(mp[2:14]) if sf.join and mp is not None else b""
            proof = ks.join_proof(ss, True, _context(_peer_view(sf.key), sf.isn_remote) + struct.pack("!I", seq)
                                  + extra)
            if not sf.join:
                self._remember_mptcp_syn_key(sf, mp, local=True)
            if st is State.NEXTK1_RCVD:
                sf.set_keys(sf.conn, sf.index, sf.conn.session.sym_cipher)
                self._keyed(sf, now, resumed=not sf.join)
            sf.state = transition(st, Ev.SEND_SYNACK_NEXTK2)
            return self._with_options(packet, ihl, opts, add=m.NextK2(proof).encode())
        return ACCEPT

    def _recv_syn_ack(self, sf, packet, ihl, opts, seq, ack, now) -> Result:
        st = sf.state
        if not sf.initiator or st in (State.PLAIN, State.REFUSED, State.FAILED, State.CLOSED):
            return ACCEPT if st is State.PLAIN else DROP
        if sf.isn_local is not None and ack != (sf.isn_local + 1) & 0xFFFFFFFF:
            return DROP  # not an answer to our SYN
        msg = _mptcrypt_msg(opts)
        mp = _mptcp_opt(opts)
        if st is State.ENCRYPTING or st is State.INIT1_SENT:
            if sf.isn_remote == seq:  # SYN-ACK retransmission: let the kernel answer it (that ACK is protected)
                return self._clean_syn(packet, ihl, opts)
            return DROP
        sf.isn_remote = seq
        sf.in_ref = seq + 1
        if isinstance(msg, m.NextK2) and st is State.SYN_SENT_NEXTK1:
            index = sf.index
            ss = sf.conn.session.chain.ss(index)
            extra = bytes(mp[2:14]) if sf.join and mp is not None else b""
            expect = ks.join_proof(ss, True, _context(sf.key, sf.isn_local) + struct.pack("!I", seq) + extra)
            if not hmac.compare_digest(msg.proof, expect):
                self.counters["unauthenticated_dropped"] += 1
                self._event("bad-nextk2", sf.key, "SYN-ACK with a NEXTK2 that does not verify")
                return DROP
            sf.state = transition(st, Ev.RECV_SYNACK_NEXTK2)
            sf.set_keys(sf.conn, index, sf.conn.session.sym_cipher)
            if not sf.join:
                sf.conn.session.claim(index, sf.key)
                self._remember_mptcp_syn_key(sf, mp, local=False)
            self._keyed(sf, now, resumed=not sf.join)
            return self._clean_syn(packet, ihl, opts)
        if sf.join:
            self.counters["unauthenticated_dropped"] += 1
            return DROP  # a join answer must prove ss[i]
        if isinstance(msg, m.PkConf):
            if st is State.SYN_SENT_NEXTK1:
                self.counters["resume_fallbacks"] += 1
                self._peer_cache.pop(sf.key[2], None)
                sf.conn, sf.index, sf.resumed = None, 0, False
            chosen = next((c for c in self.config.pub_ciphers if c in msg.ciphers), None)
            if chosen is None:
                return self._plain_or_refuse(sf, packet, ihl, opts, seq, ack, "no common public-key cipher")
            sf.state = transition(st, Ev.RECV_SYNACK_PKCONF)
            sf.pub_list = bytes(msg.ciphers)
            sf.pub_cipher = PubCipher(chosen)
            self._remember_mptcp_syn_key(sf, mp, local=False)
            if "remote" in sf.mptcp_keys:
                self._pending_joins[_token(sf.mptcp_keys["remote"])] = sf
            self._start_init1(sf, now)
            return Result(Verdict.ACCEPT, self._clean_syn(packet, ihl, opts).packet, inject=[sf.init_segment])
        return self._plain_or_refuse(sf, packet, ihl, opts, seq, ack, "peer did not answer with PKCONF")

    def _plain_or_refuse(self, sf, packet, ihl, opts, seq, ack, why) -> Result:
        if sf.policy is Policy.REQUIRED:
            sf.state = transition(sf.state, Ev.REFUSE)
            self.counters["refused_policy"] += 1
            self._event("refused", sf.key, why + "; policy is required")
            # our kernel gets the SYN-ACK turned into a RST (connection refused), the peer a RST too
            la, lp, ra, rp = sf.key
            rst_local = _segment(ra, rp, la, lp, seq + 1, ack, RST | ACK, b"", b"")
            rst_peer = _segment(la, lp, ra, rp, ack, 0, RST, b"", b"")
            return Result(Verdict.ACCEPT, rst_local, inject=[rst_peer])
        sf.state = transition(sf.state, Ev.RECV_SYNACK_PLAIN)
        sf.conn, sf.resumed = None, False  # a resumption we offered and the peer ignored: nothing of the session applies
        sf.plain_reason = why
        self.counters["fallbacks_plain"] += 1
        return ACCEPT

    # ------------------------------------------------------------------ INIT1 / INIT2
    def _key(self, cipher: PubCipher, now: float) -> pubkey.KeyPair:
        entry = self._keys.get(cipher)
        if entry is None or now - entry[1] > self.config.key_lifetime:
            entry = (pubkey.generate(cipher), now)
            self._keys[cipher] = entry
            self.counters["pk_keygen"] += 1
        return entry[0]

    def _start_init1(self, sf, now) -> None:
        key = self._key(sf.pub_cipher, now)
        sf.client_key = key
        sf.n_c = self._random(NONCE_LEN)
        sf.init_msg = m.Init1(sf.pub_cipher, tuple(self._sym_list), sf.n_c, key.public).encode()
        la, lp, ra, rp = sf.key
        sf.init_segment = _segment(la, lp, ra, rp, sf.isn_local + 1, sf.isn_remote + 1, ACK | PSH,
                                   m.Marker(Msg.INIT1).encode(), sf.init_msg)
        self._arm(sf, now)

    def _recv_init1(self, sf, payload, now) -> Result:
        if sf.state is State.ENCRYPTING:  # duplicate INIT1: our INIT2 was lost
            return Result(Verdict.DROP, inject=[sf.init_segment]) if sf.init_segment else DROP
        try:
            init1 = m.parse_init(payload)
            if not isinstance(init1, m.Init1):
                raise HandshakeError("INIT2 where INIT1 was expected")
            pub = PubCipher(init1.pub_cipher) if init1.pub_cipher in sf.pub_list else None
            if pub is None:
                raise HandshakeError(f"INIT1 chose public-key cipher {init1.pub_cipher} that PKCONF did not offer")
            sym = next((s for s in self.config.sym_ciphers if s in init1.sym_ciphers), None)
            if sym is None:
                raise HandshakeError("no common symmetric cipher")
            server_key = self._key(pub, now) if pub != PubCipher.RSA2048_E3 else None
            server_part, n_s = pubkey.server_respond(pub, init1.k_c, server_key, self._random)
        except (HandshakeError, ValueError) as exc:
            self.counters["unauthenticated_dropped"] += 1
            self._event("bad-init1", sf.key, str(exc))
            return DROP
        self.counters["pk_ops"] += 1
        tr = ks.transcript(pub, init1.k_c, init1.n_c, sf.pub_list, bytes(init1.sym_ciphers), sym)
        session = Session(ks.initial_ss(n_s, tr), False, pub, SymCipher(sym), sf.key[2])
        conn = Connection(session, 0, resumed=False)
        conn.pk_ops = 1
        sf.pub_cipher = pub
        sf.set_keys(conn, 0, SymCipher(sym))
        sf.state = transition(sf.state, Ev.RECV_INIT1)
        sf.init_msg = m.Init2(sym, server_part).encode()
        la, lp, ra, rp = sf.key
        sf.init_segment = _segment(la, lp, ra, rp, sf.isn_local + 1, sf.isn_remote + 1, ACK | PSH,
                                   m.Marker(Msg.INIT2).encode(), sf.init_msg)
        sf.confirmed = False
        self._arm(sf, now)
        self._keyed(sf, now, resumed=False)
        return Result(Verdict.DROP, inject=[sf.init_segment] + self._release(sf))

    def _recv_init2(self, sf, payload, now) -> Result:
        try:
            init2 = m.parse_init(payload)
            if not isinstance(init2, m.Init2) or init2.sym_cipher not in self._sym_list:
                raise HandshakeError("INIT2 with a symmetric cipher we did not offer")
            n_s = pubkey.client_finish(sf.client_key, init2.server_part)
        except (HandshakeError, ValueError) as exc:
            self.counters["unauthenticated_dropped"] += 1
            self._event("bad-init2", sf.key, str(exc))
            return DROP
        self.counters["pk_ops"] += 1
        sym = SymCipher(init2.sym_cipher)
        tr = ks.transcript(sf.pub_cipher, sf.client_key.public, sf.n_c, sf.pub_list, self._sym_list, sym)
        session = Session(ks.initial_ss(n_s, tr), True, sf.pub_cipher, sym, sf.key[2])
        conn = Connection(session, 0, resumed=False)
        conn.pk_ops = 1
        sf.set_keys(conn, 0, sym)
        sf.state = transition(sf.state, Ev.RECV_INIT2)
        sf.timer = None
        sf.client_key = None
        self._timed.discard(sf)
        self._keyed(sf, now, resumed=False)
        return Result(Verdict.DROP, inject=self._release(sf) + self._release_joins(sf, now))

    def _keyed(self, sf, now, resumed: bool) -> None:
        """A subflow got its keys: register the connection for joins and the session for resumption."""
        conn = sf.conn
        c = self.counters
        if sf.join:
            c["joins_protected"] += 1
            c["joins_zero_pk"] += 1
        elif resumed:
            c["resumptions"] += 1
        else:
            c["pk_handshakes"] += 1
            c["handshakes_completed"] += 1
        if sf.mptcp and not sf.join:
            conn.mptcp = True
            conn.keys.update(sf.mptcp_keys)
            for k in conn.keys.values():
                self._add_token(conn, k)
        if not sf.join:
            self._cache_session(conn.session, sf.key[2])
            self._register_resume(conn.session)
        self._event("protected", sf.key, f"{'join' if sf.join else 'resumed' if resumed else 'new'} "
                    f"index {sf.index} sid {conn.sid.hex()[:16]}")

    def _release(self, sf) -> list[bytes]:
        """Protect the segments held while keys did not exist yet, in the kernel's order."""
        out = []
        held, sf.held = sf.held, []
        for pkt in held:
            ihl = 40 if pkt[0] >> 4 == 6 else (pkt[0] & 0x0F) << 2
            hlen = (pkt[ihl + 12] >> 4) << 2
            sport, dport, seq, ack, flags, window, urg = self._fields(pkt, ihl)
            if sf.mptcp and not sf.join:
                self._learn_mptcp_keys(sf.conn, sf, pkt[ihl + TCP_HEADER_LEN:ihl + hlen], outbound=True)
            res = self._protect(sf, pkt, ihl, hlen, sport, dport, seq, ack, flags, window, urg, sf.last_seen)
            if res.packet is not None:
                out.append(res.packet)
        self.counters["released"] += len(out)
        return out

    def _release_joins(self, sf, now) -> list[bytes]:
        """Join SYNs held while the first subflow was keyed: now their token maps to the session."""
        out = []
        for token in [t for t, first in self._pending_joins.items() if first is sf]:
            del self._pending_joins[token]
        held, sf.held_joins = sf.held_joins, []
        for pkt in held:
            res = self.handle(pkt, True, now)
            if res.verdict is Verdict.ACCEPT:
                out.append(res.packet or pkt)
        return out

    def _confirm(self, sf) -> None:
        sf.confirmed = True
        sf.timer = None
        self._timed.discard(sf)

    def _arm(self, sf, now) -> None:
        sf.rto = self.config.init_rto
        sf.tries = 0
        sf.timer = now + sf.rto
        self._timed.add(sf)

    def _fail(self, sf, why) -> None:
        sf.state = transition(sf.state, Ev.GIVE_UP) if sf.state is not State.ENCRYPTING else State.FAILED
        sf.timer = None
        sf.held.clear()
        sf.held_joins.clear()
        self._timed.discard(sf)
        self.counters["handshake_failures"] += 1
        self._event("handshake-failed", sf.key, why)

    # ------------------------------------------------------------------ MPTCP bookkeeping
    def _remember_mptcp_syn_key(self, sf, mp, local: bool) -> None:
        """The SYN-ACK's MP_CAPABLE carries the responder's key (RFC 8684 §3.1)."""
        if mp is None or mp[0] >> 4 != MPTCPOPT_MP_CAPABLE or len(mp) + 2 != TCPOLEN_MPTCP_MPC_SYNACK:
            return
        sf.mptcp = True
        sf.mptcp_keys["local" if local else "remote"] = bytes(mp[2:2 + MPTCP_KEY_LEN])

    def _learn_mptcp_keys(self, conn, sf, options: bytes, outbound: bool) -> None:
        """The third ACK (and first data) carries both MP_CAPABLE keys: sender's then receiver's."""
        try:
            mp = _mptcp_opt(parse_options(options))
        except DecodeError:
            return
        if mp is None or mp[0] >> 4 != MPTCPOPT_MP_CAPABLE or len(mp) + 2 < TCPOLEN_MPTCP_MPC_ACK:
            return
        sender, receiver = bytes(mp[2:10]), bytes(mp[10:18])
        conn.keys["local" if outbound else "remote"] = sender
        conn.keys["remote" if outbound else "local"] = receiver
        conn.mptcp = True
        for k in (sender, receiver):
            self._add_token(conn, k)

    def _add_token(self, conn, key: bytes) -> None:
        token = _token(key)
        if token not in conn.tokens:
            conn.tokens.append(token)
            self._tokens[token] = conn

    # ------------------------------------------------------------------ caches and reclamation
    def _cache_session(self, session, peer) -> None:
        cache = self._peer_cache
        cache[peer] = session
        cache.move_to_end(peer)
        while len(cache) > self.config.max_sessions_cached:
            _, old = cache.popitem(last=False)
            for rid in old.resume_ids.values():
                self._resume.pop(rid, None)
            old.resume_ids.clear()

    def _register_resume(self, session) -> None:
        """Resumption ids for the peer's next unused indices: how a SYN from any address finds the session.
        Only ids of indices entering the window are computed (one HMAC each)."""
        wanted = session.peer_next_indices(RESUME_WINDOW)
        for i in [i for i in session.resume_ids if i not in wanted]:
            self._resume.pop(session.resume_ids.pop(i), None)
        for i in wanted:
            if i not in session.resume_ids:
                rid = ks.resume_id(session.chain.ss(i))
                self._resume[rid] = (session, i)
                session.resume_ids[i] = rid

    def _new_flow(self, key, initiator, policy, now) -> Subflow | None:
        old = self._flows.get(key)
        if old is not None:
            self._drop_flow(old)
        if len(self._flows) >= self.config.max_connections:
            self._sweep(now)
            if len(self._flows) >= self.config.max_connections:
                self._event("table-full", key, "flow table full; connection left untouched")
                return None
        sf = Subflow(key, initiator, policy, now)
        self._flows[key] = sf
        if len(self._flows) > self.counters["flows_tracked_max"]:
            self.counters["flows_tracked_max"] = len(self._flows)
        return sf

    def _note_close(self, sf, flags, outbound, now) -> None:
        if flags & RST:
            sf.fin_out = sf.fin_in = True
        elif outbound:
            sf.fin_out = True
        else:
            sf.fin_in = True
        if sf.fin_out and sf.fin_in and sf.closed_at is None:
            sf.closed_at = now
            if sf.state in (State.ENCRYPTING, State.PLAIN):
                sf.state = transition(sf.state, Ev.CLOSE)

    def _sweep(self, now) -> None:
        cfg = self.config
        for sf in list(self._flows.values()):
            if (sf.closed_at is not None and now - sf.closed_at > cfg.closed_linger) or \
                    now - sf.last_seen > cfg.idle_timeout or \
                    (sf.state in (State.FAILED, State.REFUSED) and now - sf.last_seen > cfg.closed_linger):
                self._drop_flow(sf)
                self.counters["connections_reclaimed"] += 1

    def _drop_flow(self, sf) -> None:
        self._flows.pop(sf.key, None)
        for token in [t for t, first in self._pending_joins.items() if first is sf]:
            del self._pending_joins[token]
        self._timed.discard(sf)
        conn = sf.conn
        if conn is not None and sf in conn.subflows:
            conn.subflows.remove(sf)
            if not conn.subflows:
                for t in conn.tokens:
                    if self._tokens.get(t) is conn:
                        del self._tokens[t]

    # ------------------------------------------------------------------ helpers
    def _with_options(self, packet, ihl, opts, add: bytes = b"", strip=(), clamp=False) -> Result:
        """Rewrite a SYN or SYN-ACK's option list (never more than 40 bytes), lengths and checksums fresh."""
        kept: list[TCPOption] = []
        for o in opts:
            if o.kind in strip or o.kind == 0:
                continue
            if clamp and o.kind == TCPOPT_MSS and len(o.data) == 2:
                o = TCPOption(TCPOPT_MSS, struct.pack("!H", max(536, struct.unpack("!H", o.data)[0] - MSS_CLAMP)))
            kept.append(o)
        if strip:  # drop NOPs that only padded removed options
            kept = [o for o in kept if o.kind != 1]
            kept = _realign(kept)
        raw = pad_options(encode_options(kept) + add)
        if len(raw) > TCP_MAX_OPTION_SPACE:
            self.counters["option_overflow"] += 1
            raw = pad_options(encode_options(kept))
        sport, dport, seq, ack, flags, window, urg = self._fields(packet, ihl)
        hlen = (packet[ihl + 12] >> 4) << 2
        return Result(Verdict.ACCEPT, self._assemble(packet, ihl, sport, dport, seq, ack, flags, window, urg,
                                                     raw, packet[ihl + hlen:]))

    def _event(self, kind, key, detail="") -> None:
        if len(self._events) < MAX_EVENTS:
            self._events.append(Event(kind, fmt_flow(key), detail))

    def _conn_row(self, sf, conn) -> dict:
        la, lp, ra, rp = sf.key
        row = {
            "local": f"{fmt_addr(la)}:{lp}", "remote": f"{fmt_addr(ra)}:{rp}",
            "state": sf.state.value if sf.state else "new",
            "protected": conn is not None and sf.tx is not None,
            "pub_cipher": conn.session.pub_cipher.name if conn else None,
            "sym_cipher": conn.session.sym_cipher.name if conn else None,
            "sid": conn.sid.hex() if conn else None,
            "resumed": conn.resumed if conn else False,
            "mptcp": conn.mptcp if conn else sf.mptcp,
            "pk_ops": conn.pk_ops if conn else 0,
            "index": conn.index if conn else None,
        }
        if sf.plain_reason:
            row["reason"] = sf.plain_reason
        return row


# ---------------------------------------------------------------------- module helpers

def _ip(addr: bytes):
    return ipaddress.ip_address(addr)


def _token(key: bytes) -> bytes:
    """MPTCP token of a connection key: the first 32 bits of SHA-256(key) (RFC 8684 §3.2)."""
    return hashlib.sha256(key).digest()[:MPTCP_TOKEN_LEN]


def _flow_key(local: tuple[str, int], remote: tuple[str, int]) -> tuple:
    return (ipaddress.ip_address(local[0]).packed, local[1], ipaddress.ip_address(remote[0]).packed, remote[1])


def _peer_view(key):
    """The flow key as the peer sees it (its local side first): proofs are computed in initiator order."""
    la, lp, ra, rp = key
    return (ra, rp, la, lp)


def _context(key, isn: int) -> bytes:
    """Initiator address and port, responder address and port, initiator ISN: what a NEXTK proof binds."""
    la, lp, ra, rp = key
    return la + struct.pack("!H", lp) + ra + struct.pack("!HI", rp, isn)


def _mptcp_opt(opts) -> bytes | None:
    """Data (after kind and length) of the MPTCP option, if any. Byte 0: subtype << 4 | flags."""
    for o in opts:
        if o.kind == TCPOPT_MPTCP and o.data:
            return o.data
    return None


def _mptcrypt_msg(opts):
    for o in opts:
        if o.kind == TCPOPT_EXP and m.is_mptcrypt_option(o.kind, o.data):
            try:
                return m.parse_message(o.data)
            except DecodeError:
                return None
    return None


def _trim_sack(raw: bytes, limit: int) -> bytes | None:
    """The option area with SACK blocks dropped from the end until it fits `limit` bytes (RFC 2018 §4: the first
    block reports the most recent data, the others repeat older news), the whole SACK option if need be.
    None when there is no SACK option to trim or the options do not fit even without it."""
    try:
        opts = parse_options(raw)
    except DecodeError:
        return None
    sack = next((o for o in opts if o.kind == TCPOPT_SACK), None)
    if sack is None:
        return None
    others = [o for o in opts if o.kind not in (TCPOPT_NOP, TCPOPT_EOL)]
    for blocks in range(len(sack.data) // TCPOLEN_SACK_BLOCK - 1, -1, -1):
        kept = [TCPOption(TCPOPT_SACK, sack.data[:blocks * TCPOLEN_SACK_BLOCK]) if o is sack else o for o in others
                if o is not sack or blocks]
        trimmed = pad_options(encode_options(kept))
        if len(trimmed) <= limit:
            return trimmed
    return None


def _realign(opts: list[TCPOption]) -> list[TCPOption]:
    """Options without NOPs, with a NOP before window scale as Linux writes it (cosmetic, keeps dumps readable)."""
    out = []
    for o in opts:
        if o.kind == 3:
            out.append(TCPOption(1))
        out.append(o)
    return out


def _segment(src, sport, dst, dport, seq, ack, flags, options: bytes, payload: bytes) -> bytes:
    """A daemon-made segment (INIT1/INIT2, RST), IP header included."""
    options = pad_options(options)
    off_flags = (((TCP_HEADER_LEN + len(options)) >> 2) << 12) | flags
    tcp = bytearray(_TCP.pack(sport, dport, seq & 0xFFFFFFFF, ack & 0xFFFFFFFF, off_flags, 65535, 0, 0))
    tcp += options
    tcp += payload
    _CSUM.pack_into(tcp, 16, tcp_checksum(src, dst, tcp))
    return build_ip_header(src, dst, len(tcp)) + tcp


def _rst_for(key, ack: int, seq: int) -> bytes:
    """RST to the peer of `key` (the SYN's sender) refusing its connection."""
    la, lp, ra, rp = key
    return _segment(la, lp, ra, rp, seq, ack, RST | ACK, b"", b"")
