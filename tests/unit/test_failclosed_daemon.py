"""The daemon side of fail-closed protection (issue 12): refuse to start where IPv6 would leave in clear."""

import pytest

from mptcrypt.daemon import iptables
from mptcrypt.errors import KernelFeatureError


def without_ip6tables(monkeypatch):
    real = iptables.shutil.which
    monkeypatch.setattr(iptables.shutil, "which", lambda name: None if name.startswith("ip6") else real(name) or name)
    monkeypatch.setattr(iptables.os.path, "exists", lambda path: True)


def test_missing_ip6tables_under_required_refuses_to_start(monkeypatch):
    without_ip6tables(monkeypatch)
    with pytest.raises(KernelFeatureError, match="ip6tables"):
        iptables.Rules(4242, require_ipv6=True)


def test_missing_ip6tables_under_opportunistic_is_a_warning(monkeypatch):
    without_ip6tables(monkeypatch)
    assert [f.name for f in iptables.Rules(4242).families] == [iptables.IPV4.name]


def test_sock_diag_names_the_sockets_the_kernel_still_has():
    import socket

    from mptcrypt.daemon.sockdiag import sockets_alive

    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen()
    cli = socket.create_connection(srv.getsockname())
    acc, _ = srv.accept()
    try:
        lport, rport = cli.getsockname()[1], srv.getsockname()[1]
        lo = bytes((127, 0, 0, 1))
        live, gone = (lo, lport, lo, rport), (lo, lport, lo, rport + 1 if rport < 65535 else 1)
        assert sockets_alive([live, gone]) == {live}
    finally:
        for s in (cli, acc, srv):
            s.close()


class FakeWorker:
    def __init__(self, order):
        self.order = order

    def inject(self, packets):
        self.order.append(("inject", list(packets)))

    def read(self, _timeout):
        pass

    def tick(self):
        pass

    def unbind(self):
        self.order.append("unbind")


class FakeRules:
    installed = ["ipv4"]

    def __init__(self, order):
        self.order = order

    def remove(self):
        self.order.append("rules.remove")
        self.installed = []


class Closable:
    def close(self):
        pass


def test_a_stopping_daemon_resets_protected_connections_before_removing_its_rules():
    from mptcrypt.core.config import Config
    from mptcrypt.daemon.main import Daemon

    order = []

    class Engine:
        def shutdown(self):
            order.append("engine.shutdown")
            return [b"rst-local", b"rst-peer"]

    Daemon(Config(), engine=Engine())._shutdown(FakeRules(order), FakeWorker(order), Closable(), Closable(),
                                                Closable())
    assert order[:3] == ["engine.shutdown", ("inject", [b"rst-local", b"rst-peer"]), "rules.remove"]


def test_stale_chains_are_replaced_in_one_transaction():
    save = "*filter\n:INPUT ACCEPT [0:0]\n:MPTC-IN - [0:0]\n:MPTC-OUT - [0:0]\n-A INPUT -j MPTC-IN\n" \
           "-A OUTPUT -j MPTC-OUT\n-A MPTC-IN -p tcp -j NFQUEUE --queue-num 1\nCOMMIT\n"
    script = iptables.replace_script(save, 4242)
    assert script.count("COMMIT") == 1 and script.startswith("*filter\n:MPTC-OUT - [0:0]\n:MPTC-IN - [0:0]\n")
    assert "-D INPUT -j MPTC-IN" in script and "-D OUTPUT -j MPTC-OUT" in script
    assert script.index("-D OUTPUT") < script.index("-I OUTPUT 1 -j MPTC-OUT") and "--queue-num 4242" in script


def test_a_daemon_that_handed_over_keeps_its_rules_and_resets_nothing():
    from mptcrypt.core.config import Config
    from mptcrypt.daemon.main import Daemon

    order = []

    class Engine:
        def export_state(self):
            return {"flows": [1, 2]}

        def shutdown(self):
            order.append("engine.shutdown")
            return []

    d = Daemon(Config(), engine=Engine())
    assert d.handle_request({"cmd": "handover"}) == {"ok": True, "state": {"flows": [1, 2]}}
    d._shutdown(FakeRules(order), FakeWorker(order), Closable(), Closable(), Closable())
    assert order == ["unbind"]
