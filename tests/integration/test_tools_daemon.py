"""Operator tools against real daemons on topologies/two_path.py: systemd notification, the live monitor and
the Prometheus endpoint. One network and one daemon pair for the module; tests run in file order."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import tempfile
import time

import pytest

pytestmark = pytest.mark.root

PY = sys.executable
PORT = 5040
MARKER = "MPTCRYPT-TOOLS-MARKER-51c9"
METRICS = "127.0.0.1:9464"


@pytest.fixture(scope="module")
def env():
    from conftest import netns_unavailable, topology_path
    from mptcrypt.topo.daemons import spawn_in_netns, stop
    from mptcrypt.topo import Net, load_topo

    if netns_unavailable():
        pytest.skip(netns_unavailable())
    tmp = tempfile.mkdtemp(prefix="mptcrypt-tools-")
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notify.bind(os.path.join(tmp, "notify"))  # a path: `ip netns exec` keeps the file system, not abstract names
    notify.settimeout(10)
    topo, *_ = load_topo(topology_path("two_path.py"))
    net = Net(topo, state_file=None, lock_timeout=900)
    net.start()
    daemons = {}
    try:
        daemons["server"] = spawn_in_netns("mptc-server", "--ports", "5000-5099", "--metrics", METRICS,
                                           env={"NOTIFY_SOCKET": os.path.join(tmp, "notify"),
                                                "MPTCRYPT_KEYLOGFILE": os.path.join(tmp, "server.keys")})
        daemons["client"] = spawn_in_netns("mptc-client", "--ports", "5000-5099", "--keylog",
                                           os.path.join(tmp, "client.keys"))
        yield {"net": net, "daemons": daemons, "notify": notify, "tmp": tmp, "stop": stop}
    finally:
        for proc in daemons.values():
            stop(proc, remove_log=True)
        net.stop()
        notify.close()
        subprocess.run(["rm", "-rf", tmp], check=False)


class Capture:
    """tcpdump on one interface of a host into `path` (kept for the dissector tests)."""

    def __init__(self, net, host, intf, path):
        self.path = path
        self.proc = net[host].popen(["tcpdump", "-i", intf, "-U", "--immediate-mode", "-s", "0", "-w", path, "tcp"],
                                    stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        assert "listening" in self.proc.stderr.readline()

    def stop(self) -> str:
        time.sleep(0.3)  # let the last frames reach the file
        self.proc.terminate()
        self.proc.wait(timeout=10)
        return self.path


def notifications(sock: socket.socket) -> dict[str, str]:
    data = sock.recv(4096).decode()
    return dict(line.split("=", 1) for line in data.split("\n"))


def transfer(net, port: int, nbytes: int, mptcp: bool = True) -> tuple[dict, dict]:
    """One connection client -> server:port carrying nbytes with MARKER in them; both reports."""
    flag = ["--mptcp"] if mptcp else []
    sink = net["server"].popen([PY, "-m", "mptcrypt.traffic", "sink", "--port", str(port), *flag],
                               stdout=subprocess.PIPE, text=True)
    assert json.loads(sink.stdout.readline())["event"] == "listening"
    source = net["client"].popen([PY, "-m", "mptcrypt.traffic", "source", "--to", f"10.0.1.1:{port}", "--bytes",
                                  str(nbytes), "--marker", MARKER, *flag], stdout=subprocess.PIPE, text=True)
    out, _ = source.communicate(timeout=120)
    got = json.loads(sink.stdout.readline())
    sink.wait(timeout=10)
    return json.loads(out.strip().splitlines()[-1]), got


def test_ready_notification_after_the_rules(env):
    msg = notifications(env["notify"])
    assert msg["READY"] == "1"
    assert "ports 5000-5099" in msg["STATUS"]
    rules = env["net"]["server"].cmd("iptables-save")
    assert "MPTC-IN" in rules  # READY came after the rules were in place (the daemon was ready before we got here)


def test_monitor_shows_the_protected_connection_and_its_join(env):
    net = env["net"]
    monitor = net["client"].popen([PY, "-m", "mptcrypt", "monitor", "--json", "--count", "2"],
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert "monitoring" in monitor.stderr.readline()  # subscribed: no event of the transfer can be missed
    captures = [Capture(net, "client", intf, os.path.join(env["tmp"], f"{intf}.pcap")) for intf in ("c-eth0", "c-eth1")]
    try:
        sent, got = transfer(net, PORT, 256 * 1024)
        assert got["sha256"] == sent["sha256"]
        sent, got = transfer(net, PORT + 1, 4096, mptcp=False)  # a second connection: resumed (NEXTK1 resume)
        assert got["sha256"] == sent["sha256"]
    finally:
        env["pcaps"] = [c.stop() for c in captures]
    out, _ = monitor.communicate(timeout=30)
    records = [json.loads(line) for line in out.splitlines()]
    assert [r["event"] for r in records] == ["protected", "join-protected"]
    first, join = records
    assert first["flow"].startswith("10.0.1.2:") and first["flow"].endswith(f"> 10.0.1.1:{PORT}")
    assert join["flow"].startswith("10.0.2.2:") and join["flow"].endswith(f"> 10.0.1.1:{PORT}")
    assert first["detail"].startswith("new index 0 sid ") and join["detail"].startswith("join index 1 sid ")
    assert first["detail"].split()[-1] == join["detail"].split()[-1]  # one session
    env["sid_prefix"] = first["detail"].split()[-1]


def test_metrics_scrape_and_stats_prometheus_agree(env):
    from prometheus_client.parser import text_string_to_metric_families

    def parse(text):
        return {(s.name, tuple(sorted(s.labels.items()))): s.value
                for f in text_string_to_metric_families(text) for s in f.samples}

    server = env["net"]["server"]
    scrape = server.run([PY, "-c", f"import urllib.request,sys; sys.stdout.write(urllib.request.urlopen("
                                   f"'http://{METRICS}/metrics', timeout=5).read().decode())"])
    assert scrape.returncode == 0, scrape.stderr
    once = server.run([PY, "-m", "mptcrypt", "stats", "--prometheus"])
    assert once.returncode == 0, once.stderr
    stats = json.loads(server.run([PY, "-m", "mptcrypt", "stats", "--json"]).stdout)["stats"]
    for text in (scrape.stdout, once.stdout):
        m = parse(text)
        assert m[("mptcrypt_pk_ops_total", ())] == 1  # one public-key handshake, none for the join
        assert m[("mptcrypt_joins_protected_total", ())] == 1
        assert m[("mptcrypt_joins_refused_total", ())] == 0
        assert m[("mptcrypt_mac_failures_total", ())] == 0
        assert m[("mptcrypt_segments_verified_total", ())] >= 256 * 1024 // 1448
        assert m[("mptcrypt_segments_verified_total", ())] <= stats["segments_verified"]
        assert m[("mptcrypt_packet_seconds_count", ())] > 0
        assert m[("mptcrypt_packet_seconds_bucket", (("le", "+Inf"),))] == m[("mptcrypt_packet_seconds_count", ())]
        assert m[("mptcrypt_queue_drops_total", (("reason", "queue_full"),))] == 0
        assert sum(v for (n, _), v in m.items() if n == "mptcrypt_connections_by_state") >= 1


def tshark_fields(pcap: str, fields: list[str], display_filter: str = "mptcrypt") -> list[dict[str, str]]:
    """One dict per packet the filter keeps: field -> value (repeated fields joined with ',')."""
    from mptcrypt.wireshark import dissector_path

    proc = subprocess.run(["tshark", "-n", "-X", f"lua_script:{dissector_path()}", "-r", pcap, "-Y", display_filter,
                           "-T", "fields", "-E", "separator=|", "-E", "aggregator=,",
                           *[a for name in fields for a in ("-e", name)]], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert "Lua: Error" not in proc.stderr, proc.stderr
    return [dict(zip(fields, line.split("|"))) for line in proc.stdout.splitlines()]
def test_dissector_names_every_field_of_a_real_capture(env):
    """Path 1 carries the public-key handshake and the resumed connection, path 2 the join."""
    from mptcrypt.constants import DEFAULT_PUB_CIPHERS, DEFAULT_SYM_CIPHERS
    from mptcrypt.wire.messages import PROTOCOL_VERSION

    path1, path2 = env["pcaps"]
    fields = ["tcp.srcport", "tcp.dstport", "tcp.flags.syn", "tcp.flags.ack", "tcp.len", "tcp.options",
              "mptcrypt.message", "mptcrypt.exid", "mptcrypt.hello.version", "mptcrypt.pkconf.cipher",
              "mptcrypt.mac.tag", "mptcrypt.nextk1.index", "mptcrypt.nextk1.resume_id", "mptcrypt.nextk1.proof",
              "mptcrypt.nextk2.proof", "mptcrypt.init.magic", "mptcrypt.init.version", "mptcrypt.init.type",
              "mptcrypt.init.length", "mptcrypt.init1.pub_cipher", "mptcrypt.init1.sym_count",
              "mptcrypt.init1.sym_cipher", "mptcrypt.init1.n_c", "mptcrypt.init1.k_c_len", "mptcrypt.init1.k_c",
              "mptcrypt.init2.sym_cipher", "mptcrypt.init2.part_len", "mptcrypt.init2.k_s", "mptcrypt.init2.n_s",
              "_ws.expert.message"]
    hexes = lambda ids: ",".join(f"0x{int(c):02x}" for c in ids)  # noqa: E731
    rows = tshark_fields(path1, fields)
    first = [r for r in rows if r["tcp.dstport"] == str(PORT) or r["tcp.srcport"] == str(PORT)]
    resumed = [r for r in rows if r["tcp.dstport"] == str(PORT + 1) or r["tcp.srcport"] == str(PORT + 1)]
    by_msg = lambda flows, name: [r for r in flows if name in r["mptcrypt.message"].split(",")]  # noqa: E731

    (hello,) = by_msg(first, "HELLO")
    assert hello["tcp.flags.syn"] == "1" and hello["tcp.flags.ack"] == "0" and hello["mptcrypt.exid"] == "0x4d50"
    assert hello["mptcrypt.hello.version"] == str(PROTOCOL_VERSION)
    (pkconf,) = by_msg(first, "PKCONF")
    assert pkconf["mptcrypt.pkconf.cipher"] == hexes(DEFAULT_PUB_CIPHERS)
    (init1,) = by_msg(first, "INIT1")  # each exactly once: no retransmission on a quiet link
    assert init1["mptcrypt.message"] == "INIT1 marker,INIT1"
    assert (init1["mptcrypt.init.magic"], init1["mptcrypt.init.version"], init1["mptcrypt.init.type"]) == \
        ("MPTC", str(PROTOCOL_VERSION), "3")
    assert init1["mptcrypt.init.length"] == init1["tcp.len"]
    assert init1["mptcrypt.init1.pub_cipher"] == hexes(DEFAULT_PUB_CIPHERS[:1])
    assert init1["mptcrypt.init1.sym_count"] == str(len(DEFAULT_SYM_CIPHERS))
    assert init1["mptcrypt.init1.sym_cipher"] == hexes(DEFAULT_SYM_CIPHERS)
    assert len(bytes.fromhex(init1["mptcrypt.init1.n_c"])) == 32
    assert init1["mptcrypt.init1.k_c_len"] == "32" and len(bytes.fromhex(init1["mptcrypt.init1.k_c"])) == 32
    (init2,) = by_msg(first, "INIT2")
    assert init2["mptcrypt.init.type"] == "4" and init2["mptcrypt.init.length"] == init2["tcp.len"]
    assert init2["mptcrypt.init2.sym_cipher"] == hexes(DEFAULT_SYM_CIPHERS[:1])
    assert init2["mptcrypt.init2.part_len"] == "64"
    assert len(bytes.fromhex(init2["mptcrypt.init2.k_s"])) == 32 and len(bytes.fromhex(init2["mptcrypt.init2.n_s"])) == 32
    macs = by_msg(first, "MAC")
    assert len(macs) > 10  # the data segments and ACKs after the handshake (the join carries the rest)
    for r in macs:  # the tag is the last 8 bytes of the option area, after kind 253, length 12, ExID
        assert r["tcp.options"].endswith("fd0c4d50" + r["mptcrypt.mac.tag"]), r
    assert not [r for r in rows if r["_ws.expert.message"] and "mptcrypt" in r["_ws.expert.message"].lower()]

    (nextk1,) = by_msg(resumed, "NEXTK1 resume")
    assert nextk1["tcp.flags.syn"] == "1" and nextk1["tcp.flags.ack"] == "0"
    assert len(bytes.fromhex(nextk1["mptcrypt.nextk1.resume_id"])) == 8
    assert len(bytes.fromhex(nextk1["mptcrypt.nextk1.proof"])) == 8
    (nextk2,) = by_msg(resumed, "NEXTK2")
    assert nextk2["tcp.flags.syn"] == "1" and nextk2["tcp.flags.ack"] == "1"
    assert len(bytes.fromhex(nextk2["mptcrypt.nextk2.proof"])) == 8
    assert not by_msg(resumed, "HELLO") and not by_msg(resumed, "INIT1") and by_msg(resumed, "MAC")

    join_rows = tshark_fields(path2, fields)
    (join,) = by_msg(join_rows, "NEXTK1 join")
    assert join["mptcrypt.nextk1.index"] == "1"  # the first odd index: the session's initiator joins
    assert len(bytes.fromhex(join["mptcrypt.nextk1.proof"])) == 8
    (join2,) = by_msg(join_rows, "NEXTK2")
    assert len(bytes.fromhex(join2["mptcrypt.nextk2.proof"])) == 8
    join_macs = by_msg(join_rows, "MAC")
    # 256 KiB in segments of at most 1448 bytes over both paths, every one with a MAC (ACKs besides)
    assert len(macs) + len(join_macs) >= 256 * 1024 // 1448
    for r in join_macs:
        assert r["tcp.options"].endswith("fd0c4d50" + r["mptcrypt.mac.tag"]), r


def test_keylog_files_and_warning(env):
    from mptcrypt.daemon.keylog import read_keylog
    from mptcrypt.topo.daemons import daemon_log

    client, server = (os.path.join(env["tmp"], f"{h}.keys") for h in ("client", "server"))
    for path in (client, server):
        assert os.stat(path).st_mode & 0o777 == 0o600
    assert "KEY LOG ON" in daemon_log(env["daemons"]["client"])
    entries = read_keylog(client)
    # the first subflow, its join (index 1) and the resumed connection, as the client's engine keyed them
    assert sorted(e.index for e in entries) == [0, 1, 3]  # the initiator's indices are odd
    assert {e.responder for e in entries} == {("10.0.1.1", PORT), ("10.0.1.1", PORT + 1)}
    assert {e.initiator[0] for e in entries} == {"10.0.1.2", "10.0.2.2"}
    server_entries = read_keylog(server)  # the server's daemon logged the same keys (through $MPTCRYPT_KEYLOGFILE)
    assert sorted(server_entries, key=lambda e: e.index) == sorted(entries, key=lambda e: e.index)


def test_decrypt_a_captured_transfer_and_flag_a_tampered_segment(env):
    from mptcrypt.wireshark.decrypt import decrypt_file
    from mptcrypt.wireshark.pcapng import Frame, read_frames, write_pcapng

    keys = os.path.join(env["tmp"], "client.keys")
    plain_hits = verified = 0
    for pcap in env["pcaps"]:
        with open(pcap, "rb") as fh:
            assert MARKER.encode() not in fh.read()  # the link never carried the plaintext
        out = pcap + ".decrypted.pcapng"
        run = subprocess.run([PY, "-m", "mptcrypt", "decrypt", pcap, "--keylog", keys, "-w", out],
                             capture_output=True, text=True)
        assert run.returncode == 0, run.stderr
        rows = tshark_fields(out, ["frame.number", "mptcrypt.verdict", "tcp.options"],
                             f'frame contains "{MARKER}"')
        plain_hits += len(rows)
        assert all(r["mptcrypt.verdict"] == "MAC ok" for r in rows)
        assert all("fd0c4d50" not in r["tcp.options"] for r in rows)  # MAC option removed
        verdicts = tshark_fields(out, ["mptcrypt.verdict"], "mptcrypt.verdict")
        assert all(v["mptcrypt.verdict"] == "MAC ok" for v in verdicts)
        verified += len(verdicts)
    # a short transfer may end before the scheduler uses the join subflow: its path then carries only the handshake
    assert plain_hits >= 1 and verified > 0

    # one data segment of path 1 with a flipped payload bit: the tool says bad MAC, the dissector shows it
    frames = list(read_frames(open(env["pcaps"][0], "rb").read()))
    data = [i for i, f in enumerate(frames) if len(f.data) > 1000]
    victim = data[len(data) // 2]
    bad = bytearray(frames[victim].data)
    bad[-100] ^= 0x01
    frames[victim] = Frame(frames[victim].time, bytes(bad))
    tampered = os.path.join(env["tmp"], "tampered.pcapng")
    with open(tampered, "wb") as fh:
        write_pcapng(fh, frames)
    counts = decrypt_file(tampered, keys, tampered + ".out.pcapng")
    assert counts["bad_mac"] == 1 and counts["mac_ok"] > 100
    rows = tshark_fields(tampered + ".out.pcapng", ["frame.number", "mptcrypt.verdict", "_ws.expert.message"],
                         'mptcrypt.verdict == "bad MAC"')
    assert [int(r["frame.number"]) for r in rows] == [victim + 1]
    assert "MAC does not verify" in rows[0]["_ws.expert.message"]


def test_reload_notifications(env):
    import signal

    env["daemons"]["server"].send_signal(signal.SIGHUP)  # what `systemctl reload` sends (ExecReload)
    reloading = notifications(env["notify"])
    assert reloading["RELOADING"] == "1" and int(reloading["MONOTONIC_USEC"]) > 0
    assert notifications(env["notify"])["READY"] == "1"


def test_stopping_notification(env):
    proc = env["daemons"].pop("server")
    assert env["stop"](proc, remove_log=True) == 0
    assert notifications(env["notify"]) == {"STOPPING": "1"}
