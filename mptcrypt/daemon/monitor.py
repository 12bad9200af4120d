"""`mptcrypt monitor`: the daemon's engine events as they happen, like `ip mptcp monitor`.

The daemon turns each engine Event into a record (`event_record`) and streams it to every control-socket client
that sent {"cmd": "monitor"}. One record per line::

    {"time": 1764640000.123, "event": "protected", "kind": "protected", "flow": "10.0.1.2:40000 > 10.0.1.1:5000",
     "detail": "new index 0 sid 7ce6ad94f51b9c92"}

`event` names what happened: protected (a new connection after the public-key handshake), join-protected,
resumption, plain (with the reason in detail), join-refused, refused (policy), mac-failure (logged at the 1st,
2nd, 4th, 8th... failure: bursts, not every segment), handshake-failed, and the engine's other kinds unchanged.
`kind` is the engine's own name. `--json` prints the records as they come (for scripts); the default is one
readable line each. Once subscribed, a line on stderr says so: from then on no event is missed.
"""

from __future__ import annotations

import json
import socket
import sys
import time
from typing import Iterator

from mptcrypt.constants import CONTROL_SOCKET
from mptcrypt.errors import DaemonNotRunning, MptcryptError

# the first word of a "protected" event's detail says which kind of keying it was (core/engine.py `_keyed`)
PROTECTED_AS = {"new": "protected", "join": "join-protected", "resumed": "resumption"}


def event_record(event, now: float | None = None) -> dict:
    """The line the monitor streams for one engine Event (kind, flow, detail)."""
    name = event.kind
    if name == "protected":
        name = PROTECTED_AS.get(event.detail.split(" ", 1)[0], name)
    return {"time": round(time.time() if now is None else now, 6), "event": name, "kind": event.kind,
            "flow": event.flow, "detail": event.detail}


def stream(name: str = CONTROL_SOCKET, connect_timeout: float = 5.0) -> Iterator[dict]:
    """Subscribe to the daemon of this namespace and yield its event records until it goes away."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
    try:
        sock.settimeout(connect_timeout)
        try:
            sock.connect(name)
        except OSError as exc:
            raise DaemonNotRunning(
                f"no mptcrypt daemon answers in this network namespace ({exc.strerror or exc}); start one with "
                "`sudo mptcrypt daemon`, or run this with `ip netns exec NS` for namespace NS"
            ) from None
        sock.sendall(b'{"cmd":"monitor"}\n')
        lines = sock.makefile("rb")
        first = json.loads(lines.readline() or b"{}")
        if not first.get("subscribe"):
            raise MptcryptError(f"the daemon refused to stream events: {first.get('error', 'no reason given')}")
        sock.settimeout(None)  # events come when they come
        print("monitoring the daemon's events (Ctrl-C to stop)", file=sys.stderr, flush=True)
        for line in lines:
            yield json.loads(line)
    finally:
        sock.close()


def format_record(record: dict) -> str:
    """One readable line: time, event, flow, detail."""
    stamp = time.strftime("%H:%M:%S", time.localtime(record["time"])) + f".{int(record['time'] * 1000) % 1000:03d}"
    detail = f"  {record['detail']}" if record.get("detail") else ""
    return f"{stamp} {record['event']:<15} {record['flow']}{detail}"


def register(sub) -> None:
    p = sub.add_parser(
        "monitor",
        help="stream the daemon's events as they happen (like ip mptcp monitor)",
        description="Print the events of the daemon of this network namespace as they happen: connections "
        "protected or left plain (and why), joins protected or refused, resumptions, MAC failure bursts, "
        "handshake failures. Stop with Ctrl-C.",
    )
    p.add_argument("--json", action="store_true", help="one JSON object per line (time, event, kind, flow, detail)")
    p.add_argument("--count", type=int, metavar="N", help="exit after N events")
    p.set_defaults(func=cmd_monitor)


def cmd_monitor(args) -> int:
    seen = 0
    for record in stream():
        print(json.dumps(record, separators=(",", ":")) if args.json else format_record(record), flush=True)
        seen += 1
        if args.count is not None and seen >= args.count:
            break
    return 0
