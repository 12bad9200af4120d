"""Memory per protected connection, and the per-packet cost with 10 and with 100,000 tracked connections.

    .venv/bin/python bench/bench_memory.py [--flows 100000] [--sample 2000] [--json out.json]

Two in-memory engines (bench_setup.TimedPair) open connections and keep them open (SYN, SYN-ACK, ACK, 1 KiB each
way: protected, keys in place, nothing closed). Memory: `tracemalloc` counts what the engines hold after `--sample`
connections (fresh handshakes, each its own session: the worst case; and resumed ones sharing a cached session),
per connection and engine, against issue 14's 4 KiB target; the process RSS delta over all `--flows` connections
is given beside it. Per-packet cost: protect (client engine, outbound 1448-byte data) and verify (server engine)
of data segments round-robin over 10 open flows, first with 10 flows in the table, then the same 10 with `--flows`
in it (medians of 7 batches of ~3,000 segments, µs per segment): the ratio says whether the table's size slows
the packet path. Then 1,000 flows spread over the table: a working set beyond the CPU caches.
Not a test: nothing here asserts a speed.
"""

from __future__ import annotations

import argparse
import gc
import os
import statistics
import sys
import time
import tracemalloc
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_setup import PORT, S_ADDR, TimedPair, emit, seg  # noqa: E402
from mptcrypt.core.config import Config  # noqa: E402
from mptcrypt.wire.tcp import ACK, PSH  # noqa: E402

TARGET_BYTES = 4096
PAYLOAD = os.urandom(1448)


def rss_bytes() -> int:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def new_pair(resume: bool, flows: int) -> TimedPair:
    return TimedPair(Config(resume=resume, max_connections=max(65536, 2 * flows)), timed=False)


def bytes_per_connection(resume: bool, n: int) -> float:
    """tracemalloc bytes the two engines hold per open protected connection, per engine."""
    pair = new_pair(resume, n)
    pair.connection(10**7, False)  # key pairs, caches and first-use allocations out of the way
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    for i in range(n):
        pair.connection(i, False, close=False)
    gc.collect()
    held = tracemalloc.get_traced_memory()[0] - before
    tracemalloc.stop()
    assert pair.eng["s"].stats()["flows"] == n + 1
    return held / n / 2


def per_packet_us(pair: TimedPair, flows: list[int], rounds: int = 7) -> tuple[float, float]:
    """(protect, verify) µs per 1448-byte data segment, round-robin over the open flows `flows`."""
    c, s = pair.eng["c"], pair.eng["s"]
    kernel, wire = [], []
    for i in flows:
        sf = c._flows[next(k for k in keys_of(pair, i))]
        la, lp, ra, rp = sf.key
        pkt = seg(la, lp, ra, rp, sf.out_ref & 0xFFFFFFFF, sf.in_ref & 0xFFFFFFFF, ACK | PSH, (), PAYLOAD)
        kernel.append(pkt)
        wire.append(c.handle(pkt, True, pair.now).packet)
    assert all(s.handle(w, False, pair.now).packet is not None for w in wire)
    out = []
    reps = max(1, 3000 // len(kernel))  # ~3,000 segments per batch, whatever the number of flows
    for packets, eng, outbound in ((kernel * reps, c, True), (wire * reps, s, False)):
        batches = []
        for _ in range(rounds):
            t0 = time.perf_counter()
            for p in packets:
                eng.handle(p, outbound, pair.now)
            batches.append((time.perf_counter() - t0) / len(packets) * 1e6)
        out.append(statistics.median(batches))
    assert s.stats()["mac_failures"] == 0
    return out[0], out[1]


def keys_of(pair: TimedPair, i: int):
    """The client engine's flow key of connection `i` (as TimedPair.connection numbers them)."""
    la = bytes((10, 0, 1 + i // 40000 // 250, 2 + i // 40000 % 250))
    yield (la, 20000 + i % 40000, S_ADDR, PORT)


def measure(flows: int, sample: int) -> dict:
    out = {"target_bytes": TARGET_BYTES, "flows": flows, "sample": sample}
    out["bytes_per_connection_fresh"] = round(bytes_per_connection(False, sample))
    out["bytes_per_connection_resumed"] = round(bytes_per_connection(True, sample))
    pair = new_pair(True, flows)
    for i in range(10):
        pair.connection(i, False, close=False)
    probe = list(range(10))
    out["protect_us_10_flows"], out["verify_us_10_flows"] = per_packet_us(pair, probe)
    gc.collect()
    rss0, t0 = rss_bytes(), time.perf_counter()
    for i in range(10, flows):
        pair.connection(i, False, close=False)
    gc.collect()
    out["rss_bytes_per_connection"] = round((rss_bytes() - rss0) / (flows - 10) / 2)
    out["setup_seconds"] = round(time.perf_counter() - t0, 1)
    out["flows_tracked"] = pair.eng["s"].stats()["flows"]
    # the same 10 flows again: what the table's size costs; then 1,000 flows spread over the table: what a
    # working set larger than the CPU caches costs (each segment touches another flow's state)
    out[f"protect_us_{flows}_flows"], out[f"verify_us_{flows}_flows"] = per_packet_us(pair, probe)
    step = max(1, flows // 1000)
    spread = list(range(0, flows, step))[:1000]
    out["protect_us_1000_spread"], out["verify_us_1000_spread"] = per_packet_us(pair, spread)
    for k in [k for k in out if "_us_" in k]:
        out[k] = round(out[k], 2)
    out["protect_slowdown"] = round(out[f"protect_us_{flows}_flows"] / out["protect_us_10_flows"], 3)
    out["verify_slowdown"] = round(out[f"verify_us_{flows}_flows"] / out["verify_us_10_flows"], 3)
    return out


def table(r: dict) -> str:
    n = r["flows"]
    return "\n".join([
        f"| memory per protected connection, per engine (tracemalloc, {r['sample']} open) | "
        f"fresh {r['bytes_per_connection_fresh']:,} B | resumed {r['bytes_per_connection_resumed']:,} B | "
        f"target <= {r['target_bytes']:,} B |",
        f"| RSS delta per connection, per engine ({n:,} open) | {r['rss_bytes_per_connection']:,} B | | |",
        f"| protect µs/segment, 10 / {n:,} flows | {r['protect_us_10_flows']:.2f} | {r[f'protect_us_{n}_flows']:.2f} |"
        f" x{r['protect_slowdown']:.2f} |",
        f"| verify µs/segment, 10 / {n:,} flows | {r['verify_us_10_flows']:.2f} | {r[f'verify_us_{n}_flows']:.2f} |"
        f" x{r['verify_slowdown']:.2f} |",
        f"| protect / verify µs/segment, 1,000 flows spread over {n:,} | {r['protect_us_1000_spread']:.2f} | "
        f"{r['verify_us_1000_spread']:.2f} | |",
    ])


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--flows", type=int, default=100_000, help="open connections for the scale case (default 100000)")
    p.add_argument("--sample", type=int, default=2000, help="open connections counted by tracemalloc (default 2000)")
    p.add_argument("--json", type=Path)
    args = p.parse_args(argv)
    if args.flows < 20 or args.sample < 1:
        p.error("--flows must be >= 20 and --sample >= 1")
    result = measure(args.flows, args.sample)
    return emit(result, table(result), args.json)


if __name__ == "__main__":
    sys.exit(main())
