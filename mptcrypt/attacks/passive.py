"""Attack 7, passive reading: how much of the application's data can an eavesdropper on ONE path read?

Source: RFC 6181 (MPTCP threat analysis: an attacker on one path sees the traffic of that path) and RFC 8684
§5 (MPTCP itself provides no confidentiality). The attacker only sniffs path 1 and looks for the application's
known plaintext (numbered records `MPTC-UP-........:` / `MPTC-DN-........:`) in TCP payloads. The measure is the
fraction of the records sent (both directions) whose marker it read.
"""

from __future__ import annotations

from mptcrypt.attacks.judging import base_evidence
from mptcrypt.attacks.runner import BLOCKED, EFFECTIVE, ERROR, Evidence, Verdict

NUMBER = 7
TITLE = "passive reading of path 1"
SOURCE = "RFC 6181; RFC 8684 §5"


def attack(agent) -> dict:
    return {}  # nothing to send: the view counts every plaintext record seen on path 1


def read_fraction(ev: Evidence) -> tuple[int, int, float]:
    seen = ev.view.get("plaintext_records_seen") or {}
    total = ev.transfer["upload"]["bytes_expected"] // 512 + ev.transfer["download"]["bytes_expected"] // 512
    got = int(seen.get("UP", 0)) + int(seen.get("DN", 0))
    return got, total, (got / total if total else 0.0)


def judge(ev: Evidence) -> Verdict:
    got, total, frac = read_fraction(ev)
    t = ev.transfer
    evidence = {
        **base_evidence(ev),
        "records_read_on_path1": f"{got}/{total}",
        "fraction_read": round(frac, 3),
        "path1_payload_bytes": ev.view.get("path1_payload_bytes"),
        "mac_segments_seen": ev.view.get("mac_segments", 0),
    }
    if ev.target == "mptcrypt":
        evidence["bytes_encrypted"] = ev.stat("client", "bytes_encrypted") + ev.stat("server", "bytes_encrypted")
    if not t["connected"]:
        return Verdict(ERROR, f"the transfer did not connect ({t['connect_error']})", evidence)
    if got:
        return Verdict(EFFECTIVE, f"attacker read {frac:.0%} of the records in plaintext on path 1", evidence)
    if not ev.view.get("path1_payload_bytes", {}).get("c2s") and not ev.view.get("path1_payload_bytes", {}).get("s2c"):
        return Verdict(ERROR, "no payload crossed path 1: nothing to read either way", evidence)
    return Verdict(BLOCKED if t["intact"] else ERROR,
                   "path 1 carried only ciphertext: 0 records read" + ("" if t["intact"] else " (transfer damaged)"),
                   evidence)
