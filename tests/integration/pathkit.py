"""What the real-path tests (test_paths_*.py) share: a network with daemons, transfers, link taps, counters.

`PathNet(spec_file, spec, daemons=("client", "server"), daemon_args=...)` builds a topology (waiting for the
machine-wide topology lock), starts `mptcrypt daemon` on the given hosts and taps every interface of the given
routers with AF_PACKET, so a test sees each link in front of and behind a NAT or middlebox.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import threading
import time

from mptcrypt.wire.ip import parse_ip
from mptcrypt.wire.tcp import parse_options, parse_tcp

PY = sys.executable
MARKER = "MPTCRYPT-PATHS-MARKER-5c1e"
FALLBACKS = ("MPTcpExtMPCapableFallbackACK", "MPTcpExtMPCapableFallbackSYNACK", "MPTcpExtDSSFallback",
             "MPTcpExtMPCapableDataFallback", "MPTcpExtDssFallback")
KIND_EXP = 253  # RFC 6994 experimental option: every mptcrypt message and the MAC
ETH_P_ALL, ETH_IPV4, ETH_IPV6 = 0x0003, b"\x08\x00", b"\x86\xdd"


class Tap:
    """Every frame one interface of a host sends or receives (AF_PACKET), kept in memory."""

    def __init__(self, host: str, intf: str):
        from pyroute2 import netns

        self.name = f"{host}:{intf}"
        self.sock = netns.create_socket(f"mptc-{host}", socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
        self.sock.bind((intf, 0))
        self.sock.settimeout(0.2)
        self.frames: list[bytes] = []
        self._stop = False
        self._t = threading.Thread(target=self._run, daemon=True)
        self._t.start()

    def _run(self) -> None:
        while not self._stop:
            try:
                self.frames.append(self.sock.recv(65535))
            except (TimeoutError, OSError):
                continue

    def close(self) -> None:
        self._stop = True
        self._t.join()
        self.sock.close()

    def tcp(self, port: int | None = None):
        """(ip header, tcp header, payload) of the IPv4/IPv6 TCP segments seen, optionally of one server port."""
        for frame in list(self.frames):
            if frame[12:14] not in (ETH_IPV4, ETH_IPV6):
                continue
            pkt = frame[14:]
            try:
                ip = parse_ip(pkt)
                if ip.proto != 6:
                    continue
                hdr, payload = parse_tcp(pkt[ip.header_len:ip.total_len])
            except Exception:  # a fragment or something this codec does not read: not a TCP segment here
                continue
            if port is None or port in (hdr.sport, hdr.dport):
                yield ip, hdr, payload

    def contains(self, needle: bytes) -> bool:
        return any(needle in f for f in list(self.frames))


def has_exp_option(hdr) -> bool:
    return any(o.kind == KIND_EXP for o in parse_options(hdr.options))


class PathNet:
    def __init__(self, topo_file: str, spec: str | None = None, daemons=("client", "server"),
                 daemon_args=("--ports", "5000-5099"), taps=(), per_host_args=None):
        from conftest import topology_path
        from mptcrypt.topo.daemons import spawn_in_netns
        from mptcrypt.topo import Net, load_topo

        topo, *_ = load_topo(topology_path(topo_file), spec)
        self.net = Net(topo, state_file=None, lock_timeout=900)
        self.net.start()
        self.daemons: dict = {}
        self.taps: list[Tap] = []
        try:
            for host in daemons:
                args = (per_host_args or {}).get(host, daemon_args)
                self.daemons[host] = spawn_in_netns(f"mptc-{host}", *args)
            for host in taps:
                for intf in self.net[host].intfNames():
                    self.taps.append(Tap(host, intf))
        except BaseException:
            self.stop()
            raise

    def __getitem__(self, host):
        return self.net[host]

    def stop(self) -> dict[str, int]:
        from mptcrypt.topo.daemons import stop

        for tap in self.taps:
            tap.close()
        rcs = {h: stop(p, remove_log=True) for h, p in self.daemons.items()}
        self.net.stop()
        return rcs

    def restart_daemon(self, host: str, *args: str) -> None:
        from mptcrypt.topo.daemons import spawn_in_netns, stop

        stop(self.daemons.pop(host), remove_log=True)
        self.daemons[host] = spawn_in_netns(f"mptc-{host}", *args)

    def clear_taps(self) -> None:
        for tap in self.taps:
            tap.frames.clear()

    # --- observations ----------------------------------------------------------------------------------------
    def stats(self, host: str) -> dict:
        return self._ask(host, "stats")

    def sessions(self, host: str) -> list[dict]:
        return self._ask(host, "sessions")

    def _ask(self, host: str, what: str):
        """`mptcrypt stats|sessions --json` in the host: {"running": true, "stats": {...}} -> the inner value."""
        answer = json.loads(self.net[host].run([PY, "-m", "mptcrypt", what, "--json"]).stdout)
        assert answer.get("running", True), f"{host}: {answer.get('error')}"
        return answer[what]

    def row(self, host: str, port: int) -> dict | None:
        rows = [r for r in self.sessions(host) if r["remote"].endswith(f":{port}") or r["local"].endswith(f":{port}")]
        return rows[-1] if rows else None

    def keyed_subflows(self, host: str, port: int) -> list[dict]:
        """The subflows of the connection on `port` that ran protected (encrypting, or closed since: the daemon
        keeps a closed flow's row for a few seconds)."""
        row = self.row(host, port) or {}
        return [s for s in row.get("subflows", []) if s["state"] in ("encrypting", "closed")] if row.get("sid") else []

    def nstat(self, host: str) -> dict:
        from mptcrypt.topo import mptcp_counters

        return mptcp_counters(self.net[host])

    def fallbacks(self, host: str) -> int:
        counters = self.nstat(host)
        return sum(counters.get(name, 0) for name in FALLBACKS)

    # --- traffic -------------------------------------------------------------------------------------------------
    def transfer(self, to: str, port: int, nbytes: int, mptcp: bool = True, during=None, bind: str | None = None,
                 sink_bind: str = "0.0.0.0", timeout: float = 60.0, client: str = "client", server: str = "server"):
        """Sink on `server`, source on `client`; `during(source_proc)` runs while the data flows.
        Returns (sent, got): the JSON reports (sent is None when the source failed)."""
        mp = ["--mptcp"] if mptcp else []
        sink = self.net[server].popen([PY, "-m", "mptcrypt.traffic", "sink", "--port", str(port), "--bind", sink_bind,
                                       "--count", "1", *mp], stdout=subprocess.PIPE, text=True)
        assert json.loads(sink.stdout.readline())["event"] == "listening"
        host = f"[{to}]" if ":" in to else to
        source = self.net[client].popen(
            [PY, "-m", "mptcrypt.traffic", "source", "--to", f"{host}:{port}", "--bytes", str(nbytes),
             "--marker", MARKER, *(["--bind", bind] if bind else []), *mp],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        if during is not None:
            during(source)
        try:
            out, err = source.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            source.kill()
            out, err = source.communicate()
            err = "source timed out (connection hung)\n" + err
        lines = out.strip().splitlines()
        sent = json.loads(lines[-1]) if lines and source.returncode == 0 else None
        got = None
        if sent is not None:
            got = json.loads(sink.stdout.readline())
        sink.kill()
        sink.wait(timeout=10)
        self.last_error = err
        return sent, got


def wait_for(predicate, timeout: float = 10.0, step: float = 0.1):
    """Poll until `predicate()` is truthy (returns it) or the timeout passes (returns the last value)."""
    deadline = time.monotonic() + timeout
    value = predicate()
    while not value and time.monotonic() < deadline:
        time.sleep(step)
        value = predicate()
    return value
