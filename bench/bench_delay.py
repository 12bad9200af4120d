"""Fidelity of link delay emulation (netem, or the user-space delay line without it): requested vs measured.

    sudo .venv/bin/python bench/bench_delay.py [--delays 1,10,40] [--jitters 0,5] [--bw 50] [--seconds 3] [--json F]

One link client <-> server shaped to `--bw` Mbit/s with the requested delay/jitter per direction. For each
setting, idle and while a TCP flow fills the link (iperf3 client -> server):
  - `ping/2`: one-way delay estimated as ping RTT / 2 (`ping -U`: user-space times). Under load this includes
    the queueing delay of the shaper (tbf) in front of the link, which is the link's real behaviour, not an error
    of the delay line;
  - `capture`: one-way delay of each ICMP echo request from a capture on the sender's interface (after its shaper)
    to a capture on the receiver's interface, matched by ICMP id/seq: the delay line alone;
  - error = measured - requested, p50 / p99 (ms), and the TCP goodput through the link vs its bw.
A last row measures the ceiling: TCP through a 10 ms line with bw 1000 (tbf segments GSO: one frame per MTU
packet) and with no bw at all (GSO super-frames). Prints a table and JSON. Numbers come from a shared 2-vCPU VM.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from mptcrypt.topo import Net, Topo  # noqa: E402

PORT = 5201


class Pair(Topo):
    def build(self, bw=50, delay="10ms", jitter="0ms"):
        self.addHost("client")
        self.addHost("server")
        self.addLink("client", "server", intfName1="c-eth0", intfName2="s-eth0", bw=bw, delay=delay, jitter=jitter,
                     params1={"ip": "10.9.1.2/24"}, params2={"ip": "10.9.1.1/24"})


def pct(values: list[float], q: float) -> float | None:
    if not values:
        return None
    s = sorted(values)
    return s[min(len(s) - 1, int(round(q * (len(s) - 1))))]


def ping_one_way(net: Net, count: int, interval: float) -> list[float]:
    out = net["client"].run(["ping", "-n", "-U", "-c", str(count), "-i", str(interval), "-W", "2", "10.9.1.1"],
                            check=False, timeout=count * interval + 20).stdout
    return [float(m) / 2 for m in re.findall(r"time=([\d.]+) ms", out)][1:]  # the first one also waits for ARP


def _icmp_times(path: str) -> dict[tuple[str, str], float]:
    out = subprocess.run(["tcpdump", "-tt", "-n", "-r", path, "icmp[icmptype] == icmp-echo"], capture_output=True,
                         text=True).stdout
    times = {}
    for line in out.splitlines():
        m = re.match(r"([\d.]+) .* id (\d+), seq (\d+)", line)
        if m:
            times[(m.group(2), m.group(3))] = float(m.group(1))
    return times


class Captures:
    """tcpdump of ICMP on the sender's and the receiver's interface."""

    def __init__(self, net: Net, tmp: str):
        self.paths, self.procs = [], []
        for host, intf in (("client", "c-eth0"), ("server", "s-eth0")):
            path = os.path.join(tmp, f"{host}.pcap")
            proc = net[host].popen(["tcpdump", "-i", intf, "-U", "--immediate-mode", "-n", "-s", "96", "-w", path, "icmp"],
                                   stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
            assert "listening on" in proc.stderr.readline()
            self.paths.append(path)
            self.procs.append(proc)

    def one_way_ms(self) -> list[float]:
        for proc in self.procs:
            proc.terminate()
            proc.wait(timeout=10)
        sent, got = (_icmp_times(p) for p in self.paths)
        return [(got[k] - t) * 1000 for k, t in sent.items() if k in got]


def iperf(net: Net, seconds: float) -> tuple[subprocess.Popen, subprocess.Popen]:
    server = net["server"].popen(["iperf3", "-s", "-1", "-B", "10.9.1.1", "-p", str(PORT)],
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 10
    while not net["server"].run(["ss", "-Hltn", f"sport = :{PORT}"]).stdout.strip():  # listening: ready
        assert time.monotonic() < deadline and server.poll() is None, "iperf3 -s did not start"
        time.sleep(0.02)
    client = net["client"].popen(["iperf3", "-c", "10.9.1.1", "-p", str(PORT), "-t", str(seconds), "-J"],
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    return server, client


def iperf_mbps(server: subprocess.Popen, client: subprocess.Popen, seconds: float) -> float | None:
    out, _ = client.communicate(timeout=seconds + 30)
    server.wait(timeout=10)
    try:
        return json.loads(out)["end"]["sum_received"]["bits_per_second"] / 1e6
    except (ValueError, KeyError):
        return None


def measure(delay_ms: float, jitter_ms: float, bw: float | None, seconds: float, pings: int) -> dict:
    row: dict = {"delay_ms": delay_ms, "jitter_ms": jitter_ms, "bw": bw}
    with Net(Pair(bw=bw, delay=f"{delay_ms}ms", jitter=f"{jitter_ms}ms"), state_file=None) as net, \
            tempfile.TemporaryDirectory(prefix="mptc-bench-delay-") as tmp:
        row["emulation"] = "netem" if net._netem else "delay line"
        for phase in ("idle", "loaded"):
            flow = iperf(net, seconds) if phase == "loaded" else None
            if flow:
                time.sleep(min(1.0, seconds / 3))  # let the flow reach the link's rate
            caps = Captures(net, tmp)
            ping = ping_one_way(net, pings, 0.02)
            cap = caps.one_way_ms()
            row[phase] = {
                "ping_p50_err": _err(ping, delay_ms, 0.5), "ping_p99_err": _err(ping, delay_ms, 0.99),
                "cap_p50_err": _err(cap, delay_ms, 0.5), "cap_p99_err": _err(cap, delay_ms, 0.99),
                "cap_spread": (max(cap) - min(cap)) if cap else None, "samples": [len(ping), len(cap)],
            }
            if flow:
                row["tcp_mbps"] = iperf_mbps(*flow, seconds)
        stats = net.delay_line_stats("client", "c-eth0")
        if stats:
            row["line"] = stats
    return row


def _err(values: list[float], requested: float, q: float) -> float | None:
    v = pct(values, q)
    return None if v is None else round(v - requested, 3)


def ceiling(seconds: float) -> list[dict]:
    rows = []
    for bw in (1000, None):
        with Net(Pair(bw=bw, delay="10ms"), state_file=None) as net:
            mbps = iperf_mbps(*iperf(net, seconds), seconds)
            stats = net.delay_line_stats("client", "c-eth0") or {}
            rows.append({"bw": bw, "delay_ms": 10, "tcp_mbps": mbps, "line": stats})
    return rows


def fmt(v, nd=2) -> str:
    return "-" if v is None else f"{v:.{nd}f}"


def table(rows: list[dict], ceil: list[dict]) -> str:
    head = ("| delay | jitter | idle ping/2 err p50 / p99 | idle capture err p50 / p99 | loaded ping/2 err p50 / p99 "
            "| loaded capture err p50 / p99 | capture spread idle | TCP Mbit/s (bw) |")
    lines = [head, "|" + "---|" * 8]
    for r in rows:
        i, lo = r["idle"], r["loaded"]
        lines.append(
            f"| {r['delay_ms']:g} ms | {r['jitter_ms']:g} ms | {fmt(i['ping_p50_err'])} / {fmt(i['ping_p99_err'])} "
            f"| {fmt(i['cap_p50_err'])} / {fmt(i['cap_p99_err'])} | {fmt(lo['ping_p50_err'])} / {fmt(lo['ping_p99_err'])} "
            f"| {fmt(lo['cap_p50_err'])} / {fmt(lo['cap_p99_err'])} | {fmt(i['cap_spread'])} "
            f"| {fmt(r.get('tcp_mbps'), 1)} ({r['bw']:g}) |"
        )
    for c in ceil:
        lines.append(f"| ceiling, 10 ms, bw {c['bw'] or 'none'} | | | | | | | {fmt(c['tcp_mbps'], 0)} |")
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--delays", default="1,10,40", help="one-way delays (ms)")
    ap.add_argument("--jitters", default="0,5", help="jitters (ms)")
    ap.add_argument("--bw", type=float, default=50.0, help="link rate (Mbit/s)")
    ap.add_argument("--seconds", type=float, default=3.0, help="length of each loaded phase")
    ap.add_argument("--pings", type=int, default=40)
    ap.add_argument("--no-ceiling", action="store_true")
    ap.add_argument("--json", help="also write the JSON here")
    args = ap.parse_args()
    rows = [measure(float(d), float(j), args.bw, args.seconds, args.pings)
            for d in args.delays.split(",") for j in args.jitters.split(",")]
    ceil = [] if args.no_ceiling else ceiling(args.seconds)
    result = {"rows": rows, "ceiling": ceil}
    print(json.dumps(result))
    print(table(rows, ceil))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
