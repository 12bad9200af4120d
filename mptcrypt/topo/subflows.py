"""Read MPTCP state out of a namespace: TCP subflows (`ss -tni`), MPTCP sockets (`ss -Mni`), and the
MPTcpExt counters that `nstat` shows (read from /proc/net/netstat). Plus the two-subflow demo."""

from __future__ import annotations

import re
import socket
import threading
import time
from typing import Any

ULP_MPTCP = "tcp-ulp-mptcp"
_KV_RE = re.compile(r"([a-z_]+):(\S+)")
DEMO_PORT = 5201
DEMO_BYTES = 4 << 20
FIRST_CHUNK = 1 << 14


def _parse_ss_line(line: str) -> dict[str, Any] | None:
    """One `ss -niOH` line -> {'state'?, 'local', 'remote', 'dev', key: value...}."""
    fields = line.split()
    addrs = [i for i, f in enumerate(fields) if re.match(r"^[\[\]0-9a-fA-F.:*%\w-]+:(\d+|\*)$", f)]
    if len(addrs) < 2:
        return None
    li, ri = addrs[0], addrs[1]
    local, remote = fields[li], fields[ri]
    dev = None
    if "%" in local:  # 10.0.2.2%c-eth1:52569: the socket is bound to a device
        host, rest = local.split("%", 1)
        dev, port = rest.rsplit(":", 1)
        local = f"{host}:{port}"
    entry: dict[str, Any] = {"local": local, "remote": remote, "dev": dev}
    if li >= 3 and not fields[0].isdigit():
        entry["state"] = fields[0]
    info = " ".join(fields[ri + 1:])
    entry["mptcp"] = ULP_MPTCP in info
    for key, value in _KV_RE.findall(info):
        entry.setdefault(key, int(value) if value.isdigit() else value)
    return entry


def tcp_subflows(node: Any, port: int | None = None) -> list[dict[str, Any]]:
    """Established TCP sockets that are MPTCP subflows in `node`'s namespace (optionally on `port`)."""
    argv = ["ss", "-tniOH", "state", "established"]
    if port is not None:
        argv += [f"( sport = :{port} or dport = :{port} )"]
    out = node.run(argv).stdout
    found = []
    for line in out.splitlines():
        entry = _parse_ss_line(line)
        if entry is not None and entry["mptcp"]:
            found.append(entry)
    return found


def mptcp_connections(node: Any, port: int | None = None) -> list[dict[str, Any]]:
    """MPTCP sockets (`ss -Mni`) in `node`'s namespace. `subflows` counts the extra subflows."""
    argv = ["ss", "-MniOH"]
    if port is not None:
        argv += [f"( sport = :{port} or dport = :{port} )"]
    out = node.run(argv).stdout
    return [e for e in (_parse_ss_line(line) for line in out.splitlines()) if e is not None]


def mptcp_counters(node: Any) -> dict[str, int]:
    """The namespace's MPTcpExt* counters (as `nstat -az 'MPTcpExt*'` shows them)."""
    lines = node.run(["cat", "/proc/net/netstat"]).stdout.splitlines()
    counters: dict[str, int] = {}
    for head, values in zip(lines[::2], lines[1::2]):
        names, nums = head.split(), values.split()
        if names and names[0] == "MPTcpExt:" and nums and nums[0] == "MPTcpExt:":
            counters.update({f"MPTcpExt{k}": int(v) for k, v in zip(names[1:], nums[1:])})
    return counters


def _tx_bytes(node: Any) -> dict[str, int]:
    stats = {}
    for link in node.ipr.get_links():
        name = link.get_attr("IFLA_IFNAME")
        if name in node.intfNames():
            stats[name] = link.get_attr("IFLA_STATS64")["tx_bytes"]
    return stats


def _delta(after: dict[str, int], before: dict[str, int]) -> dict[str, int]:
    return {k: v - before.get(k, 0) for k, v in after.items() if v - before.get(k, 0)}


def demo_two_subflows(
    net: Any,
    client: str = "client",
    server: str = "server",
    dst: str = "10.0.1.1",
    port: int = DEMO_PORT,
    nbytes: int = DEMO_BYTES,
    timeout: float = 5.0,
) -> dict[str, Any]:
    """Open an MPTCP connection client -> dst:port, wait for its subflows, send `nbytes`, report.

    Returns {'subflow_count', 'subflows' (client side, while the connection is open),
    'server_subflows', 'mptcp_connections' (client `ss -M`), 'bytes_sent', 'bytes_received',
    'counters': {'client': {...}, 'server': {...}} (MPTcpExt counters that changed),
    'intf_tx_bytes' (bytes each client interface sent), 'join_s', 'elapsed_s'}.
    """
    c, s = net[client], net[server]
    before = {client: mptcp_counters(c), server: mptcp_counters(s)}
    tx_before = _tx_bytes(c)
    t0 = time.monotonic()

    listener = s.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_MPTCP)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("0.0.0.0", port))
    listener.listen(1)
    listener.settimeout(timeout)
    received = [0]
    errors: list[BaseException] = []

    def serve() -> None:
        try:
            conn, _ = listener.accept()
            with conn:
                conn.settimeout(timeout)
                while True:
                    data = conn.recv(1 << 16)
                    if not data:
                        break
                    received[0] += len(data)
                conn.sendall(str(received[0]).encode())
        except BaseException as exc:  # reported in the result, never lost in the thread
            errors.append(exc)

    thread = threading.Thread(target=serve, name="mptc-demo-server", daemon=True)
    thread.start()
    sock = c.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_MPTCP)
    sock.settimeout(timeout)
    try:
        sock.connect((dst, port))
        # The client's path manager opens more subflows only once the connection is fully established,
        # which takes the first data acknowledged by the server: send a little, then wait for the join.
        first = min(nbytes, FIRST_CHUNK)
        sock.sendall(b"\0" * first)
        deadline = time.monotonic() + timeout
        subflows = tcp_subflows(c, port)
        while len(subflows) < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
            subflows = tcp_subflows(c, port)
        join_s = time.monotonic() - t0
        sock.sendall(b"\0" * (nbytes - first))
        subflows = tcp_subflows(c, port)
        server_subflows = tcp_subflows(s, port)
        connections = mptcp_connections(c, port)
        sock.shutdown(socket.SHUT_WR)
        echo = b""
        while True:
            chunk = sock.recv(64)
            if not chunk:
                break
            echo += chunk
    finally:
        sock.close()
        thread.join(timeout)
        listener.close()
    after = {client: mptcp_counters(c), server: mptcp_counters(s)}
    return {
        "client": client,
        "server": server,
        "dst": dst,
        "port": port,
        "subflow_count": len(subflows),
        "subflows": subflows,
        "server_subflows": server_subflows,
        "mptcp_connections": connections,
        "bytes_sent": nbytes,
        "bytes_received": received[0],
        "server_ack": int(echo) if echo.isdigit() else None,
        "errors": [repr(e) for e in errors],
        "counters": {name: _delta(after[name], before[name]) for name in (client, server)},
        "intf_tx_bytes": _delta(_tx_bytes(c), tx_before),
        "join_s": round(join_s, 3),
        "elapsed_s": round(time.monotonic() - t0, 3),
    }
