"""The real daemon on both hosts of topologies/two_path.py, the kernel's MPTCP, and the bytes on the wire.

One network and one pair of daemons for the module; the tests run in file order and build on each other's
counters (each test reads deltas, so it does not depend on the others' traffic)."""

from __future__ import annotations

import json
import os
import socket
import struct
import subprocess
import sys
import threading
import time

import pytest

from mptcrypt.wire.ip import build_ip_header, parse_ip
from mptcrypt.tools.pcap import tcp_packets
from mptcrypt.wire.mptcp import Subtype, add_addr_hmac, mptcp_token, parse_mptcp
from mptcrypt.wire.tcp import ACK, RST, SYN, TCPHeader, TCPOption, encode_options, pad_options, parse_options, parse_tcp

pytestmark = pytest.mark.root

PY = sys.executable
MARKER = "MPTCRYPT-E2E-MARKER-7f3a"
FALLBACKS = ("MPTcpExtMPCapableFallbackACK", "MPTcpExtMPCapableFallbackSYNACK", "MPTcpExtDSSFallback",
             "MPTcpExtMPCapableDataFallback", "MPTcpExtDssFallback")


# ------------------------------------------------------------------ fixtures

@pytest.fixture(scope="module")
def env(request):
    from conftest import netns_unavailable, topology_path
    from mptcrypt.topo.daemons import spawn_in_netns, stop
    from mptcrypt.topo import Net, load_topo

    if netns_unavailable():
        pytest.skip(netns_unavailable())
    topo, *_ = load_topo(topology_path("two_path.py"))
    net = Net(topo, state_file=None, lock_timeout=900)  # waits for another test run's network, if any
    net.start()
    daemons = {}
    try:
        for host in ("client", "server"):
            daemons[host] = spawn_in_netns(f"mptc-{host}", "--ports", "5000-5099")
        yield {"net": net, "daemons": daemons}
    finally:
        for proc in daemons.values():
            rc = stop(proc, remove_log=True)
            assert rc == 0, "the daemon did not stop cleanly"
        leftover = {h: net[h].cmd("iptables-save") for h in ("client", "server")}
        net.stop()
    assert all("MPTC-" not in rules for rules in leftover.values()), "a daemon left MPTC- rules"
    assert not [n for n in subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout.split()
                if n in ("mptc-client", "mptc-server")]


def stats(net, host) -> dict:
    return json.loads(net[host].run([PY, "-m", "mptcrypt", "stats", "--json"]).stdout)["stats"]


def sessions(net, host) -> list[dict]:
    return json.loads(net[host].run([PY, "-m", "mptcrypt", "sessions", "--json"]).stdout)["sessions"]


def nstat(net, host) -> dict:
    from mptcrypt.topo import mptcp_counters

    return mptcp_counters(net[host])


def transfer(net, port, nbytes, mptcp=True, during=None, extra_source=()):
    """Sink in the server, source in the client; `during()` runs while the data flows. Returns both reports."""
    sink = net["server"].popen([PY, "-m", "mptcrypt.traffic", "sink", "--port", str(port)] + (["--mptcp"] if mptcp else []),
                               stdout=subprocess.PIPE, text=True)
    assert json.loads(sink.stdout.readline())["event"] == "listening"
    source = net["client"].popen([PY, "-m", "mptcrypt.traffic", "source", "--to", f"10.0.1.1:{port}", "--bytes",
                                  str(nbytes), "--marker", MARKER, *extra_source] + (["--mptcp"] if mptcp else []),
                                 stdout=subprocess.PIPE, text=True)
    if during is not None:
        during()
    out, _ = source.communicate(timeout=180)
    sent = json.loads(out.strip().splitlines()[-1])
    got = json.loads(sink.stdout.readline())
    sink.wait(timeout=10)
    return sent, got


class Capture:
    """tcpdump on one interface of a host, into a file; `packets()` parses what it caught."""

    def __init__(self, net, host, intf, path, filt="tcp"):
        self.path = path
        self.proc = net[host].popen(["tcpdump", "-i", intf, "-U", "-s", "0", "-w", path, filt],
                                    stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        line = self.proc.stderr.readline()  # "listening on IF, ...": the capture is open
        assert "listening on" in line, line

    def stop(self) -> bytes:
        self.proc.terminate()
        self.proc.wait(timeout=10)
        with open(self.path, "rb") as fh:
            data = fh.read()
        os.unlink(self.path)
        return data


class LinkTap:
    """An AF_PACKET socket on one interface of a host: sees every frame of that link, can put frames on it."""

    def __init__(self, net, host, intf):
        from pyroute2 import netns

        self.sock = netns.create_socket(f"mptc-{host}", socket.AF_PACKET, socket.SOCK_RAW, socket.htons(0x0003))
        self.sock.bind((intf, 0))
        self.sock.settimeout(0.2)
        self.mac = self.sock.getsockname()[4]
        self.seen: list[bytes] = []
        self._stop = False
        self._t = threading.Thread(target=self._run, daemon=True)
        self._t.start()

    def _run(self):
        while not self._stop:
            try:
                frame = self.sock.recv(65535)
            except (TimeoutError, OSError):
                continue
            if frame[12:14] == b"\x08\x00":
                self.seen.append(frame)

    def tcp(self):
        for frame in list(self.seen):
            pkt = frame[14:]
            ip = parse_ip(pkt)
            if ip.proto != 6:
                continue
            hdr, payload = parse_tcp(pkt[ip.header_len:ip.total_len])
            yield frame, ip, hdr, payload

    def send(self, dst_mac: bytes, packet: bytes):
        self.sock.send(dst_mac + self.mac + b"\x08\x00" + packet)

    def close(self):
        self._stop = True
        self._t.join()
        self.sock.close()


def forge(src, sport, dst, dport, seq, ack, flags, options=(), payload=b""):
    tcp = TCPHeader(sport, dport, seq & 0xFFFFFFFF, ack & 0xFFFFFFFF, flags, 500,
                    options=pad_options(encode_options(list(options))))
    body = tcp.encode(payload, src, dst)
    return build_ip_header(src, dst, len(body)) + body


def mptcp_opts(hdr):
    out = []
    for o in parse_options(hdr.options):
        if o.kind == 30:
            out.append(parse_mptcp(bytes((30, len(o.data) + 2)) + o.data))
    return out


# ------------------------------------------------------------------ tests

def test_64mib_mptcp_transfer_is_protected_end_to_end(env, tmp_path):
    net = env["net"]
    before = {h: stats(net, h) for h in ("client", "server")}
    nstat_before = {h: nstat(net, h) for h in ("client", "server")}
    caps = [Capture(net, "server", intf, str(tmp_path / f"{intf}.pcap")) for intf in ("s-eth0", "s-eth1")]
    subflows_seen = []

    def watch():
        deadline = time.time() + 20
        while time.time() < deadline and len(subflows_seen) < 2:
            for row in sessions(net, "client"):
                if row.get("mptcp") and row["remote"].endswith(":5001"):
                    subflows_seen[:] = [s for s in row["subflows"] if s["state"] == "encrypting"]
            time.sleep(0.2)

    sent, got = transfer(net, 5001, 64 << 20, during=watch)
    wires = [c.stop() for c in caps]
    assert sent["acked"] and got["bytes"] == 64 << 20 and got["sha256"] == sent["sha256"]
    assert sent["sid"] and sent["sid"] == got["sid"], "both ends must report the same session ID"
    # two protected subflows, one of them a join keyed by index >= 1
    assert len(subflows_seen) == 2, subflows_seen
    assert sorted(s["kind"] for s in subflows_seen) == ["join", "mptcp"] and max(s["index"] for s in subflows_seen) >= 1
    # MPTCP stayed MPTCP
    for h in ("client", "server"):
        after = nstat(net, h)
        for name in FALLBACKS:
            assert after.get(name, 0) == nstat_before[h].get(name, 0), f"{h}: {name} moved"
    assert nstat(net, "server")["MPTcpExtMPJoinAckRx"] > nstat_before["server"]["MPTcpExtMPJoinAckRx"]
    # both links carried protected data, and never the plaintext marker
    for wire in wires:
        assert MARKER.encode() not in wire
        pkts = [(ip, h, p) for ip, h, p in tcp_packets(wire) if 5001 in (h.sport, h.dport) and p]
        assert len(pkts) > 100
        # every data segment carries a MAC; the only payloads without one are the daemons' INIT1/INIT2
        unprotected = [p[:8] for ip, h, p in pkts if h.options[-12:-8] != bytes.fromhex("fd0c4d50")]
        assert all(p.startswith(b"MPTC") for p in unprotected) and len(unprotected) <= 4, unprotected
    # one public-key handshake per side, zero for the join
    for h in ("client", "server"):
        d = {k: stats(net, h)[k] - before[h][k] for k in ("pk_ops", "pk_handshakes", "joins_protected",
                                                           "joins_zero_pk", "mac_failures")}
        assert d == {"pk_ops": 1, "pk_handshakes": 1, "joins_protected": 1, "joins_zero_pk": 1, "mac_failures": 0}, (h, d)


def test_second_connection_resumes_without_public_key_operation(env):
    net = env["net"]
    before = {h: stats(net, h) for h in ("client", "server")}
    sent, got = transfer(net, 5002, 1 << 20, mptcp=False)
    assert got["sha256"] == sent["sha256"] and sent["sid"] and sent["sid"] == got["sid"]
    for h in ("client", "server"):
        after = stats(net, h)
        assert after["pk_ops"] == before[h]["pk_ops"], h
        assert after["resumptions"] == before[h]["resumptions"] + 1, h
    row = [r for r in sessions(net, "client") if r["remote"].endswith(":5002")][0]
    assert row["resumed"] and row["protected"] and row["sid"] == sent["sid"]


def test_unmodified_tool_through_mptcpize(env, tmp_path):
    net = env["net"]
    blob = tmp_path / "blob.bin"
    blob.write_bytes(os.urandom(8 << 20) + MARKER.encode())
    server = net["server"].popen(["mptcpize", "run", PY, "-m", "http.server", "5003", "--bind", "10.0.1.1",
                                  "--directory", str(tmp_path)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        out = tmp_path / "out.bin"
        for _ in range(50):
            r = net["client"].run(["mptcpize", "run", "curl", "-sf", "-o", str(out), "http://10.0.1.1:5003/blob.bin"],
                                  check=False)
            if r.returncode == 0:
                break
            time.sleep(0.1)
        assert r.returncode == 0, r.stderr
        assert out.read_bytes() == blob.read_bytes()
        rows = [r for r in sessions(net, "client") if r["remote"].endswith(":5003")]
        assert rows and all(r["protected"] and r["mptcp"] for r in rows)
    finally:
        server.terminate()
        server.wait(timeout=10)


def test_injected_rst_join_and_add_addr_have_no_effect(env):
    """A forged in-window RST, a join SYN with the right token from the client's second address, and an ADD_ADDR
    with a valid MPTCP HMAC (keys read off path 1) are all dropped while the transfer completes intact."""
    net = env["net"]
    before = {h: stats(net, h) for h in ("client", "server")}
    nstat_before = {h: nstat(net, h) for h in ("client", "server")}
    tap1 = LinkTap(net, "client", "c-eth0")
    tap2 = LinkTap(net, "client", "c-eth1")
    peer1 = bytes.fromhex(net["server"].run(["cat", "/sys/class/net/s-eth0/address"]).stdout.strip().replace(":", ""))
    peer2 = bytes.fromhex(net["server"].run(["cat", "/sys/class/net/s-eth1/address"]).stdout.strip().replace(":", ""))

    def attack():
        deadline = time.time() + 30
        keys = None
        while time.time() < deadline and keys is None:
            for _f, ip, hdr, _p in tap1.tcp():
                for o in mptcp_opts(hdr):
                    if o.subtype == Subtype.MP_CAPABLE and o.rcvr_key and hdr.dport == 5004:
                        keys = (o.sndr_key, o.rcvr_key, hdr)  # third ACK: client key, server key
            time.sleep(0.05)
        assert keys, "no MP_CAPABLE third ACK seen on path 1"
        key_c, key_s, _ = keys
        while True:  # until the transfer runs: the forged RST takes the latest data segment's sequence number
            data = [(ip, h) for _f, ip, h, p in tap1.tcp() if h.dport == 5004 and p]
            if len(data) >= 20 or time.time() > deadline:
                break
            time.sleep(0.05)
        assert data, "no data segment of the transfer on path 1"
        ip, last = data[-1]
        c_addr, s_addr = ip.src, ip.dst
        # 1. RST towards the server with the sequence number the client is at (in window)
        tap1.send(peer1, forge(c_addr, last.sport, s_addr, 5004, last.seq, last.ack, RST | ACK))
        # 2. join SYN from the client's second address, with the token of the server's key
        join = TCPOption(30, bytes((0x10, 7)) + mptcp_token(key_s).to_bytes(4, "big") + os.urandom(4))
        tap2.send(peer2, forge(bytes((10, 0, 2, 2)), 47000, bytes((10, 0, 2, 1)), 5004, 1234, 0, SYN,
                               [TCPOption(2, struct.pack("!H", 1448)), join]))
        # 3. ADD_ADDR to the client with the HMAC of the server's key (RFC 8684 §3.4.1), in the server's seq space
        attacker = bytes((10, 0, 1, 66))
        hm = add_addr_hmac(key_s, key_c, 9, attacker, 0)
        add = TCPOption(30, bytes((0x30, 9)) + attacker + hm)
        server_tap = LinkTap(net, "server", "s-eth0")
        try:
            server_tap.send(tap1.mac, forge(s_addr, 5004, c_addr, last.sport, last.ack, last.seq, ACK, [add]))
        finally:
            server_tap.close()

    try:
        sent, got = transfer(net, 5004, 32 << 20, during=attack)
    finally:
        tap1.close()
        tap2.close()
    assert sent["acked"] and got["sha256"] == sent["sha256"] and got["bytes"] == 32 << 20
    s_after, c_after = stats(net, "server"), stats(net, "client")
    assert s_after["joins_refused"] == before["server"]["joins_refused"] + 1
    assert s_after["unauthenticated_dropped"] > before["server"]["unauthenticated_dropped"]  # the RST
    assert c_after["unauthenticated_dropped"] > before["client"]["unauthenticated_dropped"]  # the ADD_ADDR
    assert nstat(net, "server")["MPTcpExtMPJoinSynRx"] == nstat_before["server"]["MPTcpExtMPJoinSynRx"] + 1  # real join only
    assert nstat(net, "client").get("MPTcpExtAddAddr", 0) == nstat_before["client"].get("MPTcpExtAddAddr", 0)


def test_daemon_on_one_side_only_gives_plain_tcp(env):
    from mptcrypt.topo.daemons import spawn_in_netns, stop

    net, daemons = env["net"], env["daemons"]
    assert stop(daemons["server"], remove_log=True) == 0
    assert "MPTC-" not in net["server"].cmd("iptables-save")
    try:
        sent, got = transfer(net, 5005, 1 << 20, mptcp=False)
        assert got["sha256"] == sent["sha256"] and got["sid"] is None and sent["sid"] is None
        row = [r for r in sessions(net, "client") if r["remote"].endswith(":5005")][0]
        # the client held a session for this server (earlier tests): a plain answer is a detected downgrade
        assert row["protected"] is False and row["sid"] is None
        assert row["reason"] == "downgrade: peer did not answer with PKCONF although we hold a session for this peer"
        assert stats(net, "client")["downgrades_detected"] >= 1
    finally:
        daemons["server"] = spawn_in_netns("mptc-server", "--ports", "5000-5099")


def test_server_initiated_join_to_an_announced_address_is_protected(env):
    """The client announces 10.0.2.2 port 5099 (ADD_ADDR inside a verified segment; Linux listens for joins on an
    announced port), then the server gets a `subflow` endpoint and its path manager opens a join from 10.0.2.1
    (Linux only creates subflows of a passive connection after the application accepted it, hence the order):
    the server daemon sends NEXTK1 with an even index, no public-key operation. The connection resumes (a short
    one on 5007 first caches the session): the client daemon is keyed at the SYN-ACK and learns its own MP_CAPABLE
    key, hence the token the server's join carries, only from its kernel's third ACK (once it did not, and every
    server-initiated join of a resumed connection died in the client's unprotected SYN-ACK)."""
    net = env["net"]
    transfer(net, 5007, 1 << 16)
    net["client"].run("ip mptcp endpoint flush && ip mptcp endpoint add 10.0.2.2 dev c-eth1 signal port 5099")
    before = {h: stats(net, h) for h in ("client", "server")}
    joins, resumed = [], []

    def during():
        deadline = time.time() + 15  # the server application accepted: its daemon has the protected connection
        while time.time() < deadline and not any(r["local"].endswith(":5006") and r.get("protected")
                                                 for r in sessions(net, "server")):
            time.sleep(0.05)
        net["server"].run("ip mptcp endpoint add 10.0.2.1 dev s-eth1 subflow")
        deadline = time.time() + 15
        while time.time() < deadline and not joins:
            for row in sessions(net, "server"):
                if row["local"].endswith(":5006"):
                    resumed[:] = [row["resumed"]]
                    joins[:] = [s for s in row["subflows"] if s["kind"] == "join" and s["role"] == "initiator"
                                and s["state"] == "encrypting"]
            time.sleep(0.1)

    try:
        sent, got = transfer(net, 5006, 64 << 20, during=during)
    finally:
        net["server"].run("ip mptcp endpoint flush")
        net["client"].run("ip mptcp endpoint flush && ip mptcp endpoint add 10.0.2.2 dev c-eth1 subflow")
    assert got["sha256"] == sent["sha256"] and sent["sid"] == got["sid"]
    assert joins and joins[0]["index"] % 2 == 0 and joins[0]["local"].startswith("10.0.2.1:"), joins
    assert resumed == [True]
    for h in ("client", "server"):
        after = stats(net, h)
        assert after["pk_ops"] - before[h]["pk_ops"] <= 1  # the first subflow may resume; never one for the join
        assert after["joins_protected"] > before[h]["joins_protected"]
        assert after["joins_zero_pk"] - before[h]["joins_zero_pk"] == after["joins_protected"] - before[h]["joins_protected"]


def test_graceful_takeover_keeps_a_transfer_protected_and_intact(env, tmp_path):
    """`mptcrypt daemon --takeover` in the server mid-transfer: the live session moves to the new daemon in memory,
    the chains are replaced atomically; no plaintext on either path, no lost byte, the old daemon exits cleanly."""
    from mptcrypt.topo.daemons import daemon_log, spawn_in_netns

    net, daemons = env["net"], env["daemons"]
    caps = [Capture(net, "server", intf, str(tmp_path / f"t-{intf}.pcap")) for intf in ("s-eth0", "s-eth1")]
    done = {}

    def during():
        time.sleep(0.5)
        new = spawn_in_netns("mptc-server", "--ports", "5000-5099", "--takeover")
        done["old_rc"] = daemons["server"].wait(timeout=15)
        daemons["server"] = new
        done["log"] = daemon_log(new)

    sent, got = transfer(net, 5006, 24 << 20, mptcp=True, during=during)
    wire = b"".join(c.stop() for c in caps)
    assert got["sha256"] == sent["sha256"] and got["bytes"] == sent["bytes"]
    assert MARKER.encode() not in wire
    assert done["old_rc"] == 0 and "took over" in done["log"] and "Traceback" not in done["log"]
    assert stats(net, "server")["mac_failures"] == 0
