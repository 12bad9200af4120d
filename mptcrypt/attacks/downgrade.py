"""Attack 6, downgrade: strip mptcrypt's offer from the SYN so the connection runs unprotected.

Source: the tcpcrypt/TCP-ENO downgrade discussion (security considerations of RFC 8547 and RFC 8548): an active
attacker can always remove the offer of encryption; the protection is that applications can require encryption
and check the session ID.

The attacker here is an on-path middlebox, not the hub-attached host (a host on a hub cannot remove frames): the
hub switch itself queues every SYN client -> server:port to userspace (br_netfilter + iptables NFQUEUE in the
hub's namespace, `mptc-hub`), overwrites the mptcrypt options (kind 253, ExID 0x4D50) with NOPs, fixes the TCP
checksum and forwards it. The attacker host on path 1 then measures what it can read.

Expected, and what the verdict checks:
- plain MPTCP: nothing to strip; the connection is plain (EFFECTIVE: the attacker reads it).
- mptcrypt, policy `opportunistic`: the connection goes plain, but never silently: `mptcrypt sessions` on both
  hosts shows it unprotected, with the reason (DETECTED). Applications that need protection check this (or the
  session ID) or use `required`.
- mptcrypt, policy `required`: the server refuses the stripped SYN (RST) and the client's connect() fails: never a
  plain connection (BLOCKED).
"""

from __future__ import annotations

import json
import select
import signal
import subprocess
import sys

from mptcrypt.attacks.judging import base_evidence
from mptcrypt.attacks.passive import read_fraction
from mptcrypt.attacks.runner import (BLOCKED, CLIENT_IP, DETECTED, EFFECTIVE, ERROR, HUB, SERVER_IP, CellContext,
                                     Evidence, Verdict, _wait_ready)

NUMBER = 6
TITLE = "downgrade: mptcrypt options stripped from the SYN"
SOURCE = "RFC 8547, RFC 8548 (security considerations)"
QUEUE = 4343
SYSCTL = "net.bridge.bridge-nf-call-iptables"


def variants(target: str) -> list[str | None]:
    return ["opportunistic", "required"] if target == "mptcrypt" else [None]


def policy(variant: str | None) -> str:
    return variant or "opportunistic"


# --- the middlebox (runs in the hub's namespace) ---------------------------------------------------------------


def strip_mptcrypt(packet: bytes) -> tuple[bytes, int]:
    """IPv4/TCP packet -> (packet with every mptcrypt option replaced by NOPs, number of options replaced)."""
    from mptcrypt.errors import DecodeError
    from mptcrypt.wire.messages import is_mptcrypt_option
    from mptcrypt.wire.rewrite import blank_options
    from mptcrypt.wire.segment import parse_segment

    try:
        seg = parse_segment(packet)
        if seg is None:
            return packet, 0
        return blank_options(seg, lambda o: is_mptcrypt_option(o.kind, o.data))
    except DecodeError:
        return packet, 0


def middlebox(args) -> dict:
    stats = {"role": "middlebox", "syns": 0, "stripped_syns": 0, "options_removed": 0}

    def on_packet(pkt) -> None:
        data, n = strip_mptcrypt(pkt.get_payload())
        stats["syns"] += 1
        if n:
            stats["stripped_syns"] += 1
            stats["options_removed"] += n
            pkt.set_payload(data)
        pkt.accept()

    return run_queue(args.queue_num, on_packet, stats)


def run_queue(queue_num: int, on_packet, stats: dict) -> dict:
    """Serve NFQUEUE `queue_num` with `on_packet` until SIGTERM; returns `stats` (the middlebox's report)."""
    from netfilterqueue import NetfilterQueue

    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
    nfq = NetfilterQueue()
    nfq.bind(queue_num, on_packet)
    print("ready", file=sys.stderr, flush=True)
    try:
        fd = nfq.get_fd()
        while not stop:
            r, _, _ = select.select([fd], [], [], 0.1)
            if r:
                nfq.run(block=False)
    finally:
        nfq.unbind()
    return stats


# --- runner hooks ---------------------------------------------------------------------------------------------------


def _rule(port: int) -> list[str]:
    return ["FORWARD", "-p", "tcp", "-s", CLIENT_IP, "-d", SERVER_IP, "--dport", str(port),
            "--tcp-flags", "SYN,ACK", "SYN", "-j", "NFQUEUE", "--queue-num", str(QUEUE), "--queue-bypass"]


def prepare(ctx: CellContext) -> None:
    start_middlebox(ctx, "downgrade", _rule(ctx.port))


def start_middlebox(ctx: CellContext, attack: str, rule: list[str]) -> None:
    """Queue what iptables `rule` (mangle table) matches on the hub's bridge to `attack`'s middlebox, started in
    the hub's namespace; `finish` collects its report into ctx.extra["middlebox"]."""
    hub = ctx.net[HUB]
    old = hub.run(["sysctl", "-n", SYSCTL], check=False).stdout.strip()
    hub.run(["sysctl", "-qw", f"{SYSCTL}=1"])
    ctx.cleanups.append(lambda: hub.run(["sysctl", "-qw", f"{SYSCTL}={old or 0}"], check=False))
    hub.run(["iptables", "-w", "-t", "mangle", "-A", *rule])
    ctx.cleanups.append(lambda: hub.run(["iptables", "-w", "-t", "mangle", "-D", *rule], check=False))
    mb = hub.popen([sys.executable, "-m", "mptcrypt.attacks.agent", attack, "--role", "middlebox",
                    "--port", str(ctx.port), "--queue-num", str(QUEUE)],
                   stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    ctx.procs.append(mb)
    _wait_ready(mb, f"{attack} middlebox")
    ctx.extra["middlebox_proc"] = mb


def finish(ctx: CellContext) -> None:
    mb = ctx.extra.pop("middlebox_proc", None)
    if mb is None:
        return
    mb.send_signal(signal.SIGTERM)
    try:
        out, _err = mb.communicate(timeout=5)
        ctx.extra["middlebox"] = json.loads(out.strip().splitlines()[-1])
    except Exception as exc:
        ctx.extra["middlebox"] = {"error": f"{type(exc).__name__}: {exc}"}


def attack(agent) -> dict:
    return {}  # the middlebox acts; the attacker host only reads path 1


def judge(ev: Evidence) -> Verdict:
    t = ev.transfer
    mb = ev.extra.get("middlebox") or {}
    got, total, frac = read_fraction(ev)
    rows = {h: ev.conn_sessions(h) for h in ("client", "server")}
    shown = {h: [{"protected": r.get("protected"), "state": r.get("state"), "reason": r.get("reason")}
                 for r in rs] for h, rs in rows.items()}
    evidence = {
        **base_evidence(ev),
        "middlebox": {k: v for k, v in mb.items() if k != "role"},
        "syn_options_on_path1": ev.view.get("syn_options"),
        "records_read_on_path1": f"{got}/{total}",
        "sessions": shown,
    }
    if ev.target == "mptcrypt":
        evidence["refused_policy"] = ev.stat("client", "refused_policy") + ev.stat("server", "refused_policy")
        evidence["fallbacks_plain"] = ev.stat("client", "fallbacks_plain") + ev.stat("server", "fallbacks_plain")
    if mb.get("error") or "syns" not in mb:
        return Verdict(ERROR, f"middlebox failed: {mb.get('error', 'no report')}", evidence)
    if ev.target == "plain":
        if t["connected"] and got:
            return Verdict(EFFECTIVE, f"no mptcrypt to strip: plain connection, attacker read {frac:.0%} of the "
                                      "records", evidence)
        return Verdict(ERROR, "plain connection not readable?", evidence)
    if not mb.get("stripped_syns"):
        return Verdict(ERROR, "the middlebox saw no mptcrypt option to strip", evidence)
    unprotected_shown = all(rs and all(r.get("protected") is False for r in rs) for rs in rows.values())
    if ev.variant == "required":
        if not t["connected"] and not got:
            return Verdict(BLOCKED, f"options stripped; the server refused the SYN ({evidence['refused_policy']}x), "
                                    f"the connection never opened (connect: {t['connect_error']}), never plain",
                           evidence)
        return Verdict(EFFECTIVE, f"policy required, yet the connection ran (read {got} records)", evidence)
    if t["connected"] and unprotected_shown:
        return Verdict(DETECTED, f"options stripped: connection went plain (attacker read {frac:.0%}); "
                                 f"`mptcrypt sessions` shows it unprotected on both hosts", evidence)
    if t["connected"] and got:
        return Verdict(EFFECTIVE, "connection went plain SILENTLY: sessions do not show it unprotected", evidence)
    if t["connected"] and not got and t["intact"]:
        return Verdict(BLOCKED, "options stripped, but the connection was protected anyway", evidence)
    return Verdict(ERROR, f"unexpected: connected={t['connected']} read={got}", evidence)
