"""`mptcrypt handover [SCENARIO] [--target plain|mptcrypt|both] [--out DIR] [--json] [--list]`."""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
from typing import Any

DESCRIPTION = """\
Play a handover scenario on the emulated mobile of topologies/handover.py (interfaces wifi and lte, and a
server), with a long MPTCP transfer and a request/response workload (1 KiB every 20 ms), for plain MPTCP,
for mptcrypt (daemons on both hosts), or both one after the other on fresh networks.

Records per-subflow goodput (ss every 100 ms), the longest application stall, request latency percentiles,
subflows created/closed, public-key operations and the session ID; then opens a new plain TCP connection
from the mobile's new address, which must resume the session without a public-key operation. Writes
DIR/SCENARIO.png and DIR/SCENARIO.json and prints a table. Needs root (network namespaces)."""

EPILOG = """\
examples:
  mptcrypt handover --list
  mptcrypt handover walk-out-of-wifi --target both --out /tmp/ho
  mptcrypt handover topologies/scenarios/flapping-wifi.toml --target mptcrypt --json"""

DEFAULT_SCENARIO = "walk-out-of-wifi"
DEFAULT_OUT = "handover-results"


def register(sub: Any) -> None:
    p = sub.add_parser("handover", help="play a Wi-Fi/LTE handover scenario and measure it (root)",
                       description=DESCRIPTION, epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(p)
    p.set_defaults(func=cmd_handover)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("scenario", nargs="?", default=DEFAULT_SCENARIO,
                   help=f"a shipped scenario name (see --list) or a .toml file (default {DEFAULT_SCENARIO})")
    p.add_argument("--target", choices=["plain", "mptcrypt", "both"], default="both",
                   help="plain MPTCP, mptcrypt, or both side by side (default both)")
    p.add_argument("--out", metavar="DIR", default=DEFAULT_OUT, help=f"output directory (default ./{DEFAULT_OUT})")
    p.add_argument("--json", action="store_true", help="print the summary as JSON (without the time series)")
    p.add_argument("--list", action="store_true", help="list the shipped scenarios and exit")
    p.add_argument("--nat", action="store_true", help="run through port-rewriting NATs on both networks "
                   "(topologies/handover.py nat=True)")
    p.add_argument("--cc", metavar="NAME", help="TCP congestion control of the bulk and request "
                   "connections (setsockopt TCP_CONGESTION; e.g. cubic, bbr, reno; default: the machine's, recorded "
                   "in the JSON)")
    p.add_argument("--capture", action="store_true",
                   help="also write pcaps (headers) of both links, server side: DIR/SCENARIO-TARGET-IF.pcap")


def cmd_list(as_json: bool) -> int:
    from mptcrypt.handover.scenario import load_scenario, scenario_files

    items = []
    for name in scenario_files():
        sc = load_scenario(name)
        items.append({"name": sc.name, "duration": sc.duration, "direction": sc.direction,
                      "description": sc.description, "events": [f"{e.at:g}s {e.describe()}" for e in sc.events]})
    if as_json:
        print(json.dumps(items, indent=2))
        return 0
    for it in items:
        print(f"{it['name']:<26} {it['duration']:>5g} s  {it['direction']:<4}  {it['description']}")
        print(f"{'':<26} {'; '.join(it['events'])}")
    return 0


def brief(summary: dict[str, Any]) -> dict[str, Any]:
    """The summary without the time series (what --json prints)."""
    out = {k: v for k, v in summary.items() if k != "targets"}
    out["targets"] = {t: {k: v for k, v in r.items() if k != "series"} for t, r in summary["targets"].items()}
    return out


_MAIN_PID = os.getpid()


def _raise_exit(signum: int, _frame: Any) -> None:
    # pyroute2 forks helper processes for namespaces (no exec) and ends them with SIGTERM; a forked copy that ran
    # this handler would unwind the parent's stack copy, `finally` blocks included, and stop the parent's delay
    # lines and daemons by PID. Only the process that installed the handler unwinds; a fork just exits.
    if os.getpid() != _MAIN_PID:
        os._exit(128 + signum)
    raise SystemExit(128 + signum)


def cmd_handover(args: argparse.Namespace) -> int:
    from mptcrypt.handover.plot import plot_summary
    from mptcrypt.handover.report import all_passed, checks, print_table
    from mptcrypt.handover.runner import run_scenario
    from mptcrypt.handover.scenario import load_scenario
    from mptcrypt.topo.netns import require_root

    if args.list:
        return cmd_list(args.json)
    scenario = load_scenario(args.scenario)
    if args.nat:
        scenario.topo_args["nat"] = True
    require_root("mptcrypt handover")
    # SIGTERM/SIGHUP unwind like Ctrl-C, so that the runner's `finally` stops the daemons and deletes the network
    global _MAIN_PID
    _MAIN_PID = os.getpid()
    for signum in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, _raise_exit)
    targets = ["plain", "mptcrypt"] if args.target == "both" else [args.target]
    os.makedirs(args.out, exist_ok=True)
    log = (lambda msg: print(msg, file=sys.stderr)) if args.json else print
    from mptcrypt.progress import Progress

    with Progress(len(targets) * scenario.duration, f"handover {scenario.name}") as bar:
        def progress(target: str, t: float, what: str) -> None:  # the work unit is a second of timeline
            bar.update(targets.index(target) * scenario.duration + t, f"[{target}] {what}")

        summary = run_scenario(scenario, targets, args.out, log=log, capture=args.capture, cc=args.cc,
                               progress=progress)
    json_path = os.path.join(args.out, f"{scenario.name}.json")
    png_path = os.path.join(args.out, f"{scenario.name}.png")
    for run in summary["targets"].values():
        run["checks"] = checks(run)
    summary["files"] = {"json": json_path, "png": png_path}
    plot_summary(summary, png_path)
    with open(json_path, "w") as fh:
        json.dump(summary, fh, indent=1)
    if args.json:
        print(json.dumps(brief(summary), indent=2))
    else:
        print_table(summary)
        print(f"wrote {png_path} and {json_path}")
    return 0 if all_passed(summary) else 1
