"""`mptcrypt daemon`, `mptcrypt status`, `mptcrypt sessions`, `mptcrypt stats`."""

from __future__ import annotations

import argparse
import json
import sys

from mptcrypt.core.config import Policy
from mptcrypt.errors import ConfigError

DAEMON_DESCRIPTION = """\
Run the mptcrypt daemon in the foreground (stop it with Ctrl-C or SIGTERM).

It intercepts the TCP segments this host sends and receives on the chosen ports (iptables chains MPTC-OUT and
MPTC-IN feeding NFQUEUE), encrypts and authenticates every connection whose peer also runs mptcrypt, and leaves
the others in plain text (policy "opportunistic") or refuses them (policy "required").

It needs root, and it works in the CURRENT network namespace only: one daemon per namespace. To run one inside
namespace NS:  sudo ip netns exec NS mptcrypt daemon

Loopback traffic is not intercepted. Fail-closed by default: if the daemon dies without cleaning up (kill -9),
intercepted traffic stops instead of flowing unprotected; start the daemon again to recover. `--fail-open` lets
traffic through in plain text while no daemon listens.

Check it with `mptcrypt status`, `mptcrypt sessions` and `mptcrypt stats`."""

EPILOG = """\
examples:
  sudo mptcrypt daemon                              every TCP port, opportunistic
  sudo mptcrypt daemon --ports 22,443,5000-5100 --policy required
  sudo ip netns exec h1 mptcrypt daemon --config /etc/mptcrypt.toml -v"""

FIRST_COLUMNS = ("local", "remote", "state", "pub_cipher", "sym_cipher", "sid", "resumed")
SUBFLOWS_KEY = "subflows"
# The daemon sees addresses as they arrive: behind a NAT, the remote is the NAT's address and port, not the peer's.
COLUMN_LABELS = {"remote": "peer-as-seen"}


def register(sub) -> None:
    p = sub.add_parser(
        "daemon",
        help="run the daemon in this network namespace (root)",
        description=DAEMON_DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--ports", metavar="SPEC", help="TCP ports to intercept: 'all' (default) or e.g. '80,443,5000-5100'")
    p.add_argument(
        "--policy",
        choices=[x.value for x in Policy],
        help="default policy: opportunistic (encrypt when the peer can, plain otherwise; the default), "
        "required (refuse connections that cannot be encrypted), off (leave connections alone)",
    )
    p.add_argument("--config", metavar="FILE.toml", help="configuration file (command-line options override it)")
    p.add_argument("--queue-num", type=int, metavar="N", help="NFQUEUE number (default 4242)")
    p.add_argument(
        "--fail-open",
        action="store_true",
        default=None,
        help="while no daemon listens, let intercepted traffic pass in plain text (default: drop it)",
    )
    p.add_argument(
        "--no-resume",
        dest="resume",
        action="store_false",
        default=None,
        help="always run the public-key handshake, never resume a cached session (benchmarks, tests)",
    )
    p.add_argument(
        "--gateway",
        action="store_true",
        help="protect the traffic this router forwards for the networks given with --lan (hosts behind it stay "
        "unmodified), instead of this host's own connections",
    )
    p.add_argument("--lan", action="append", default=[], metavar="CIDR",
                   help="with --gateway: a network behind this router (repeat for several; IPv4 or IPv6)")
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging, periodic counters")
    p.set_defaults(func=cmd_daemon)

    p = sub.add_parser(
        "status",
        help="is a daemon running in this network namespace? (exit 0 yes, 3 no)",
        description="Ask the daemon of this network namespace whether it is up. Exit status 0 if it is, 3 if not.",
    )
    p.add_argument("--json", action="store_true", help="print the daemon's status as JSON")
    p.set_defaults(func=cmd_status)

    p = sub.add_parser(
        "sessions",
        help="list the connections the daemon tracks (like tcnetstat)",
        description="List the connections the daemon of this network namespace tracks: addresses, state, ciphers, "
        "session ID (sid, hex; equal on both ends of a protected connection) and whether the session was resumed. "
        "MPTCP subflows are listed indented below their connection.",
    )
    p.add_argument("--json", action="store_true", help="print the raw rows as JSON")
    p.set_defaults(func=cmd_sessions)

    p = sub.add_parser(
        "stats",
        help="the daemon's counters",
        description="The counters of the daemon of this network namespace: the engine's (segments protected, "
        "MAC failures, public-key operations, resumptions, held segments, fallbacks...) and the packet path's "
        "(nfq_*: queued, dropped, engine errors, queue overflows, injected).",
    )
    p.add_argument("--json", action="store_true", help="print the counters as one JSON object")
    p.set_defaults(func=cmd_stats)


# --- commands ------------------------------------------------------------------------------------------------------


def cmd_daemon(args) -> int:
    from mptcrypt.core.config import Config
    from mptcrypt.daemon.main import run_daemon

    config = Config.load(
        args.config, ports=args.ports, policy=args.policy, queue_num=args.queue_num, fail_open=args.fail_open,
        resume=args.resume,
    )
    return run_daemon(config, verbose=args.verbose, gateway_lans=_gateway_lans(args))


def _gateway_lans(args) -> tuple[str, ...]:
    """--gateway --lan CIDR...: the LANs, checked; () without --gateway."""
    import ipaddress

    if args.lan and not args.gateway:
        raise ConfigError("--lan only makes sense with --gateway")
    if not args.gateway:
        return ()
    if not args.lan:
        raise ConfigError("--gateway needs the networks behind this router: --lan 192.168.1.0/24 [--lan ...]")
    lans = []
    for lan in args.lan:
        try:
            lans.append(str(ipaddress.ip_network(lan, strict=False)))
        except ValueError as exc:
            raise ConfigError(f"--lan {lan!r}: {exc}") from None
    return tuple(lans)


def cmd_status(args) -> int:
    from mptcrypt.daemon.control import ControlClient

    status = ControlClient().status()  # DaemonNotRunning -> "mptcrypt: error: ..." and exit 3
    if args.json:
        print(json.dumps(status, indent=2, sort_keys=True))
    else:
        engine = status.get("engine")
        extra = f", engine {engine}" if engine and engine != "Engine" else ""
        print(
            f"mptcrypt daemon running (pid {status.get('pid')}, up {_duration(status.get('uptime', 0))}, "
            f"queue {status.get('queue')}, ports {status.get('ports')}, policy {status.get('policy')}, "
            f"{'fail-open' if status.get('fail_open') else 'fail-closed'}{extra})"
        )
    return 0


def cmd_sessions(args) -> int:
    from mptcrypt.daemon.control import ControlClient

    rows = ControlClient().sessions()
    if args.json:
        print(json.dumps(rows, indent=2, default=str))
        return 0
    if not rows:
        print("no sessions")
        return 0
    columns, table = session_table(rows)
    _print_table([COLUMN_LABELS.get(c, c) for c in columns], table)
    return 0


def cmd_stats(args) -> int:
    from mptcrypt.daemon.control import ControlClient

    stats = ControlClient().stats()
    if args.json:
        print(json.dumps(stats, indent=2))
        return 0
    _print_table(["counter", "value"], [[k, str(v)] for k, v in stats.items()], align_right={1})
    return 0


# --- rendering -----------------------------------------------------------------------------------------------------


def format_value(value) -> str:
    """One cell: [ip, port] -> ip:port ([ip]:port for IPv6), booleans yes/no, None '-'."""
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, (list, tuple)):
        if len(value) == 2 and isinstance(value[0], str) and isinstance(value[1], int):
            host = f"[{value[0]}]" if ":" in value[0] else value[0]
            return f"{host}:{value[1]}"
        return ",".join(format_value(v) for v in value)
    if isinstance(value, dict):
        return json.dumps(value, separators=(",", ":"), default=str)
    return str(value)


def session_table(rows: list[dict]) -> tuple[list[str], list[list[str]]]:
    """engine.sessions() rows -> (column names, cells). The first columns are fixed, the others follow in order
    of appearance; subflows (key "subflows": a list of dicts) become indented rows below their connection."""
    columns = [c for c in FIRST_COLUMNS if any(c in r for r in rows)]
    seen = set(columns)
    for row in rows:
        for sub_row in [row, *(row.get(SUBFLOWS_KEY) or [])]:
            for key in sub_row:
                if key not in seen and key != SUBFLOWS_KEY:
                    seen.add(key)
                    columns.append(key)
    table: list[list[str]] = []
    for row in rows:
        table.append([format_value(row.get(c)) if c in row else "" for c in columns])
        for sub_row in row.get(SUBFLOWS_KEY) or []:
            cells = [format_value(sub_row.get(c)) if c in sub_row else "" for c in columns]
            if cells:
                cells[0] = "  └ " + cells[0]
            table.append(cells)
    return columns, table


def _print_table(columns: list[str], table: list[list[str]], align_right: set[int] = frozenset()) -> None:
    """A rich table on a terminal when rich is installed; aligned plain text otherwise (pipes, scripts)."""
    if sys.stdout.isatty():
        try:
            from rich.console import Console
            from rich.table import Table
        except ImportError:
            pass
        else:
            t = Table(box=None, header_style="bold")
            for i, name in enumerate(columns):
                t.add_column(name, justify="right" if i in align_right else "left", no_wrap=True)
            for cells in table:
                t.add_row(*cells)
            Console().print(t)
            return
    widths = [max([len(name)] + [len(cells[i]) for cells in table]) for i, name in enumerate(columns)]
    for cells in [columns, *table]:
        parts = [c.rjust(w) if i in align_right else c.ljust(w) for i, (c, w) in enumerate(zip(cells, widths))]
        print("  ".join(parts).rstrip())


def _duration(seconds: float) -> str:
    seconds = int(seconds)
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
