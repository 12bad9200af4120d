"""The main job: mptcrypt on an emulated two-path network, shown end to end.

    python -m mptcrypt.demo            (as root; or `make demo` on a fresh machine)

Brings up topologies/two_path.py, starts a daemon on the client and on the server, captures both links, sends
16 MiB over one MPTCP connection (two subflows), then shows: the connection on each host with its two protected
subflows and the same session ID, one public-key handshake per host and zero for the join, what a passive
observer of each link saw (no plaintext), MPTCP's own fallback counters (all 0), and the data's sha256 at both ends.
Everything it created is removed at the end, also on Ctrl-C.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PY = sys.executable
PORT = 5000
MARKER = b"MPTCRYPT-DEMO-PLAINTEXT"
FALLBACKS = ("MPTcpExtMPCapableFallbackACK", "MPTcpExtMPCapableFallbackSYNACK", "MPTcpExtDSSFallback",
             "MPTcpExtMPCapableDataFallback")


def _json(node, what):
    """`mptcrypt sessions|stats --json` in the node's namespace -> its rows / counters."""
    return json.loads(node.run([PY, "-m", "mptcrypt", what, "--json"]).stdout)[what]


def _pcap_summary(path: str, port: int) -> dict:
    """Packets of the connection on one link: how many carry payload, how many a MAC option, marker seen?"""
    from mptcrypt.tools.pcap import tcp_packets

    data = Path(path).read_bytes()
    out = {"packets": 0, "with_payload": 0, "with_mac": 0, "unprotected_data": 0, "marker_seen": MARKER in data}
    for _ip, hdr, payload in tcp_packets(data):
        if port not in (hdr.sport, hdr.dport):
            continue
        mac = hdr.options[-12:-8] == bytes.fromhex("fd0c4d50")
        out["packets"] += 1
        out["with_payload"] += bool(payload)
        out["with_mac"] += mac
        # a data segment without a MAC would be a leak; INIT1/INIT2 (payload "MPTC...") are the only exception
        out["unprotected_data"] += bool(payload) and not mac and not payload.startswith(b"MPTC")
    return out


def run(nbytes: int, console) -> int:
    from mptcrypt.topo.daemons import spawn_in_netns, stop
    from mptcrypt.topo import Net, load_topo, mptcp_counters

    topo, *_ = load_topo(str(REPO / "topologies" / "two_path.py"))
    tmp = tempfile.mkdtemp(prefix="mptcrypt-demo-")
    daemons, caps = [], []
    ok = True
    with Net(topo) as net:
        try:
            console.rule("[bold]1. two hosts, two disjoint paths")
            console.print("client 10.0.1.2 / 10.0.2.2  <->  server 10.0.1.1 / 10.0.2.1   (namespaces mptc-client, "
                          "mptc-server)")
            console.rule("[bold]2. mptcrypt daemons on both hosts")
            for host in ("client", "server"):
                daemons.append(spawn_in_netns(f"mptc-{host}", "--ports", str(PORT)))
                console.print(f"  {host}: " + net[host].run([PY, "-m", "mptcrypt", "status"], check=False).stdout.strip())
            before = {h: mptcp_counters(net[h]) for h in ("client", "server")}
            for intf in ("s-eth0", "s-eth1"):
                caps.append((intf, f"{tmp}/{intf}.pcap", net["server"].popen(
                    ["tcpdump", "-i", intf, "-U", "-s", "0", "-w", f"{tmp}/{intf}.pcap", "tcp"],
                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)))
            time.sleep(0.5)
            console.rule(f"[bold]3. one MPTCP connection, {nbytes >> 20} MiB client -> server")
            sink = net["server"].popen([PY, "-m", "mptcrypt.traffic", "sink", "--port", str(PORT), "--mptcp"],
                                       stdout=subprocess.PIPE, text=True)
            sink.stdout.readline()
            source = net["client"].popen([PY, "-m", "mptcrypt.traffic", "source", "--to", f"10.0.1.1:{PORT}",
                                          "--bytes", str(nbytes), "--mptcp", "--marker", MARKER.decode()],
                                         stdout=subprocess.PIPE, text=True)
            snapshot = {}
            while source.poll() is None:
                rows = {h: [r for r in _json(net[h], "sessions") if r.get("mptcp")] for h in ("client", "server")}
                if all(rows.values()) and all(len(r[0]["subflows"]) >= 2 for r in rows.values()):
                    snapshot = rows
                time.sleep(0.2)
            sent = json.loads(source.stdout.read().strip().splitlines()[-1])
            got = json.loads(sink.stdout.readline())
            sink.wait(timeout=10)
            for _intf, _path, proc in caps:
                proc.terminate()
                proc.wait(timeout=10)
            _show_sessions(console, snapshot)
            stats = {h: _json(net[h], "stats") for h in ("client", "server")}
            ok &= _show_checks(console, net, sent, got, stats, before, caps, mptcp_counters)
        finally:
            for proc in daemons:
                stop(proc, remove_log=True)
            for _intf, path, proc in caps:
                if proc.poll() is None:
                    proc.kill()
                if os.path.exists(path):
                    os.unlink(path)
            os.rmdir(tmp)
    console.rule("[bold]done: network and daemons removed" + ("" if ok else " [red](some checks FAILED)"))
    return 0 if ok else 1


def _show_sessions(console, snapshot) -> None:
    from rich.table import Table

    console.rule("[bold]4. the connection as each host's daemon sees it (`mptcrypt sessions`)")
    for host, rows in snapshot.items():
        t = Table(title=f"{host}", show_lines=False)
        for col in ("subflow", "local", "remote", "kind", "key index", "state"):
            t.add_column(col)
        conn = rows[0]
        for n, s in enumerate(conn["subflows"]):
            t.add_row(str(n + 1), s["local"], s["remote"], s["kind"], str(s["index"]), s["state"])
        console.print(t)
        console.print(f"  session ID  [bold cyan]{conn['sid']}[/]   ciphers {conn['pub_cipher']} + {conn['sym_cipher']}")


def _show_checks(console, net, sent, got, stats, before, caps, mptcp_counters) -> bool:
    from rich.table import Table

    console.rule("[bold]5. what was verified")
    t = Table(show_header=True)
    t.add_column("check")
    t.add_column("result")
    t.add_column("ok")
    results = []

    def check(name, value, good):
        results.append(good)
        t.add_row(name, str(value), "[green]yes[/]" if good else "[red]NO[/]")

    check("data sha256 equal at both ends", f"{got['sha256'][:16]}… ({got['bytes']} bytes)",
          got["sha256"] == sent["sha256"] and got["bytes"] == sent["bytes"])
    check("same session ID at both ends", (sent["sid"] or "none")[:32] + "…", bool(sent["sid"]) and sent["sid"] == got["sid"])
    for h in ("client", "server"):
        s = stats[h]
        check(f"{h}: public-key operations (handshake / joins)", f"{s['pk_ops']} / 0 of {s['joins_protected']} joins",
              s["pk_ops"] == 1 and s["joins_protected"] >= 1 and s["joins_zero_pk"] == s["joins_protected"])
        check(f"{h}: MAC failures, segments protected", f"{s['mac_failures']}, {s['segments_protected']}",
              s["mac_failures"] == 0 and s["segments_protected"] > 0)
        after = mptcp_counters(net[h])
        moved = {k: after.get(k, 0) - before[h].get(k, 0) for k in FALLBACKS}
        check(f"{h}: MPTCP fallback counters", ", ".join(f"{k[8:]}={v}" for k, v in moved.items()),
              not any(moved.values()))
    for intf, path, _proc in caps:
        summ = _pcap_summary(path, PORT)
        check(f"observer on {intf}: marker seen / packets / with MAC / data without MAC",
              f"{summ['marker_seen']} / {summ['packets']} / {summ['with_mac']} / {summ['unprotected_data']}",
              not summ["marker_seen"] and summ["with_payload"] > 0 and summ["unprotected_data"] == 0)
    console.print(t)
    return all(results)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m mptcrypt.demo", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--mib", type=int, default=16, help="MiB to send (default 16)")
    args = p.parse_args(argv)
    if os.geteuid() != 0:
        print("mptcrypt demo: needs root (network namespaces, iptables): run it as root", file=sys.stderr)
        return 77
    from rich.console import Console

    return run(args.mib << 20, Console())


if __name__ == "__main__":
    sys.exit(main())
