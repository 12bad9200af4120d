"""Attack 8 (mptcrypt-specific), forged SYN on a live subflow: does the daemon keep its state?

Not one of the published MPTCP attacks: this one targets mptcrypt's own state machine, so the question against
plain MPTCP is only whether it does anything there (it should not: RFC 5961 §4 makes the kernel answer a SYN on
an established connection with a challenge ACK and drop it). SYN and SYN-ACK segments are the only ones mptcrypt
never MACs (they precede the keys), so an attacker may try to use one to reset the daemon's view of a protected
subflow: it forges, on path 1, a plain SYN (no mptcrypt option) on the exact 4-tuple of the live subflow, in both
directions (client -> server and server -> client), then watches path 1.

Effect measured: application records readable in plaintext on path 1 after the forged SYNs (they were not before),
and ciphertext delivered to an application (the transfer's sha256 changes).
"""

from __future__ import annotations

import random
import time

from mptcrypt.attacks.common import SYN, forge
from mptcrypt.attacks.judging import decide
from mptcrypt.attacks.runner import Evidence, Verdict

NUMBER = 8
TITLE = "forged SYN on the live subflow (mptcrypt state reset)"
SOURCE = "RFC 5961 §4 (SYN on a synchronized connection); mptcrypt's own handshake (SYNs are not MACed)"
PLAIN_EXPECTED = "BLOCKED"  # not an MPTCP attack: harmless to plain MPTCP by design (the kernel's RFC 5961 check)


def attack(agent) -> dict:
    v = agent.view
    if v.cport is None:
        return {"skipped": "no connection"}
    before = {k: len(s) for k, s in v.records.items()}
    opts = [("MSS", 1460)]

    def to_server():
        return forge(v, v.client, v.server, v.cport, v.port, random.getrandbits(32), 0, SYN, opts, window=64240)

    def to_client():
        return forge(v, v.server, v.client, v.port, v.cport, random.getrandbits(32), 0, SYN, opts, window=64240)

    agent.spoof(to_server, to_client, "plain SYN on the live 4-tuple")
    agent.pump(time.time() + 0.2)
    agent.records_before = before
    return {"records_seen_before_attack": before}


def after(agent) -> dict:
    before = getattr(agent, "records_before", None) or {}
    now = {k: len(s) for k, s in agent.view.records.items()}
    return {"plaintext_records_after_attack": {k: now[k] - before.get(k, 0) for k in now}}


def judge(ev: Evidence) -> Verdict:
    t = ev.transfer
    read_before = ev.result.get("records_seen_before_attack") or {}
    read_after = ev.result.get("plaintext_records_after_attack") or {}
    leaked = sum(read_after.values())
    garbled = not t["upload"]["intact"] or not t["download"]["intact"]
    evidence = {
        "plaintext_records_before_attack": read_before,
        "plaintext_records_after_attack": read_after,
        "sessions_after": {h: [{"local": r.get("local"), "protected": r.get("protected"), "state": r.get("state"),
                                "reason": r.get("reason")} for r in rows] for h, rows in ev.sessions_late.items()},
    }
    if ev.target == "plain":
        # plain MPTCP is readable anyway: the effect that counts is a change the SYN itself caused
        effective = garbled or t["connection_died"]
        return decide(ev, effective, "the forged SYN disturbed plain MPTCP",
                      "kernel ignored the SYN (RFC 5961 challenge ACK)", evidence, need_keys=False)
    effective = leaked > 0 or garbled
    what = []
    if leaked:
        what.append(f"{leaked} records readable in plaintext on path 1 after the SYN")
    if garbled:
        what.append("application received bytes that are not the sender's (sha256 changed)")
    return decide(ev, effective, "daemon state reset by an unauthenticated SYN: " + "; ".join(what),
                  "SYN ignored: subflow still protected", evidence, need_keys=False)
