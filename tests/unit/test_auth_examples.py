"""The examples end to end on loopback, with a stand-in for the daemon's API: each scheme succeeds directly and
fails through examples/mitm_relay.py (whose two legs get two different sids, as two mptcrypt sessions would).

The stand-in derives a connection's sid from its two endpoints, so both ends of one TCP connection agree and the
relay's two legs differ. The netns runs with real daemons are integration tests (tests/integration)."""

import hashlib
import importlib.util
import re
import socket
import sys
import threading
import types
from pathlib import Path

import pytest

import mptcrypt

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
UNPROTECTED_PORTS: set[int] = set()


def load(name):
    spec = importlib.util.spec_from_file_location(f"mptcrypt_example_{name}", EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


credentials, echo_server, echo_client, mitm_relay = (load(n) for n in ("credentials", "echo_server", "echo_client",
                                                                       "mitm_relay"))


def endpoint_sid(sock: socket.socket) -> bytes | None:
    ends = sorted([sock.getsockname()[:2], sock.getpeername()[:2]])
    if {ends[0][1], ends[1][1]} & UNPROTECTED_PORTS:
        return None
    return hashlib.sha256(repr(ends).encode()).digest()


@pytest.fixture(autouse=True)
def fake_daemon(monkeypatch):
    api = types.ModuleType("mptcrypt.api")
    api.session_id = endpoint_sid
    monkeypatch.setitem(sys.modules, "mptcrypt.api", api)
    monkeypatch.setattr(mptcrypt, "api", api, raising=False)
    UNPROTECTED_PORTS.clear()


@pytest.fixture(scope="module")
def creds(tmp_path_factory):
    d = tmp_path_factory.mktemp("creds")
    mp = pytest.MonkeyPatch()
    mp.setenv("MPTCRYPT_PASSWORD", "hunter2")
    try:
        assert credentials.main(["add-user", str(d / "verifiers.txt"), "alice", "--realm", "lab",
                                 "--log2-n", "10"]) == 0
    finally:
        mp.undo()
    assert credentials.main(["keypair", str(d / "server")]) == 0
    assert (d / "server.key").stat().st_mode & 0o077 == 0
    return d


def start(module, argv) -> tuple[threading.Thread, int]:
    ready = threading.Event()
    port = []
    t = threading.Thread(target=module.serve, args=(module.parse_args(argv),),
                         kwargs={"on_listening": lambda p: (port.append(p), ready.set())}, daemon=True)
    t.start()
    assert ready.wait(5)
    return t, port[0]


SERVER_ARGS = {
    "password": lambda d: ["--verifiers", str(d / "verifiers.txt"), "--realm", "lab", "--log2-n", "10"],
    "signature": lambda d: ["--key", str(d / "server.key")],
    "batch": lambda d: ["--key", str(d / "server.key"), "--batch-size", "1"],
}
CLIENT_ARGS = {
    "password": lambda d: ["--user", "alice", "--min-log2-work", "1"],
    "signature": lambda d: ["--pin", str(d / "server.pub")],
    "batch": lambda d: ["--pin", str(d / "server.pub")],
}


def client(scheme, creds, port, monkeypatch, password="hunter2"):
    monkeypatch.setenv("MPTCRYPT_PASSWORD", password)
    return echo_client.main(["--scheme", scheme, "--connect", "127.0.0.1", "--port", str(port), "--timeout", "5",
                             "--message", "ping"] + CLIENT_ARGS[scheme](creds))


@pytest.mark.parametrize("scheme", ["password", "signature", "batch"])
def test_direct_connection_authenticates(scheme, creds, monkeypatch, capsys) -> None:
    t, port = start(echo_server, ["--scheme", scheme, "--listen", "127.0.0.1", "--port", "0", "--max-conns", "1"]
                    + SERVER_ARGS[scheme](creds))
    assert client(scheme, creds, port, monkeypatch) == 0
    t.join(5)
    out = capsys.readouterr().out
    assert f"OK {scheme}" in out and "echo: ping" in out
    sids = re.findall(r"\bsid ([0-9a-f]{64})$", out, re.M)
    assert len(sids) == 2 and sids[0] == sids[1]  # both ends printed the same sid


@pytest.mark.parametrize("scheme", ["password", "signature", "batch"])
def test_relay_in_the_middle_is_caught(scheme, creds, monkeypatch, capsys) -> None:
    ts, sport = start(echo_server, ["--scheme", scheme, "--listen", "127.0.0.1", "--port", "0", "--max-conns", "1"]
                      + SERVER_ARGS[scheme](creds))
    tr, rport = start(mitm_relay, ["--listen", "127.0.0.1:0", "--connect", f"127.0.0.1:{sport}", "--max-conns", "1"])
    assert client(scheme, creds, rport, monkeypatch) == 1
    ts.join(5)
    tr.join(5)
    out = capsys.readouterr().out
    assert "AUTHENTICATION FAILED" in out and "echo: ping" not in out
    legs = re.findall(r"leg sid ([0-9a-f]{64})$", out, re.M)
    assert len(legs) == 2 and legs[0] != legs[1]
    if scheme == "password":  # the server notices too: the client's proof was made over the other leg's sid
        assert f"AUTHENTICATION FAILED ({scheme})" in out.split("relay listening")[1]


def test_wrong_password_and_wrong_pin(creds, monkeypatch, capsys, tmp_path) -> None:
    t, port = start(echo_server, ["--scheme", "password", "--listen", "127.0.0.1", "--port", "0", "--max-conns", "1"]
                    + SERVER_ARGS["password"](creds))
    assert client("password", creds, port, monkeypatch, password="hunter3") == 1
    t.join(5)
    assert credentials.main(["keypair", str(tmp_path / "other")]) == 0
    t, port = start(echo_server, ["--scheme", "signature", "--listen", "127.0.0.1", "--port", "0", "--max-conns", "1"]
                    + SERVER_ARGS["signature"](creds))
    assert echo_client.main(["--scheme", "signature", "--port", str(port), "--pin", str(tmp_path / "other.pub")]) == 1
    t.join(5)


def test_unprotected_connection_is_reported(creds, monkeypatch, capsys) -> None:
    t, port = start(echo_server, ["--scheme", "signature", "--listen", "127.0.0.1", "--port", "0", "--max-conns", "1"]
                    + SERVER_ARGS["signature"](creds))
    UNPROTECTED_PORTS.add(port)
    assert client("signature", creds, port, monkeypatch) == 2
    t.join(5)
    out = capsys.readouterr().out
    assert out.count("NOT PROTECTED") == 2 and "OK" not in out


def test_batch_of_concurrent_clients(creds, monkeypatch, capsys) -> None:
    n = 4
    t, port = start(echo_server, ["--scheme", "batch", "--listen", "127.0.0.1", "--port", "0", "--max-conns", str(n),
                                  "--key", str(creds / "server.key"), "--batch-size", str(n), "--batch-wait", "5"])
    codes = []
    clients = [threading.Thread(target=lambda: codes.append(client("batch", creds, port, monkeypatch)))
               for _ in range(n)]
    for c in clients:
        c.start()
    for c in clients:
        c.join(10)
    t.join(5)
    out = capsys.readouterr().out
    assert codes == [0] * n
    assert f"batch of {n} signed (1 signatures so far)" in out
