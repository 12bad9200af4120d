"""`mptcrypt topo up|down|exec|clean|status`: emulated networks from the command line."""

from __future__ import annotations

import argparse
import json
import os
import sys

from mptcrypt.errors import ConfigError
from mptcrypt.topo import control, netns
from mptcrypt.topo.state import STATE_FILE, read_state


def register(sub: argparse._SubParsersAction) -> None:
    topo = sub.add_parser(
        "topo",
        help="build and remove emulated networks (topologies/*.py)",
        description=(
            "Emulated networks on network namespaces: each host is a namespace mptc-HOST "
            "(enter it with `ip netns exec mptc-HOST CMD` or `mptcrypt topo exec HOST -- CMD`)."
        ),
    )
    cmds = topo.add_subparsers(dest="topo_command", metavar="ACTION")
    topo.set_defaults(func=lambda args: (topo.print_help(), 2)[1])

    up = cmds.add_parser("up", help="build a topology and leave it up", description=(
        "Build the topology of a Mininet-style file (`topos = {'name': Class}`) and leave it up "
        "until `mptcrypt topo down`."))
    up.add_argument("file", help="topology file, e.g. topologies/two_path.py")
    up.add_argument("--topo", metavar="NAME[,ARG...]", help="which topology of the file, with build "
                    "arguments as in `mn --topo` (e.g. handover,30,lte_bw=10); default: the file's only one")
    up.add_argument("--json", action="store_true", help="print what was built as JSON")
    up.add_argument("--wait", type=float, default=control.CLI_LOCK_TIMEOUT, metavar="SECONDS",
                    help="how long to wait for another topology (a test run) to go (default: %(default)s)")
    up.set_defaults(func=cmd_up)

    down = cmds.add_parser("down", help="remove the topology that `topo up` built")
    down.add_argument("--wait", type=float, default=control.CLI_LOCK_TIMEOUT, metavar="SECONDS",
                      help="how long to wait for a topology being built elsewhere (default: %(default)s)")
    down.set_defaults(func=cmd_down)

    ex = cmds.add_parser("exec", help="run a command in a host's namespace", description=(
        "Run CMD in host HOST's namespace (default: an interactive shell). Same as "
        "`ip netns exec mptc-HOST CMD`."))
    ex.add_argument("host")
    ex.add_argument("cmd", nargs=argparse.REMAINDER, metavar="-- CMD...")
    ex.set_defaults(func=cmd_exec)

    clean = cmds.add_parser("clean", help="remove every mptc- namespace (after a crash)", description=(
        "Delete every network namespace named mptc-* and kill the processes inside them, whoever "
        "made them; nothing else is touched."))
    clean.set_defaults(func=cmd_clean)

    status = cmds.add_parser("status", help="show what is up")
    status.add_argument("--json", action="store_true")
    status.set_defaults(func=cmd_status)


def cmd_up(args: argparse.Namespace) -> int:
    net = control.up(args.file, args.topo, lock_timeout=args.wait)
    source = net.source
    if args.json:
        print(json.dumps(read_state(STATE_FILE), indent=1, sort_keys=True))
        return 0
    print(f"{source['topo']} from {args.file} is up:")
    for node in net.plan.nodes.values():
        if node.is_switch:
            kind = "hub" if node.hub else "switch"
            print(f"  {kind:6} {node.name:10} ns {node.ns:16} bridge {node.bridge}: {', '.join(node.intf_names())}")
        else:
            addrs = ", ".join(f"{i.name} {i.addr or '-'}" for i in node.intfs)
            print(f"  host   {node.name:10} ns {node.ns:16} {addrs}")
    first = net.plan.hosts[0].name
    print(f"run `mptcrypt topo exec {first} -- CMD` (or `ip netns exec mptc-{first} CMD`); "
          "remove with `mptcrypt topo down`")
    return 0


def cmd_down(args: argparse.Namespace) -> int:
    removed = control.down(lock_timeout=args.wait)
    if removed:
        print("removed " + ", ".join(removed))
    else:
        stray = netns.list_namespaces()
        print("no topology is up" + (f" (mptc- namespaces without a record: {', '.join(stray)}; "
                                      "`mptcrypt topo clean` removes them)" if stray else ""))
    return 0


def cmd_exec(args: argparse.Namespace) -> int:
    netns.require_root("mptcrypt topo exec")
    cmd = list(args.cmd)
    if cmd and cmd[0] == "--":
        cmd = cmd[1:]
    ns = netns.NAME_PREFIX + args.host
    if not netns.exists(ns):
        state = read_state(STATE_FILE)
        hosts = sorted((state or {}).get("hosts", {}))
        hint = f"; hosts: {', '.join(hosts)}" if hosts else "; is a topology up? (`mptcrypt topo up FILE`)"
        raise ConfigError(f"no host {args.host!r} (namespace {ns} does not exist){hint}")
    if not cmd:
        cmd = [os.environ.get("SHELL", "/bin/sh")]
    sys.stdout.flush()
    os.execvp("ip", netns.exec_argv(ns, cmd))
    return 127  # not reached


def cmd_clean(args: argparse.Namespace) -> int:
    removed = control.clean()
    print("removed " + ", ".join(removed) if removed else "no mptc- namespace to remove")
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    info = control.status()
    if args.json:
        print(json.dumps(info, indent=1, sort_keys=True))
        return 0
    state = info["state"]
    if state is None:
        print("no topology is up")
    else:
        what = f"{state.get('topo', '?')} from {state.get('file', '?')}"
        print(f"{what}: {state.get('status', '?')}, made by pid {state.get('pid')} {info.get('age_s', '?')} s ago")
        for name, host in sorted(state.get("hosts", {}).items()):
            addrs = ", ".join(f"{i} {a or '-'}" for i, a in host.get("intfs", {}).items())
            print(f"  host   {name:10} ns {host['ns']:16} {addrs}")
        for name, sw in sorted(state.get("switches", {}).items()):
            print(f"  {'hub' if sw.get('hub') else 'switch':6} {name:10} ns {sw['ns']}")
        if info["missing"]:
            print(f"  missing namespaces: {', '.join(info['missing'])} (`mptcrypt topo down` forgets them)")
    if info["stray"]:
        print(f"mptc- namespaces not made by `topo up`: {', '.join(info['stray'])}")
    return 0
