"""The systemd unit (systemd-analyze verify), `mptcrypt service install|uninstall`, and sd_notify by hand."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys

import pytest

from mptcrypt.daemon.notify import Notifier, socket_address
from mptcrypt.packaging import service


def datagrams(sock: socket.socket) -> list[dict[str, str]]:
    """Every message waiting on `sock`, each as its VAR=value fields."""
    out = []
    sock.setblocking(False)
    while True:
        try:
            data = sock.recv(4096)
        except BlockingIOError:
            return out
        out.append(dict(line.split("=", 1) for line in data.decode().split("\n")))


@pytest.fixture
def notify_socket(tmp_path):
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    path = str(tmp_path / "notify")
    sock.bind(path)
    yield path, sock
    sock.close()


def test_notify_ready_reloading_stopping(notify_socket):
    path, sock = notify_socket
    n = Notifier.from_env({"NOTIFY_SOCKET": path})
    assert n.ready("protecting ports all")
    with n.reloading("reloaded"):
        pass
    assert n.stopping()
    msgs = datagrams(sock)
    assert msgs[0] == {"READY": "1", "STATUS": "protecting ports all"}
    assert msgs[1]["RELOADING"] == "1" and int(msgs[1]["MONOTONIC_USEC"]) > 0
    assert msgs[2] == {"READY": "1", "STATUS": "reloaded"}
    assert msgs[3] == {"STOPPING": "1"}
    assert len(msgs) == 4


def test_notify_ready_follows_a_failed_reload(notify_socket):
    path, sock = notify_socket
    n = Notifier(path)
    with pytest.raises(ValueError):
        with n.reloading():
            raise ValueError("bad config")
    assert [list(m) for m in datagrams(sock)] == [["RELOADING", "MONOTONIC_USEC"], ["READY"]]


def test_notify_abstract_name():
    name = f"mptcrypt-test-notify-{os.getpid()}"
    assert socket_address("@" + name) == "\0" + name
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind("\0" + name)
        assert Notifier.from_env({"NOTIFY_SOCKET": "@" + name}).stopping()
        assert datagrams(sock) == [{"STOPPING": "1"}]


def test_notify_without_systemd_is_a_no_op(tmp_path, caplog):
    assert Notifier.from_env({}).ready() is False
    gone = Notifier(str(tmp_path / "nobody-listens"))
    assert gone.ready() is False and gone.stopping() is False  # never raises
    assert sum("could not notify systemd" in r.message for r in caplog.records) == 1


def test_rendered_unit_points_at_this_python():
    text = service.render(config="/etc/mptcrypt/other.toml")
    exec_start = [line for line in text.splitlines() if line.startswith("ExecStart=")]
    assert exec_start == [f"ExecStart={sys.executable} -m mptcrypt daemon --config /etc/mptcrypt/other.toml"]
    for setting in ("Type=notify", "ExecReload=/bin/kill -HUP $MAINPID", "ProtectSystem=strict",
                    "CapabilityBoundingSet=CAP_NET_ADMIN CAP_NET_RAW", "NoNewPrivileges=yes"):
        assert setting in text.splitlines()


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze not installed (package systemd)")
def test_systemd_analyze_verify(tmp_path):
    unit = tmp_path / service.UNIT_NAME
    unit.write_text(service.render())
    proc = subprocess.run(["systemd-analyze", "verify", str(unit)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert service.UNIT_NAME not in proc.stderr, proc.stderr  # no warning about our unit


def test_install_uninstall(tmp_path, monkeypatch):
    monkeypatch.setattr(service, "systemd_running", lambda: False)
    units, config = tmp_path / "units", tmp_path / "etc" / "mptcrypt.toml"
    written = service.install(str(units), str(config))
    assert written == [str(units / service.UNIT_NAME), str(config)]
    assert (units / service.UNIT_NAME).read_text() == service.render(config=str(config))
    from mptcrypt.daemon.config import load_config

    assert load_config(config).policy.value == "opportunistic"  # the commented default loads
    config.write_text('policy = "required"\n')
    assert service.install(str(units), str(config)) == [str(units / service.UNIT_NAME)]  # config kept
    assert config.read_text() == 'policy = "required"\n'
    assert service.uninstall(str(units)) is True
    assert not (units / service.UNIT_NAME).exists() and config.exists()
    assert service.uninstall(str(units)) is False
