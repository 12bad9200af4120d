"""Unit tests of the daemon's edges with a fake engine: rules text, raw packet destinations, the NFQUEUE callback
logic, the control protocol over a real abstract socket (in-process), the CLI and the Python API. No root needed."""

from __future__ import annotations

import json
import logging
import os
import selectors
import socket
import subprocess
import threading
import time

import pytest

import mptcrypt
from mptcrypt import api, cli
from mptcrypt.core.events import ACCEPT, Event, Result, Verdict
from mptcrypt.daemon import control as control_mod
from mptcrypt.daemon import iptables, nfqueue, rawsock
from mptcrypt.daemon.cli import format_value, session_lines, session_table
from mptcrypt.daemon.config import DaemonConfig
from mptcrypt.daemon.control import MAX_REQUEST, ControlClient, ControlServer, peer_pid
from mptcrypt.daemon.main import Daemon, format_ports
from mptcrypt.daemon.nfqueue import COPY_LIMIT, NF_INET_LOCAL_IN, NF_INET_LOCAL_OUT, QueueWorker, ip_total_length
from mptcrypt.core.state import State
from mptcrypt.errors import AlreadyRunningError, DaemonNotRunning, HandshakeInProgress, KernelFeatureError, MptcryptError


# --- helpers ----------------------------------------------------------------------------------------------------


def ipv4(src="10.0.0.1", dst="10.0.0.2", payload=b"", total=None) -> bytes:
    length = 20 + 20 + len(payload) if total is None else total
    header = bytes([0x45, 0]) + length.to_bytes(2, "big") + bytes(4) + bytes([64, 6, 0, 0])
    header += socket.inet_aton(src) + socket.inet_aton(dst)
    return header + bytes(20) + payload


def ipv6(src="fd00::1", dst="fd00::2", payload=b"") -> bytes:
    plen = 20 + len(payload)
    header = bytes([0x60, 0, 0, 0]) + plen.to_bytes(2, "big") + bytes([6, 64])
    header += socket.inet_pton(socket.AF_INET6, src) + socket.inet_pton(socket.AF_INET6, dst)
    return header + bytes(20) + payload


class FakeEngine:
    """The core's surface; `script` maps a packet to what handle() does."""

    name = "fake"

    def __init__(self):
        self.calls: list[tuple[bytes, bool, float]] = []
        self.result: Result | Exception = ACCEPT
        self.timer_at: float | None = None
        self.timer_packets: list[bytes] = []
        self.pending: list[Event] = []
        self.rows: list[dict] = []
        self.sids: dict = {}
        self.states: dict = {}

    def handle(self, packet, outbound, now):
        self.calls.append((packet, outbound, now))
        if isinstance(self.result, Exception):
            raise self.result
        return self.result

    def handle_timer(self, now):
        self.timer_at = None
        return self.timer_packets

    def next_timer(self):
        return self.timer_at

    def events(self):
        out, self.pending = self.pending, []
        return out

    def sessions(self):
        return self.rows

    def stats(self):
        return {"segments_protected": 7, "mac_failures": 1}

    def session_id(self, local, remote):
        return self.sids.get((tuple(local), tuple(remote)))

    def flow_state(self, local, remote):
        return self.states.get((tuple(local), tuple(remote)))


class FakePacket:
    def __init__(self, payload: bytes, hook: int = NF_INET_LOCAL_OUT):
        self.payload = payload
        self.hook = hook
        self.verdicts: list[str] = []
        self.new_payload = None

    def get_payload(self):
        return self.payload

    def set_payload(self, b: bytes):
        assert type(b) is bytes
        self.new_payload = b

    def accept(self):
        self.verdicts.append("accept")

    def drop(self):
        self.verdicts.append("drop")


def make_worker(engine, clock=lambda: 100.0):
    sent: list[bytes] = []
    worker = QueueWorker(engine, 4242, sent.append, clock=clock)
    return worker, sent


def unique_name(tag: str) -> str:
    return f"\0mptcrypt-test-{tag}-{os.getpid()}-{time.monotonic_ns()}"


class ServerThread:
    """A ControlServer served from a selector loop in a thread, like the daemon does."""

    def __init__(self, handler, name):
        self.server = ControlServer(handler, name)
        self.server.bind()
        self.selector = selectors.DefaultSelector()
        self.server.attach(self.selector)
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        while not self.stop.is_set():
            for key, mask in self.selector.select(0.02):
                key.data(mask)
            self.server.poll_parked()

    def close(self):
        self.stop.set()
        self.thread.join(2)
        self.server.close()
        self.selector.close()


@pytest.fixture
def daemon_server(monkeypatch):
    """A Daemon's request handler (fake engine, no queue) behind a real abstract socket; the default control
    socket name of clients points at it."""
    name = unique_name("ctl")
    monkeypatch.setattr(control_mod, "CONTROL_SOCKET", name)
    engine = FakeEngine()
    daemon = Daemon(DaemonConfig(ports=((80, 80), (5000, 5100))), engine=engine, control_name=name)
    srv = ServerThread(daemon.handle_request, name)
    yield engine, name
    srv.close()


# --- iptables rules text ----------------------------------------------------------------------------------------


def test_rules_all_ports_fail_closed():
    lines = iptables.rule_lines(4242)
    assert lines == [
        "-A MPTC-OUT -m mark --mark 0x4d50 -j RETURN",
        "-A MPTC-OUT -o lo -j RETURN",
        "-A MPTC-OUT -p tcp -j NFQUEUE --queue-num 4242",
        "-A MPTC-IN -m mark --mark 0x4d50 -j RETURN",
        "-A MPTC-IN -i lo -j RETURN",
        "-A MPTC-IN -p tcp --tcp-flags SYN SYN -m limit --limit 10000/sec --limit-burst 10000 -j NFQUEUE "
        "--queue-num 4243",
        "-A MPTC-IN -p tcp --tcp-flags SYN SYN -j DROP",  # arriving SYNs over the SYN lane's rate
        "-A MPTC-IN -p tcp -j NFQUEUE --queue-num 4242",
        "-A MPTC-IN -p icmp --icmp-type fragmentation-needed -j NFQUEUE --queue-num 4242",
        "-I OUTPUT 1 -j MPTC-OUT",
        "-I INPUT 1 -j MPTC-IN",
    ]
    assert not any("bypass" in line for line in lines)


def test_rules_ports_and_fail_open():
    lines = iptables.rule_lines(7, ((22, 22), (5000, 5100)), fail_open=True)
    queued = [line for line in lines if "NFQUEUE" in line]
    assert queued == [
        "-A MPTC-OUT -p tcp -m multiport --ports 22,5000:5100 -j NFQUEUE --queue-num 7 --queue-bypass",
        "-A MPTC-IN -p tcp --tcp-flags SYN SYN -m multiport --ports 22,5000:5100 -m limit --limit 10000/sec "
        "--limit-burst 10000 -j NFQUEUE --queue-num 8 --queue-bypass",
        "-A MPTC-IN -p tcp -m multiport --ports 22,5000:5100 -j NFQUEUE --queue-num 7 --queue-bypass",
        "-A MPTC-IN -p icmp --icmp-type fragmentation-needed -j NFQUEUE --queue-num 7 --queue-bypass",
    ]
    v6 = iptables.rule_lines(7, family=iptables.IPV6)
    assert "-A MPTC-IN -p ipv6-icmp --icmpv6-type packet-too-big -j NFQUEUE --queue-num 7" in v6


def test_multiport_splits_at_15_slots():
    ports = tuple((p, p) for p in range(1, 14)) + ((100, 200), (300, 400))  # 13 + 2 + 2 slots
    specs = iptables.multiport_specs(ports)
    assert specs == [",".join(str(p) for p in range(1, 14)) + ",100:200", "300:400"]
    for spec in specs:
        assert sum(2 if ":" in item else 1 for item in spec.split(",")) <= 15
    assert iptables.multiport_specs(()) == []


def test_gateway_rules_queue_forwarded_lan_traffic_by_family():
    lans = ("192.168.10.0/24", "fd00:11::/64")
    v4 = iptables.gateway_rule_lines(5, lans, ((80, 80),))
    assert "-A MPTC-GW-OUT -s 192.168.10.0/24 -p tcp -m multiport --ports 80 -j NFQUEUE --queue-num 5" in v4
    assert "-A MPTC-GW-IN -d 192.168.10.0/24 -p tcp -m multiport --ports 80 -j NFQUEUE --queue-num 5" in v4
    syn_lane = "-A MPTC-GW-IN -d 192.168.10.0/24 -p tcp --tcp-flags SYN SYN -m multiport --ports 80 -m limit " \
               "--limit 10000/sec --limit-burst 10000 -j NFQUEUE --queue-num 6"  # the SYN lane, then over-rate DROP
    assert v4.index(syn_lane) + 2 == v4.index(
        "-A MPTC-GW-IN -d 192.168.10.0/24 -p tcp -m multiport --ports 80 -j NFQUEUE --queue-num 5")
    assert v4.index("-A MPTC-GW-OUT -d 192.168.10.0/24 -j RETURN") < v4.index(
        "-A MPTC-GW-OUT -s 192.168.10.0/24 -p tcp -m multiport --ports 80 -j NFQUEUE --queue-num 5")  # LAN to LAN
    assert v4[-2:] == ["-I PREROUTING 1 -j MPTC-GW-OUT", "-I POSTROUTING 1 -j MPTC-GW-IN"]
    assert not any("fd00" in line for line in v4)
    v6 = iptables.gateway_rule_lines(5, lans, family=iptables.IPV6)
    assert "-A MPTC-GW-IN -d fd00:11::/64 -p ipv6-icmp --icmpv6-type packet-too-big -j NFQUEUE --queue-num 5" in v6
    script = iptables.install_script(5, lans=lans)
    assert script.startswith("*mangle\n:MPTC-GW-OUT - [0:0]\n:MPTC-GW-IN - [0:0]\n")
    saved = "*mangle\n:PREROUTING ACCEPT [0:0]\n:MPTC-GW-OUT - [0:0]\n:MPTC-GW-IN - [0:0]\n" \
            "-A PREROUTING -j MPTC-GW-OUT\n-A POSTROUTING -j MPTC-GW-IN\nCOMMIT\n"
    removal = iptables.removal_script(saved, lans).splitlines()
    assert removal[:3] == ["*mangle", "-D PREROUTING -j MPTC-GW-OUT", "-D POSTROUTING -j MPTC-GW-IN"]
    assert iptables.removal_script(saved) is None  # host-mode chains live in the filter table


def test_install_script_is_one_transaction():
    script = iptables.install_script(4242, ((443, 443),))
    lines = script.splitlines()
    assert lines[0] == "*filter" and lines[-1] == "COMMIT"
    assert ":MPTC-OUT - [0:0]" in lines and ":MPTC-IN - [0:0]" in lines


SAVE_WITH_STALE = """\
# Generated by iptables-save v1.8.9 (nf_tables)
*filter
:INPUT ACCEPT [0:0]
:FORWARD ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
:MPTC-IN - [0:0]
:MPTC-OUT - [0:0]
:MPTC-OTHER - [0:0]
-A INPUT -j MPTC-IN
-A INPUT -j MPTC-IN
-A INPUT -p udp -j ACCEPT
-A OUTPUT -j MPTC-OUT
-A OUTPUT -j MPTC-OTHER
-A MPTC-IN -m mark --mark 0x4d50 -j RETURN
-A MPTC-OUT -p tcp -j NFQUEUE --queue-num 4242
COMMIT
"""


def test_removal_script_deletes_every_jump_then_our_chains_only():
    assert iptables.chains_present(SAVE_WITH_STALE) == {"MPTC-IN", "MPTC-OUT"}
    script = iptables.removal_script(SAVE_WITH_STALE)
    assert script.splitlines() == [
        "*filter",
        "-D INPUT -j MPTC-IN",
        "-D INPUT -j MPTC-IN",
        "-D OUTPUT -j MPTC-OUT",
        "-F MPTC-IN",
        "-F MPTC-OUT",
        "-X MPTC-IN",
        "-X MPTC-OUT",
        "COMMIT",
    ]  # MPTC-OTHER belongs to someone else: untouched


def test_removal_script_none_when_clean():
    assert iptables.removal_script("*filter\n:INPUT ACCEPT [0:0]\nCOMMIT\n") is None


def test_missing_iptables_is_a_kernel_feature_error(monkeypatch):
    monkeypatch.setattr(iptables.shutil, "which", lambda name: None)
    with pytest.raises(KernelFeatureError, match="iptables is not installed"):
        iptables.Rules(4242)


@pytest.mark.parametrize(
    "stderr, exc, match",
    [
        ("iptables-restore v1.8.9: Couldn't load target `NFQUEUE':No such file", KernelFeatureError, "NFQUEUE"),
        ("iptables-restore: line 5 failed: Permission denied (you must be root)", MptcryptError, "needs root"),
        ("something else", MptcryptError, "failed \\(exit 1\\): something else"),
    ],
)
def test_iptables_errors_are_readable(monkeypatch, stderr, exc, match):
    def fake_run(argv, **kw):
        return subprocess.CompletedProcess(argv, 1, "", stderr)

    monkeypatch.setattr(iptables.subprocess, "run", fake_run)
    with pytest.raises(exc, match=match):
        iptables._run(["iptables-restore"], iptables.IPV4, "x")


def test_install_failure_leaves_nothing(monkeypatch):
    """A failing install runs the removal for every family (which finds and deletes partial state)."""
    calls = []

    def fake_run(argv, fam, stdin=None):
        calls.append((argv[0], stdin))
        if argv[0] == "ip6tables-restore" and stdin and "NFQUEUE" in stdin:
            raise KernelFeatureError("no NFQUEUE for IPv6")
        return SAVE_WITH_STALE if argv[0].endswith("-save") else ""

    monkeypatch.setattr(iptables, "_run", fake_run)
    rules = iptables.Rules(4242)
    rules.families = [iptables.IPV4, iptables.IPV6]
    with pytest.raises(KernelFeatureError):
        rules.install()
    assert rules.installed == []
    removals = [argv for argv, stdin in calls if stdin and stdin.startswith("*filter\n-D")]
    # (stale chains are now replaced in the install transaction itself, so one removal per family: the cleanup)
    assert "iptables-restore" in removals and "ip6tables-restore" in removals


# --- raw socket destination parsing ------------------------------------------------------------------------------


def test_destination_v4_v6():
    assert rawsock.destination(ipv4(dst="192.0.2.7")) == (socket.AF_INET, "192.0.2.7")
    assert rawsock.destination(ipv6(dst="2001:db8::9")) == (socket.AF_INET6, "2001:db8::9")


@pytest.mark.parametrize("packet", [b"", b"\x45" + bytes(10), b"\x60" + bytes(30), b"\x15" + bytes(40)])
def test_destination_rejects_garbage(packet):
    with pytest.raises(ValueError):
        rawsock.destination(packet)


def test_ip_total_length():
    assert ip_total_length(ipv4(payload=b"x" * 10)) == 50
    assert ip_total_length(ipv6(payload=b"x" * 10)) == 70
    assert ip_total_length(b"\x45") == 0


# --- the NFQUEUE callback ----------------------------------------------------------------------------------------


def test_accept_passes_direction_and_time():
    engine = FakeEngine()
    worker, sent = make_worker(engine)
    out, inc = FakePacket(ipv4(), NF_INET_LOCAL_OUT), FakePacket(ipv4(), NF_INET_LOCAL_IN)
    worker.on_packet(out)
    worker.on_packet(inc)
    assert [c[1:] for c in engine.calls] == [(True, 100.0), (False, 100.0)]
    assert out.verdicts == inc.verdicts == ["accept"] and out.new_payload is None
    assert worker.stats()["nfq_accepted"] == 2 and worker.stats()["nfq_packets"] == 2
    assert worker.counters["nfq_outbound"] == worker.counters["nfq_inbound"] == 1
    assert sent == []


def test_accept_modified_and_inject_in_order():
    engine = FakeEngine()
    inject = [ipv4(dst="10.9.9.1"), ipv4(dst="10.9.9.2")]
    engine.result = Result(Verdict.ACCEPT, packet=ipv4(payload=b"cipher"), inject=inject)
    worker, sent = make_worker(engine)
    pkt = FakePacket(ipv4(payload=b"plain!"))
    worker.on_packet(pkt)
    assert pkt.new_payload == ipv4(payload=b"cipher") and pkt.verdicts == ["accept"]
    assert [rawsock.destination(p)[1] for p in sent] == ["10.9.9.1", "10.9.9.2"]
    assert worker.counters["nfq_modified"] == 1 and worker.counters["nfq_injected"] == 2


@pytest.mark.parametrize("verdict, counter", [(Verdict.DROP, "nfq_dropped"), (Verdict.HOLD, "nfq_held")])
def test_drop_and_hold_drop(verdict, counter):
    engine = FakeEngine()
    engine.result = Result(verdict)
    worker, _ = make_worker(engine)
    pkt = FakePacket(ipv4())
    worker.on_packet(pkt)
    assert pkt.verdicts == ["drop"] and worker.counters[counter] == 1


def test_slice_ends_only_after_the_verdict():
    engine = FakeEngine()
    worker, _ = make_worker(engine, clock=lambda: 5.0)
    worker._slice_end = 5.0  # as inside read() once the slice is over
    pkt = FakePacket(ipv4())
    with pytest.raises(nfqueue._SliceOver):
        worker.on_packet(pkt)
    assert pkt.verdicts == ["accept"]
    engine.result = RuntimeError("x")
    bad = FakePacket(ipv4())
    worker.on_packet(bad)  # an engine error still never raises
    assert bad.verdicts == ["drop"]


def test_kernel_queue_drops(tmp_path):
    proc = tmp_path / "nfnetlink_queue"
    proc.write_text("    1  12345  0 2 4016  0 0    5 1\n 4242  23456  3 2 4016 17 4  999 1\n")
    assert nfqueue.kernel_queue_drops(4242, str(proc)) == (17, 4)
    assert nfqueue.kernel_queue_drops(7, str(proc)) is None
    assert nfqueue.kernel_queue_drops(7, str(tmp_path / "missing")) is None


def test_engine_exception_drops_counts_and_logs_once(caplog):
    engine = FakeEngine()
    engine.result = KeyError("boom")
    worker, _ = make_worker(engine)
    packets = [FakePacket(ipv4()) for _ in range(5)]
    with caplog.at_level(logging.ERROR, logger="mptcrypt"):
        for pkt in packets:
            worker.on_packet(pkt)  # must not raise
    assert all(p.verdicts == ["drop"] for p in packets)
    assert worker.counters["nfq_engine_errors"] == 5 and worker.counters["nfq_dropped"] == 5
    assert len([r for r in caplog.records if "KeyError" in r.getMessage()]) == 1


def test_bad_result_is_dropped():
    engine = FakeEngine()
    engine.result = None  # not a Result at all
    worker, _ = make_worker(engine)
    pkt = FakePacket(ipv4())
    worker.on_packet(pkt)
    assert pkt.verdicts == ["drop"] and worker.counters["nfq_engine_errors"] == 1


def test_truncated_packet_dropped_without_engine():
    engine = FakeEngine()
    worker, _ = make_worker(engine)
    pkt = FakePacket(ipv4(payload=b"x" * (COPY_LIMIT - 40), total=9000))  # what a 9000-byte packet looks like
    worker.on_packet(pkt)
    assert pkt.verdicts == ["drop"] and engine.calls == [] and worker.counters["nfq_truncated"] == 1
    whole = FakePacket(ipv4(payload=b"x" * (COPY_LIMIT - 40)))  # exactly the copy limit, not truncated
    worker.on_packet(whole)
    assert whole.verdicts == ["accept"] and worker.stats()["nfq_dropped"] == 1


def test_inject_errors_are_counted_not_raised():
    engine = FakeEngine()
    engine.result = Result(Verdict.ACCEPT, inject=[b"\x15garbage", ipv4()])

    def send(packet):
        rawsock.destination(packet)
        raise OSError(101, "Network is unreachable")

    worker = QueueWorker(engine, 1, send, clock=lambda: 1.0)
    pkt = FakePacket(ipv4())
    worker.on_packet(pkt)
    assert pkt.verdicts == ["accept"] and worker.counters["nfq_inject_errors"] == 2


def test_timers_fire_when_due():
    now = [10.0]
    engine = FakeEngine()
    engine.timer_at = 12.0
    engine.timer_packets = [ipv4(dst="10.1.1.1")]
    worker, sent = make_worker(engine, clock=lambda: now[0])
    assert worker.timeout(1.0) == 1.0
    worker.tick()
    assert sent == []
    now[0] = 11.5
    assert worker.timeout(1.0) == pytest.approx(0.5)
    now[0] = 12.0
    assert worker.timeout(1.0) == 0.0
    worker.tick()
    assert sent == engine.timer_packets and worker.timeout(1.0) == 1.0


def test_events_are_rate_limited(caplog):
    now = [0.0]
    engine = FakeEngine()
    worker = QueueWorker(engine, 1, lambda p: None, clock=lambda: now[0], event_rate=10, event_burst=5)
    engine.pending = [Event("mac_failure", f"10.0.0.1:{i} > 10.0.0.2:80") for i in range(20)]
    with caplog.at_level(logging.INFO, logger="mptcrypt"):
        worker.tick()
        logged = [r for r in caplog.records if "mac_failure" in r.getMessage()]
        assert len(logged) == 5
        now[0] = 1.0
        worker.tick()
    assert any("15 engine events not logged" in r.getMessage() for r in caplog.records)


def test_routine_protected_events_are_streamed_but_logged_only_at_debug(caplog):
    """One "protected" event per keyed subflow: at thousands of connections/s an INFO line each is a flood (and
    ~7% of a daemon's CPU under a profiler). They still reach `mptcrypt monitor`, and the log with -v."""
    engine = FakeEngine()
    worker = QueueWorker(engine, 1, lambda p: None, clock=lambda: 0.0, event_rate=10, event_burst=5)
    streamed = []
    worker.on_events = streamed.extend
    engine.pending = [Event("protected", f"10.0.0.1:{i} > 10.0.0.2:80", "new index 0 sid ab") for i in range(8)]
    engine.pending.append(Event("mac_failure", "10.0.0.1:9 > 10.0.0.2:80"))
    with caplog.at_level(logging.INFO, logger="mptcrypt"):
        worker.tick()
    assert len(streamed) == 9
    assert [r.getMessage() for r in caplog.records] == ["mac_failure 10.0.0.1:9 > 10.0.0.2:80"]  # no token spent
    engine.pending = [Event("protected", "10.0.0.1:1 > 10.0.0.2:80", "new index 0 sid ab")]
    with caplog.at_level(logging.DEBUG, logger="mptcrypt"):
        worker.tick()
    assert caplog.records[-1].levelno == logging.DEBUG
    assert caplog.records[-1].getMessage() == "protected 10.0.0.1:1 > 10.0.0.2:80: new index 0 sid ab"


# --- control protocol --------------------------------------------------------------------------------------------


def test_control_round_trip(daemon_server):
    engine, name = daemon_server
    engine.rows = [{"local": ["10.0.0.1", 40000], "remote": ["10.0.0.2", 80], "state": "ESTABLISHED", "sid": "ab"}]
    engine.sids[(("10.0.0.1", 40000), ("10.0.0.2", 80))] = bytes.fromhex("00ff10")
    client = ControlClient(name)
    status = client.status()
    assert status["pid"] == os.getpid() and status["queue"] == 4242
    assert status["ports"] == "80,5000-5100" and status["policy"] == "opportunistic" and status["engine"] == "fake"
    assert client.sessions() == engine.rows
    stats = client.stats()
    assert stats["segments_protected"] == 7 and "nfq_packets" not in stats  # no worker in this test
    assert client.sid(("10.0.0.1", 40000), ("10.0.0.2", 80)) == bytes.fromhex("00ff10")
    assert client.sid(("::ffff:10.0.0.1", 40000), ("10.0.0.2", 80)) == bytes.fromhex("00ff10")  # mapped -> v4
    assert client.sid(("10.0.0.1", 1), ("10.0.0.2", 80)) is None


FLOW = (("10.0.0.1", 40000), ("10.0.0.2", 80))


def test_sid_waits_for_a_handshake_in_flight(daemon_server):
    """connect() returns on the SYN-ACK, INIT1/INIT2 take one more round trip: the answer waits for them."""
    engine, name = daemon_server
    engine.states[FLOW] = State.INIT1_SENT
    answer: list = []
    asker = threading.Thread(target=lambda: answer.append(ControlClient(name, timeout=5).sid(*FLOW)))
    asker.start()
    # the parked request does not hold up other clients
    assert ControlClient(name).status()["ok"]
    assert ControlClient(name).sid(("10.0.0.1", 1), ("10.0.0.2", 80)) is None  # unknown flow: answered at once
    assert not answer
    engine.sids[FLOW] = bytes.fromhex("00ff10")
    engine.states[FLOW] = State.ENCRYPTING
    asker.join(5)
    assert answer == [bytes.fromhex("00ff10")]


@pytest.mark.parametrize("final", [State.PLAIN, State.FAILED, State.REFUSED])
def test_sid_of_an_unprotected_flow_is_none_once_decided(daemon_server, final):
    engine, name = daemon_server
    engine.states[FLOW] = State.SYN_SENT_HELLO
    answers = []
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(3)
        sock.connect(name)
        request = {"cmd": "sid", "local": list(FLOW[0]), "remote": list(FLOW[1]), "wait": 3}
        sock.sendall(json.dumps(request).encode() + b'\n{"cmd": "status"}\n')  # pipelined behind the parked one
        engine.states[FLOW] = final
        buf = b""
        while buf.count(b"\n") < 2:
            buf += sock.recv(65536)
        answers = [json.loads(line) for line in buf.splitlines()]
    assert answers[0] == {"ok": True, "sid": None, "state": final.value}
    assert answers[1]["ok"] and answers[1]["pid"] == os.getpid()  # in order, after the parked answer


def test_sid_still_in_flight_at_the_deadline_is_not_not_protected(daemon_server):
    engine, name = daemon_server
    engine.states[FLOW] = State.PKCONF_SENT
    with pytest.raises(HandshakeInProgress, match="still in progress .* pkconf-sent"):
        ControlClient(name, timeout=0.5).sid(*FLOW)
    answers = raw_exchange(name, json.dumps({"cmd": "sid", "local": list(FLOW[0]), "remote": list(FLOW[1])}).encode()
                           + b"\n")
    assert answers == [{"ok": True, "sid": None, "state": "pkconf-sent", "pending": True}]  # wait 0: at once


def raw_exchange(name: str, data: bytes, lines: int = 1) -> list[dict]:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(3)
        sock.connect(name)
        sock.sendall(data)
        buf = b""
        while buf.count(b"\n") < lines:
            chunk = sock.recv(65536)
            if not chunk:
                break
            buf += chunk
    return [json.loads(line) for line in buf.splitlines()]


def test_control_errors_and_pipelining(daemon_server):
    _engine, name = daemon_server
    answers = raw_exchange(
        name,
        b'not json\n{"cmd": 3}\n{"cmd": "frobnicate"}\n{"cmd": "sid", "local": ["x", 1], "remote": ["10.0.0.2", 80]}\n'
        b'{"cmd": "status"}\n',
        lines=5,
    )
    assert [a["ok"] for a in answers] == [False, False, False, False, True]
    assert "not valid JSON" in answers[0]["error"] and "unknown command" in answers[2]["error"]
    assert "bad address" in answers[3]["error"]


def test_control_oversized_request_is_refused(daemon_server):
    _engine, name = daemon_server
    answers = raw_exchange(name, b"x" * (MAX_REQUEST + 10))
    assert answers[0]["ok"] is False and "longer than" in answers[0]["error"]
    assert ControlClient(name).status()["ok"]  # the server is still fine


def test_control_handler_bug_is_an_error_answer(daemon_server):
    engine, name = daemon_server
    engine.sessions = lambda: 1 / 0
    with pytest.raises(MptcryptError, match="ZeroDivisionError"):
        ControlClient(name).sessions()
    assert ControlClient(name).status()["ok"]


def test_second_bind_is_already_running_with_pid(daemon_server):
    _engine, name = daemon_server
    assert peer_pid(name) == os.getpid()
    with pytest.raises(AlreadyRunningError, match=f"already running in this network namespace \\(pid {os.getpid()}\\)"):
        ControlServer(lambda r: r, name).bind()


def test_client_without_daemon():
    with pytest.raises(DaemonNotRunning, match="no mptcrypt daemon is running in this network namespace"):
        ControlClient(unique_name("none")).status()


def test_client_times_out_on_a_silent_daemon():
    name = unique_name("silent")
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as listener:
        listener.bind(name)
        listener.listen(1)  # never accepts, never answers
        with pytest.raises(DaemonNotRunning, match="did not answer within 0.2 s"):
            ControlClient(name, timeout=0.2).status()


# --- CLI ---------------------------------------------------------------------------------------------------------


def test_cli_daemon_options_reach_the_config(monkeypatch):
    seen = {}
    import mptcrypt.daemon.main as main_mod

    monkeypatch.setattr(main_mod, "run_daemon",
                        lambda config, verbose=False, loader=None, **kw: seen.update(c=config, v=verbose, **kw) or 0)
    argv = ["daemon", "--ports", "22,443", "--policy", "required", "--queue-num", "9", "--fail-open", "-v",
            "--queue-backend", "batched"]
    assert cli.main(argv) == 0
    cfg = seen["c"]
    assert cfg.ports == ((22, 22), (443, 443)) and cfg.policy.value == "required"
    assert cfg.queue_num == 9 and cfg.fail_open is True and seen["v"] is True and seen["queue_backend"] == "batched"
    assert cli.main(["daemon"]) == 0
    assert seen["c"].fail_open is False and seen["c"].ports == () and seen["gateway_lans"] == ()
    assert cli.main(["daemon", "--gateway", "--lan", "192.168.10.7/24", "--lan", "fd00:11::/64"]) == 0
    assert seen["gateway_lans"] == ("192.168.10.0/24", "fd00:11::/64")


def test_cli_config_file_and_override(monkeypatch, tmp_path):
    seen = {}
    import mptcrypt.daemon.main as main_mod

    monkeypatch.setattr(main_mod, "run_daemon", lambda config, verbose=False, loader=None, **kw: seen.update(c=config) or 0)
    path = tmp_path / "m.toml"
    path.write_text('ports = "80"\nfail_open = true\npolicy = "off"\n')
    assert cli.main(["daemon", "--config", str(path), "--policy", "required"]) == 0
    assert seen["c"].ports == ((80, 80),) and seen["c"].fail_open is True and seen["c"].policy.value == "required"


@pytest.mark.parametrize(
    "argv, code, message",
    [
        (["daemon", "--ports", "80,99999"], 2, "mptcrypt: error: --ports: bad port range '99999'"),
        (["daemon", "--config", "/nonexistent/m.toml"], 2, "config file /nonexistent/m.toml not found"),
        (["daemon", "--queue-num", "70000"], 2, "--queue-num: queue_num must be between 0 and 65533"),
        (["daemon", "--gateway"], 2, "--gateway needs the networks behind this router"),
        (["daemon", "--lan", "10.0.0.0/8"], 2, "--lan only makes sense with --gateway"),
        (["daemon", "--gateway", "--lan", "10.0.0.300/8"], 2, "--lan '10.0.0.300/8'"),
    ],
)
def test_cli_config_errors_are_clean(capsys, argv, code, message):
    assert cli.main(argv) == code
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_cli_bad_policy_is_an_argparse_error(capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main(["daemon", "--policy", "sometimes"])
    assert exc.value.code == 2 and "invalid choice: 'sometimes'" in capsys.readouterr().err


def test_cli_daemon_needs_root(monkeypatch, capsys):
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    assert cli.main(["daemon"]) == 77
    err = capsys.readouterr().err
    assert "mptcrypt: error: the daemon needs root" in err and "`ip netns exec NS mptcrypt daemon` as root" in err


def test_cli_help_teaches():
    parser = cli.build_parser()
    text = parser._subparsers._group_actions[0].choices["daemon"].format_help()
    for phrase in ("needs root", "CURRENT network namespace", "ip netns exec NS mptcrypt daemon", "Fail-closed"):
        assert phrase in text


def test_cli_status_not_running(monkeypatch, capsys):
    monkeypatch.setattr(control_mod, "CONTROL_SOCKET", unique_name("cli-none"))
    assert cli.main(["status"]) == 3
    assert "no mptcrypt daemon is running in this network namespace" in capsys.readouterr().err


@pytest.mark.parametrize("command, empty", [("status", {}), ("sessions", {"sessions": []}), ("stats", {"stats": {}})])
def test_cli_json_without_a_daemon_is_still_json(monkeypatch, capsys, command, empty):
    monkeypatch.setattr(control_mod, "CONTROL_SOCKET", unique_name("cli-none"))
    assert cli.main([command, "--json"]) == DaemonNotRunning.exit_code == 3
    out, err = capsys.readouterr()
    answer = json.loads(out)
    assert answer == {"running": False, "error": answer["error"], **empty}
    assert answer["error"].startswith("no mptcrypt daemon is running") and answer["error"] in err


def test_cli_version(capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main(["--version"])
    assert exc.value.code == 0 and capsys.readouterr().out == f"mptcrypt {mptcrypt.__version__}\n"


def test_daemon_help_lists_every_signal_and_exit_status():
    import mptcrypt.errors as errors

    text = cli.build_parser()._subparsers._group_actions[0].choices["daemon"].format_help()
    signals = text.split("signals:")[1].split("exit status:")[0]
    for name in ("SIGTERM", "SIGINT", "SIGHUP", "SIGKILL"):
        assert name in signals
    statuses = text.split("exit status:")[1].split("examples:")[0]
    documented = {int(line.split()[0]) for line in statuses.splitlines() if line.strip()[:1].isdigit()}
    codes = {cls.exit_code for cls in vars(errors).values()
             if isinstance(cls, type) and issubclass(cls, errors.MptcryptError) and cls is not errors.DaemonNotRunning}
    assert codes | {0, 130} == documented  # DaemonNotRunning (3) is the client commands' status, not the daemon's


def test_cli_status_sessions_stats(daemon_server, capsys):
    engine, _name = daemon_server
    engine.rows = [
        {
            "local": ["10.0.0.1", 40000],
            "remote": ["10.0.0.2", 80],
            "state": "ESTABLISHED",
            "sid": "ab" * 8,
            "resumed": False,
            "mptcp": True,
            "subflows": [
                {"local": ["10.0.1.1", 40001], "remote": ["10.0.0.2", 80], "state": "ESTABLISHED", "index": 1}
            ],
        }
    ]
    assert cli.main(["status"]) == 0
    out = capsys.readouterr().out
    assert f"pid {os.getpid()}" in out and "ports 80,5000-5100" in out and "fail-closed" in out
    assert out.splitlines()[1:] == [
        "  policy opportunistic on ports 80,5000-5100; rules, first match wins: none",
        "  ciphers: public x25519,p256,rsa2048; symmetric aes128,chacha20; resumption on",
        "  config: defaults and command-line options (no file)",
    ]
    assert cli.main(["status", "--json"]) == 0
    status = json.loads(capsys.readouterr().out)
    assert status["running"] is True and status["pid"] == os.getpid() and status["rules"] == []
    assert status["pub_ciphers"] == ["x25519", "p256", "rsa2048"] and status["reloads"] == 0
    assert cli.main(["sessions", "--wide"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["local", "peer-as-seen", "state", "sid", "resumed", "mptcp", "index"]
    assert lines[1].split()[:3] == ["10.0.0.1:40000", "10.0.0.2:80", "ESTABLISHED"] and "abababababababab" in lines[1]
    assert lines[2].startswith("  `- 10.0.1.1:40001")  # ASCII: stdout is not a terminal
    assert cli.main(["sessions", "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == {"running": True, "sessions": engine.rows}
    assert cli.main(["stats", "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == {"running": True, "stats": {"segments_protected": 7, "mac_failures": 1}}
    assert cli.main(["stats"]) == 0
    assert "segments_protected" in capsys.readouterr().out


def test_session_table_formats():
    assert format_value(["fd00::1", 443]) == "[fd00::1]:443"
    assert format_value(None) == "-" and format_value(True) == "yes"
    columns, table = session_table([{"zeta": 1, "sid": "aa", "local": ["10.0.0.1", 1]}, {"alpha": "x"}])
    assert columns == ["local", "sid", "zeta", "alpha"]
    assert table == [["10.0.0.1:1", "aa", "1", ""], ["", "", "", "x"]]


ENGINE_ROWS = [  # the shape of Engine.sessions() rows: an MPTCP connection with a join, and a plain TCP one
    {"local": "10.0.1.2:40000", "remote": "10.0.1.1:5000", "state": "encrypting", "protected": True,
     "pub_cipher": "X25519", "sym_cipher": "CHACHA20", "sid": "82e03e180ee6b0f23c3d0b01d42fe31f" * 2,
     "resumed": True, "mptcp": True, "pk_ops": 0, "index": 0,
     "subflows": [
         {"local": "10.0.1.2:40000", "remote": "10.0.1.1:5000", "state": "encrypting", "role": "initiator",
          "kind": "mptcp", "index": 0, "addr_id": None, "backup": False, "bytes_out": 16 << 20, "bytes_in": 1200},
         {"local": "10.0.2.2:41000", "remote": "10.0.1.1:5000", "state": "encrypting", "role": "initiator",
          "kind": "join", "index": 1, "addr_id": 2, "backup": True, "bytes_out": 512, "bytes_in": 0}]},
    {"local": "10.0.1.2:40002", "remote": "10.0.1.1:22", "state": "plain", "protected": False,
     "pub_cipher": None, "sym_cipher": None, "sid": None, "resumed": False, "mptcp": False, "pk_ops": 0,
     "index": None, "reason": "peer-no-mptcrypt",
     "subflows": [{"local": "10.0.1.2:40002", "remote": "10.0.1.1:22", "state": "plain", "role": "initiator",
                   "kind": "tcp", "index": 0, "addr_id": None, "backup": False, "bytes_out": 9, "bytes_in": 9}]},
]


def test_sessions_narrow_view_fits_80_columns():
    lines = session_lines(ENGINE_ROWS, ascii_only=True)
    assert lines == [
        "LOCAL           PEER-AS-SEEN   STATE       SID       CIPHERS",
        "10.0.1.2:40000  10.0.1.1:5000  encrypting  82e03e18  x25519/chacha20 resumed",
        "  `- mptcp #0 10.0.1.2:40000 -> 10.0.1.1:5000 encrypting 16.0M out 1.2K in",
        "  `- join #1 10.0.2.2:41000 -> 10.0.1.1:5000 encrypting backup 512 out 0 in",
        "10.0.1.2:40002  10.0.1.1:22    plain       -         plain: peer-no-mptcrypt",
    ]  # one line per connection; a plain TCP connection's only subflow is the connection itself
    assert max(len(line) for line in lines) <= 80
    assert all(line.isascii() for line in lines)
    assert session_lines(ENGINE_ROWS[:1])[2].startswith("  └ mptcp #0")  # on a terminal


def test_cli_sessions_narrow_and_wide(daemon_server, capsys):
    engine, _name = daemon_server
    engine.rows = ENGINE_ROWS
    assert cli.main(["sessions"]) == 0
    assert capsys.readouterr().out.splitlines() == session_lines(ENGINE_ROWS, ascii_only=True)
    assert cli.main(["sessions", "--wide"]) == 0
    wide = capsys.readouterr().out.splitlines()
    assert len(wide) == 1 + 2 + 3  # header, two connections, three subflows
    for column in ("pk_ops", "role", "kind", "addr_id", "bytes_out", "reason"):
        assert column in wide[0].split()
    assert ENGINE_ROWS[0]["sid"] in wide[1] and wide[2].startswith("  `- 10.0.1.2:40000")


def test_format_ports():
    assert format_ports(()) == "all"
    assert format_ports(((80, 80), (5000, 5100))) == "80,5000-5100"


# --- Python API --------------------------------------------------------------------------------------------------


def test_api_session_id_of_a_connected_socket(daemon_server):
    engine, _name = daemon_server
    with socket.create_server(("127.0.0.1", 0)) as server:
        client = socket.create_connection(server.getsockname())
        peer, _ = server.accept()
        with client, peer:
            local, remote = client.getsockname(), client.getpeername()
            assert api.session_id(client) is None
            engine.sids[(local, remote)] = b"\x01" * 32
            assert api.session_id(client) == b"\x01" * 32
            assert api.session_id_for(local, remote) == b"\x01" * 32
    assert api.stats()["mac_failures"] == 1 and api.sessions() == []


def test_api_errors(monkeypatch):
    monkeypatch.setattr(control_mod, "CONTROL_SOCKET", unique_name("api-none"))
    with socket.socket() as unconnected:
        with pytest.raises(OSError):
            api.session_id(unconnected)
    a, b = socket.socketpair()
    with a, b, pytest.raises(TypeError, match="^session_id\\(\\) needs a TCP or MPTCP socket .*not AF_UNIX/SOCK_STREAM"):
        api.session_id(a)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
        with pytest.raises(TypeError, match="needs a TCP or MPTCP socket .*not AF_INET/SOCK_DGRAM protocol 0"):
            mptcrypt.session_id(udp)
        with pytest.raises(TypeError, match=r"not int; wrap a file descriptor with socket.socket\(fileno=fd\)"):
            mptcrypt.session_id(udp.fileno())
    with socket.create_server(("127.0.0.1", 0)) as server, socket.create_connection(server.getsockname()) as client:
        with pytest.raises(DaemonNotRunning):
            api.session_id(client)
