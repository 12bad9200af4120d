"""The daemon's edges against the real kernel: two namespaces joined by a veth, `mptcrypt daemon` with the REAL
netfilterqueue and iptables but the pass-through engine (tests/integration/passthrough.py), so what is tested is the
queue, the rules, the control socket, shutdown and fail-closed behaviour, not the protocol.

Needs root. Everything happens in namespaces `mptc-d-*` created and removed here; no rule touches the root
namespace."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from mptcrypt.topo.daemons import daemon_log, spawn_in_netns, stop

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root (network namespaces, iptables, NFQUEUE)"),
]

TAG = os.getpid() % 100000
NS_A, NS_B = f"mptc-d-a{TAG}", f"mptc-d-b{TAG}"
IF_A, IF_B = f"mptc-d{TAG}a", f"mptc-d{TAG}b"
ADDR_A, ADDR_B = "10.77.0.1", "10.77.0.2"
ADDR6_A, ADDR6_B = "fd77::1", "fd77::2"
PORT, OTHER_PORT = 5001, 5002
PASSTHROUGH = {"MPTCRYPT_ENGINE": "passthrough:PassthroughEngine",
               "PYTHONPATH": os.path.dirname(os.path.abspath(__file__))}  # tests/integration/passthrough.py

# Counts the bytes of each connection and answers with the count. Dual-stack, two ports.
SINK = r"""
import selectors, socket, sys
sel = selectors.DefaultSelector()
for port in map(int, sys.argv[1:]):
    s = socket.create_server(("::", port), family=socket.AF_INET6, dualstack_ipv6=True, reuse_port=True)
    s.setblocking(False)
    sel.register(s, selectors.EVENT_READ, None)
print("listening", flush=True)
counts = {}
while True:
    for key, _ in sel.select():
        if key.data is None:
            conn, _ = key.fileobj.accept()
            conn.setblocking(False)
            sel.register(conn, selectors.EVENT_READ, "c")
            counts[conn] = 0
        else:
            conn = key.fileobj
            try:
                data = conn.recv(1 << 16)
            except BlockingIOError:
                continue
            except OSError:
                data = b""
            if data:
                counts[conn] += len(data)
            else:
                sel.unregister(conn)
                try:
                    conn.setblocking(True)
                    conn.sendall(str(counts.pop(conn)).encode())
                except OSError:
                    pass
                conn.close()
"""

# Sends N bytes, prints what the sink counted; exit 1 on timeout. argv: addr port nbytes timeout [api]
SEND = r"""
import socket, sys
addr, port, n, timeout = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])
try:
    s = socket.create_connection((addr, port), timeout=timeout)
    if len(sys.argv) > 5:
        import mptcrypt.api
        print("sid", mptcrypt.api.session_id(s))
    s.sendall(b"x" * n)
    s.shutdown(socket.SHUT_WR)
    print("count", s.recv(64).decode())
except OSError as exc:
    print("failed", exc)
    sys.exit(1)
"""


def sh(*argv: str, check: bool = True, timeout: float = 20) -> subprocess.CompletedProcess:
    return subprocess.run(argv, check=check, capture_output=True, text=True, timeout=timeout)


def in_ns(ns: str, *argv: str, check: bool = False, timeout: float = 20) -> subprocess.CompletedProcess:
    return sh("ip", "netns", "exec", ns, *argv, check=check, timeout=timeout)


def mptcrypt(ns: str, *args: str, timeout: float = 20) -> subprocess.CompletedProcess:
    return in_ns(ns, sys.executable, "-m", "mptcrypt", *args, timeout=timeout)


def stats(ns: str) -> dict:
    res = mptcrypt(ns, "stats", "--json")
    assert res.returncode == 0, res.stderr
    return json.loads(res.stdout)["stats"]


def mptc_rules(ns: str) -> int:
    """`iptables-save | grep -c MPTC`, IPv4 and IPv6 together."""
    return sum(in_ns(ns, tool, check=True).stdout.count("MPTC") for tool in ("iptables-save", "ip6tables-save"))


def send(addr: str, port: int = PORT, nbytes: int = 1 << 20, timeout: float = 5.0, api: bool = False):
    args = [sys.executable, "-c", SEND, addr, str(port), str(nbytes), str(timeout)] + (["api"] if api else [])
    return in_ns(NS_A, *args, timeout=timeout + 10)


@pytest.fixture(scope="module")
def net():
    """Namespaces NS_A (client) and NS_B (server, a byte-counting sink on PORT and OTHER_PORT) joined by a veth."""
    sink = None
    try:
        for ns in (NS_A, NS_B):
            sh("ip", "netns", "add", ns)
        sh("ip", "link", "add", IF_A, "netns", NS_A, "type", "veth", "peer", "name", IF_B, "netns", NS_B)
        for ns, ifname, v4, v6 in ((NS_A, IF_A, ADDR_A, ADDR6_A), (NS_B, IF_B, ADDR_B, ADDR6_B)):
            sh("ip", "-n", ns, "addr", "add", f"{v4}/24", "dev", ifname)
            sh("ip", "-n", ns, "addr", "add", f"{v6}/64", "dev", ifname, "nodad")
            sh("ip", "-n", ns, "link", "set", ifname, "up")
            sh("ip", "-n", ns, "link", "set", "lo", "up")
        sink = subprocess.Popen(
            ["ip", "netns", "exec", NS_B, sys.executable, "-c", SINK, str(PORT), str(OTHER_PORT)],
            stdout=subprocess.PIPE,
            text=True,
        )
        assert sink.stdout.readline().strip() == "listening"
        yield
    finally:
        if sink is not None:
            sink.kill()
            sink.wait()
        for ns in (NS_A, NS_B):
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)


@pytest.fixture
def start(net):
    """start(ns, *args) -> a ready pass-through daemon; whatever a test leaves running is killed by pid after it."""
    procs: list[subprocess.Popen] = []

    def _start(ns: str, *args: str, env=PASSTHROUGH) -> subprocess.Popen:
        procs.append(spawn_in_netns(ns, *args, env=env))
        return procs[-1]

    yield _start
    for proc in procs:
        stop(proc, timeout=5, remove_log=True)


RULE_LINES = 2 * 13  # lines of iptables-save mentioning MPTC: per family 2 chains, 2 jumps, 9 rules (SYN lane + its DROP, ICMP "too big")


def test_traffic_status_second_daemon_and_clean_stop(start):
    daemon_b = start(NS_B)
    daemon_a = start(NS_A)
    status = mptcrypt(NS_B, "status")
    assert status.returncode == 0 and f"pid {daemon_b.pid}" in status.stdout, status

    for addr in (ADDR_B, ADDR6_B):
        res = send(addr, nbytes=2 << 20)
        assert res.returncode == 0 and "count 2097152" in res.stdout, (addr, res.stdout, res.stderr)
    res = send(ADDR_B, nbytes=1000, api=True)  # the API answers through the daemon of the client's namespace
    assert "sid None" in res.stdout and "count 1000" in res.stdout, res

    sb, sa = stats(NS_B), stats(NS_A)
    for s in (sa, sb):
        assert s["nfq_inbound"] > 0 and s["nfq_outbound"] > 0 and s["nfq_accepted"] == s["nfq_packets"]
        assert s["nfq_dropped"] == s["nfq_engine_errors"] == s["nfq_truncated"] == 0
        assert s["nfq_queue_full"] == s["nfq_socket_overflow"] == 0
    assert sb["bytes_in"] > 2 * (2 << 20)  # both transfers went through B's queue, IPv4 and IPv6

    second = mptcrypt(NS_B, "daemon", timeout=20)
    assert second.returncode == 75, second
    assert f"a daemon is already running in this network namespace (pid {daemon_b.pid})" in second.stderr
    assert mptc_rules(NS_B) == RULE_LINES  # the failed second daemon left the first one's rules alone

    assert stop(daemon_b) == 0 and stop(daemon_a) == 0
    assert mptc_rules(NS_A) == mptc_rules(NS_B) == 0
    assert "stopping (SIGTERM)" in daemon_log(daemon_b) and "Traceback" not in daemon_log(daemon_b)
    assert mptcrypt(NS_B, "status").returncode == 3
    assert send(ADDR_B, nbytes=1000).returncode == 0  # no daemon, no rules: plain again


def wait_for_log(proc: subprocess.Popen, text: str, timeout: float = 10.0) -> None:
    """Until the daemon's log shows `text` (a readiness wait: the test asserts on what follows, not on time)."""
    deadline = time.monotonic() + timeout
    while text not in daemon_log(proc):
        assert proc.poll() is None and time.monotonic() < deadline, (text, daemon_log(proc))
        time.sleep(0.02)


def test_sighup_reloads_the_policy_and_a_bad_file_keeps_the_running_one(start, tmp_path):
    path = tmp_path / "mptcrypt.toml"
    path.write_text('policy = "opportunistic"\n')
    daemon = start(NS_B, "--ports", f"{PORT}", "--config", str(path), env={})  # the real engine: policy matters
    assert send(ADDR_B).returncode == 0  # A runs no daemon: plain, and opportunistic lets it through

    path.write_text('policy = "required"\n')
    os.kill(daemon.pid, signal.SIGHUP)
    wait_for_log(daemon, "reloaded configuration (policy required")
    refused = send(ADDR_B)
    assert refused.returncode == 1 and "Connection refused" in refused.stdout, refused
    status = json.loads(mptcrypt(NS_B, "status", "--json").stdout)
    assert (status["running"], status["pid"], status["policy"], status["reloads"]) == (True, daemon.pid, "required", 1)

    path.write_text('policy = "off"\n[[rule]]\nport = "22"\npolicy = "off"\npeers = "10.77.0.0/24"\n')
    os.kill(daemon.pid, signal.SIGHUP)
    wait_for_log(daemon, "reload failed, the running configuration stays")
    assert "rule 1: unknown key 'peers'" in daemon_log(daemon)
    assert send(ADDR_B).returncode == 1  # still required
    assert json.loads(mptcrypt(NS_B, "status", "--json").stdout)["reloads"] == 1
    assert stop(daemon) == 0 and "Traceback" not in daemon_log(daemon)
    assert mptc_rules(NS_B) == 0


def test_kill9_fails_closed_then_restart_replaces_stale_chains(start):
    daemon = start(NS_B, "--ports", f"{PORT}")
    assert send(ADDR_B).returncode == 0
    os.kill(daemon.pid, signal.SIGKILL)
    daemon.wait()
    assert mptc_rules(NS_B) > 0  # left behind by design
    blocked = send(ADDR_B, timeout=1.5)
    assert blocked.returncode == 1 and "timed out" in blocked.stdout, blocked  # fail-closed: dropped, not leaked
    assert send(ADDR_B, port=OTHER_PORT).returncode == 0  # a port the daemon never intercepted still works

    again = start(NS_B, "--ports", f"{PORT}")
    assert "replacing stale IPv4 chains MPTC-IN, MPTC-OUT" in daemon_log(again)
    assert mptc_rules(NS_B) == RULE_LINES  # replaced, not doubled
    assert send(ADDR_B, nbytes=1 << 20).returncode == 0
    before = stats(NS_B)["nfq_packets"]
    assert send(ADDR_B, port=OTHER_PORT).returncode == 0
    assert stats(NS_B)["nfq_packets"] == before  # --ports: OTHER_PORT is not queued
    assert stop(again) == 0 and mptc_rules(NS_B) == 0


def test_fail_open_lets_traffic_pass_after_kill9(start):
    daemon = start(NS_B, "--fail-open")
    assert "--queue-bypass" in in_ns(NS_B, "iptables-save", check=True).stdout
    os.kill(daemon.pid, signal.SIGKILL)
    daemon.wait()
    assert send(ADDR_B, timeout=3).returncode == 0  # bypass: plain while no daemon listens
    again = start(NS_B)  # fail-closed again, replacing the stale fail-open chains
    assert "--queue-bypass" not in in_ns(NS_B, "iptables-save", check=True).stdout
    assert stop(again) == 0 and mptc_rules(NS_B) == 0


CRASH = r"""
import subprocess, sys
sys.path.insert(0, TESTDIR)
from mptcrypt.daemon.config import DaemonConfig
from mptcrypt.daemon.main import Daemon
from passthrough import PassthroughEngine

class Crashing(Daemon):
    def _loop(self, *args):
        saved = subprocess.run(["iptables-save"], capture_output=True, text=True).stdout
        print("rules while running", saved.count("MPTC"))
        raise RuntimeError("a bug in the loop")

try:
    Crashing(DaemonConfig(), engine=PassthroughEngine()).run()
except RuntimeError as exc:
    print("raised", exc)
"""


def test_a_crash_in_the_loop_still_removes_the_rules(net):
    res = in_ns(NS_B, sys.executable, "-c", CRASH.replace("TESTDIR", repr(PASSTHROUGH["PYTHONPATH"])))
    assert f"rules while running {RULE_LINES // 2}" in res.stdout and "raised a bug in the loop" in res.stdout, res
    assert mptc_rules(NS_B) == 0


# Receives TCP segments carrying MARKER (a raw IPPROTO_TCP socket sees every TCP segment the host receives).
RECEIVE = r"""
import socket, sys
family = socket.AF_INET6 if sys.argv[1] == "6" else socket.AF_INET
s = socket.socket(family, socket.SOCK_RAW, socket.IPPROTO_TCP)
s.settimeout(5)
print("ready", flush=True)
while True:
    if b"MPTC-INJECT-MARKER" in s.recv(65535):
        print("got it")
        break
"""

# With the daemon's rules installed and NO process on the queue (fail-closed), a kernel segment is dropped but a
# segment sent through RawSocket (fwmark INJECT_MARK) leaves. argv: 4|6 src dst
INJECT = r"""
import socket, struct, sys
from mptcrypt.daemon.iptables import Rules
from mptcrypt.daemon.rawsock import RawSocket

version, src, dst = sys.argv[1:4]
family = socket.AF_INET6 if version == "6" else socket.AF_INET
tcp = struct.pack("!HHIIBBHHH", 40000, 5001, 1, 0, 5 << 4, 0x18, 1000, 0, 0) + b"MPTC-INJECT-MARKER"
if version == "4":
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(tcp), 0, 0, 64, 6, 0,
                     socket.inet_aton(src), socket.inet_aton(dst))
else:
    ip = struct.pack("!IHBB16s16s", 6 << 28, len(tcp), 6, 64,
                     socket.inet_pton(family, src), socket.inet_pton(family, dst))
rules = Rules(4242)
rules.install()
try:
    try:
        socket.create_connection((dst, 5001), timeout=1).close()
        print("kernel segment passed")
    except OSError:
        print("kernel segment dropped")
    with RawSocket() as raw:
        raw.send(ip + tcp)
    print("sent")
finally:
    rules.remove()
"""


@pytest.mark.parametrize("version, src, dst", [("4", ADDR_A, ADDR_B), ("6", ADDR6_A, ADDR6_B)])
def test_injected_segments_bypass_the_queue(net, version, src, dst):
    receiver = subprocess.Popen(
        ["ip", "netns", "exec", NS_B, sys.executable, "-c", RECEIVE, version], stdout=subprocess.PIPE, text=True
    )
    try:
        assert receiver.stdout.readline().strip() == "ready"
        res = in_ns(NS_A, sys.executable, "-c", INJECT, version, src, dst)
        assert "kernel segment dropped" in res.stdout and "sent" in res.stdout, res
        out, _ = receiver.communicate(timeout=10)
        assert "got it" in out
    finally:
        if receiver.poll() is None:
            receiver.kill()
            receiver.wait()
    assert mptc_rules(NS_A) == 0
