"""Attack 13 (mptcrypt-specific), boundary shift: a real protected segment with bytes moved across the boundary
between its options and its payload, the MAC option kept at the end.

Issue 12 item 5. A MAC over "header fields | options without the MAC option | ciphertext" that leaves out the data
offset (protocol v1) covers one byte string whichever way it is split: moving the last 4-byte word of the options
in front of the ciphertext (data offset - 1), or the first 4 ciphertext bytes behind the options (data offset + 1,
when the option area has room), still verifies. The receiving daemon then hands its kernel a segment the sender
never sent: a DSS option cut short and payload bytes decrypted with the keystream of the wrong position (measured
with the v1 input on Linux 6.18: the kernel found no mapping for that data and discarded it, MPTcpExtDuplicateData,
so the stream stayed intact; the bypass of the MAC is the effect). Protocol v2 binds the kernel's data offset
into the MAC (docs/protocol.md §5).

The attacker needs the segment in place of the original, so it is an on-path middlebox (as the downgrade's): the
hub queues path 1's client -> server segments on their way out of its server port (br_netfilter + physdev +
NFQUEUE in `mptc-hub`), and from `SHIFT_AFTER` s
on the middlebox rewrites `SHIFTS` protected data segments, one every `SHIFT_GAP` s; the originals never reach the
server. The attacker host only reads path 1. Against plain MPTCP there is no MAC to keep: n/a (any on-path change
of a plain segment is accepted by definition).

Effect measured: a rewritten segment that verified (the server daemon counted fewer MAC failures than segments
shifted), the upload's sha256 changed, or the path-1 subflow / the connection died.
"""

from __future__ import annotations

import time

from mptcrypt.attacks.judging import base_evidence
from mptcrypt.attacks.runner import (BLOCKED, CLIENT_IP, EFFECTIVE, ERROR, SERVER_IP, CellContext, Evidence,
                                     Verdict)
from mptcrypt.constants import MAC_OPTION_LEN, TCP_MAX_OPTION_SPACE

NUMBER = 13
TITLE = "option/payload boundary shifted in a real protected segment (MAC option kept)"
SOURCE = "issue 12 item 5 (the data offset outside the v1 MAC input)"
SHIFT_AFTER = 1.2  # s after the first queued segment
SHIFTS = 3
SHIFT_GAP = 0.3
WORD = 4  # the data offset counts 32-bit words


def variants(target: str) -> list[str | None]:
    return [None] if target == "mptcrypt" else []  # plain MPTCP has no MAC to keep: n/a


def shift_boundary(packet: bytes) -> tuple[bytes, str] | None:
    """A protected data segment with one 4-byte word moved across the option/payload boundary, the MAC option
    left last: (new packet, "into payload" / "into options"), or None when `packet` is no such segment."""
    from mptcrypt.crypto.segment import py_assemble
    from mptcrypt.errors import DecodeError
    from mptcrypt.wire.segment import parse_segment

    try:
        seg = parse_segment(packet)
    except DecodeError:
        return None
    if seg is None or not seg.has_mac() or seg.payload_len < WORD:
        return None
    opts, payload = seg.option_bytes(), seg.payload()
    before, mac = opts[:-MAC_OPTION_LEN], opts[-MAC_OPTION_LEN:]
    if len(opts) + WORD <= TCP_MAX_OPTION_SPACE:  # room: the first ciphertext word joins the options
        return py_assemble(packet, seg.l4, before + payload[:WORD] + mac, payload[WORD:]), "into options"
    if len(before) >= WORD:  # full option area: the last option word joins the ciphertext
        return py_assemble(packet, seg.l4, before[:-WORD] + mac, before[-WORD:] + payload), "into payload"
    return None


def middlebox(args) -> dict:
    from mptcrypt.attacks.downgrade import run_queue

    stats = {"role": "middlebox", "queued": 0, "shifted": 0, "directions": {}, "shifted_seqs": []}
    state = {"first": None, "last": 0.0}

    def on_packet(pkt) -> None:
        now = time.monotonic()
        stats["queued"] += 1
        state["first"] = state["first"] or now
        if stats["shifted"] < SHIFTS and now - state["first"] >= SHIFT_AFTER and now - state["last"] >= SHIFT_GAP:
            data = pkt.get_payload()
            out = shift_boundary(data)
            if out is not None:
                new, how = out
                pkt.set_payload(new)
                stats["shifted"] += 1
                stats["directions"][how] = stats["directions"].get(how, 0) + 1
                stats["shifted_seqs"].append(int.from_bytes(data[24:28], "big"))  # IPv4 without options
                state["last"] = now
        pkt.accept()

    return run_queue(args.queue_num, on_packet, stats)


def prepare(ctx: CellContext) -> None:
    from mptcrypt.attacks.downgrade import QUEUE, start_middlebox

    # the hub floods: FORWARD sees each frame once per output port; only the copy the server gets is rewritten
    start_middlebox(ctx, "boundary-shift", ["FORWARD", "-m", "physdev", "--physdev-out", "hub-s", "-p", "tcp",
                                            "-s", CLIENT_IP, "-d", SERVER_IP, "--dport", str(ctx.port),
                                            "--tcp-flags", "SYN", "NONE", "-j", "NFQUEUE", "--queue-num",
                                            str(QUEUE), "--queue-bypass"])


def finish(ctx: CellContext) -> None:
    from mptcrypt.attacks.downgrade import finish as collect

    collect(ctx)


def attack(agent) -> dict:
    return {}  # the middlebox acts; the attacker host only reads path 1


def judge(ev: Evidence) -> Verdict:
    from mptcrypt.attacks.teardown import subflow_killed

    mb = ev.extra.get("middlebox") or {}
    t = ev.transfer
    shifted = int(mb.get("shifted", 0))
    refused = ev.stat("server", "mac_failures")
    path1 = subflow_killed(ev, "path1", "shift", ()).outcome == EFFECTIVE
    evidence = {**base_evidence(ev), "middlebox": {k: v for k, v in mb.items() if k != "role"},
                "server_mac_failures": refused, "server_segments_verified": ev.stat("server", "segments_verified"),
                "path1_subflow_died": path1,
                "server_MPTcpExt": dict(sorted((ev.counters.get("server") or {}).items()))}
    if mb.get("error") or "shifted" not in mb:
        return Verdict(ERROR, f"middlebox failed: {mb.get('error', 'no report')}", evidence)
    if not shifted:
        return Verdict(ERROR, f"the middlebox found no protected data segment to shift ({mb.get('queued')} queued)",
                       evidence)
    effects = []
    if refused < shifted:
        effects.append(f"{shifted - refused} of {shifted} shifted segments verified")
    if not t["intact"]:
        effects.append("upload sha256 changed")
    if t["connection_died"] or path1:
        effects.append("the connection died" if t["connection_died"] else "the path-1 subflow died")
    if effects:
        return Verdict(EFFECTIVE, "boundary shift accepted: " + "; ".join(effects), evidence)
    return Verdict(BLOCKED, f"{shifted} shifted segments dropped ({refused} MAC failures at the server); the client "
                            "retransmitted them, transfer intact", evidence)
