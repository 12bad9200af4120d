"""`mptcrypt daemon`, `mptcrypt status`, `mptcrypt sessions`, `mptcrypt stats`."""

from __future__ import annotations

import argparse
import json
import sys

from mptcrypt.core.config import Policy
from mptcrypt.daemon.queue_batched import DEFAULT_QUEUE_BACKEND, QUEUE_BACKENDS
from mptcrypt.errors import (AlreadyRunningError, ConfigError, DaemonNotRunning, KernelFeatureError, MptcryptError,
                             NotRootError)

DAEMON_DESCRIPTION = """\
Run the mptcrypt daemon in the foreground (stop it with Ctrl-C or SIGTERM).

It intercepts the TCP segments this host sends and receives on the chosen ports (iptables chains MPTC-OUT and
MPTC-IN feeding NFQUEUE), encrypts and authenticates every connection whose peer also runs mptcrypt, and leaves
the others in plain text (policy "opportunistic") or refuses them (policy "required").

It needs root, and it works in the CURRENT network namespace only: one daemon per namespace. To run one inside
namespace NS:  ip netns exec NS mptcrypt daemon

Loopback traffic is not intercepted. Fail-closed by default: if the daemon dies without cleaning up (kill -9),
intercepted traffic stops instead of flowing unprotected; start the daemon again to recover. `--fail-open` lets
traffic through in plain text while no daemon listens.

Check it with `mptcrypt status`, `mptcrypt sessions` and `mptcrypt stats`; check a configuration file without
starting anything with `mptcrypt daemon --check-config FILE`."""

EPILOG = f"""\
signals:
  SIGTERM, SIGINT  stop cleanly: rules removed first, packets already queued get their verdict, exit 0
  SIGHUP           reload the configuration (--config file and options): policy, rules, ciphers, limits apply to
                   new connections, live ones keep their keys; a bad file keeps the running configuration and the
                   log says why; --ports, --queue-num, --workers and --fail-open need a restart
  SIGKILL          no cleanup: the rules stay (fail-closed) until a daemon starts again and replaces them
  with --workers W, signal the parent (the pid `mptcrypt status` shows): it orders its workers, which ignore
  these signals themselves (on SIGTERM each resets its protected connections, then the rules go)

exit status:
  0    stopped cleanly, or --check-config found the configuration good
  1    any other error (an iptables command refused, the NFQUEUE bind failed, ...)
  {ConfigError.exit_code}    bad configuration file or option (one line says which key and why)
  {KernelFeatureError.exit_code}   the kernel or machine lacks something (NFQUEUE, iptables, netfilterqueue)
  {AlreadyRunningError.exit_code}   a daemon already runs in this network namespace
  {NotRootError.exit_code}   not root
  130  interrupted (Ctrl-C) before start-up finished

examples:
  mptcrypt daemon                                   every TCP port, opportunistic
  mptcrypt daemon --ports 22,443,5000-5100 --policy required
  mptcrypt daemon --check-config /etc/mptcrypt.toml
  mptcrypt daemon --workers 2                       two processes, queues 4242:4243 (--queue-balance)
  ip netns exec h1 mptcrypt daemon --config /etc/mptcrypt.toml -v"""

FIRST_COLUMNS = ("local", "remote", "state", "pub_cipher", "sym_cipher", "sid", "resumed")
SUBFLOWS_KEY = "subflows"
# The daemon sees addresses as they arrive: behind a NAT, the remote is the NAT's address and port, not the peer's.
REMOTE_LABEL = "peer-as-seen"
SID_DIGITS = 8  # hex digits of the session ID in the narrow `sessions` view (--wide and --json show all)
JSON_HELP = "print JSON on stdout, also when no daemon runs ({\"running\": false, \"error\": ...}, exit 3)"


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
    p.add_argument("--config", metavar="FILE.toml", help="configuration file (command-line options override it; "
                   "every key is checked, see mptcrypt/daemon/config.py)")
    p.add_argument("--check-config", metavar="FILE.toml",
                   help="check FILE (with the other options applied) and print what it sets, without starting; "
                   f"exit 0 if good, {ConfigError.exit_code} if not")
    p.add_argument("--queue-num", type=int, metavar="N", help="NFQUEUE number of the segments (default 4242); SYNs and SYN-ACKs use N+1 (the SYN "
                   "lane, drained after the segments: a SYN flood cannot stall established connections)")
    p.add_argument("--workers", type=int, metavar="N",
                   help="worker processes (default 1, config key `workers`) on queues Q..Q+N-1 of --queue-num Q, "
                   "spread by the kernel's --queue-balance hash of the address pair; sessions, tokens and key "
                   "indices are shared between workers in memory, so joins and resumptions work whichever worker "
                   "a subflow lands on (docs/protocol.md, Workers). Not with --takeover")
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
        "--takeover",
        action="store_true",
        help="graceful restart: take the live sessions over from the daemon running in this namespace (in memory), "
        "which then exits leaving its rules in place (both daemons with --workers 1: refused otherwise)",
    )
    p.add_argument("--metrics", metavar="ADDR:PORT",
                   help="serve Prometheus metrics on ADDR:PORT, e.g. 127.0.0.1:9464 (`mptcrypt stats --prometheus` "
                   "prints the same once)")
    p.add_argument("--keylog", metavar="FILE",
                   help="append every subflow's traffic keys to FILE (created 0600; also $MPTCRYPT_KEYLOGFILE) to "
                   "decrypt captures with `mptcrypt decrypt`; debugging only (docs/keylog.md)")
    p.add_argument(
        "--queue-backend",
        choices=QUEUE_BACKENDS,
        default=DEFAULT_QUEUE_BACKEND,
        help="NFQUEUE I/O: netfilterqueue (one recv and one verdict syscall per packet) or batched (the daemon's "
        f"own netlink client: many packets per wakeup, verdicts in one sendmsg); default {DEFAULT_QUEUE_BACKEND}",
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
        description="Ask the daemon of this network namespace whether it is up, and show the policy, rules and "
        "ciphers it enforces. Exit status 0 if it is up, 3 if not.",
    )
    p.add_argument("--json", action="store_true", help=JSON_HELP)
    p.set_defaults(func=cmd_status)

    p = sub.add_parser(
        "sessions",
        help="list the connections the daemon tracks (like tcnetstat)",
        description="List the connections the daemon of this network namespace tracks, one line each: addresses, "
        f"state, the session ID (sid; its first {SID_DIGITS} hex digits, equal on both ends of a protected "
        "connection), ciphers, and whether the session was resumed. MPTCP subflows are listed indented below "
        "their connection, with their key index and bytes. Exit status 0, or 3 when no daemon runs.",
    )
    p.add_argument("--wide", action="store_true", help="every column the daemon reports, full session IDs")
    p.add_argument("--json", action="store_true", help=JSON_HELP)
    p.set_defaults(func=cmd_sessions)

    p = sub.add_parser(
        "stats",
        help="the daemon's counters",
        description="The counters of the daemon of this network namespace: the engine's (segments protected, "
        "MAC failures, public-key operations, resumptions, held segments, fallbacks...) and the packet path's "
        "(nfq_*: queued, dropped, engine errors, queue overflows, injected). Exit status 0, or 3 when no "
        "daemon runs.",
    )
    p.add_argument("--json", action="store_true", help=JSON_HELP)
    p.add_argument("--prometheus", action="store_true", help="print them once in Prometheus text format "
                   "(what `mptcrypt daemon --metrics` serves)")
    p.set_defaults(func=cmd_stats)


# --- commands ------------------------------------------------------------------------------------------------------


def cmd_daemon(args) -> int:
    from mptcrypt.daemon.config import describe, describe_lines, load_config

    overrides = dict(ports=args.ports, policy=args.policy, queue_num=args.queue_num, fail_open=args.fail_open,
                     resume=args.resume, workers=args.workers)
    if args.check_config is not None:
        config = load_config(args.check_config, **overrides)
        print(f"{args.check_config}: ok")
        print("\n".join(describe_lines(describe(config))))
        return 0
    from mptcrypt.daemon.main import run_daemon

    config = load_config(args.config, **overrides)
    options = {}
    if args.metrics:
        from mptcrypt.daemon.metrics import parse_listen

        options["metrics"] = parse_listen(args.metrics)
    from mptcrypt.daemon.keylog import keylog_path

    if keylog_path(args.keylog):
        options["keylog"] = keylog_path(args.keylog)
    if args.takeover:
        options["takeover"] = True
    return run_daemon(config, verbose=args.verbose, loader=lambda: load_config(args.config, **overrides),
                      queue_backend=args.queue_backend, gateway_lans=_gateway_lans(args), **options)


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


def _ask(args, what: str, call):
    """call() -> the daemon's answer; with --json, errors also become a JSON object on stdout (then re-raised)."""
    try:
        return call()
    except MptcryptError as exc:
        if args.json:
            empty = {"sessions": []} if what == "sessions" else {"stats": {}} if what == "stats" else {}
            _print_json({"running": not isinstance(exc, DaemonNotRunning), "error": str(exc), **empty})
        raise


def cmd_status(args) -> int:
    from mptcrypt.daemon.config import describe_lines
    from mptcrypt.daemon.control import ControlClient

    status = _ask(args, "status", ControlClient().status)  # DaemonNotRunning: "mptcrypt: error: ..." and exit 3
    status = {k: v for k, v in status.items() if k != "ok"}
    if args.json:
        _print_json({**status, "running": True})
        return 0
    engine = status.get("engine")
    extra = f", engine {engine}" if engine and engine != "Engine" else ""
    print(
        f"mptcrypt daemon running (pid {status.get('pid')}, up {_duration(status.get('uptime', 0))}, "
        f"queue {status.get('queue')}, ports {status.get('ports')}, policy {status.get('policy')}, "
        f"{'fail-open' if status.get('fail_open') else 'fail-closed'}{extra})"
    )
    if "rules" in status:
        print("\n".join(describe_lines(status)))
    return 0


def cmd_sessions(args) -> int:
    from mptcrypt.daemon.control import ControlClient

    rows = _ask(args, "sessions", ControlClient().sessions)
    if args.json:
        _print_json({"running": True, "sessions": rows})
        return 0
    if not rows:
        print("no sessions")
        return 0
    ascii_only = not sys.stdout.isatty()
    if args.wide:
        columns, table = session_table(rows, ascii_only=ascii_only)
        _print_table([REMOTE_LABEL if c == "remote" else c for c in columns], table)
    else:
        print("\n".join(session_lines(rows, ascii_only=ascii_only)))
    return 0


def cmd_stats(args) -> int:
    from mptcrypt.daemon.control import ControlClient

    if args.prometheus:
        sys.stdout.write(ControlClient().request("metrics")["text"])
        return 0
    stats = _ask(args, "stats", ControlClient().stats)
    if args.json:
        _print_json({"running": True, "stats": stats})
        return 0
    _print_table(["counter", "value"], [[k, str(v)] for k, v in stats.items()], align_right={1})
    return 0


def _print_json(obj) -> None:
    print(json.dumps(obj, indent=2, sort_keys=True, default=str))


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


BRANCH = {False: "  └ ", True: "  `- "}  # subflow rows below their connection: box drawing on a terminal, else ASCII


def session_table(rows: list[dict], ascii_only: bool = False) -> tuple[list[str], list[list[str]]]:
    """engine.sessions() rows -> (column names, cells), every column (`sessions --wide`). The first columns are
    fixed, the others follow in order of appearance; subflows (key "subflows": a list of dicts) become indented
    rows below their connection."""
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
                cells[0] = BRANCH[ascii_only] + cells[0]
            table.append(cells)
    return columns, table


def session_lines(rows: list[dict], ascii_only: bool = False) -> list[str]:
    """The narrow `sessions` view, like tcpcrypt's tcnetstat: one line per connection (local, remote, state, the
    first SID_DIGITS hex digits of the sid, ciphers and flags) that fits 80 columns for IPv4 addresses; an MPTCP
    connection's subflows follow, indented, one line each."""
    header = ["LOCAL", REMOTE_LABEL.upper(), "STATE", "SID", "CIPHERS"]
    table = [header]
    for row in rows:
        sid = row.get("sid")
        info = ["/".join(_cipher_name(row.get(k)) for k in ("pub_cipher", "sym_cipher") if row.get(k))]
        info += [f for f in ("resumed",) if row.get(f)]
        if row.get("reason"):
            info.append(f"plain: {row['reason']}")
        table.append([format_value(row.get("local")), format_value(row.get("remote")), format_value(row.get("state")),
                      sid[:SID_DIGITS] if sid else "-", " ".join(i for i in info if i) or "-"])
    widths = [max(len(cells[i]) for cells in table) for i in range(len(header) - 1)]
    lines = []
    subflows = [None, *(row.get(SUBFLOWS_KEY) or [] for row in rows)]
    for cells, subs in zip(table, subflows):
        lines.append("  ".join([*(c.ljust(w) for c, w in zip(cells, widths)), cells[-1]]).rstrip())
        if subs and (len(subs) > 1 or any(sf.get("kind") != "tcp" for sf in subs)):
            for sf in subs:
                backup = " backup" if sf.get("backup") else ""
                lines.append(
                    f"{BRANCH[ascii_only]}{sf.get('kind', 'subflow')} #{format_value(sf.get('index'))} "
                    f"{format_value(sf.get('local'))} -> {format_value(sf.get('remote'))} "
                    f"{format_value(sf.get('state'))}{backup} {_bytes(sf.get('bytes_out'))} out "
                    f"{_bytes(sf.get('bytes_in'))} in"
                )
    return lines


def _cipher_name(name) -> str:
    """The engine's enum name (X25519, RSA2048_E3, CHACHA20) -> the name the configuration uses (x25519, ...)."""
    from mptcrypt.daemon.config import PUB_CIPHER_NAMES, SYM_CIPHER_NAMES

    by_enum = {c.name: k for names in (PUB_CIPHER_NAMES, SYM_CIPHER_NAMES) for k, c in names.items()}
    return by_enum.get(str(name), str(name).lower())


def _bytes(n) -> str:
    """Bytes, short: 512, 1.2K, 16.0M, 3.1G (binary units)."""
    if not isinstance(n, int):
        return "-"
    if n < 1024:
        return str(n)
    for unit in ("K", "M", "G"):
        n /= 1024
        if n < 1024 or unit == "G":
            return f"{n:.1f}{unit}"


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
