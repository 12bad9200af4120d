"""Plain MPTCP vs mptcrypt through every shipped handover scenario, in the same run (not a test).

    sudo .venv/bin/python bench/bench_handover.py [--scenarios a,b] [--out DIR] [--repeat N]

For each scenario (topologies/scenarios/*.toml) and repetition: plain MPTCP, then mptcrypt, each on a fresh
network. Prints one table of medians (longest stall, request latency p50/p95/p99/max, requests never answered,
goodput, `queue ms`: mean queueing delay in the bulk sender's shaped queue before the first event, `retrans`:
TCP retransmissions of the bulk subflows, subflows created/closed, PK ops after the first handshake, session
ID unchanged, resumption from the new address) and writes DIR/bench_handover.json (every run) plus, for the
first repetition, DIR/SCENARIO.png and DIR/SCENARIO.json.
`--control` adds a third target, `plain-no-ts`: plain MPTCP with TCP timestamps off in both kernels (topology
timestamps=false), the option set mptcrypt leaves its kernels (their 12 bytes go to the MAC). What mptcrypt loses
against `plain` but not against `plain-no-ts` is the kernels' loss of timestamps, not the daemons' doing.
Numbers are from a shared 2-vCPU VM: compare plain and mptcrypt within one run, not across runs.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from dataclasses import replace

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from mptcrypt.handover.plot import plot_summary  # noqa: E402
from mptcrypt.handover.report import checks  # noqa: E402
from mptcrypt.handover.runner import run_scenario  # noqa: E402
from mptcrypt.handover.scenario import load_scenario, scenario_files  # noqa: E402

TARGETS = ["plain", "mptcrypt"]
CONTROL = "plain-no-ts"  # plain MPTCP, TCP timestamps off in both kernels


def _num(run: dict, path: tuple) -> float | None:
    v = run
    for p in path:
        if not isinstance(v, dict) or p not in v:
            return None
        v = v[p]
    return v


METRICS = {
    "stall_ms": lambda r: r["stall_s"] * 1000,
    "p50_ms": lambda r: _num(r, ("latency_ms", "p50")),
    "p95_ms": lambda r: _num(r, ("latency_ms", "p95")),
    "p99_ms": lambda r: _num(r, ("latency_ms", "p99")),
    "max_ms": lambda r: _num(r, ("latency_ms", "max")),
    "goodput_mbps": lambda r: _num(r, ("bulk", "goodput_mbps")),
    "subflows_created": lambda r: _num(r, ("subflows", "created_count")),
    "subflows_closed": lambda r: _num(r, ("subflows", "closed_count")),
    "unanswered": lambda r: _num(r, ("latency_ms", "unanswered")),
    "retransmits": lambda r: sum(sf.get("retrans", 0) for sf in r["series"]["subflows"].values()),
    "queue_ms": lambda r: max((v for v in r["queue_before_events_ms"].values() if v is not None), default=None),
}


def extract(run: dict) -> dict:
    if not run.get("ok"):
        return {"ok": False, "error": run.get("error")}
    out = {"ok": True}
    for name, fn in METRICS.items():
        try:
            out[name] = fn(run)
        except (KeyError, TypeError):
            out[name] = None
    out["intact"] = run["bulk"]["intact"]
    out["failed_checks"] = [k for k, v in checks(run).items() if v is False]
    crypto = run.get("crypto")
    if crypto:
        out["pk_ops_after_first"] = sum(crypto["pk_ops_after_first"].values())
        out["sid_unchanged"] = crypto["sid_unchanged"]
        out["new_path_protected"] = run["new_path"].get("protected")
        out["resumed_from_new_addr"] = run["resume"].get("resumed")
    return out


def median(values: list) -> float | None:
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--scenarios", help="comma-separated names (default: every shipped scenario)")
    p.add_argument("--out", default="bench-handover", help="output directory")
    p.add_argument("--repeat", type=int, default=1, help="runs per scenario and target (medians are reported)")
    p.add_argument("--cc", metavar="NAME", help="TCP congestion control in both hosts (default: the machine's)")
    p.add_argument("--no-delay", action="store_true",
                   help="links without delay (microsecond RTTs) instead of the topology's Wi-Fi/LTE delays")
    p.add_argument("--control", action="store_true",
                   help=f"also run {CONTROL}: plain MPTCP with TCP timestamps off in both kernels, as under mptcrypt")
    p.add_argument("--nat", action="store_true",
                   help="both networks rewrite the mobile's source ports, as carrier NAT does (topology nat=True)")
    args = p.parse_args(argv)
    if os.geteuid() != 0:
        print("bench_handover needs root (network namespaces)", file=sys.stderr)
        return 77
    names = args.scenarios.split(",") if args.scenarios else list(scenario_files())
    targets = TARGETS + [CONTROL] * args.control
    os.makedirs(args.out, exist_ok=True)
    results: dict = {"started": time.time(), "cc": args.cc or "machine default", "scenarios": {},
                     "link_delay": "none" if args.no_delay else "topology defaults (Wi-Fi 10 ms, LTE 40 ms one way)",
                     "nat": bool(args.nat), "targets": targets}
    for name in names:
        sc = load_scenario(name)
        if args.no_delay:
            sc.topo_args.update(wifi_delay=None, lte_delay=None)
        if args.nat:
            sc.topo_args["nat"] = True
        control = replace(sc, name=f"{sc.name}-no-ts", topo_args={**sc.topo_args, "timestamps": False})
        reps = []
        for i in range(args.repeat):
            print(f"== {name} ({i + 1}/{args.repeat})", file=sys.stderr)
            summary = run_scenario(sc, TARGETS, args.out, log=lambda m: print(m, file=sys.stderr), cc=args.cc)
            if args.control:
                ctl = run_scenario(control, ["plain"], args.out, log=lambda m: print(m, file=sys.stderr), cc=args.cc)
                summary["targets"][CONTROL] = ctl["targets"]["plain"]
            if i == 0:
                plot_summary(summary, os.path.join(args.out, f"{name}.png"))
                with open(os.path.join(args.out, f"{name}.json"), "w") as fh:
                    json.dump(summary, fh)
            reps.append({t: extract(summary["targets"][t]) for t in targets})
        agg = {}
        for t in targets:
            runs = [r[t] for r in reps if r[t].get("ok")]
            agg[t] = {m: median([r.get(m) for r in runs]) for m in METRICS}
            agg[t]["ok_runs"] = len(runs)
            agg[t]["all_intact"] = all(r.get("intact") for r in runs) and bool(runs)
            agg[t]["failed_checks"] = sorted({c for r in runs for c in r["failed_checks"]} |
                                             {f"run failed: {r[t].get('error')}" for r in reps if not r[t].get("ok")})
            if t == "mptcrypt":
                agg[t]["pk_ops_after_first"] = max((r.get("pk_ops_after_first") or 0 for r in runs), default=None)
                agg[t]["sid_unchanged"] = all(r.get("sid_unchanged") for r in runs) and bool(runs)
                agg[t]["resumed_from_new_addr"] = all(r.get("resumed_from_new_addr") for r in runs) and bool(runs)
        results["scenarios"][name] = {"runs": reps, "median": agg}
    results["finished"] = time.time()
    path = os.path.join(args.out, "bench_handover.json")
    with open(path, "w") as fh:
        json.dump(results, fh, indent=1)
    print_table(results)
    print(f"wrote {path}")
    return 0


def _c(v, fmt="{:.0f}") -> str:
    return "-" if v is None else fmt.format(v)


def print_table(results: dict) -> None:
    head = ["scenario", "target", "stall ms", "p50 ms", "p95 ms", "p99 ms", "max ms", "lost req", "Mbit/s",
            "queue ms", "retrans", "sf +/-", "PK after 1st", "sid same", "resumed", "checks"]
    rows = []
    for name, r in results["scenarios"].items():
        for t in results["targets"]:
            a = r["median"][t]
            rows.append([
                name, t, _c(a["stall_ms"]), _c(a["p50_ms"], "{:.1f}"), _c(a["p95_ms"], "{:.1f}"),
                _c(a["p99_ms"], "{:.1f}"), _c(a["max_ms"]), _c(a["unanswered"]), _c(a["goodput_mbps"], "{:.1f}"),
                _c(a["queue_ms"]), _c(a["retransmits"]),
                f"{_c(a['subflows_created'])}/{_c(a['subflows_closed'])}",
                _c(a.get("pk_ops_after_first")) if t == "mptcrypt" else "-",
                ("yes" if a.get("sid_unchanged") else "NO") if t == "mptcrypt" else "-",
                ("yes" if a.get("resumed_from_new_addr") else "NO") if t == "mptcrypt" else "-",
                "ok" if not a["failed_checks"] else "; ".join(a["failed_checks"]),
            ])
    try:
        from rich.console import Console
        from rich.table import Table
    except ImportError:
        widths = [max(len(x[i]) for x in [head, *rows]) for i in range(len(head))]
        for row in [head, *rows]:
            print("  ".join(c.ljust(w) for c, w in zip(row, widths)))
        return
    table = Table(title="handover: plain MPTCP vs mptcrypt (medians)", header_style="bold")
    for i, h in enumerate(head):
        table.add_column(h, justify="left" if i in (0, 1, len(head) - 1) else "right")
    for row in rows:
        table.add_row(*row)
    Console(width=200).print(table)


if __name__ == "__main__":
    sys.exit(main())
