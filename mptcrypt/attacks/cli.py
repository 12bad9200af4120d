"""`mptcrypt attack [NAME ...] [--target plain|mptcrypt|both] [--json] [--list]`."""

from __future__ import annotations

import argparse
import json
import time

DESCRIPTION = """\
Mount the published MPTCP attacks from a real attacker host and show, side by side, what they do to plain MPTCP and
to mptcrypt. Brings up topologies/hijack.py (client and server over two paths; the attacker on path 1 through a
hub: it sees and can inject path 1's packets only), runs a paced MPTCP transfer client -> server (and back) with
known plaintext, lets the attacker sniff the MP_CAPABLE exchange and then attack, and judges each attack by its
EFFECT: did the attacker read application bytes, did the application read changed bytes (sha256), did a subflow
or the connection die, did traffic move where the attacker wanted.

Outcomes: EFFECTIVE (the attack worked), BLOCKED (no effect, transfer intact), DETECTED (the downgrade under the
opportunistic policy: it works but `mptcrypt sessions` shows the connection unprotected), ERROR.
Needs root; ~6 s per cell, ~2.5 minutes for the whole matrix. Exit status 0 when every cell is as expected
(EFFECTIVE against plain MPTCP, BLOCKED against mptcrypt; DETECTED/BLOCKED for the downgrade's
opportunistic/required variants; syn-desync, an attack on mptcrypt's own state machine, must be BLOCKED on both),
1 otherwise. docs/security.md explains each attack."""


def register(sub) -> None:
    p = sub.add_parser("attack", help="run the MPTCP attack suite against plain MPTCP and mptcrypt (root)",
                       description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(p)
    p.set_defaults(func=cmd_attack)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("names", nargs="*", metavar="NAME", help="attacks to run (default: all; see --list)")
    p.add_argument("--target", choices=("plain", "mptcrypt", "both"), default="both")
    p.add_argument("--json", action="store_true", help="print the matrix as JSON on stdout (progress on stderr)")
    p.add_argument("--list", action="store_true", help="list the attacks and exit")
    p.add_argument("--raw", action="store_true", help="with --json: include every measurement (timelines, logs)")
    p.add_argument("-v", "--verbose", action="store_true", help="table: show the evidence under each outcome")
    p.add_argument("--duration", type=float, default=None, help="seconds of paced transfer per cell (default 4)")


def cmd_attack(args) -> int:
    from mptcrypt.attacks import ATTACKS, get_attack
    from mptcrypt.errors import ConfigError

    if args.list:
        if args.json:
            print(json.dumps([{"name": n, "number": get_attack(n).NUMBER, "title": get_attack(n).TITLE,
                               "source": get_attack(n).SOURCE} for n in ATTACKS], indent=2))
            return 0
        for name in ATTACKS:
            m = get_attack(name)
            print(f"{m.NUMBER}. {name:14} {m.TITLE}  [{m.SOURCE}]")
        return 0
    unknown = [n for n in args.names if n not in ATTACKS]
    if unknown:
        raise ConfigError(f"unknown attack(s) {', '.join(unknown)}; known: {', '.join(ATTACKS)}")
    from mptcrypt.attacks.report import print_table, to_json
    from mptcrypt.attacks.runner import Runner, Settings
    from mptcrypt.topo.netns import require_root

    require_root("the attack suite")
    targets = ("plain", "mptcrypt") if args.target == "both" else (args.target,)
    settings = Settings()
    if args.duration:
        settings.duration = args.duration
        settings.observe = args.duration + 0.6
    t0 = time.monotonic()
    from mptcrypt.progress import Progress

    with Progress(1, "attack") as bar:
        def progress(done: int, total: int, label: str) -> None:
            bar.total = total
            bar.update(done, label)

        cells = Runner(args.names or None, targets, settings, keep_raw=args.raw, progress=progress).run()
    seconds = round(time.monotonic() - t0, 1)
    doc = to_json(cells, seconds, raw=args.raw)
    if args.json:
        print(json.dumps(doc, indent=2, default=str))
    else:
        print_table(cells, seconds, verbose=args.verbose)
    return 0 if doc["all_as_expected"] else 1
