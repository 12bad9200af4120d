"""Session-ID authentication end to end (issue 7): daemons on the client, the server and a relay host of
topologies/hijack.py; the examples' echo server/client authenticate over a protected MPTCP connection, and every
scheme detects the relay (examples/mitm_relay.py on 10.0.1.66), which runs one mptcrypt session per leg."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.root

REPO = Path(__file__).resolve().parent.parent.parent
EX = REPO / "examples"
PY = sys.executable
SCHEMES = ("password", "signature", "batch")
PORT = 7007
ENV = dict(os.environ, MPTCRYPT_PASSWORD="correct horse battery staple", PYTHONPATH=str(REPO))


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    from conftest import netns_unavailable, topology_path
    from mptcrypt.topo.daemons import spawn_in_netns, stop
    from mptcrypt.topo import Net, load_topo

    if netns_unavailable():
        pytest.skip(netns_unavailable())
    creds = tmp_path_factory.mktemp("creds")
    subprocess.run([PY, EX / "credentials.py", "add-user", creds / "verifiers.txt", "alice", "--log2-n", "14"],
                   env=ENV, check=True, capture_output=True)
    subprocess.run([PY, EX / "credentials.py", "keypair", creds / "server"], env=ENV, check=True, capture_output=True)
    topo, *_ = load_topo(topology_path("hijack.py"))
    net = Net(topo, state_file=None, lock_timeout=900)
    net.start()
    daemons = []
    saved = os.environ.get("MPTCRYPT_PASSWORD")
    os.environ["MPTCRYPT_PASSWORD"] = ENV["MPTCRYPT_PASSWORD"]  # the client runs through Node.run, which inherits
    try:
        for host in ("client", "server", "attacker"):
            daemons.append(spawn_in_netns(f"mptc-{host}", "--ports", str(PORT)))
        yield net, creds
    finally:
        if saved is None:
            os.environ.pop("MPTCRYPT_PASSWORD", None)
        else:
            os.environ["MPTCRYPT_PASSWORD"] = saved
        for proc in daemons:
            stop(proc, remove_log=True)
        net.stop()


def server_args(scheme, creds):
    args = [PY, EX / "echo_server.py", "--scheme", scheme, "--port", str(PORT), "--mptcp", "--max-conns", "1"]
    if scheme == "password":
        return args + ["--verifiers", creds / "verifiers.txt"]
    return args + ["--key", creds / "server.key", "--batch-size", "1"] if scheme == "batch" else \
        args + ["--key", creds / "server.key"]


def client_args(scheme, creds, target):
    args = [PY, EX / "echo_client.py", "--scheme", scheme, "--connect", target, "--port", str(PORT), "--mptcp",
            "--timeout", "20"]
    if scheme == "password":
        return args + ["--user", "alice", "--min-log2-work", "14"]
    return args + ["--pin", creds / "server.pub"]


def run_pair(net, scheme, creds, via_relay: bool):
    server = net["server"].popen([str(a) for a in server_args(scheme, creds)], env=ENV, stdout=subprocess.PIPE,
                                 stderr=subprocess.STDOUT, text=True)
    relay = None
    try:
        time.sleep(0.8)
        target = "10.0.1.1"
        if via_relay:
            relay = net["attacker"].popen([PY, str(EX / "mitm_relay.py"), "--listen", f"0.0.0.0:{PORT}", "--connect",
                                           f"10.0.1.1:{PORT}", "--mptcp-in", "--mptcp-out", "--max-conns", "1"],
                                          env=ENV, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
            time.sleep(0.8)
            target = "10.0.1.66"
        client = net["client"].run([str(a) for a in client_args(scheme, creds, target)], check=False, timeout=60)
        return client
    finally:
        for proc in (relay, server):
            if proc is not None and proc.poll() is None:
                proc.terminate()
                proc.wait(timeout=10)


@pytest.mark.parametrize("scheme", SCHEMES)
def test_scheme_succeeds_over_a_protected_mptcp_connection(env, scheme):
    net, creds = env
    result = run_pair(net, scheme, creds, via_relay=False)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("scheme", SCHEMES)
def test_scheme_detects_the_relay(env, scheme):
    net, creds = env
    result = run_pair(net, scheme, creds, via_relay=True)
    assert result.returncode == 1, result.stdout + result.stderr  # 1 = authentication failed (2 = not protected)
