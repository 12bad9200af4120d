"""Throughput, connection rate and join latency: plain TCP/MPTCP vs mptcrypt, same topology, same run.

    sudo .venv/bin/python bench/bench_throughput.py [--trials 3] [--mib 64] [--conns 200] [--json out.json]
        [--backends netfilterqueue,batched] [--iperf-seconds 3] [--workers 1,2]

Cases (topologies/two_path.py, medians of --trials, trials of all cases interleaved so machine noise spreads):
  bulk Mbit/s     TCP one path, MPTCP two subflows, with the own traffic tool and with iperf3 (`mptcpize run`
                  for MPTCP): plain vs mptcrypt with each queue backend
  connections/s   sequential connect + 1 KiB + close: plain, mptcrypt fresh (--no-resume), mptcrypt resumed
  join latency    MPTCP connect -> second subflow established (MPTCP_INFO subflows), plain vs mptcrypt
Every mptcrypt figure is also given as a ratio to plain from the same run; bulk cases add each daemon's CPU
seconds per GB moved and packets/s through its queue, and the table says which queue backend and segment path
the daemons ran (from their start-up log). `--workers 1,2` runs mptcrypt with each worker count on both daemons
(`mptcrypt daemon --workers N`; modes "... xN workers"); the kernel spreads flows over workers by address pair, so
one TCP connection, and every connection of the connection-rate cases (one address pair), stays on one worker;
the two subflows of the MPTCP case land on different workers when their pairs hash apart. Prints a table and one
JSON object (also written to --json). Not a test: nothing here asserts a speed.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
PY = sys.executable

CONN_CLIENT = r"""
import socket, sys, time, json
n, proto, mode = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
payload = b"x" * 1024
if mode == "conns":
    t = time.perf_counter()
    for i in range(n):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM, proto)
        s.connect(("10.0.1.1", 5100))
        s.sendall(payload)
        s.recv(1024)
        s.close()
    print(json.dumps({"rate": n / (time.perf_counter() - t)}))
else:  # join latency: connect and exchange 1 KiB (Linux opens joins once the connection is fully established,
    # i.e. the client heard from the server), then poll MPTCP_INFO until the extra subflow is established
    SOL_MPTCP, MPTCP_INFO = 284, 1
    lat, missing = [], 0
    for i in range(n):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM, 262)
        s.settimeout(10)
        t = time.perf_counter()
        s.connect(("10.0.1.1", 5100))
        s.sendall(payload)
        s.recv(1024)
        while time.perf_counter() - t < 2:
            if s.getsockopt(SOL_MPTCP, MPTCP_INFO, 64)[0] >= 1:  # mptcpi_subflows: established extra subflows
                lat.append((time.perf_counter() - t) * 1e3)
                break
        else:
            missing += 1
        s.close()
    print(json.dumps({"join_ms": lat, "missing": missing}))
"""

ECHO_SERVER = r"""
import socket, sys, threading
proto = int(sys.argv[1])
srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM, proto)
srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
srv.bind(("0.0.0.0", 5100)); srv.listen(512)
print("ready", flush=True)
while True:  # echo until the client closes (keeps MPTCP connections open long enough for their joins)
    c, _ = srv.accept()
    c.settimeout(10)
    try:
        while True:
            d = c.recv(2048)
            if not d:
                break
            c.sendall(d)
    except OSError:
        pass
    c.close()
"""


def bulk(net, port, nbytes, mptcp) -> tuple[float, int]:
    """The own traffic tool: (Mbit/s, bytes) of one transfer of `nbytes`, checked end to end."""
    sink = net["server"].popen([PY, "-m", "mptcrypt.traffic", "sink", "--port", str(port)] + (["--mptcp"] if mptcp else []),
                               stdout=subprocess.PIPE, text=True)
    sink.stdout.readline()
    out = net["client"].run([PY, "-m", "mptcrypt.traffic", "source", "--to", f"10.0.1.1:{port}", "--bytes",
                             str(nbytes)] + (["--mptcp"] if mptcp else []), timeout=300).stdout
    got = json.loads(sink.stdout.readline())
    sink.wait(timeout=10)
    sent = json.loads(out.strip().splitlines()[-1])
    if got["sha256"] != sent["sha256"]:
        raise RuntimeError("bulk transfer corrupted")
    return got["mbps"], nbytes


def iperf(net, port, seconds, mptcp) -> tuple[float, int]:
    """iperf3 (under `mptcpize run` for MPTCP): (Mbit/s received, bytes) of one `seconds`-long run."""
    wrap = ["mptcpize", "run"] if mptcp else []
    server = net["server"].popen([*wrap, "iperf3", "-s", "-1", "-p", str(port)], stdout=subprocess.DEVNULL,
                                 stderr=subprocess.DEVNULL)
    try:
        for _ in range(100):  # until it listens
            if f":{port} " in net["server"].run(["ss", "-Hltn"]).stdout:
                break
            time.sleep(0.05)
        out = net["client"].run([*wrap, "iperf3", "-c", "10.0.1.1", "-p", str(port), "-t", str(seconds), "-J"],
                                timeout=seconds + 60).stdout
    finally:
        server.wait(timeout=30)
    end = json.loads(out)["end"]["sum_received"]
    return end["bits_per_second"] / 1e6, int(end["bytes"])


def daemon_cpu(pid: int) -> float:
    """utime + stime of process `pid` and its live children (--workers), in seconds (/proc; pids are shared
    across network namespaces)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    own = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    return own + sum(daemon_cpu(int(child)) for child in children)


def measured(net, daemons, run) -> dict:
    """`run()` -> (Mbit/s, bytes), with each daemon's CPU s/GB and queue packets/s over it."""
    hosts = ("client", "server")
    before = [(daemon_cpu(d.pid), queue_packets(net, h)) for d, h in zip(daemons, hosts)]
    t0 = time.monotonic()
    mbps, nbytes = run()
    elapsed = time.monotonic() - t0
    out = {"mbps": mbps}
    for (cpu0, pk0), d, h in zip(before, daemons, hosts):
        out[f"cpu_s_per_gb_{h}"] = (daemon_cpu(d.pid) - cpu0) / (nbytes / 1e9)
        out[f"packets_per_s_{h}"] = (queue_packets(net, h) - pk0) / elapsed
    return out


def queue_packets(net, host) -> int:
    return json.loads(net[host].run([PY, "-m", "mptcrypt", "stats", "--json"]).stdout)["stats"].get("nfq_packets", 0)


def paths_used(daemons) -> str:
    """'fast path: on|off; queue backend: ...; segment path: ...' as the daemons logged them at start."""
    from mptcrypt.topo.daemons import daemon_log
    found = set()
    for d in daemons:
        for line in daemon_log(d).splitlines():
            for key in ("queue backend: ", "segment path: ", "fast path: "):
                if key in line:
                    found.add(key + line.split(key, 1)[1].split(" (")[0].split(":")[0])
    return "; ".join(sorted(found))


def client_script(net, n, proto, mode) -> dict:
    out = net["client"].run([PY, "-c", CONN_CLIENT, str(n), str(proto), mode], timeout=600).stdout
    return json.loads(out.strip().splitlines()[-1])


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--trials", type=int, default=3)
    p.add_argument("--mib", type=int, default=64)
    p.add_argument("--conns", type=int, default=200)
    p.add_argument("--joins", type=int, default=30)
    p.add_argument("--backends", default="netfilterqueue,batched", help="queue backends to run mptcrypt with")
    p.add_argument("--iperf-seconds", type=int, default=3)
    p.add_argument("--workers", default="1", help="worker counts to run mptcrypt with, e.g. 1,2 (daemon --workers)")
    p.add_argument("--json", metavar="FILE")
    args = p.parse_args(argv)
    if os.geteuid() != 0:
        print("needs root", file=sys.stderr)
        return 77
    from mptcrypt.topo.daemons import spawn_in_netns, stop
    from mptcrypt.topo import Net, load_topo

    topo, *_ = load_topo(str(REPO / "topologies" / "two_path.py"))
    samples: dict[tuple[str, str], list[float]] = {}
    extra_samples: dict[tuple[str, str], list[dict]] = {}
    joins: dict[str, list[float]] = {}
    used: dict[str, str] = {}
    backends = args.backends.split(",")
    counts = [int(w) for w in args.workers.split(",")]
    modes = ["plain"] + [f"mptcrypt {b}" + (f" x{w} workers" if w > 1 else "") for b in backends for w in counts]
    modes += ["mptcrypt fresh"] + [f"mptcrypt fresh x{w} workers" for w in counts if w > 1]

    def add(case, mode, value, extra=None):
        samples.setdefault((case, mode), []).append(value)
        if extra:
            extra_samples.setdefault((case, mode), []).append(extra)

    with Net(topo, state_file=None, lock_timeout=1200) as net:
        for trial in range(args.trials):
            for mode in modes:
                daemons = []
                try:
                    if mode != "plain":
                        fresh = mode.startswith("mptcrypt fresh")
                        backend = backends[0] if fresh else mode.split()[1]
                        extra = ["--no-resume"] if fresh else []
                        if mode.endswith(" workers"):
                            extra += ["--workers", mode.split(" x")[1].split()[0]]
                        daemons = [spawn_in_netns(f"mptc-{h}", "--ports", "5000-5200", "--queue-backend", backend,
                                                  *extra) for h in ("client", "server")]
                        used[mode] = paths_used(daemons)
                    if not mode.startswith("mptcrypt fresh"):
                        cases = [("bulk TCP Mbit/s (own tool)", lambda: bulk(net, 5001, args.mib << 20, False)),
                                 ("bulk MPTCP 2 subflows Mbit/s (own tool)", lambda: bulk(net, 5002, args.mib << 20, True)),
                                 ("bulk TCP Mbit/s (iperf3)", lambda: iperf(net, 5003, args.iperf_seconds, False)),
                                 ("bulk MPTCP 2 subflows Mbit/s (iperf3 + mptcpize)",
                                  lambda: iperf(net, 5004, args.iperf_seconds, True))]
                        for case, run in cases:
                            if daemons:
                                m = measured(net, daemons, run)
                                add(case, mode, m.pop("mbps"), m)
                            else:
                                add(case, mode, run()[0])
                    for proto, pname in ((0, "TCP"), (262, "MPTCP")):
                        echo = net["server"].popen([PY, "-c", ECHO_SERVER, str(proto)], stdout=subprocess.PIPE, text=True)
                        echo.stdout.readline()
                        try:
                            kind = "fresh" if mode.startswith("mptcrypt fresh") else "resumed" if daemons else "plain"
                            if kind == "resumed":  # one full handshake first, so the rest resume
                                client_script(net, 1, proto, "conns")
                            add(f"{pname} connections/s ({kind})", mode,
                                client_script(net, args.conns, proto, "conns")["rate"])
                            if proto == 262:
                                got = client_script(net, args.joins, proto, "joins")
                                joins.setdefault(mode, []).extend(got["join_ms"])
                                add("joins not established within 2 s", mode, got["missing"])
                        finally:
                            echo.kill()
                            echo.wait()
                finally:
                    for d in daemons:
                        stop(d, remove_log=True)
    for mode, lat in joins.items():
        if lat:
            samples[("connect to join established, ms p50", mode)] = [statistics.median(lat)]
    rows = []
    for (case, mode), values in samples.items():
        plain = samples.get((case.replace("(fresh)", "(plain)").replace("(resumed)", "(plain)"), "plain"))
        row = {"case": case, "mode": mode, "median": round(statistics.median(values), 3),
               "samples": [round(x, 3) for x in values], "paths": used.get(mode, "")}
        if plain and mode != "plain" and statistics.median(plain):
            row["ratio_to_plain"] = round(statistics.median(values) / statistics.median(plain), 4)
        for key in ("cpu_s_per_gb_client", "cpu_s_per_gb_server", "packets_per_s_client", "packets_per_s_server"):
            got = [e[key] for e in extra_samples.get((case, mode), [])]
            if got:
                row[key] = round(statistics.median(got), 2)
        rows.append(row)
    result = {"rows": rows, "paths": used,
              "_meta": {"trials": args.trials, "mib": args.mib, "conns": args.conns, "iperf_seconds": args.iperf_seconds,
                        "cpus": os.cpu_count(), "when": time.strftime("%Y-%m-%d %H:%M:%S")}}
    print(json.dumps(result))
    print(table(result))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))
    return 0


def table(result: dict) -> str:
    """Markdown: one row per case and mode, with the ratio to plain and the daemons' cost."""
    lines = [f"mptcrypt benchmark (medians of {result['_meta']['trials']} trials, two_path topology)", "",
             "| case | mode | median | x plain | daemon CPU s/GB client / server | queue pkt/s client / server |",
             "|---|---|---|---|---|---|"]
    for r in result["rows"]:
        cpu = (f"{r['cpu_s_per_gb_client']:.1f} / {r['cpu_s_per_gb_server']:.1f}"
               if "cpu_s_per_gb_client" in r else "")
        pps = (f"{r['packets_per_s_client']:,.0f} / {r['packets_per_s_server']:,.0f}"
               if "packets_per_s_client" in r else "")
        ratio = f"{r['ratio_to_plain']:.3f}" if "ratio_to_plain" in r else ""
        lines.append(f"| {r['case']} | {r['mode']} | {r['median']:,.1f} | {ratio} | {cpu} | {pps} |")
    lines += ["", "paths: " + "; ".join(f"{m}: {p}" for m, p in result["paths"].items())]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
