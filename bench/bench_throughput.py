"""Throughput, connection rate and join latency: plain TCP/MPTCP vs mptcrypt, same topology, same run.

    sudo .venv/bin/python bench/bench_throughput.py [--quick] [--trials 3] [--mib 64] [--conns 200] [--json out.json]
        [--backends netfilterqueue,batched] [--iperf-seconds 3] [--flows 100000] [--workers 1,2]

`make bench` runs this: every target of issue 14 beside plain, in one run (default ~4 min on the 2-vCPU VM, of
which ~1.5 min in memory; `--quick` ~1 min: one trial, smaller transfers and fewer connections, 20,000 flows).
Run it under the lab's lock when other lab runs may be going: `flock /tmp/mptc-itest.lock make bench`.

Cases (topologies/two_path.py, medians of --trials, trials of all cases interleaved so machine noise spreads):
  bulk Mbit/s     TCP one path, MPTCP two subflows, with the own traffic tool and with iperf3 (`mptcpize run`
                  for MPTCP): plain vs mptcrypt with each queue backend
  connections/s   sequential connect + 1 KiB + close: plain, mptcrypt fresh (--no-resume, default queue backend),
                  mptcrypt resumed; with each daemon's CPU µs per connection (/proc, 10 ms ticks: coarse at --quick)
  join latency    MPTCP connect -> the join subflow ESTABLISHED at the client (MPTCP_TCPINFO: the state of each
                  subflow; MPTCP_INFO's subflow count rises when the join SYN is sent, not when it is answered)
  daemon memory   RSS growth of the server daemon per flow it tracks over the connections/s run
  in memory       (no namespaces) per-segment protect/verify 1448 B, Python and compiled (bench_segment.py);
                  engine µs per connection setup (bench_setup.py); bytes per protected connection and per-packet
                  cost with 10 vs --flows tracked connections (bench_memory.py)
A last table gives each issue 14 target with the measured value and met / not met.
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
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))
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
    # i.e. the client heard from the server), then poll MPTCP_TCPINFO until a second subflow is ESTABLISHED
    import ctypes, struct
    SOL_MPTCP, MPTCP_TCPINFO, TCP_ESTABLISHED, INFO = 284, 2, 1, 8  # INFO: bytes of tcp_info per subflow
    libc = ctypes.CDLL(None, use_errno=True)

    def established(s):  # struct mptcp_subflow_data {size_subflow_data, num_subflows, size_kernel, size_user}
        buf = ctypes.create_string_buffer(struct.pack("IIII", 16, 0, 0, INFO) + bytes(INFO * 8))
        size = ctypes.c_uint32(len(buf))
        if libc.getsockopt(s.fileno(), SOL_MPTCP, MPTCP_TCPINFO, buf, ctypes.byref(size)):
            raise OSError(ctypes.get_errno(), "getsockopt(MPTCP_TCPINFO)")
        head, num, _, user = struct.unpack_from("IIII", buf.raw)
        return sum(buf.raw[head + i * user] == TCP_ESTABLISHED for i in range(min(num, 8)))

    lat, missing = [], 0
    for i in range(n):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM, 262)
        s.settimeout(10)
        t = time.perf_counter()
        s.connect(("10.0.1.1", 5100))
        s.sendall(payload)
        s.recv(1024)
        while time.perf_counter() - t < 2:
            if established(s) >= 2:
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


def tracked_flows(net, host) -> int:
    return json.loads(net[host].run([PY, "-m", "mptcrypt", "stats", "--json"]).stdout)["stats"].get("flows", 0)


def daemon_rss(pid: int) -> int:
    """Resident set size of process `pid`, in bytes."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def connections(net, daemons, n, proto) -> tuple[float, dict]:
    """connections/s of `n` sequential connections, with each daemon's CPU µs per connection and the server
    daemon's RSS growth per flow it tracks (closed flows linger `closed_linger`, 10 s: they are all still there)."""
    if not daemons:
        return client_script(net, n, proto, "conns")["rate"], {}
    server = daemons[1]
    cpu0 = [daemon_cpu(d.pid) for d in daemons]
    rss0, flows0 = daemon_rss(server.pid), tracked_flows(net, "server")
    rate = client_script(net, n, proto, "conns")["rate"]
    extra = {f"cpu_us_per_conn_{h}": (daemon_cpu(d.pid) - c) / n * 1e6
             for d, c, h in zip(daemons, cpu0, ("client", "server"))}
    flows = tracked_flows(net, "server") - flows0
    if flows > 0:
        extra["daemon_rss_bytes_per_flow"] = (daemon_rss(server.pid) - rss0) / flows
    return rate, extra


def in_memory(args) -> dict:
    """The benchmarks without namespaces, each in its own process (the 100k-flow case holds ~1 GB while it runs)."""
    runs = {"segment": ["bench_segment.py", "--n", "3000" if args.quick else "10000"],
            "setup": ["bench_setup.py", "--conns", "100" if args.quick else "300"],
            "memory": ["bench_memory.py", "--flows", str(args.flows), "--sample", "500" if args.quick else "2000"]}
    out = {}
    with tempfile.TemporaryDirectory(prefix="mptc-bench-") as tmp:
        for name, (script, *rest) in runs.items():
            path = Path(tmp) / f"{name}.json"
            run = subprocess.run([PY, str(REPO / "bench" / script), *rest, "--json", str(path)],
                                 stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, cwd=REPO)
            if run.returncode:  # the namespace results are not lost over it; the table says what failed
                out[name] = {"error": f"{script} failed: " + (run.stderr.strip().splitlines() or ["?"])[-1]}
                print(out[name]["error"], file=sys.stderr)
            else:
                out[name] = json.loads(path.read_text())
    return out


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
    p.add_argument("--flows", type=int, default=100_000, help="tracked connections for the in-memory scale case")
    p.add_argument("--quick", action="store_true",
                   help="one trial, 16 MiB, 100 connections, 10 joins, 1 s iperf3, 20,000 flows (~1 min)")
    p.add_argument("--json", metavar="FILE")
    args = p.parse_args(argv)
    if args.quick:
        args.trials, args.mib, args.conns, args.joins, args.iperf_seconds = 1, 16, 100, 10, 1
        args.flows = min(args.flows, 20_000)
    if os.geteuid() != 0:
        print("needs root", file=sys.stderr)
        return 77
    from mptcrypt.topo.daemons import spawn_in_netns, stop
    from mptcrypt.topo import Net, load_topo

    started = time.monotonic()
    topo, *_ = load_topo(str(REPO / "topologies" / "two_path.py"))
    samples: dict[tuple[str, str], list[float]] = {}
    extra_samples: dict[tuple[str, str], list[dict]] = {}
    joins: dict[str, list[float]] = {}
    used: dict[str, str] = {}
    backends = args.backends.split(",")
    from mptcrypt.daemon.queue_batched import DEFAULT_QUEUE_BACKEND
    fresh_backend = DEFAULT_QUEUE_BACKEND if DEFAULT_QUEUE_BACKEND in backends else backends[0]
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
                        backend = fresh_backend if fresh else mode.split()[1]
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
                            rate, extra = connections(net, daemons, args.conns, proto)
                            add(f"{pname} connections/s ({kind})", mode, rate, extra)
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
        for key in ("cpu_s_per_gb_client", "cpu_s_per_gb_server", "packets_per_s_client", "packets_per_s_server",
                    "cpu_us_per_conn_client", "cpu_us_per_conn_server", "daemon_rss_bytes_per_flow"):
            got = [e[key] for e in extra_samples.get((case, mode), []) if key in e]
            if got:
                row[key] = round(statistics.median(got), 2)
        rows.append(row)
    result = {"rows": rows, "paths": used, "in_memory": in_memory(args),
              "_meta": {"trials": args.trials, "mib": args.mib, "conns": args.conns,
                        "iperf_seconds": args.iperf_seconds, "joins": args.joins, "flows": args.flows, "quick": args.quick, "cpus": os.cpu_count(),
                        "when": time.strftime("%Y-%m-%d %H:%M:%S"), "seconds": round(time.monotonic() - started)}}
    result["targets"] = targets(result)
    print(json.dumps(result))
    print(table(result))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))
    return 0


def table(result: dict) -> str:
    """Markdown: one row per case and mode (ratio to plain, the daemons' cost), the in-memory figures, and the
    issue 14 targets, met or not."""
    meta = result["_meta"]
    lines = [f"mptcrypt benchmark (medians of {meta['trials']} trials, two_path topology, {meta['cpus']} CPUs, "
             f"{meta['seconds']} s{', --quick' if meta['quick'] else ''})", "",
             "| case | mode | median | x plain | daemon CPU client / server | queue pkt/s client / server |",
             "|---|---|---|---|---|---|"]
    for r in result["rows"]:
        cpu = (f"{r['cpu_s_per_gb_client']:.1f} / {r['cpu_s_per_gb_server']:.1f} s/GB"
               if "cpu_s_per_gb_client" in r else
               f"{r['cpu_us_per_conn_client']:,.0f} / {r['cpu_us_per_conn_server']:,.0f} µs/conn"
               if "cpu_us_per_conn_client" in r else "")
        pps = (f"{r['packets_per_s_client']:,.0f} / {r['packets_per_s_server']:,.0f}"
               if "packets_per_s_client" in r else "")
        ratio = f"{r['ratio_to_plain']:.3f}" if "ratio_to_plain" in r else ""
        lines.append(f"| {r['case']} | {r['mode']} | {r['median']:,.1f} | {ratio} | {cpu} | {pps} |")
    lines += ["", "paths: " + "; ".join(f"{m}: {p}" for m, p in result["paths"].items())]
    mem = result["in_memory"]
    lines += [""] + [f"in memory: {v['error']}" for v in mem.values() if "error" in v]
    if "rows" in mem["segment"]:
        lines += ["", "in memory, per-segment (bench_segment.py, 1448 B + 28 B DSS, median µs):", "",
                  "| suite | path | protect µs | verify µs |", "|---|---|---|---|"]
        lines += [f"| {r['suite']} | {r['path']} | {r['protect_us']:.2f} | {r['verify_us']:.2f} |"
                  for r in mem["segment"]["rows"]]
    if "modes" in mem["setup"]:
        setup = mem["setup"]
        lines += ["", "in memory, engine µs per connection, both daemons (bench_setup.py): "
                  + ", ".join(f"{m} {v['per_connection_us']:.0f}" for m, v in setup["modes"].items())
                  + f" (X25519 exchange alone {setup['x25519_exchange_us']:.0f})", ""]
    if "flows" in mem["memory"]:
        from bench_memory import table as memory_table
        lines += ["| memory and scale (bench_memory.py) | | | |", "|---|---|---|---|", memory_table(mem["memory"]),
                  ""]
    lines += ["| issue 14 target | goal | measured | |", "|---|---|---|---|"]
    lines += [f"| {t['target']} | {t['goal']} | {t['measured']} | {'met' if t['met'] else '**not met**'} |"
              for t in result["targets"]]
    return "\n".join(lines)


def targets(result: dict) -> list[dict]:
    """Each issue 14 target with the measured value: the best mptcrypt mode of the run for the network cases."""
    rows = result["rows"]

    def best(case: str, fresh: bool = False) -> tuple[float | None, str]:
        got = [(r["median"], r["mode"]) for r in rows if r["case"] == case and r["mode"] != "plain"
               and (r["mode"] == "mptcrypt fresh") == fresh]
        return max(got) if got else (None, "")

    out = []

    def add(target: str, goal: str, value: float | None, met, fmt: str = "{:,.0f}", where: str = "") -> None:
        shown = "not measured" if value is None else fmt.format(value) + (f" ({where})" if where else "")
        out.append({"target": target, "goal": goal, "measured": shown, "value": value,
                    "met": value is not None and met(value)})

    for case, goal in (("bulk TCP Mbit/s (iperf3)", 2000), ("bulk TCP Mbit/s (own tool)", 2000),
                       ("bulk MPTCP 2 subflows Mbit/s (iperf3 + mptcpize)", 2000),
                       ("bulk MPTCP 2 subflows Mbit/s (own tool)", 2000)):
        v, mode = best(case)
        add(case, f">= {goal:,} (milestone 1,000)", v, lambda x, g=goal: x >= g, where=mode)
    for case, goal, fresh in (("TCP connections/s (fresh)", 2000, True), ("MPTCP connections/s (fresh)", 1500, True),
                              ("TCP connections/s (resumed)", 5000, False),
                              ("MPTCP connections/s (resumed)", 3000, False)):
        v, mode = best(case, fresh)
        add(case, f">= {goal:,}", v, lambda x, g=goal: x >= g, where=mode)
    joins = [(r["median"], r["mode"]) for r in rows if r["case"].startswith("connect to join")
             and r["mode"] not in ("plain", "mptcrypt fresh")]
    v, mode = min(joins) if joins else (None, "")
    add("MPTCP connect to join established, p50 ms", "<= 0.5", v, lambda x: x <= 0.5, "{:.2f}", mode)
    seg = [r for r in result["in_memory"]["segment"].get("rows", []) if r["path"] == "compiled"]
    for key, name in (("protect_us", "protect"), ("verify_us", "verify")):
        v = min((r[key] for r in seg), default=None)
        suite = next((r["suite"] for r in seg if r[key] == v), "")
        add(f"in-memory {name} 1448 B, µs (compiled)", "<= 2", v, lambda x: x <= 2.0, "{:.2f}", suite)
    mem = result["in_memory"]["memory"]
    add("memory per protected connection, bytes (fresh, per engine)", "<= 4,096",
        mem.get("bytes_per_connection_fresh"), lambda x: x <= 4096)
    n = mem.get("flows", 0)
    slow = max(mem["protect_slowdown"], mem["verify_slowdown"]) if n else None
    add(f"per-packet cost with {n:,} vs 10 tracked connections", "not slower (x <= 1.10)", slow,
        lambda x: x <= 1.10 and n >= 100_000, "x{:.2f}", "" if n >= 100_000 else f"only {n:,} flows: --quick")
    cpu = [r for r in rows if "cpu_s_per_gb_client" in r]
    add("CPU s/GB per daemon beside every throughput figure", "reported", len(cpu) or None, lambda x: True,
        "{} rows")
    return out


if __name__ == "__main__":
    sys.exit(main())
