"""Throughput, connection rate and join latency: plain TCP/MPTCP vs mptcrypt, same topology, same run.

    sudo .venv/bin/python bench/bench_throughput.py [--trials 3] [--mib 64] [--conns 200] [--json out.json]

Cases (topologies/two_path.py, medians of --trials, trials of all cases interleaved so machine noise spreads):
  bulk Mbit/s     TCP one path, MPTCP two subflows: plain vs mptcrypt
  connections/s   sequential connect + 1 KiB + close: plain, mptcrypt fresh (--no-resume), mptcrypt resumed
  join latency    MPTCP connect -> second subflow established (MPTCP_INFO subflows), plain vs mptcrypt
Prints a table and one JSON object (also written to --json). Not a test: nothing here asserts a speed.
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


def bulk(net, port, nbytes, mptcp) -> float:
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
    return got["mbps"]


def client_script(net, n, proto, mode) -> dict:
    out = net["client"].run([PY, "-c", CONN_CLIENT, str(n), str(proto), mode], timeout=600).stdout
    return json.loads(out.strip().splitlines()[-1])


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--trials", type=int, default=3)
    p.add_argument("--mib", type=int, default=64)
    p.add_argument("--conns", type=int, default=200)
    p.add_argument("--joins", type=int, default=30)
    p.add_argument("--json", metavar="FILE")
    args = p.parse_args(argv)
    if os.geteuid() != 0:
        print("needs root", file=sys.stderr)
        return 77
    from mptcrypt.daemon.main import spawn_in_netns, stop
    from mptcrypt.topo import Net, load_topo

    topo, *_ = load_topo(str(REPO / "topologies" / "two_path.py"))
    samples: dict[str, list[float]] = {}
    joins: dict[str, list[float]] = {}

    def add(name, value):
        samples.setdefault(name, []).append(value)

    with Net(topo, state_file=None, lock_timeout=1200) as net:
        for trial in range(args.trials):
            for mode in ("plain", "mptcrypt", "mptcrypt-fresh"):
                daemons = []
                try:
                    if mode != "plain":
                        extra = ["--no-resume"] if mode == "mptcrypt-fresh" else []
                        daemons = [spawn_in_netns(f"mptc-{h}", "--ports", "5000-5200", *extra) for h in ("client", "server")]
                    label = "mptcrypt" if mode != "plain" else "plain"
                    if mode != "mptcrypt-fresh":
                        add(f"bulk TCP Mbit/s ({label})", bulk(net, 5001, args.mib << 20, mptcp=False))
                        add(f"bulk MPTCP 2 subflows Mbit/s ({label})", bulk(net, 5002, args.mib << 20, mptcp=True))
                    for proto, pname in ((0, "TCP"), (262, "MPTCP")):
                        echo = net["server"].popen([PY, "-c", ECHO_SERVER, str(proto)], stdout=subprocess.PIPE, text=True)
                        echo.stdout.readline()
                        try:
                            kind = {"plain": "plain", "mptcrypt": "mptcrypt resumed", "mptcrypt-fresh": "mptcrypt fresh"}[mode]
                            if mode == "mptcrypt":  # one full handshake first, so the rest resume
                                client_script(net, 1, proto, "conns")
                            add(f"{pname} connections/s ({kind})", client_script(net, args.conns, proto, "conns")["rate"])
                            if proto == 262:
                                got = client_script(net, args.joins, proto, "joins")
                                joins.setdefault(kind, []).extend(got["join_ms"])
                                add(f"joins not established within 2 s ({kind})", got["missing"])
                        finally:
                            echo.kill()
                            echo.wait()
                finally:
                    for d in daemons:
                        stop(d, remove_log=True)
    result = {name: {"median": round(statistics.median(v), 1), "samples": [round(x, 1) for x in v]}
              for name, v in samples.items()}
    for label, lat in joins.items():
        if lat:
            result[f"connect to join established, ms p50 ({label})"] = {
                "median": round(statistics.median(lat), 3), "samples": len(lat)}
    result["_meta"] = {"trials": args.trials, "mib": args.mib, "conns": args.conns, "cpus": os.cpu_count(),
                       "when": time.strftime("%Y-%m-%d %H:%M:%S")}
    print(json.dumps(result))
    try:
        from rich.console import Console
        from rich.table import Table

        t = Table(title=f"mptcrypt benchmark (medians of {args.trials} trials, two_path topology)")
        t.add_column("case")
        t.add_column("median", justify="right")
        t.add_column("samples")
        for name, v in result.items():
            if not name.startswith("_"):
                t.add_row(name, str(v["median"]), str(v["samples"]))
        Console().print(t)
    except ImportError:
        pass
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
